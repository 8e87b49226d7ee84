"""Mitel SIP-DECT (OMM) adapter: request identification and the OMM's configuration files."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from provisioner.devices.base import ModelInfo, RenderError, Site, Templates
from provisioner.devices.mitel import ADAPTER
from tests.devices.conftest import (
    NAMES,
    UA_GIGASET,
    UA_POLY,
    ContextFactory,
    assert_no_template_syntax,
    parse_xml,
)

MAC = "003042aabbcc"  # an RFP-hosted OMM (DeTeWe/Aastra/Mitel RFPs use 00:30:42)

# The OMM's own HTTP User-Agent is undocumented; these stand for what arrives in practice.
UA_EMPTY = ""
UA_CURL = "curl/7.29.0"
UA_OMM = "SIP-DECT OMM 8.3SP1"
UA_YEALINK = "Yealink SIP-T54W 96.86.0.70 80:5e:c0:aa:bb:cc"

MODELS = sorted(ADAPTER.models.values(), key=lambda m: m.name)
USER = "user_common.cfg"


def commands(body: bytes) -> list[ET.Element]:
    """The OM AXI commands of a configuration file: one XML element per line."""
    text = body.decode("utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    elements = [parse_xml(line) for line in lines]
    # The same content also parses as one document, whatever the line breaks.
    assert len(parse_xml(f"<file>{text}</file>")) == len(elements)
    return elements


def users(body: bytes) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for command in commands(body):
        assert command.tag == "CreatePPUser"
        assert command.attrib == {"plainText": "1", "replaceData": "1"}
        (user,) = list(command)
        assert user.tag == "user"
        result[user.attrib["uid"]] = user.attrib
    return result


# --- models ------------------------------------------------------------------------------


def test_models() -> None:
    assert [(m.name, m.kind, m.slots) for m in MODELS] == [("SIP-DECT", "dect", 512)]
    assert ADAPTER.model("sip-dect") is ADAPTER.models["SIP-DECT"]
    assert ADAPTER.vendor == "mitel"
    assert {"pin", "sip_credentials", "display_name", "extension"} <= ADAPTER.user_fields


# --- identify ----------------------------------------------------------------------------


@pytest.mark.parametrize("user_agent", [UA_EMPTY, UA_CURL, UA_OMM])
@pytest.mark.parametrize("path", ["ipdect.cfg", "/ipdect.cfg", "IPDECT.CFG"])
def test_identify_common_file(path: str, user_agent: str) -> None:
    req = ADAPTER.identify(path, user_agent)
    assert req is not None
    assert req.file == "ipdect.cfg"
    assert req.shared
    assert req.mac is None
    assert req.user_agent_mac is None


@pytest.mark.parametrize("user_agent", [UA_EMPTY, UA_CURL, UA_OMM])
def test_identify_user_file(user_agent: str) -> None:
    req = ADAPTER.identify("user_common.cfg", user_agent)
    assert req is not None
    assert req.file == "user_common.cfg"
    assert not req.shared
    assert req.mac is None


@pytest.mark.parametrize(
    ("path", "file", "shared"),
    [
        ("003042aabbcc/ipdect.cfg", "ipdect.cfg", True),
        ("003042AABBCC/user_common.cfg", "user_common.cfg", False),
        ("00:30:42:aa:bb:cc/user_common.cfg", "user_common.cfg", False),
        ("003042aabbcc/003042AABBCC.cfg", "003042AABBCC.cfg", False),
    ],
)
def test_identify_files_in_device_folder(path: str, file: str, shared: bool) -> None:
    req = ADAPTER.identify(path, UA_EMPTY)
    assert req is not None
    assert (req.file, req.mac, req.shared) == (file, MAC, shared)


@pytest.mark.parametrize("path", ["003042AABBCC.cfg", "003042aabbcc.cfg", "/003042AaBbCc.cfg"])
@pytest.mark.parametrize("user_agent", [UA_EMPTY, UA_CURL, UA_OMM])
def test_identify_device_file(path: str, user_agent: str) -> None:
    req = ADAPTER.identify(path, user_agent)
    assert req is not None
    assert (req.file, req.mac, req.user_agent_mac) == ("003042AABBCC.cfg", MAC, None)
    assert not req.shared


def test_identify_device_file_needs_rfp_oui_or_mitel_user_agent() -> None:
    # 80:5E:C0 is Yealink's: without a Mitel User-Agent this is another vendor's <mac>.cfg.
    assert ADAPTER.identify("805ec0aabbcc.cfg", UA_EMPTY) is None
    assert ADAPTER.identify("805ec0aabbcc.cfg", UA_CURL) is None
    req = ADAPTER.identify("805ec0aabbcc.cfg", UA_OMM)
    assert req is not None
    assert req.mac == "805ec0aabbcc"


def test_identify_folder_and_file_mac_must_agree() -> None:
    assert ADAPTER.identify("003042aabbcc/003042000001.cfg", UA_EMPTY) is None


@pytest.mark.parametrize(
    ("path", "user_agent"),
    [
        ("805ec0aabbcc.cfg", UA_YEALINK),
        ("003042aabbcc.cfg", UA_YEALINK),  # the UA names another vendor, whatever the OUI
        ("0004f2aabbcc.cfg", UA_POLY),
        ("ipdect.cfg", UA_GIGASET),
        ("user_common.cfg", UA_POLY),
        ("7C2F80E0D605.xml", UA_GIGASET),
        ("y000000000096.cfg", UA_YEALINK),
    ],
)
def test_identify_other_vendors(path: str, user_agent: str) -> None:
    assert ADAPTER.identify(path, user_agent) is None


@pytest.mark.parametrize(
    "path",
    [
        "",
        "omm_conf.txt",
        "003042AABBCC.xml",
        "003042AABBC.cfg",
        "alice.cfg",
        "not-a-mac/ipdect.cfg",
        "a/003042aabbcc/ipdect.cfg",
        "003042aabbcc/",
        "user_common.cfg.bak",
    ],
)
def test_identify_foreign_paths(path: str) -> None:
    assert ADAPTER.identify(path, UA_EMPTY) is None


# --- render ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_render_files(model: ModelInfo, make_context: ContextFactory, templates: Templates) -> None:
    files = ADAPTER.render(make_context(model, mac=MAC, lines=4), templates)
    assert set(files) == {"ipdect.cfg", "003042AABBCC.cfg", "user_common.cfg"}
    assert_no_template_syntax(files)
    for name, body in files.items():
        text = body.decode("utf-8")
        assert not text.startswith("<?xml"), name
        assert "\x00" not in text
        commands(body)


def test_identify_matches_render_keys(make_context: ContextFactory, templates: Templates) -> None:
    files = ADAPTER.render(make_context(ADAPTER.models["SIP-DECT"], mac=MAC), templates)
    for path in ("ipdect.cfg", "user_common.cfg", "003042aabbcc.cfg", "003042aabbcc/ipdect.cfg"):
        req = ADAPTER.identify(path, UA_EMPTY)
        assert req is not None
        assert req.file in files


def test_render_common_file(make_context: ContextFactory, templates: Templates) -> None:
    site = Site(
        registrar_host="sip.example.org",
        registrar_port=5061,
        transport="tls",
        timezone="Europe/Vienna",
        ntp_server="ntp.example.org",
    )
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, site=site)
    by_tag = {c.tag: c.attrib for c in commands(ADAPTER.render(ctx, templates)["ipdect.cfg"])}
    assert by_tag["SetBasicSIP"] == {
        "transportProt": "TLS",
        "proxyServer": "sip.example.org",
        "proxyPort": "5061",
        "regServer": "sip.example.org",
        "regPort": "5061",
    }
    assert by_tag["SetNTPServer"] == {"ntpServerName1": "ntp.example.org"}
    assert by_tag["SetTimeZone"] == {"id": "Europe/Vienna"}


def test_render_common_file_carries_no_secret(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=3)
    text = ADAPTER.render(ctx, templates)["ipdect.cfg"].decode()
    assert "Pr0v" not in text
    assert "Secret" not in text
    assert ctx.device.mac not in text
    for line in ctx.lines:
        assert line.pin is not None
        assert line.pin not in text


@pytest.mark.parametrize(("transport", "value"), [("udp", "UDP"), ("tcp", "TCP"), ("tls", "TLS")])
def test_render_transport(
    transport: str, value: str, make_context: ContextFactory, templates: Templates
) -> None:
    site = Site(registrar_host="pbx.example.net", transport=transport)  # type: ignore[arg-type]
    ctx = make_context(ADAPTER.models["SIP-DECT"], site=site)
    (basic,) = [
        c for c in commands(ADAPTER.render(ctx, templates)["ipdect.cfg"]) if c.tag == "SetBasicSIP"
    ]
    assert basic.attrib["transportProt"] == value


def test_render_device_file(make_context: ContextFactory, templates: Templates) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC)
    ctx = replace(ctx, provisioning_url="https://prov.example.net:8443/provisioning/")
    config_url, user_server = commands(ADAPTER.render(ctx, templates)["003042AABBCC.cfg"])
    assert config_url.tag == "SetConfigURL"
    assert user_server.tag == "SetUserDataServer"
    assert user_server.attrib["useCommonFileNameOnServer"] == "1"
    for command in (config_url, user_server):
        assert command.attrib["plainText"] == "1"
        (url,) = list(command)
        assert url.attrib == {
            "enable": "1",
            "protocol": "HTTPS",
            "host": "prov.example.net",
            "port": "8443",
            "path": "/provisioning/003042aabbcc",
            "username": ctx.provisioning_user,
            "password": ctx.provisioning_password,
        }
    # The folder the OMM is sent to is recognised as this device's.
    req = ADAPTER.identify("003042aabbcc/user_common.cfg", UA_EMPTY)
    assert req is not None
    assert req.mac == ctx.device.mac


def test_render_device_file_default_port(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC)
    ctx = replace(ctx, provisioning_url="http://prov.example.net/")
    (config_url, _) = commands(ADAPTER.render(ctx, templates)["003042AABBCC.cfg"])
    (url,) = list(config_url)
    assert (url.attrib["protocol"], url.attrib["port"], url.attrib["path"]) == (
        "HTTP",
        "0",
        "/003042aabbcc",
    )


def test_render_users(make_context: ContextFactory, templates: Templates) -> None:
    model = ADAPTER.models["SIP-DECT"]
    ctx = make_context(model, mac=MAC, lines=4)
    records = users(ADAPTER.render(ctx, templates)["user_common.cfg"])

    assert list(records) == [str(uid) for uid in range(1, model.slots + 1)]
    for line in ctx.lines:
        assert records[str(line.slot)] == {
            "uid": str(line.slot),
            "name": line.display_name,
            "num": line.sip_user,
            "sipAuthId": line.sip_auth_user,
            "sipPw": line.sip_password,
            "pin": line.pin,
        }
    assert {records[str(line.slot)]["name"] for line in ctx.lines} == set(NAMES)


def test_render_free_slots_remove_users(make_context: ContextFactory, templates: Templates) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=3)
    ctx = replace(ctx, lines=(ctx.lines[0], ctx.lines[2]))
    records = users(ADAPTER.render(ctx, templates)["user_common.cfg"])
    blank = {"name": "", "num": "", "sipAuthId": "", "sipPw": "", "pin": ""}
    assert records["2"] == {"uid": "2", **blank}
    assert records["512"] == {"uid": "512", **blank}
    assert records["3"]["num"] == ctx.lines[1].sip_user


def test_render_user_without_pin_is_not_provisioned(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=2)
    ctx = replace(ctx, lines=(ctx.lines[0], replace(ctx.lines[1], pin=None)))
    body = ADAPTER.render(ctx, templates)["user_common.cfg"]
    records = users(body)
    assert records["2"]["num"] == ""
    assert ctx.lines[1].sip_password.encode() not in body
    assert records["1"]["pin"] == ctx.lines[0].pin


def test_render_control_characters_cannot_break_lines(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], lines=1)
    evil = replace(ctx.lines[0], display_name='Eve\n<DeletePPUser uid="2"/>\x00')
    records = users(ADAPTER.render(replace(ctx, lines=(evil,)), templates)["user_common.cfg"])
    assert records["1"]["name"] == 'Eve<DeletePPUser uid="2"/>'


def test_render_too_many_lines(make_context: ContextFactory, templates: Templates) -> None:
    model = ADAPTER.models["SIP-DECT"]
    records = users(ADAPTER.render(make_context(model, lines=model.slots), templates)[USER])
    assert all(record["num"] for record in records.values())
    with pytest.raises(RenderError):
        ADAPTER.render(make_context(model, lines=model.slots + 1), templates)


def test_render_rejects_slot_beyond_capacity(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], lines=1)
    with pytest.raises(RenderError):
        ADAPTER.render(replace(ctx, lines=(replace(ctx.lines[0], slot=513),)), templates)
    with pytest.raises(RenderError):
        ADAPTER.render(replace(ctx, lines=(replace(ctx.lines[0], slot=0),)), templates)


def test_render_is_deterministic(make_context: ContextFactory, templates: Templates) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=4)
    reordered = replace(ctx, lines=tuple(reversed(ctx.lines)))
    assert ADAPTER.render(ctx, templates) == ADAPTER.render(ctx, templates)
    assert ADAPTER.render(ctx, templates) == ADAPTER.render(reordered, templates)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_sip_event(model: ModelInfo) -> None:
    assert ADAPTER.sip_event(model) is None

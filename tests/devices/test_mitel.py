"""Mitel SIP-DECT (OMM) adapter: request identification, the OMM's configuration files, the push.

Conformance with docs/vendors/mitel.md: the PIN only in the PP user's ``pin``, the login id
``addId`` = extension, the access code only in ``SetDECTAuthCode``, no SIP NOTIFY and no restart.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from provisioner.devices.base import ModelInfo, RenderContext, RenderError, Site, Templates
from provisioner.devices.mitel import ADAPTER, omm_time_zone
from provisioner.notify import ApiAccess
from tests.devices.conftest import (
    NAMES,
    UA_GIGASET,
    UA_POLY,
    ContextFactory,
    assert_no_template_syntax,
    parse_xml,
)
from tests.test_omaxi import (  # noqa: F401 -- fixtures used by name
    PASSWORD,
    USER,
    Certificate,
    FakeOmm,
    certificate,
    omm,
    omm_key,
)

MAC = "003042aabbcc"  # an RFP-hosted OMM (DeTeWe/Aastra/Mitel RFPs use 00:30:42)
DEVICE_FILE = "003042AABBCC.cfg"
ACCESS_CODE = "5183"

# The User-Agent of an OMM or RFP fetching its configuration files is in no Mitel document and no
# published capture that was found (docs/vendors/mitel.md, "Requests"): these are placeholders,
# not recordings. Requests are recognised by path; the MAC comes from the path, and the model is
# what the OMM was registered as, since no User-Agent names one.
UA_EMPTY = ""
UA_CURL = "curl/7.29.0"  # placeholder: a generic HTTP client
UA_OMM = "SIP-DECT OMM 8.3SP1"  # placeholder: one naming the product
UA_YEALINK = "Yealink SIP-T54W 96.86.0.70 80:5e:c0:aa:bb:cc"

#: Every request form the OMM's documented file names allow (System Manual R6.1, 7.8.1:
#: ``ipdect.cfg`` and ``<mac>.cfg`` under the configuration file URL; our ``<MAC>.cfg`` moves that
#: URL into the folder ``<mac>/``), with the placeholder User-Agents: path, User-Agent, file, MAC.
REQUESTS = [
    pytest.param("ipdect.cfg", UA_EMPTY, "ipdect.cfg", None, id="common-no-ua"),
    pytest.param("IPDECT.CFG", UA_OMM, "ipdect.cfg", None, id="common-upper-case"),
    pytest.param("003042aabbcc/ipdect.cfg", UA_CURL, "ipdect.cfg", MAC, id="common-in-folder"),
    pytest.param("003042AABBCC.cfg", UA_EMPTY, DEVICE_FILE, MAC, id="device-upper-mac"),
    pytest.param("003042aabbcc.cfg", UA_CURL, DEVICE_FILE, MAC, id="device-lower-mac"),
    pytest.param("/003042AaBbCc.cfg", UA_OMM, DEVICE_FILE, MAC, id="device-mixed-case"),
    pytest.param(
        "003042aabbcc/003042AABBCC.cfg", UA_EMPTY, DEVICE_FILE, MAC, id="device-in-folder"
    ),
    pytest.param(
        "00:30:42:aa:bb:cc/003042AABBCC.cfg", UA_OMM, DEVICE_FILE, MAC, id="folder-with-colons"
    ),
    pytest.param(
        "00-30-42-AA-BB-CC/ipdect.cfg", UA_CURL, "ipdect.cfg", MAC, id="folder-with-hyphens"
    ),
]

MODELS = sorted(ADAPTER.models.values(), key=lambda m: m.name)
BY_NAME = [pytest.param(model, id=model.name) for model in MODELS]
USER_ATTRIBUTES = ["uid", "name", "num", "addId", "sipAuthId", "sipPw", "pin", "fixedSipPort"]
BLANK = {"name": "", "num": "", "addId": "", "sipAuthId": "", "sipPw": "", "pin": ""}


def commands(body: bytes) -> list[ET.Element]:
    """The OM AXI commands of a configuration file: one XML element per line."""
    text = body.decode("utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    elements = [parse_xml(line) for line in lines]
    # The same content also parses as one document, whatever the line breaks.
    assert len(parse_xml(f"<file>{text}</file>")) == len(elements)
    return elements


def by_tag(body: bytes) -> dict[str, list[ET.Element]]:
    found: dict[str, list[ET.Element]] = {}
    for command in commands(body):
        found.setdefault(command.tag, []).append(command)
    return found


def users(body: bytes) -> dict[str, dict[str, str]]:
    """The ``CreatePPUser`` records of a file by uid, each checked for the manual's shape."""
    result: dict[str, dict[str, str]] = {}
    for command in by_tag(body)["CreatePPUser"]:
        assert command.attrib == {"plainText": "1", "replaceData": "1"}
        (user,) = list(command)
        assert user.tag == "user"
        assert list(user.attrib) == USER_ATTRIBUTES
        assert user.attrib["fixedSipPort"] == "0"
        result[user.attrib["uid"]] = {k: v for k, v in user.attrib.items() if k != "fixedSipPort"}
    return result


def render(ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
    return ADAPTER.render(ctx, templates)


def with_pins(ctx: RenderContext, *pins: str | None) -> RenderContext:
    return replace(
        ctx, lines=tuple(replace(line, pin=pin) for line, pin in zip(ctx.lines, pins, strict=True))
    )


# --- models and the adapter's declarations ------------------------------------------------------


def test_models() -> None:
    # The OMM, by the RFP that hosts it: 3rd generation (iprfp3G), 4th generation (iprfp4G).
    assert [(m.name, m.kind, m.slots, m.family) for m in MODELS] == [
        ("RFP 35", "dect", 512, "iprfp3G"),
        ("RFP 36", "dect", 512, "iprfp3G"),
        ("RFP 37", "dect", 512, "iprfp3G"),
        ("RFP 43", "dect", 512, "iprfp3G"),
        ("RFP 44", "dect", 512, "iprfp4G"),
        ("RFP 45", "dect", 512, "iprfp4G"),
        ("RFP 47", "dect", 512, "iprfp4G"),
        ("RFP 48", "dect", 512, "iprfp4G"),
        ("SIP-DECT", "dect", 512, ""),
    ]
    assert ADAPTER.model("sip-dect") is ADAPTER.models["SIP-DECT"]
    assert ADAPTER.vendor == "mitel"
    assert ADAPTER.user_fields == {"sip_credentials", "display_name", "extension"}


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("RFP35", "RFP 35"),
        ("rfp 35 ip", "RFP 35"),
        ("RFP-43-WLAN", "RFP 43"),
        ("RFP 47 IP DRC", "RFP 47"),
        ("Mitel RFP 48 WLAN", "RFP 48"),
        ("RFP L35 IP", "RFP 35"),  # an L-RFP is the same hardware with a bundled licence
        ("Aastra RFP L43 WLAN", "RFP 43"),
        ("SIP DECT", "SIP-DECT"),
        ("Mitel SIP-DECT OMM", "SIP-DECT"),
        ("omm", "SIP-DECT"),
    ],
)
def test_models_in_the_vendors_spelling(name: str, model: str) -> None:
    assert ADAPTER.model(name) is ADAPTER.models[model]
    assert ADAPTER.resolve_model(name) == (ADAPTER.models[model], True)


@pytest.mark.parametrize(
    ("name", "model", "family"),
    [
        ("RFP SL43", "RFP SL43", "iprfp3G"),  # single-cell variants of the 3rd generation
        ("RFP SL36 IP", "RFP SL36", "iprfp3G"),
        ("RFP 49", "RFP 49", ""),  # a later RFP: same files, software image not known
    ],
)
def test_generic_model_is_an_unlisted_rfp_that_hosts_the_omm(
    name: str, model: str, family: str
) -> None:
    generic = ADAPTER.generic_model(name)
    assert generic == ModelInfo(model, "dect", 512, family=family)
    assert ADAPTER.resolve_model(name) == (generic, False)


@pytest.mark.parametrize(
    "name",
    [
        # 2nd generation: no internal flash, no OMM since SIP-DECT 3.0, dropped after 8.0.
        "RFP 32",
        "RFP 34 US",
        "RFP 42 WLAN",
        "RFP L32",
        # 1st generation: OpenCom only.
        "RFP 31",
        "RFP 33",
        "RFP 41",
        # An OMM on a Linux server: whether it applies configuration files is undocumented.
        "Linux OMM",
        "SIP-DECT server",
        "T54W",
        "",
    ],
)
def test_no_generic_model_for_what_cannot_apply_these_files(name: str) -> None:
    assert ADAPTER.generic_model(name) is None
    assert ADAPTER.resolve_model(name) is None


@pytest.mark.parametrize("model", BY_NAME)
def test_push_is_om_axi_without_restart(model: ModelInfo) -> None:
    # No SIP NOTIFY reaches an OMM; SetPPUser changes a user in the running OMM.
    assert ADAPTER.sip_event(model) is None
    assert ADAPTER.needs_maintenance_window(model) is False


@pytest.mark.parametrize("model", BY_NAME)
def test_pin_key_is_the_pp_users_login_pin(model: ModelInfo) -> None:
    key = ADAPTER.pin_key(model)
    assert key is not None
    assert "pin" in key.name
    assert "CreatePPUser" in key.name
    assert key.min_digits <= 4
    assert key.max_digits >= 12  # no shorter maximum is documented (docs/vendors/mitel.md)
    assert "p. 247" in key.source


@pytest.mark.parametrize("model", BY_NAME)
def test_access_code_key_is_the_dect_authentication_code(model: ModelInfo) -> None:
    key = ADAPTER.access_code_key(model)
    assert key is not None
    assert key.name == "SetDECTAuthCode ac"
    assert key.digits == 4
    pin_key = ADAPTER.pin_key(model)
    assert pin_key is not None
    assert key.name != pin_key.name


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


@pytest.mark.parametrize(
    ("path", "file", "shared"),
    [
        ("003042aabbcc/ipdect.cfg", "ipdect.cfg", True),
        ("003042AABBCC/IPDECT.cfg", "ipdect.cfg", True),
        ("00:30:42:aa:bb:cc/003042AABBCC.cfg", DEVICE_FILE, False),
        ("003042aabbcc/003042AABBCC.cfg", DEVICE_FILE, False),
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
    assert (req.file, req.mac, req.user_agent_mac) == (DEVICE_FILE, MAC, None)
    assert not req.shared


@pytest.mark.parametrize(("path", "user_agent", "file", "mac"), REQUESTS)
def test_identify_every_request_form(
    path: str, user_agent: str, file: str, mac: str | None
) -> None:
    req = ADAPTER.identify(path, user_agent)
    assert req is not None
    assert (req.file, req.mac, req.user_agent_mac, req.model) == (file, mac, None, None)
    assert req.shared is (file == "ipdect.cfg")


@pytest.mark.parametrize(
    "user_agent",
    [
        "SIP-DECT OMM" + " x" * 4096,  # 8 KB
        "SIP-DECT\x00OMM",
        "SIP-DECT OMM\r\nX-Injected: 1",
        "Mitel\x85",
    ],
    ids=["8kb", "nul", "crlf", "c1-control"],
)
def test_hostile_user_agents_count_as_absent(user_agent: str) -> None:
    # Judged by the path alone: the RFP prefix still makes it Mitel's, a Yealink MAC does not.
    req = ADAPTER.identify("003042AABBCC.cfg", user_agent)
    assert req is not None
    assert (req.mac, req.model) == (MAC, None)
    assert ADAPTER.identify("805ec0aabbcc.cfg", user_agent) is None


@pytest.mark.parametrize(
    "user_agent",
    [UA_YEALINK, "Gigaset N870 IP PRO/83.V2.11.0;003042AABBCC", "Grandstream Model HW GXP2170"],
)
def test_another_vendors_user_agent_on_an_omm_file_name_is_refused(user_agent: str) -> None:
    assert ADAPTER.identify("003042AABBCC.cfg", user_agent) is None
    assert ADAPTER.identify("003042aabbcc/ipdect.cfg", user_agent) is None


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
        # The External User Data Provisioning files are not served (docs/vendors/mitel.md).
        "user_common.cfg",
        "003042aabbcc/user_common.cfg",
    ],
)
def test_identify_foreign_paths(path: str) -> None:
    assert ADAPTER.identify(path, UA_EMPTY) is None


# --- render: every file --------------------------------------------------------------------


@pytest.mark.parametrize("model", BY_NAME)
def test_render_files_parse(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    files = render(make_context(model, mac=MAC, lines=4, access_code=ACCESS_CODE), templates)
    assert set(files) == {"ipdect.cfg", DEVICE_FILE}
    assert_no_template_syntax(files)
    for name, body in files.items():
        text = body.decode("utf-8")
        assert not text.startswith("<?xml"), name
        assert "\x00" not in text
        assert commands(body), name


def test_every_model_gets_the_same_files(
    make_context: ContextFactory, templates: Templates
) -> None:
    # The models differ in name and software image only: the OMM applies the same commands.
    generic = ADAPTER.generic_model("RFP SL43")
    assert generic is not None
    renders = {
        tuple(
            sorted(
                render(
                    make_context(m, mac=MAC, lines=3, access_code=ACCESS_CODE), templates
                ).items()
            )
        )
        for m in [*MODELS, generic]
    }
    assert len(renders) == 1


def test_identify_matches_render_keys(make_context: ContextFactory, templates: Templates) -> None:
    files = render(make_context(ADAPTER.models["SIP-DECT"], mac=MAC), templates)
    for path in ("ipdect.cfg", "003042aabbcc.cfg", "003042aabbcc/ipdect.cfg", f"{MAC}/{MAC}.cfg"):
        req = ADAPTER.identify(path, UA_EMPTY)
        assert req is not None
        assert req.file in files


def test_render_is_deterministic(make_context: ContextFactory, templates: Templates) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=4, access_code=ACCESS_CODE)
    reordered = replace(ctx, lines=tuple(reversed(ctx.lines)))
    assert render(ctx, templates) == render(ctx, templates)
    assert render(ctx, templates) == render(reordered, templates)


# --- ipdect.cfg ----------------------------------------------------------------------------------


def test_render_common_file(make_context: ContextFactory, templates: Templates) -> None:
    site = Site(
        registrar_host="sip.example.org",
        registrar_port=5061,
        transport="tls",
        timezone="Europe/Vienna",
        ntp_server="ntp.example.org",
    )
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, site=site)
    found = {c.tag: c.attrib for c in commands(render(ctx, templates)["ipdect.cfg"])}
    assert found == {
        "SetBasicSIP": {
            "transportProt": "TLS",
            "proxyServer": "sip.example.org",
            "proxyPort": "5061",
            "regServer": "sip.example.org",
            "regPort": "5061",
        },
        "SetNTPServer": {"ntpServerName1": "ntp.example.org"},
        "SetTimeZone": {"id": "CET"},
        # Users log in at shared handsets with addId (the extension) and the PIN.
        "SetPPLoginVariant": {"login": "ID"},
    }


@pytest.mark.parametrize(("transport", "value"), [("udp", "UDP"), ("tcp", "TCP"), ("tls", "TLS")])
def test_render_transport(
    transport: str, value: str, make_context: ContextFactory, templates: Templates
) -> None:
    site = Site(registrar_host="pbx.example.net", transport=transport)  # type: ignore[arg-type]
    ctx = make_context(ADAPTER.models["SIP-DECT"], site=site)
    (basic,) = by_tag(render(ctx, templates)["ipdect.cfg"])["SetBasicSIP"]
    assert basic.attrib["transportProt"] == value


@pytest.mark.parametrize(
    ("zone", "omm_id"),
    [
        ("Europe/Berlin", "CET"),
        ("Europe/Vienna", "CET"),
        ("Europe/Paris", "CET"),
        ("Europe/Zurich", "CET"),
        # No OMM id is known for these: the OMM keeps the zone set on it.
        ("Europe/London", None),
        ("Europe/Helsinki", None),
        ("America/New_York", None),
        ("UTC", None),
        ("Mars/Olympus_Mons", None),
        ("../../etc/passwd", None),
    ],
)
def test_time_zone_is_an_omm_id_or_left_alone(
    zone: str, omm_id: str | None, make_context: ContextFactory, templates: Templates
) -> None:
    assert omm_time_zone(zone) == omm_id
    site = Site(registrar_host="pbx.example.net", timezone=zone)
    ctx = make_context(ADAPTER.models["SIP-DECT"], site=site)
    found = by_tag(render(ctx, templates)["ipdect.cfg"])
    if omm_id is None:
        assert "SetTimeZone" not in found
    else:
        assert [c.attrib for c in found["SetTimeZone"]] == [{"id": omm_id}]


def test_render_common_file_carries_no_secret(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=3, access_code=ACCESS_CODE)
    text = render(ctx, templates)["ipdect.cfg"].decode()
    assert "Pr0v" not in text
    assert "Secret" not in text
    assert ACCESS_CODE not in text
    assert ctx.device.mac not in text
    for line in ctx.lines:
        assert line.pin is not None
        assert line.pin not in text
        assert line.sip_user not in text


# --- <MAC>.cfg: where the OMM fetches next, the access code, the users -----------------------


def test_render_device_file_config_url(make_context: ContextFactory, templates: Templates) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC)
    ctx = replace(ctx, provisioning_url="https://prov.example.net:8443/provisioning/")
    found = by_tag(render(ctx, templates)[DEVICE_FILE])
    # The users are in this file: no External User Data Provisioning server (user_common.cfg).
    (user_server,) = found["SetUserDataServer"]
    assert user_server.attrib == {}
    assert [url.attrib for url in user_server] == [{"enable": "0"}]
    (config_url,) = found["SetConfigURL"]
    assert config_url.attrib == {"plainText": "1"}
    (url,) = list(config_url)
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
    req = ADAPTER.identify(f"{MAC}/{DEVICE_FILE}", UA_EMPTY)
    assert req is not None
    assert req.mac == ctx.device.mac


def test_render_device_file_default_port(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC)
    ctx = replace(ctx, provisioning_url="http://prov.example.net/")
    (config_url,) = by_tag(render(ctx, templates)[DEVICE_FILE])["SetConfigURL"]
    (url,) = list(config_url)
    assert (url.attrib["protocol"], url.attrib["port"], url.attrib["path"]) == (
        "HTTP",
        "0",
        "/003042aabbcc",
    )


@pytest.mark.parametrize("model", BY_NAME)
def test_access_code_only_in_set_dect_auth_code(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(model, mac=MAC, lines=3, access_code=ACCESS_CODE)
    files = render(ctx, templates)
    found = by_tag(files[DEVICE_FILE])
    assert [c.attrib for c in found["SetDECTAuthCode"]] == [{"ac": ACCESS_CODE}]
    records = users(files[DEVICE_FILE])
    for record in records.values():
        assert ACCESS_CODE not in record.values()
    assert ACCESS_CODE.encode() not in files["ipdect.cfg"]


@pytest.mark.parametrize("model", BY_NAME)
def test_access_code_is_not_the_pin_nor_derived_from_it(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    # The code written is the system's own, whatever the users' PINs are ...
    ctx = make_context(model, mac=MAC, lines=2, access_code=ACCESS_CODE)
    for pins in (("4829", "4830"), ("000000000000", "999999999999"), (ACCESS_CODE, "1234")):
        (auth,) = by_tag(render(with_pins(ctx, *pins), templates)[DEVICE_FILE])["SetDECTAuthCode"]
        assert auth.attrib == {"ac": ACCESS_CODE}
    # ... and the PIN never reaches SetDECTAuthCode, even when the system has no code yet.
    (auth,) = by_tag(render(ctx, templates)[DEVICE_FILE])["SetDECTAuthCode"]
    for line in ctx.lines:
        assert line.pin is not None
        assert line.pin != auth.attrib["ac"]
    assert "SetDECTAuthCode" not in by_tag(
        render(replace(ctx, access_code=None), templates)[DEVICE_FILE]
    )


def test_render_users(make_context: ContextFactory, templates: Templates) -> None:
    model = ADAPTER.models["SIP-DECT"]
    ctx = make_context(model, mac=MAC, lines=4)
    records = users(render(ctx, templates)[DEVICE_FILE])

    assert list(records) == [str(uid) for uid in range(1, model.slots + 1)]
    for line in ctx.lines:
        assert records[str(line.slot)] == {
            "uid": str(line.slot),
            "name": line.display_name,
            "num": line.sip_user,
            "addId": line.extension,
            "sipAuthId": line.sip_auth_user,
            "sipPw": line.sip_password,
            "pin": line.pin,
        }
    assert {records[str(line.slot)]["name"] for line in ctx.lines} == set(NAMES)


def test_login_id_is_the_extension_not_the_sip_account(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=1)
    account = replace(ctx.lines[0], sip_user="201-003042aabbcc-1", sip_auth_user="201-aabbcc-1")
    record = users(render(replace(ctx, lines=(account,)), templates)[DEVICE_FILE])["1"]
    assert (record["addId"], record["num"], record["sipAuthId"]) == (
        "201",
        "201-003042aabbcc-1",
        "201-aabbcc-1",
    )


def test_one_extension_in_two_slots_logs_in_at_the_first(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=3)
    twice = replace(ctx.lines[2], extension=ctx.lines[0].extension)
    records = users(
        render(replace(ctx, lines=(ctx.lines[0], ctx.lines[1], twice)), templates)[DEVICE_FILE]
    )
    assert records["1"]["addId"] == ctx.lines[0].extension
    assert records["2"]["addId"] == ctx.lines[1].extension
    assert records["3"]["addId"] == ""
    assert records["3"]["num"] == twice.sip_user


def test_render_free_slots_remove_users(make_context: ContextFactory, templates: Templates) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=3)
    ctx = replace(ctx, lines=(ctx.lines[0], ctx.lines[2]))
    records = users(render(ctx, templates)[DEVICE_FILE])
    assert records["2"] == {"uid": "2", **BLANK}
    assert records["512"] == {"uid": "512", **BLANK}
    assert records["3"]["num"] == ctx.lines[1].sip_user


def test_render_user_without_pin_is_not_provisioned(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = with_pins(make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=2), "482917", None)
    body = render(ctx, templates)[DEVICE_FILE]
    records = users(body)
    assert records["2"] == {"uid": "2", **BLANK}
    assert ctx.lines[1].sip_password.encode() not in body
    assert records["1"]["pin"] == "482917"


# --- the PIN: only in the PP user's pin, any policy-valid length -------------------------------


@pytest.mark.parametrize("model", BY_NAME)
@pytest.mark.parametrize("pin", ["4829", "482917", "48291736", "482917360514"])
def test_pin_only_in_the_user_pin(
    model: ModelInfo, pin: str, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(model, mac=MAC, lines=1, access_code=ACCESS_CODE)
    ctx = with_pins(ctx, pin)
    files = render(ctx, templates)
    assert pin.encode() not in files["ipdect.cfg"]
    records = users(files[DEVICE_FILE])
    assert records["1"]["pin"] == pin
    assert [key for key, value in records["1"].items() if pin in value] == ["pin"]
    for command in commands(files[DEVICE_FILE]):
        if command.tag != "CreatePPUser":
            assert pin not in ET.tostring(command, encoding="unicode")


@pytest.mark.parametrize("model", BY_NAME)
def test_shortest_and_longest_policy_pins_render(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    key = ADAPTER.pin_key(model)
    assert key is not None
    ctx = make_context(model, mac=MAC, lines=2, access_code=ACCESS_CODE)
    for shortest, longest in (("0000", "000000000000"), ("9371", "937104826153")):
        assert key.min_digits <= len(shortest)
        assert len(longest) <= key.max_digits
        records = users(render(with_pins(ctx, shortest, longest), templates)[DEVICE_FILE])
        assert (records["1"]["pin"], records["2"]["pin"]) == (shortest, longest)


# --- robustness --------------------------------------------------------------------------------


def test_render_control_characters_cannot_break_lines(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=1)
    evil = replace(ctx.lines[0], display_name='Eve\n<DeletePPUser uid="2"/>\x00')
    records = users(render(replace(ctx, lines=(evil,)), templates)[DEVICE_FILE])
    assert records["1"]["name"] == 'Eve<DeletePPUser uid="2"/>'


def test_render_too_many_lines(make_context: ContextFactory, templates: Templates) -> None:
    model = ADAPTER.models["SIP-DECT"]
    records = users(render(make_context(model, mac=MAC, lines=model.slots), templates)[DEVICE_FILE])
    assert all(record["num"] for record in records.values())
    with pytest.raises(RenderError):
        render(make_context(model, lines=model.slots + 1), templates)


def test_render_rejects_slot_beyond_capacity(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], lines=1)
    with pytest.raises(RenderError):
        render(replace(ctx, lines=(replace(ctx.lines[0], slot=513),)), templates)
    with pytest.raises(RenderError):
        render(replace(ctx, lines=(replace(ctx.lines[0], slot=0),)), templates)


# --- the push over OM AXI ------------------------------------------------------------------------


async def test_push_sends_what_the_file_sets(
    omm: FakeOmm,  # noqa: F811 -- the imported fixture
    certificate: Certificate,  # noqa: F811
    make_context: ContextFactory,
) -> None:
    ctx = make_context(ADAPTER.models["SIP-DECT"], mac=MAC, lines=3)
    ctx = with_pins(ctx, "4829", "482917360514", None)
    access = ApiAccess("127.0.0.1", omm.port, USER, PASSWORD, certificate.fingerprint)

    result = await ADAPTER.push(ctx, access)

    assert result.startswith("OM AXI: 2 user(s) updated")
    sent = [request.find("user") for request in omm.named("SetPPUser")]
    assert sorted(user.get("uid", "") for user in sent if user is not None) == ["1", "2"]
    # The user without a PIN is not pushed (the file blanks that slot).
    for line in ctx.lines[:2]:
        stored = omm.users[line.slot]
        assert stored["num"] == line.sip_user
        assert stored["addId"] == line.extension
        assert stored["sipAuthId"] == line.sip_auth_user
        assert stored["sipPw"] == line.sip_password
        assert stored["pin"] == line.pin
        assert stored["name"] == line.display_name

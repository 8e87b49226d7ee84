"""Grandstream adapter: request identification, rendered files and their conformance.

Key numbers and meanings are checked against docs/vendors/grandstream.md (Grandstream's
configuration templates for GXP2130/2135/2140/2160/2170 1.0.11.16 and GRP261x 1.0.5.15).
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

import pytest

from provisioner.devices.base import (
    Line,
    ModelInfo,
    RenderContext,
    RenderError,
    SipTransport,
    Site,
    Templates,
)
from provisioner.devices.grandstream import ACCOUNT_KEYS, ADAPTER, MODELS
from tests.devices.conftest import (
    UA_GIGASET,
    UA_POLY,
    UA_SNOM,
    UA_YEALINK,
    ContextFactory,
    assert_no_template_syntax,
    make_line,
    parse_xml,
)

MAC = "000b82aabbcc"

# User-Agents of Grandstream's HTTP requests. The first is the form recorded in VENDORS.md and the
# adapter brief; the others apply the field variants VENDORS.md lists (MAC with colons or in upper
# case, double spaces, no MAC) to real model/firmware pairs.
UA_GXP2170 = "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82aabbcc"
UA_GRP2614 = "Grandstream Model HW GRP2614 SW 1.0.5.33 DevId c074ad112233"
UA_COLONS_UPPER = "Grandstream Model HW GXP2140 SW 1.0.11.3 DevId 00:0B:82:AA:BB:CC"
UA_DOUBLE_SPACES = "Grandstream  Model HW  GRP2616  SW 1.0.5.33  DevId  000B82AABBCC"
UA_NO_MAC = "Grandstream Model HW GXP2160 SW 1.0.7.13"

# Accounts whose P-values are known; GRP2624/GRP2634 have 8 accounts but only 1..6 are writable.
WRITABLE = len(ACCOUNT_KEYS)

# The documented P-values of accounts 1..6 (Grandstream GXP2130/2135/2140/2160/2170 configuration
# template 1.0.11.16, "Account N/General Settings" and ".../SIP Settings/Basic Settings"):
# active, account name, SIP server, SIP user ID, authenticate ID, password, name, transport,
# Allow SIP Reset.
DOCUMENTED_ACCOUNT_KEYS = [
    (271, 270, 47, 35, 36, 34, 3, 130, 26015),
    (401, 417, 402, 404, 405, 406, 407, 448, 26115),
    (501, 517, 502, 504, 505, 506, 507, 548, 26215),
    (601, 617, 602, 604, 605, 606, 607, 648, 26315),
    (1701, 1717, 1702, 1704, 1705, 1706, 1707, 1748, 26415),
    (1801, 1817, 1802, 1804, 1805, 1806, 1807, 1848, 26515),
]
# "Allow SIP Reset" of any account: 1 lets a SIP NOTIFY factory-reset the phone.
SIP_RESET = re.compile(r"P26[0-9]15")
SIP_RESET_KEYS = {f"P{keys.sip_reset}" for keys in ACCOUNT_KEYS}


def user_agent(model: ModelInfo, mac: str = MAC) -> str:
    return f"Grandstream Model HW {model.name} SW 1.0.11.3 DevId {mac}"


def render(make_context: ContextFactory, model: ModelInfo, **kwargs: object) -> dict[str, bytes]:
    ctx = make_context(model, mac=MAC, **kwargs)
    return ADAPTER.render(ctx, Templates("grandstream"))


def pvalues(data: bytes) -> tuple[ET.Element, dict[str, str]]:
    """The parsed file and its P-values (empty elements as ""); fails on a repeated P-value."""
    root = parse_xml(data)
    assert root.tag == "gs_provision"
    assert root.get("version") == "1"
    config = root.find("config")
    assert config is not None
    assert config.get("version") == "1"
    values: dict[str, str] = {}
    for element in config:
        assert element.tag.startswith("P"), element.tag
        assert element.tag not in values, f"{element.tag} set twice"
        values[element.tag] = element.text or ""
    return root, values


# --- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slots"),
    [
        ("GXP2170", 6),
        ("gxp2160", 6),
        ("GXP2140", 4),
        ("GXP2135", 4),
        ("GRP2612", 2),
        ("GRP2614", 4),
        ("GRP2615", 5),
        ("GRP2616", 6),
        ("GRP2624", 8),
        ("GRP2634", 8),
    ],
)
def test_models(name: str, slots: int) -> None:
    model = ADAPTER.model(name)
    assert model is not None
    assert (model.kind, model.slots, model.family) == ("desk", slots, name.lower())


def test_user_fields() -> None:
    """The PIN is not a user field: where it goes is declared by ``pin_key``."""
    assert ADAPTER.user_fields == {"display_name", "language", "sip_credentials"}


def test_account_keys_are_the_documented_ones() -> None:
    assert [dataclasses.astuple(keys) for keys in ACCOUNT_KEYS] == DOCUMENTED_ACCOUNT_KEYS


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_push_never_reboots(model: ModelInfo) -> None:
    """``resync`` re-provisions without a reboot; no push waits for a maintenance window."""
    assert ADAPTER.sip_event(model) == "resync"
    assert not ADAPTER.needs_maintenance_window(model)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_pin_key(model: ModelInfo) -> None:
    key = ADAPTER.pin_key(model)
    assert key is not None
    assert key.name == "P1383"
    assert key.min_digits <= 4 <= 12 <= key.max_digits
    assert "Keypad Lock" in key.source


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_no_access_code(model: ModelInfo) -> None:
    """Desk phones: no DECT access code is declared."""
    assert ADAPTER.access_code_key(model) is None


# --- identify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_identify_every_rendered_file(make_context: ContextFactory, model: ModelInfo) -> None:
    files = render(make_context, model)
    assert set(files) == {f"cfg{MAC}.xml", f"cfg{model.name.lower()}.xml", "cfg.xml"}
    for name in files:
        request = ADAPTER.identify(name, user_agent(model))
        assert request is not None, name
        assert request.file == name
        assert request.mac == MAC
        assert request.user_agent_mac == MAC
        assert request.model == model.name
        assert request.shared is (name != f"cfg{MAC}.xml")


@pytest.mark.parametrize(
    ("ua", "model", "mac"),
    [
        (UA_GXP2170, "GXP2170", "000b82aabbcc"),
        (UA_GRP2614, "GRP2614", "c074ad112233"),
        (UA_COLONS_UPPER, "GXP2140", "000b82aabbcc"),
        (UA_DOUBLE_SPACES, "GRP2616", "000b82aabbcc"),
        (UA_NO_MAC, "GXP2160", None),
        ("", None, None),
    ],
)
def test_identify_reads_the_user_agent(ua: str, model: str | None, mac: str | None) -> None:
    request = ADAPTER.identify("cfg.xml", ua)
    assert request is not None
    assert (request.model, request.user_agent_mac, request.mac) == (model, mac, mac)


def test_identify_takes_the_mac_from_the_path_first() -> None:
    request = ADAPTER.identify("cfg000B82AABBCC.xml", UA_NO_MAC)
    assert request is not None
    assert (request.file, request.mac, request.user_agent_mac) == (f"cfg{MAC}.xml", MAC, None)
    assert not request.shared


def test_identify_reports_a_mac_mismatch() -> None:
    request = ADAPTER.identify(f"cfg{MAC}.xml", UA_GRP2614)
    assert request is not None
    assert request.mac == MAC
    assert request.user_agent_mac == "c074ad112233"


def test_identify_takes_the_model_of_a_model_file_from_the_path() -> None:
    request = ADAPTER.identify("cfgGRP2614.xml", UA_GXP2170)
    assert request is not None
    assert (request.file, request.model, request.mac) == ("cfggrp2614.xml", "GRP2614", MAC)
    assert request.shared


@pytest.mark.parametrize(
    "path",
    [
        f"cfg{MAC}",  # proprietary binary format: provisioner cannot produce it
        f"cfg{MAC}.bin",
        "cfggxp1625.xml",  # a model this adapter does not know
        "cfg.xml.bak",
        "grandstream/cfg.xml",
        f"../cfg{MAC}.xml",
        "cfg000b82aabbc.xml",
        "",
    ],
)
def test_identify_declines_other_paths(path: str) -> None:
    assert ADAPTER.identify(path, UA_GXP2170) is None


@pytest.mark.parametrize(
    ("path", "ua"),
    [
        ("001565aabbcc.cfg", UA_YEALINK),
        ("y000000000000.boot", UA_YEALINK),
        ("0004f2aabbcc.cfg", UA_POLY),
        ("snomD785-000413922D24.htm", UA_SNOM),
        ("7C2F80E0D605.xml", UA_GIGASET),
        ("cfg.xml", UA_YEALINK),  # the User-Agent names another vendor
        (f"cfg{MAC}.xml", UA_SNOM),
    ],
)
def test_identify_declines_other_vendors(path: str, ua: str) -> None:
    assert ADAPTER.identify(path, ua) is None


# --- render ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_accounts(make_context: ContextFactory, model: ModelInfo) -> None:
    lines = min(model.slots, WRITABLE, 4)
    ctx = make_context(model, mac=MAC, lines=lines)
    root, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert root.findtext("mac") == MAC
    for line in ctx.lines:
        keys = ACCOUNT_KEYS[line.slot - 1]
        assert p[f"P{keys.active}"] == "1"
        assert p[f"P{keys.name}"] == line.display_name
        assert p[f"P{keys.display_name}"] == line.display_name
        assert p[f"P{keys.server}"] == "pbx.example.net:5060"
        assert p[f"P{keys.user}"] == line.sip_user
        assert p[f"P{keys.auth}"] == line.sip_auth_user
        assert p[f"P{keys.password}"] == line.sip_password
        assert p[f"P{keys.transport}"] == "0"
    for keys in ACCOUNT_KEYS[lines : min(model.slots, WRITABLE)]:
        assert p[f"P{keys.active}"] == "0"
        assert p[f"P{keys.user}"] == p[f"P{keys.auth}"] == p[f"P{keys.password}"] == ""
    for keys in ACCOUNT_KEYS[model.slots :]:
        assert f"P{keys.active}" not in p


def test_account_1_uses_the_documented_p_values(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["GXP2170"], mac=MAC, lines=1)
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert (p["P271"], p["P47"], p["P35"], p["P36"]) == (
        "1",
        "pbx.example.net:5060",
        "201",
        "auth201",
    )
    assert (p["P34"], p["P3"], p["P270"]) == ("Sip&Secret<1>x9Q", "Jürgen Müller", "Jürgen Müller")


def test_xml_specials_are_escaped_and_parse_back(make_context: ContextFactory) -> None:
    files = render(make_context, ADAPTER.models["GXP2170"], lines=4)
    text = files[f"cfg{MAC}.xml"].decode("utf-8")
    assert "<P407>Anna &lt;Ops&gt; &amp; Co</P407>" in text
    assert "Sip&amp;Secret&lt;2&gt;x9Q" in text
    _, p = pvalues(files[f"cfg{MAC}.xml"])
    assert p["P507"] == 'Zoë "Z" O\'Neil'
    assert p["P1361"] == "Pr0v&Pass<word>"


def test_control_characters_are_dropped(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["GXP2140"], mac=MAC, lines=1)
    evil = dataclasses.replace(ctx.lines[0], display_name="Eve\x00\x1b\nX")
    ctx = dataclasses.replace(ctx, lines=(evil,))
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert p["P3"] == "EveX"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_provisioning_and_site_settings(make_context: ContextFactory, model: ModelInfo) -> None:
    ctx = make_context(model, mac=MAC)
    files = ADAPTER.render(ctx, Templates("grandstream"))
    _, device = pvalues(files[f"cfg{MAC}.xml"])
    assert device["P1360"] == ctx.provisioning_user
    assert device["P1361"] == ctx.provisioning_password
    for name in (f"cfg{MAC}.xml", f"cfg{model.family}.xml", "cfg.xml"):
        _, p = pvalues(files[name])
        assert p["P212"] == "2"  # https
        assert p["P237"] == "prov.example.net/provisioning"
        assert p["P64"] == "customize"  # "Self-Defined Time Zone": the rule is P246
        assert p["P246"] == "CET-1CEST,M3.5.0,M10.5.0/3"
        assert p["P30"] == "pool.ntp.org"
        assert p["P1362"] == "de"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_shared_files_carry_no_secret(make_context: ContextFactory, model: ModelInfo) -> None:
    ctx = make_context(model, mac=MAC)
    files = ADAPTER.render(ctx, Templates("grandstream"))
    assert files[f"cfg{model.family}.xml"] == files["cfg.xml"]
    root, p = pvalues(files["cfg.xml"])
    assert root.find("mac") is None
    assert "P1360" not in p
    assert "P1361" not in p
    assert "P1382" not in p  # the keypad lock and its PIN are the device's own
    assert "P1383" not in p
    assert not [key for key in p if key in {f"P{k.password}" for k in ACCOUNT_KEYS}]
    text = files["cfg.xml"].decode("utf-8")
    assert ctx.provisioning_user not in text


def all_values(files: dict[str, bytes]) -> list[tuple[str, str, str]]:
    """(file, tag, text) of every element of every rendered file."""
    return [
        (name, element.tag, element.text or "")
        for name, data in files.items()
        for element in parse_xml(data).iter()
    ]


def with_pins(ctx: RenderContext, *pins: str | None) -> RenderContext:
    """``ctx`` with the PIN of line N replaced by ``pins[N - 1]``."""
    lines = tuple(
        dataclasses.replace(line, pin=pin) for line, pin in zip(ctx.lines, pins, strict=True)
    )
    return dataclasses.replace(ctx, lines=lines)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_the_pin_goes_only_into_the_keypad_lock(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    lines = min(model.slots, WRITABLE)
    ctx = make_context(model, mac=MAC, lines=lines)
    pin = ctx.lines[0].pin
    assert pin is not None
    files = ADAPTER.render(ctx, Templates("grandstream"))
    _, p = pvalues(files[f"cfg{MAC}.xml"])
    assert (p["P1382"], p["P1383"]) == ("1", pin)
    carriers = [(name, tag) for name, tag, text in all_values(files) if pin in text]
    assert carriers == [(f"cfg{MAC}.xml", "P1383")]
    # The PINs of the users on other accounts go nowhere: the phone has one keypad lock.
    for line in ctx.lines[1:]:
        assert line.pin is not None
        assert not [text for _, _, text in all_values(files) if line.pin in text]


def test_without_a_pin_the_keypad_lock_is_off_and_emptied(make_context: ContextFactory) -> None:
    """A PIN removed on the server must not stay on the phone."""
    ctx = with_pins(make_context(ADAPTER.models["GXP2170"], mac=MAC, lines=2), None, "5551234")
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert (p["P1382"], p["P1383"]) == ("0", "")


def test_an_empty_account_1_turns_the_keypad_lock_off(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["GXP2170"], mac=MAC, lines=2)
    ctx = dataclasses.replace(ctx, lines=ctx.lines[1:])
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert (p["P1382"], p["P1383"]) == ("0", "")


@pytest.mark.parametrize("pin", ["0000", "0123", "000000000000", "987654321012"])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_shortest_and_longest_pins_render(
    make_context: ContextFactory, model: ModelInfo, pin: str
) -> None:
    """Policy-valid PINs (4..12 digits, leading zeros kept) render unchanged on every model."""
    ctx = with_pins(make_context(model, mac=MAC, lines=1), pin)
    key = ADAPTER.pin_key(model)
    assert key is not None
    assert key.min_digits <= len(pin) <= key.max_digits
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert p[key.name] == pin


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_an_access_code_goes_nowhere(make_context: ContextFactory, model: ModelInfo) -> None:
    """Desk phones have no access code; one handed in anyway is neither written nor the PIN."""
    ctx = with_pins(make_context(model, mac=MAC, lines=1, access_code="7315"), "482917")
    files = ADAPTER.render(ctx, Templates("grandstream"))
    assert not [tag for _, tag, text in all_values(files) if "7315" in text]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_sip_reset_is_off_in_every_file(make_context: ContextFactory, model: ModelInfo) -> None:
    """No file lets a NOTIFY factory-reset the phone: "Allow SIP Reset" is 0 on every account."""
    files = ADAPTER.render(
        make_context(model, mac=MAC, lines=min(model.slots, WRITABLE)), Templates("grandstream")
    )
    for name, data in files.items():
        _, p = pvalues(data)
        assert {key: p[key] for key in SIP_RESET_KEYS} == dict.fromkeys(SIP_RESET_KEYS, "0"), name
    enabled = [
        (name, tag, text)
        for name, tag, text in all_values(files)
        if SIP_RESET.fullmatch(tag) and text != "0"
    ]
    assert enabled == []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_notify_authentication_stays_on(make_context: ContextFactory, model: ModelInfo) -> None:
    """P4428 "Disable SIP NOTIFY Authentication" = 0: the phone challenges every NOTIFY."""
    files = ADAPTER.render(make_context(model, mac=MAC), Templates("grandstream"))
    for name, data in files.items():
        assert pvalues(data)[1]["P4428"] == "0", name


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_file_parses(make_context: ContextFactory, model: ModelInfo) -> None:
    files = render(make_context, model, lines=min(model.slots, WRITABLE))
    for data in files.values():
        _, values = pvalues(data)
        assert values
        assert all(re.fullmatch(r"P[0-9]+", tag) for tag in values)


@pytest.mark.parametrize(
    ("url", "via", "path"),
    [
        ("http://10.0.0.5/prov/", "1", "10.0.0.5/prov"),
        ("https://prov.example.net:8443/a/b/", "2", "prov.example.net:8443/a/b"),
        ("tftp://10.0.0.5/", "0", "10.0.0.5"),
        ("https://user:secret@prov.example.net/p/", "2", "prov.example.net/p"),
    ],
)
def test_config_server(make_context: ContextFactory, url: str, via: str, path: str) -> None:
    ctx = dataclasses.replace(
        make_context(ADAPTER.models["GXP2170"], mac=MAC), provisioning_url=url
    )
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))["cfg.xml"])
    assert (p["P212"], p["P237"]) == (via, path)


def test_config_server_needs_a_protocol_the_phone_speaks(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["GXP2170"], mac=MAC)
    with pytest.raises(RenderError):
        ADAPTER.render(
            dataclasses.replace(ctx, provisioning_url="ftps://prov.example.net/"),
            Templates("grandstream"),
        )


@pytest.mark.parametrize(("transport", "code"), [("udp", "0"), ("tcp", "1"), ("tls", "2")])
def test_transport(make_context: ContextFactory, transport: SipTransport, code: str) -> None:
    site = Site(registrar_host="pbx.example.net", registrar_port=5061, transport=transport)
    _, p = pvalues(render(make_context, ADAPTER.models["GXP2170"], site=site)[f"cfg{MAC}.xml"])
    assert (p["P130"], p["P448"]) == (code, code)
    assert p["P47"] == "pbx.example.net:5061"


@pytest.mark.parametrize(
    ("zone", "rule"),
    [
        ("America/New_York", "EST5EDT,M3.2.0,M11.1.0"),
        ("Asia/Kolkata", "IST-5:30"),
        ("UTC", "UTC0"),
        ("Asia/Dubai", "STD-4"),  # "<+04>-4": quoted names become alphabetic ones
        ("America/Sao_Paulo", "STD3"),
        ("No/Such_Zone", "CET-1CEST,M3.5.0,M10.5.0/3"),  # the default site zone
        ("../../etc/passwd", "CET-1CEST,M3.5.0,M10.5.0/3"),
    ],
)
def test_time_zone(make_context: ContextFactory, zone: str, rule: str) -> None:
    site = Site(registrar_host="pbx.example.net", timezone=zone)
    _, p = pvalues(render(make_context, ADAPTER.models["GXP2170"], site=site)["cfg.xml"])
    assert p["P246"] == rule


@pytest.mark.parametrize(
    ("code", "p1362"), [("de", "de"), ("cs", "cz"), ("sv", "se"), ("PL", "pl"), ("xx", "en")]
)
def test_display_language(make_context: ContextFactory, code: str, p1362: str) -> None:
    """P1362 takes Grandstream's own codes (``cz`` Czech, ``se`` Swedish); unknown: English."""
    site = Site(registrar_host="pbx.example.net", language=code)
    _, p = pvalues(render(make_context, ADAPTER.models["GXP2170"], site=site)["cfg.xml"])
    assert p["P1362"] == p1362


def test_language_of_line_1_wins_on_the_device(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["GXP2170"], mac=MAC)
    ctx = dataclasses.replace(ctx, lines=(dataclasses.replace(ctx.lines[0], language="EN"),))
    files = ADAPTER.render(ctx, Templates("grandstream"))
    assert pvalues(files[f"cfg{MAC}.xml"])[1]["P1362"] == "en"
    assert pvalues(files["cfg.xml"])[1]["P1362"] == "de"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_render_is_clean_and_deterministic(make_context: ContextFactory, model: ModelInfo) -> None:
    first = render(make_context, model)
    assert render(make_context, model) == first
    assert_no_template_syntax(first)
    for name, data in first.items():
        assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n'), name


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_too_many_lines(make_context: ContextFactory, model: ModelInfo) -> None:
    with pytest.raises(RenderError):
        render(make_context, model, lines=model.slots + 1)


@pytest.mark.parametrize("name", ["GRP2624", "GRP2634"])
def test_accounts_without_known_p_values_are_refused(
    make_context: ContextFactory, name: str
) -> None:
    model = ADAPTER.models[name]
    assert render(make_context, model, lines=WRITABLE)
    with pytest.raises(RenderError, match="accounts above 6"):
        render(make_context, model, lines=WRITABLE + 1)


@pytest.mark.parametrize(
    "slots",
    [(1, 1), (0,), (7,)],
    ids=["duplicate", "zero", "beyond-capacity"],
)
def test_bad_slots(make_context: ContextFactory, slots: tuple[int, ...]) -> None:
    ctx = make_context(ADAPTER.models["GXP2170"], mac=MAC)
    lines: tuple[Line, ...] = tuple(dataclasses.replace(make_line(1), slot=s) for s in slots)
    with pytest.raises(RenderError):
        ADAPTER.render(dataclasses.replace(ctx, lines=lines), Templates("grandstream"))

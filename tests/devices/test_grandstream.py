"""Grandstream adapter: models, request identification, rendered files and their conformance.

Key numbers and meanings are checked against docs/vendors/grandstream.md (Grandstream's own
configuration templates per firmware line, as redistributed in wazo-provd-plugins).
"""

from __future__ import annotations

import dataclasses
import re
import time
import xml.etree.ElementTree as ET

import pytest

from provisioner.devices import identify
from provisioner.devices.base import (
    Line,
    ModelInfo,
    RenderContext,
    RenderError,
    SipTransport,
    Site,
    Templates,
)
from provisioner.devices.grandstream import (
    ACCOUNT_KEYS,
    ADAPTER,
    DECT_ACCOUNT_KEYS,
    DECT_HANDSET_LINE_KEYS,
    DP75X,
    GENERIC_DESK,
    GRP26XX,
    GXP16XX,
    GXP17XX,
    GXP21XX,
    GXP_1_0_8,
    MODELS,
    SERIES_MODELS,
    WP820,
    Series,
    canonical_model,
)
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

DESK = [m for m in MODELS if m.kind == "desk"]
DECT = [m for m in MODELS if m.kind == "dect"]
SERIES_OF = {name: series for series, models in SERIES_MODELS for name, _ in models}

# Accounts whose P-values are known on any desk line; GRP2624/GRP2634 have 8 accounts.
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


def lines_for(model: ModelInfo, wanted: int = 2) -> int:
    """At most ``wanted`` lines, on accounts/handsets whose keys are known."""
    return min(wanted, model.slots, SERIES_OF.get(model.name, GENERIC_DESK).accounts)


def render(make_context: ContextFactory, model: ModelInfo, **kwargs: object) -> dict[str, bytes]:
    kwargs.setdefault("lines", lines_for(model))
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
        assert re.fullmatch(r"P[0-9]+", element.tag), element.tag
        assert element.tag not in values, f"{element.tag} set twice"
        values[element.tag] = element.text or ""
    return root, values


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


# --- models ------------------------------------------------------------------------------------

# Every model of the table: accounts (desk) or handsets (DECT) and firmware line
# (docs/vendors/grandstream.md, "Models and firmware lines").
TABLE: dict[str, tuple[int, Series]] = {
    "GXP2130": (3, GXP21XX), "GXP2135": (4, GXP21XX), "GXP2140": (4, GXP21XX),
    "GXP2160": (6, GXP21XX), "GXP2170": (6, GXP21XX),
    "GRP2601": (2, GRP26XX), "GRP2601W": (2, GRP26XX), "GRP2602": (4, GRP26XX),
    "GRP2603": (6, GRP26XX), "GRP2604": (6, GRP26XX), "GRP2612": (2, GRP26XX),
    "GRP2612P": (2, GRP26XX), "GRP2612W": (2, GRP26XX), "GRP2613": (3, GRP26XX),
    "GRP2614": (4, GRP26XX), "GRP2615": (5, GRP26XX), "GRP2616": (6, GRP26XX),
    "GRP2624": (8, GRP26XX), "GRP2634": (8, GRP26XX),
    "GXP1760": (3, GXP17XX), "GXP1760W": (3, GXP17XX), "GXP1780": (4, GXP17XX),
    "GXP1782": (4, GXP17XX),
    "GXP1610": (1, GXP16XX), "GXP1615": (1, GXP16XX), "GXP1620": (2, GXP16XX),
    "GXP1625": (2, GXP16XX), "GXP1628": (2, GXP16XX), "GXP1630": (3, GXP16XX),
    "GXP1100": (1, GXP_1_0_8), "GXP1105": (1, GXP_1_0_8), "GXP1160": (1, GXP_1_0_8),
    "GXP1165": (1, GXP_1_0_8), "GXP1400": (2, GXP_1_0_8), "GXP1405": (2, GXP_1_0_8),
    "GXP1450": (2, GXP_1_0_8), "GXP2100": (4, GXP_1_0_8), "GXP2110": (4, GXP_1_0_8),
    "GXP2120": (6, GXP_1_0_8), "GXP2124": (4, GXP_1_0_8),
    "WP820": (2, WP820),
    "DP750": (5, DP75X), "DP752": (5, DP75X),
}  # fmt: skip


def test_the_table_is_the_documented_one() -> None:
    assert {m.name: (m.slots, SERIES_OF[m.name]) for m in MODELS} == TABLE
    for model in MODELS:
        assert model.family == model.name.lower()  # the model file cfg<model>.xml
        assert model.kind == ("dect" if SERIES_OF[model.name] is DP75X else "desk")
        assert ADAPTER.resolve_model(model.name) == (model, True)


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("gxp2160", "GXP2160"),
        ("GXP-1628", "GXP1628"),
        ("Grandstream GRP2614", "GRP2614"),
        ("grandstream_dp750", "DP750"),
        (" wp820 ", "WP820"),
    ],
)
def test_model_spellings(spelling: str, name: str) -> None:
    """Separators, case and a ``Grandstream`` prefix do not matter."""
    model = ADAPTER.model(spelling)
    assert model is not None
    assert model.name == name


def test_user_fields() -> None:
    """The PIN is not a user field: where it goes is declared by ``pin_key``."""
    assert ADAPTER.user_fields == {"display_name", "language", "sip_credentials"}


def test_account_keys_are_the_documented_ones() -> None:
    assert [dataclasses.astuple(keys) for keys in ACCOUNT_KEYS] == DOCUMENTED_ACCOUNT_KEYS


def test_dect_keys_are_the_documented_ones() -> None:
    """DP75x template 1.0.13.8, "DECT/SIP Account Settings" and "DECT/Handset Line Settings"."""
    assert dataclasses.astuple(DECT_ACCOUNT_KEYS[0]) == (4060, 4090, 4120, 4180, 4150, 27080, 4595)
    assert dataclasses.astuple(DECT_ACCOUNT_KEYS[9]) == (4069, 4099, 4129, 4189, 4159, 27089, 4604)
    assert [keys[:2] for keys in DECT_HANDSET_LINE_KEYS] == [
        (4300, 4301),
        (4310, 4311),
        (4320, 4321),
        (4250, 4251),
        (21328, 21329),
    ]
    assert DECT_HANDSET_LINE_KEYS[3][2:] == tuple(range(21320, 21328))
    assert all(len(keys) == 10 for keys in DECT_HANDSET_LINE_KEYS)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_push_never_reboots(model: ModelInfo) -> None:
    """``resync`` re-provisions without a reboot; no push waits for a maintenance window."""
    assert ADAPTER.sip_event(model) == "resync"
    assert not ADAPTER.needs_maintenance_window(model)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_pin_key(model: ModelInfo) -> None:
    """``P1383`` where the line's template documents a lock password; nothing on the DP75x."""
    key = ADAPTER.pin_key(model)
    series = SERIES_OF[model.name]
    if series is DP75X:
        assert key is None
        return
    assert key is not None
    assert key.name == "P1383"
    assert key.min_digits <= 4 <= 12 <= key.max_digits
    assert ("Screen Lock" if series is WP820 else "Keypad Lock") in key.source
    assert series.source.split(" ")[0].split("/")[0] in key.source


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_no_access_code(model: ModelInfo) -> None:
    """No line documents a handset access code (the DP75x "Admin PIN Code" is unverified)."""
    assert ADAPTER.access_code_key(model) is None


# --- unknown models of the family -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "slots", "series"),
    [
        ("GRP2612G", "desk", 2, GRP26XX),  # a hardware variant of a table model
        ("GRP2602W", "desk", 4, GRP26XX),
        ("GXP1782P", "desk", 4, GXP17XX),
        ("GXP2200", "desk", 1, GENERIC_DESK),  # Android GXP, not in the table
        ("GXV3370", "desk", 1, GENERIC_DESK),
        ("GXV3240", "desk", 1, GENERIC_DESK),
        ("WP810", "desk", 1, GENERIC_DESK),
        ("WP826", "desk", 1, GENERIC_DESK),
        ("GHP621W", "desk", 1, GENERIC_DESK),
        ("GRP2670", "desk", 1, GENERIC_DESK),
        ("GXP1200", "desk", 1, GENERIC_DESK),
        ("DP755", "dect", 1, DP75X),
        ("dp-758", "dect", 1, DP75X),
    ],
)
def test_generic_model(name: str, kind: str, slots: int, series: Series) -> None:
    model = ADAPTER.generic_model(name)
    assert model is not None
    assert (model.name, model.kind, model.slots) == (canonical_model(name), kind, slots)
    assert model.family == model.name.lower()
    assert ADAPTER.resolve_model(name) == (model, False)
    assert ADAPTER.served_model(name) == model
    assert ADAPTER.pin_key(model) == series.pin_key


@pytest.mark.parametrize(
    "name",
    [
        "GXP2000",  # firmware 1.2.x reads only the binary cfg<mac>
        "GXP2020",
        "GXP2010P",
        "HT801",  # an ATA
        "HT802",
        "GXW4216",  # a gateway
        "GDS3710",  # a door system
        "GAC2500",  # a conference phone
        "DP720",  # a DECT handset
        "DP760",  # a DECT repeater
        "T54W",  # other vendors' models
        "VVX400",
        "SIP-T54W",
        "GXP",
        "GXP21701",
        "",
        "GXP2170" * 10,
        "GXP2170\x00",
        "GXP2170; DROP TABLE",
        "GRP2614\u0660",
    ],
)
def test_generic_model_refuses_names_of_no_phone_of_this_family(name: str) -> None:
    assert ADAPTER.generic_model(name) is None
    assert ADAPTER.resolve_model(name) is None


@pytest.mark.parametrize("name", ["GRP2612G", "GXV3370", "WP810", "GXP1782P", "DP755"])
def test_a_generic_model_renders_well_formed_files(make_context: ContextFactory, name: str) -> None:
    model = ADAPTER.generic_model(name)
    assert model is not None
    files = render(make_context, model, lines=1)
    assert set(files) == {f"cfg{MAC}.xml", f"cfg{name.lower()}.xml", "cfg.xml"}
    for data in files.values():
        pvalues(data)
    assert_no_template_syntax(files)
    _, p = pvalues(files[f"cfg{MAC}.xml"])
    assert p["P1360"] == f"dev-{MAC}"
    for file in files:
        request = ADAPTER.identify(file, user_agent(model))
        assert request is not None
        assert (request.file, request.model) == (file, model.name)


def test_the_generic_desk_file_writes_only_keys_every_desk_template_has(
    make_context: ContextFactory,
) -> None:
    """One account, the provisioning and NOTIFY keys; no language, time zone or lock."""
    model = ADAPTER.generic_model("GXV3370")
    assert model is not None
    _, p = pvalues(render(make_context, model, lines=1)[f"cfg{MAC}.xml"])
    assert set(p) == {
        "P30", "P212", "P237", "P4428", "P1360", "P1361",
        "P271", "P270", "P47", "P35", "P36", "P34", "P3", "P130",
    }  # fmt: skip
    with pytest.raises(RenderError):
        render(make_context, model, lines=2)


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


# User-Agents of Grandstream HTTP(S) requests, spanning the firmware generations: (header, model,
# MAC). Sources:
#   [vendors]  /work/shared/VENDORS.md (the form recorded for the adapter brief)
#   [wazo]     wazo-platform/wazo-provd-plugins, plugins/wazo-grandstream/common/common.py,
#              comments above BaseGrandstreamHTTPDeviceInfoExtractor (User-Agents of phones in
#              the field, current firmware and GXP2000 firmware 1.2.5.3)
#   [fusion]   fusionpbx/fusionpbx, app/provision/index.php (comment showing the header) and
#              resources/classes/provision.php (maps the substring "HW DP750" to its DP750
#              template: the DP75x sends the "Model HW" form)
#   [laravel]  a public phonebook server's PhonebookController (GRP UAs "no colons" / "with
#              colons"; repository name not given by the index)
#   [uadetect] a public User-Agent classification library's test table (SIP and HTTP forms of
#              the GXP1400; repository name not given by the index)
#   [ghp]      a public hotel-phone project's comment (GHP621W; repository name not given)
UA_TABLE = [
    # current firmware: "Grandstream Model HW <model> SW <version> DevId <mac>"
    ("Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82aabbcc", "GXP2170", MAC),  # [vendors]
    ("Grandstream Model HW GXP1405 SW 1.0.4.23 DevId 000b8240d55c", "GXP1405", "000b8240d55c"),
    ("Grandstream Model HW GXP1628 SW 1.0.4.138 DevId c074ad2bd859", "GXP1628", "c074ad2bd859"),
    ("Grandstream Model HW GRP2614 SW 1.0.5.15 DevId c074ad0b63ee", "GRP2614", "c074ad0b63ee"),
    ("Grandstream Model HW GRP2616 SW 1.0.13.59 DevId ec74d7800474", "GRP2616", "ec74d7800474"),
    ("Grandstream Model HW GXP2135 SW 1.0.7.97 DevId 000b828aa872", "GXP2135", "000b828aa872"),
    ("Grandstream Model HW GXP1400 SW 1.0.4.13 DevId 000b823704f7", "GXP1400", "000b823704f7"),
    # with a hardware revision after the model [wazo]
    ("Grandstream Model HW GXP2200 V2.2A SW 1.0.1.33 DevId 000b82462d97", "GXP2200",
     "000b82462d97"),
    ("Grandstream Model HW GXV3240 V1.6B SW 1.0.1.27 DevId 000b82632815", "GXV3240",
     "000b82632815"),
    # two spaces before the revision [wazo]
    ("Grandstream Model HW GXV3350  V1.3A SW 1.0.1.8 DevId c074ad150b88", "GXV3350",
     "c074ad150b88"),
    # MAC with colons, upper case; a W (Wi-Fi) variant [laravel]
    ("Grandstream Model HW GRP2601W SW 1.0.7.32 DevId EC:74:D7:89:1A:76", "GRP2601W",
     "ec74d7891a76"),
    # a hotel phone [ghp]
    ("Grandstream Model HW GHP621W SW 1.0.1.37 DevId 000b82c12345", "GHP621W", "000b82c12345"),
    # an ATA of the vendor: recognised as Grandstream, not a phone the table serves [wazo]
    ("Grandstream Model HW HT801 V1.1A SW 1.0.17.5 DevId c074ad273a10", "HT801", "c074ad273a10"),
    # firmware 1.2.x: "Grandstream <model> (<image>:<version>/...) DevId <mac>" [wazo]
    ("Grandstream GXP2000 (gxp2000e.bin:1.2.5.3/boot55e.bin:1.1.6.9) DevId 000b822726c8",
     "GXP2000", "000b822726c8"),
    # the SIP form, no MAC [uadetect]
    ("Grandstream GXP1400 1.0.4.13", "GXP1400", None),
    ("Grandstream GXP1610 1.0.4.33", "GXP1610", None),
    # DP75x base: the form per [fusion]; version and MAC illustrative
    ("Grandstream Model HW DP750 SW 1.0.13.8 DevId 000b82aabbcc", "DP750", MAC),
    # field variants of VENDORS.md ("MAC without colons or in upper case, double spaces")
    ("Grandstream Model HW GXP2140 SW 1.0.11.3 DevId 00:0B:82:AA:BB:CC", "GXP2140", MAC),
    ("Grandstream  Model HW  GRP2616  SW 1.0.5.33  DevId  000B82AABBCC", "GRP2616", MAC),
    ("Grandstream Model HW GXP2160 SW 1.0.7.13", "GXP2160", None),
    ("", None, None),
]  # fmt: skip


@pytest.mark.parametrize(("ua", "model", "mac"), UA_TABLE)
def test_identify_reads_the_user_agent(ua: str, model: str | None, mac: str | None) -> None:
    request = ADAPTER.identify("cfg.xml", ua)
    assert request is not None
    assert (request.model, request.user_agent_mac, request.mac) == (model, mac, mac)


@pytest.mark.parametrize(("ua", "model", "mac"), [row for row in UA_TABLE if row[2]])
def test_the_registry_gives_the_device_file_to_grandstream(ua: str, model: str, mac: str) -> None:
    """Through the explicit registry: vendor, model and MAC of every recorded User-Agent."""
    claimed = identify(f"cfg{mac}.xml", ua)
    assert claimed is not None
    adapter, request = claimed
    assert adapter.vendor == "grandstream"
    assert (request.file, request.mac, request.user_agent_mac, request.model) == (
        f"cfg{mac}.xml",
        mac,
        mac,
        model,
    )


def test_identify_takes_the_mac_from_the_path_first() -> None:
    request = ADAPTER.identify("cfg000B82AABBCC.xml", "Grandstream Model HW GXP2160 SW 1.0.7.13")
    assert request is not None
    assert (request.file, request.mac, request.user_agent_mac) == (f"cfg{MAC}.xml", MAC, None)
    assert not request.shared


def test_identify_reports_a_mac_mismatch() -> None:
    ua = "Grandstream Model HW GRP2614 SW 1.0.5.33 DevId c074ad112233"
    request = ADAPTER.identify(f"cfg{MAC}.xml", ua)
    assert request is not None
    assert request.mac == MAC
    assert request.user_agent_mac == "c074ad112233"


def test_identify_takes_the_model_of_a_model_file_from_the_path() -> None:
    request = ADAPTER.identify("cfgGRP2614.xml", user_agent(ADAPTER.models["GXP2170"]))
    assert request is not None
    assert (request.file, request.model, request.mac) == ("cfggrp2614.xml", "GRP2614", MAC)
    assert request.shared


@pytest.mark.parametrize(
    "path",
    [
        f"cfg{MAC}",  # proprietary binary format: provisioner cannot produce it
        f"cfg{MAC}.bin",
        "cfght801.xml",  # an ATA: no phone of this family
        "cfggxp2000.xml",  # binary-only firmware
        "cfgt54w.xml",  # another vendor's model
        "cfgvvx400.xml",
        "cfg.xml.bak",
        "grandstream/cfg.xml",
        f"../cfg{MAC}.xml",
        "cfg000b82aabbc.xml",
        "cfg" + "a" * 40 + ".xml",
        "",
    ],
)
def test_identify_declines_other_paths(path: str) -> None:
    assert ADAPTER.identify(path, user_agent(ADAPTER.models["GXP2170"])) is None


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
        (f"cfg{MAC}.xml", "Yealink SIP-T54W 96.86.0.70 00:0b:82:aa:bb:cc"),
    ],
)
def test_identify_declines_other_vendors(path: str, ua: str) -> None:
    assert ADAPTER.identify(path, ua) is None


@pytest.mark.parametrize(
    "ua",
    [
        "Grandstream Model HW T54W SW 96.86.0.70 DevId 000b82aabbcc",
        "Grandstream Model HW VVX400 SW 6.4.0 DevId 000b82aabbcc",
        "Grandstream Model HW SIP-T54W SW 1.0 DevId 000b82aabbcc",
    ],
)
def test_a_model_of_another_vendor_is_no_model(ua: str) -> None:
    """A Grandstream header claiming another vendor's model: the model is unknown."""
    request = ADAPTER.identify(f"cfg{MAC}.xml", ua)
    assert request is not None
    assert (request.model, request.mac, request.user_agent_mac) == (None, MAC, MAC)


@pytest.mark.parametrize(
    "ua",
    [
        "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82aabbcc " + "x" * 8192,  # 8 KB
        "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId " + "0" * 8192,
        "Grandstream Model HW GXP2170\x00 SW 1.0.11.3 DevId 000b82aabbcc",
        "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82aabbcc\r\nX-Evil: 1",
        "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId c074ad\x1b[31m112233",
        "HW " * 2800,
        "Grandstream Model HW " + "GXP" * 2700,
    ],
)
def test_hostile_user_agents_are_unknown_never_an_error(ua: str) -> None:
    """Too long, NUL or control characters: read as if absent, quickly; the path still counts."""
    started = time.perf_counter()
    for path in (f"cfg{MAC}.xml", "cfg.xml", "cfggxp2170.xml", f"cfg{MAC}"):
        request = ADAPTER.identify(path, ua)
        if request is not None:
            assert request.model in (None, "GXP2170")
            assert request.user_agent_mac is None
        identify(path, ua)  # the registry, every adapter
    assert time.perf_counter() - started < 1.0


# --- render: desk phones -----------------------------------------------------------------------


@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
def test_accounts(make_context: ContextFactory, model: ModelInfo) -> None:
    lines = lines_for(model, 4)
    known = min(model.slots, SERIES_OF[model.name].accounts)
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
    for keys in ACCOUNT_KEYS[lines:known]:
        assert p[f"P{keys.active}"] == "0"
        assert p[f"P{keys.user}"] == p[f"P{keys.auth}"] == p[f"P{keys.password}"] == ""
    for keys in ACCOUNT_KEYS[known:]:
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


@pytest.mark.parametrize("name", ["GXP2140", "DP750"])
def test_control_characters_are_dropped(make_context: ContextFactory, name: str) -> None:
    ctx = make_context(ADAPTER.models[name], mac=MAC, lines=1)
    evil = dataclasses.replace(ctx.lines[0], display_name="Eve\x00\x1b\nX")
    ctx = dataclasses.replace(ctx, lines=(evil,))
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert p["P3" if name == "GXP2140" else "P4180"] == "EveX"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_provisioning_and_site_settings(make_context: ContextFactory, model: ModelInfo) -> None:
    series = SERIES_OF[model.name]
    ctx = make_context(model, mac=MAC, lines=lines_for(model))
    files = ADAPTER.render(ctx, Templates("grandstream"))
    _, device = pvalues(files[f"cfg{MAC}.xml"])
    assert device["P1360"] == ctx.provisioning_user
    assert device["P1361"] == ctx.provisioning_password
    for name in (f"cfg{MAC}.xml", f"cfg{model.family}.xml", "cfg.xml"):
        _, p = pvalues(files[name])
        assert p["P212"] == "2"  # https
        assert p["P237"] == "prov.example.net/provisioning"
        assert p["P30"] == "pool.ntp.org"
        if series.timezone_max is None:  # WP820: P64 takes its own zone names, no rule
            assert "P64" not in p
            assert "P246" not in p
        else:
            assert p["P64"] == "customize"  # "Self-Defined Time Zone": the rule is P246
            assert p["P246"] == "CET-1CEST,M3.5.0,M10.5.0/3"
        expected = {WP820: "de_DE", DP75X: None}.get(series, "de")
        assert p.get("P1362") == expected


@pytest.mark.parametrize(
    ("series", "code", "p1362"),
    [
        (GXP21XX, "cs", "cz"),
        (GRP26XX, "cs", "cz"),
        (GXP17XX, "cs", "cz"),
        (GXP16XX, "cs", "cs"),  # the GXP16xx template's code for Czech
        (GXP_1_0_8, "cs", "cz"),
        (GXP21XX, "lv", "lv"),
        (GXP_1_0_8, "lv", "en"),  # no Latvian on firmware 1.0.8.x
        (GXP21XX, "sv", "se"),
        (WP820, "de", "de_DE"),
        (WP820, "he", "iw_IL"),
        (WP820, "cs", "en_US"),  # not in the WP820 list
    ],
)
def test_language_codes_per_firmware_line(
    make_context: ContextFactory, series: Series, code: str, p1362: str
) -> None:
    model = next(m for m in MODELS if SERIES_OF[m.name] is series)
    site = Site(registrar_host="pbx.example.net", language=code)
    _, p = pvalues(render(make_context, model, site=site)["cfg.xml"])
    assert p["P1362"] == p1362


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_shared_files_carry_no_secret(make_context: ContextFactory, model: ModelInfo) -> None:
    ctx = make_context(model, mac=MAC, lines=lines_for(model))
    files = ADAPTER.render(ctx, Templates("grandstream"))
    assert files[f"cfg{model.family}.xml"] == files["cfg.xml"]
    root, p = pvalues(files["cfg.xml"])
    assert root.find("mac") is None
    assert not {"P1360", "P1361", "P1382", "P1383", "P22235"} & set(p)
    assert not [key for key in p if key in {f"P{k.password}" for k in ACCOUNT_KEYS}]
    assert not [key for key in p if key in {f"P{k.password}" for k in DECT_ACCOUNT_KEYS}]
    text = files["cfg.xml"].decode("utf-8")
    assert ctx.provisioning_user not in text
    for line in ctx.lines:
        assert line.sip_password not in text
        assert line.sip_auth_user not in text


@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
def test_the_pin_goes_only_into_the_lock_password(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    series = SERIES_OF[model.name]
    ctx = make_context(model, mac=MAC, lines=lines_for(model, WRITABLE))
    pin = ctx.lines[0].pin
    assert pin is not None
    files = ADAPTER.render(ctx, Templates("grandstream"))
    _, p = pvalues(files[f"cfg{MAC}.xml"])
    assert series.lock_enable is not None
    assert (p[series.lock_enable], p["P1383"]) == ("1", pin)
    assert series.lock_enable == ("P22235" if series is WP820 else "P1382")
    carriers = [(name, tag) for name, tag, text in all_values(files) if pin in text]
    assert carriers == [(f"cfg{MAC}.xml", "P1383")]
    # The PINs of the users on other accounts go nowhere: the phone has one lock.
    for line in ctx.lines[1:]:
        assert line.pin is not None
        assert not [text for _, _, text in all_values(files) if line.pin in text]


@pytest.mark.parametrize("name", ["GXP2170", "GXP1628", "GXP1405", "WP820"])
def test_without_a_pin_the_lock_is_off_and_emptied(make_context: ContextFactory, name: str) -> None:
    """A PIN removed on the server must not stay on the phone."""
    model = ADAPTER.models[name]
    ctx = with_pins(make_context(model, mac=MAC, lines=2), None, "5551234")
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    lock = SERIES_OF[name].lock_enable
    assert lock is not None
    assert (p[lock], p["P1383"]) == ("0", "")


def test_an_empty_account_1_turns_the_keypad_lock_off(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["GXP2170"], mac=MAC, lines=2)
    ctx = dataclasses.replace(ctx, lines=ctx.lines[1:])
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert (p["P1382"], p["P1383"]) == ("0", "")


@pytest.mark.parametrize("pin", ["0000", "0123", "000000000000", "987654321012"])
@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
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
    """No access code is declared; one handed in anyway is neither written nor the PIN."""
    ctx = with_pins(make_context(model, mac=MAC, lines=1, access_code="7315"), "482917")
    files = ADAPTER.render(ctx, Templates("grandstream"))
    assert not [tag for _, tag, text in all_values(files) if "7315" in text]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_sip_reset_is_off_in_every_file(make_context: ContextFactory, model: ModelInfo) -> None:
    """No file lets a NOTIFY factory-reset the phone: "Allow SIP Reset" is 0 wherever written,
    and written on every account by the lines that document it."""
    series = SERIES_OF[model.name]
    files = render(make_context, model, lines=lines_for(model, WRITABLE))
    for name, data in files.items():
        _, p = pvalues(data)
        written = {key: p[key] for key in SIP_RESET_KEYS if key in p}
        expected = SIP_RESET_KEYS if series.sip_reset else set()
        assert written == dict.fromkeys(expected, "0"), name
    enabled = [
        (name, tag, text)
        for name, tag, text in all_values(files)
        if SIP_RESET.fullmatch(tag) and text != "0"
    ]
    assert enabled == []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_notify_authentication_stays_on(make_context: ContextFactory, model: ModelInfo) -> None:
    """P4428 = 0 on every desk line: the phone challenges every NOTIFY (on WP820 the label is
    "Enable SIP NOTIFY Authentication. 1 - No, 0 - Yes"); the DP75x template has no P4428."""
    files = render(make_context, model)
    for name, data in files.items():
        _, p = pvalues(data)
        assert p.get("P4428") == (None if model.kind == "dect" else "0"), name


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_file_parses(make_context: ContextFactory, model: ModelInfo) -> None:
    files = render(make_context, model, lines=lines_for(model, WRITABLE))
    for data in files.values():
        _, values = pvalues(data)
        assert values


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


@pytest.mark.parametrize("name", ["GXP2170", "DP750"])
def test_config_server_needs_a_protocol_the_phone_speaks(
    make_context: ContextFactory, name: str
) -> None:
    ctx = make_context(ADAPTER.models[name], mac=MAC)
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
    _, dect = pvalues(render(make_context, ADAPTER.models["DP750"], site=site)[f"cfg{MAC}.xml"])
    assert (dect["P130"], dect["P47"]) == (code, "pbx.example.net:5061")


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
@pytest.mark.parametrize("name", ["GXP2170", "DP750"])
def test_time_zone(make_context: ContextFactory, zone: str, rule: str, name: str) -> None:
    site = Site(registrar_host="pbx.example.net", timezone=zone)
    _, p = pvalues(render(make_context, ADAPTER.models[name], site=site)["cfg.xml"])
    assert p["P246"] == rule


def test_a_rule_longer_than_the_dp75x_takes_falls_back(make_context: ContextFactory) -> None:
    """P246 holds 64 characters on desk phones, 32 on the DP75x."""
    zone = "Pacific/Chatham"  # "STD-12:45DST,M9.5.0/2:45,M4.1.0/3:45": 36 characters
    site = Site(registrar_host="pbx.example.net", timezone=zone)
    _, desk = pvalues(render(make_context, ADAPTER.models["GXP2170"], site=site)["cfg.xml"])
    _, dect = pvalues(render(make_context, ADAPTER.models["DP750"], site=site)["cfg.xml"])
    assert desk["P246"] == "STD-12:45DST,M9.5.0/2:45,M4.1.0/3:45"
    assert dect["P246"] == "CET-1CEST,M3.5.0,M10.5.0/3"


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
@pytest.mark.parametrize("name", ["GXP2170", "DP750"])
def test_bad_slots(make_context: ContextFactory, slots: tuple[int, ...], name: str) -> None:
    ctx = make_context(ADAPTER.models[name], mac=MAC)
    lines: tuple[Line, ...] = tuple(dataclasses.replace(make_line(1), slot=s) for s in slots)
    with pytest.raises(RenderError):
        ADAPTER.render(dataclasses.replace(ctx, lines=lines), Templates("grandstream"))


# --- render: DP75x DECT bases ------------------------------------------------------------------


@pytest.mark.parametrize("model", DECT, ids=lambda m: m.name)
def test_dect_handset_n_uses_account_n(make_context: ContextFactory, model: ModelInfo) -> None:
    ctx = make_context(model, mac=MAC, lines=3)
    ctx = dataclasses.replace(ctx, lines=(ctx.lines[0], ctx.lines[2]))  # handsets 1 and 3
    root, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert root.findtext("mac") == MAC
    assert (p["P271"], p["P47"], p["P130"]) == ("1", "pbx.example.net:5060", "0")  # profile 1
    for line in ctx.lines:
        keys = DECT_ACCOUNT_KEYS[line.slot - 1]
        assert p[f"P{keys.active}"] == "1"
        assert p[f"P{keys.user}"] == line.sip_user
        assert p[f"P{keys.auth}"] == line.sip_auth_user
        assert p[f"P{keys.password}"] == line.sip_password
        assert p[f"P{keys.name}"] == line.display_name
        assert p[f"P{keys.profile}"] == "0"
        assert p[f"P{keys.handset_mode}"] == str(line.slot)  # rings only its handset
        handset_lines = [p[f"P{key}"] for key in DECT_HANDSET_LINE_KEYS[line.slot - 1]]
        assert handset_lines == [str(line.slot)] + ["0"] * 9
    # Handsets 2, 4 and 5 are free; accounts 2 and 4..10 are emptied, none kept registered.
    for n in (2, 4, 5):
        assert [p[f"P{key}"] for key in DECT_HANDSET_LINE_KEYS[n - 1]] == ["0"] * 10
    for n in (2, 4, 5, 6, 7, 8, 9, 10):
        keys = DECT_ACCOUNT_KEYS[n - 1]
        assert p[f"P{keys.active}"] == "0"
        assert p[f"P{keys.user}"] == p[f"P{keys.auth}"] == p[f"P{keys.password}"] == ""


def test_dect_handset_names_are_cut_to_ten_characters(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["DP752"], mac=MAC, lines=2)
    _, p = pvalues(ADAPTER.render(ctx, Templates("grandstream"))[f"cfg{MAC}.xml"])
    assert p["P27020"] == "Jürgen Mül"
    assert p["P27021"] == "Anna <Ops>"  # cut before escaping: no broken entity
    assert p["P27022"] == "DECT 3"  # free handset: the template's default name


def test_dect_writes_no_desk_keys(make_context: ContextFactory) -> None:
    """The DP75x template documents no account keys of desk phones beyond profile 1's, no
    lock, no language, no NOTIFY or SIP reset switch."""
    files = render(make_context, ADAPTER.models["DP750"], lines=5)
    _, p = pvalues(files[f"cfg{MAC}.xml"])
    desk_only = {f"P{getattr(keys, f.name)}" for keys in ACCOUNT_KEYS for f in
                 dataclasses.fields(keys)} - {"P271", "P47", "P130"}  # fmt: skip
    assert not desk_only & set(p)
    assert not {"P1362", "P1382", "P1383", "P4428", "P22235"} & set(p)

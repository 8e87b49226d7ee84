"""Poly adapter: models, request identification and rendering for every firmware line."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest

from provisioner.devices import identify
from provisioner.devices.base import (
    FileRequest,
    RenderContext,
    RenderError,
    SipTransport,
    Site,
    Templates,
)
from provisioner.devices.poly import ADAPTER
from tests.devices.conftest import (
    UA_FANVIL,
    UA_GIGASET,
    UA_GRANDSTREAM,
    UA_YEALINK,
    ContextFactory,
    assert_no_template_syntax,
    parse_xml,
)

MAC = "0004f2aabbcc"

#: The table: model, lines, firmware line (docs/vendors/poly.md, "Models and firmware lines").
TABLE: dict[str, tuple[int, str]] = {
    "SPIP321": (2, "UCS 4.0"), "SPIP331": (2, "UCS 4.0"), "SPIP335": (2, "UCS 4.0"),
    "SPIP450": (3, "UCS 4.0"), "SPIP550": (4, "UCS 4.0"), "SPIP560": (4, "UCS 4.0"),
    "SPIP650": (6, "UCS 4.0"), "SPIP670": (6, "UCS 4.0"),
    "SSIP5000": (1, "UCS 4.0"), "SSIP6000": (1, "UCS 4.0"), "SSIP7000": (1, "UCS 4.0"),
    "VVX101": (1, "UCS 5.9"), "VVX201": (2, "UCS 5.9"), "VVX300": (6, "UCS 5.9"),
    "VVX301": (6, "UCS 5.9"), "VVX310": (6, "UCS 5.9"), "VVX311": (6, "UCS 5.9"),
    "VVX400": (12, "UCS 5.9"), "VVX401": (12, "UCS 5.9"), "VVX410": (12, "UCS 5.9"),
    "VVX411": (12, "UCS 5.9"), "VVX500": (12, "UCS 5.9"), "VVX600": (16, "UCS 5.9"),
    "VVX1500": (6, "UCS 5.9"),
    "VVX150": (2, "UCS 6"), "VVX250": (4, "UCS 6"), "VVX350": (6, "UCS 6"),
    "VVX450": (12, "UCS 6"), "VVX501": (12, "UCS 6"), "VVX601": (16, "UCS 6"),
    "E100": (2, "PVOS"), "E220": (2, "PVOS"), "E300": (8, "PVOS"), "E320": (8, "PVOS"),
    "E350": (8, "PVOS"), "E400": (16, "PVOS"), "E450": (16, "PVOS"), "E500": (24, "PVOS"),
    "E550": (24, "PVOS"),
    "CCX400": (1, "PVOS"), "CCX500": (1, "PVOS"), "CCX505": (1, "PVOS"), "CCX600": (1, "PVOS"),
    "Trio8300": (1, "PVOS"), "Trio8500": (1, "PVOS"), "Trio8800": (1, "PVOS"),
    "TrioC60": (1, "PVOS"),
}  # fmt: skip
MODELS = list(TABLE)

# Recorded User-Agents: (header, model it names, MAC it carries). HTTP fetches are
# "FileTransport <product>-<model>-UA/<version>", the version being the updater's/BootROM's on the
# first requests and the application's later; the SIP form (no "FileTransport") is what phones
# send in SIP and what some capture tools record. Sources:
#   [wazo]   wazo-platform/wazo-provd-plugins, plugins/wazo-polycom/common/common.py and
#            common-v3/common.py, comments listing HTTP User-Agents of phones in the field
#   [posh]   rdbahm/Posh-UCS, UCS/UcsSip.psm1 (Get-UcsSipPhoneInfo), SIP User-Agents per firmware
#   [excal]  excaliburpartners/polycomphones, provisioning/exten.php (later versions), comments
#   [nmap]   Nmap's service-probe database: SIP "PolycomSoundPointIP-SPIP_(\d+)-UA/([\d.]+)_(\w+)"
#   [field]  User-Agents quoted by other public provisioning projects' fixtures and logs (code
#            search; the projects are not named by the index) -- weaker than the above
#   [prev]   kept from this file's earlier table ("provisioning-server sources quoting phones")
USER_AGENTS: list[tuple[str, str, str | None]] = [
    # SoundPoint IP / SoundStation IP: SIP 3.2 application, BootROM 4.2, UCS 4.0, Updater 5.0
    ("FileTransport PolycomSoundPointIP-SPIP_335-UA/3.2.1.0078", "SPIP335", None),  # [wazo]
    ("FileTransport PolycomSoundPointIP-SPIP_335-UA/4.2.1.0275", "SPIP335", None),  # [wazo] BootROM
    ("FileTransport PolycomSoundPointIP-SPIP_450-UA/3.2.3.1734", "SPIP450", None),  # [wazo]
    ("FileTransport PolycomSoundPointIP-SPIP_550-UA/3.2.3.1734", "SPIP550", None),  # [wazo]
    ("FileTransport PolycomSoundStationIP-SSIP_6000-UA/4.0.4.2906 Type/Application",
     "SSIP6000", None),  # [wazo]
    ("FileTransport PolycomSoundStationIP-SSIP_6000-UA/5.0.3.1667 Type/Updater",
     "SSIP6000", None),  # [wazo]
    ("FileTransport PolycomSoundStationIP-SSIP_5000-UA/4.0.3.7562 (SN:0004f2e765da) "
     "Type/Application", "SSIP5000", "0004f2e765da"),  # [field]
    ("PolycomSoundPointIP-SPIP_450-UA/4.0.15.1047", "SPIP450", None),  # [field] SIP form
    ("PolycomSoundPointIP-SPIP_650-UA/4.0.4.2906_0004f2123456", "SPIP650",
     "0004f2123456"),  # [nmap] SIP form with "_<mac>" (version and MAC illustrative)
    # First VVX generation: UCS 4.1, 5.x
    ("FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application", "VVX400", None),  # [wazo]
    ("FileTransport PolycomVVX-VVX_101-UA/5.4.3.1014 Type/Application", "VVX101", None),  # [wazo]
    ("FileTransport PolycomVVX-VVX_310-UA/5.1.1.2986", "VVX310", None),  # [field]
    ("Polycom/5.5.2.8571 PolycomVVX-VVX_310-UA/5.5.2.8571", "VVX310", None),  # [posh] SIP form
    ("PolycomVVX-VVX_310-UA/5.3.0.12768", "VVX310", None),  # [posh] SIP form, 5.3
    ("PolycomVVX-VVX_310-UA/4.1.4.7430_0004f2abcdef", "VVX310", "0004f2abcdef"),  # [posh] 4.1.4
    ("FileTransport PolycomVVX-VVX_500-UA/5.9.7.4477 Type/Application", "VVX500", None),  # [prev]
    ("FileTransport PolycomVVX-VVX_500-UA/5.9.7.47435 Type/Updater", "VVX500", None),  # [prev]
    ("FileTransport PolycomVVX-VVX_411-UA/5.9.5.0614", "VVX411", None),  # [prev]
    # VVX x50 / x01: UCS 5.9, 6.x
    ("FileTransport PolycomVVX-VVX_450-UA/5.9.1.0615 Type/Application", "VVX450", None),  # [excal]
    ("FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Application", "VVX450", None),  # VENDORS
    ("FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Updater", "VVX450", None),  # VENDORS
    ("FileTransport PolycomVVX-VVX_501-UA/6.4.6.0123", "VVX501", None),  # [prev]
    # Edge E, CCX, Trio: PVOS 5.9-9.x
    ("FileTransport PolyEdge-Edge_E450-UA/8.0.0.15602 Type/Application", "E450", None),  # [excal]
    ("FileTransport PolyEdge-Edge_E350-UA/8.0.0.1234", "E350", None),  # [prev]
    ("PolyEdge-Edge_E220-UA/8.0.0.13670_48256712b942", "E220", "48256712b942"),  # [field] SIP
    ("FileTransport PolyCCX-CCX_600-UA/8.0.2.3267 (SN:482567b5313f) Type/Application",
     "CCX600", "482567b5313f"),  # [field]
    ("FileTransport PolyCCX-CCX_500-UA/9.4.1.0508 (SN:64167f9f4c90) Type/Application",
     "CCX500", "64167f9f4c90"),  # [field]
    ("Polycom/5.4.3.2007 PolycomRealPresenceTrio-Trio_8800-UA/5.4.3.2007",
     "Trio8800", None),  # [posh] SIP form
    ("PolycomRealPresenceTrio-Trio_8500-UA/5.9.2.7727", "Trio8500", None),  # [field] SIP form
]  # fmt: skip
#: Variations of recorded headers that the field shows for other vendors and some servers
#: produce (lower-cased by a proxy, doubled spaces, a colon-separated or upper-case serial).
USER_AGENT_VARIANTS: list[tuple[str, str, str | None]] = [
    ("filetransport polycomsoundstationip-ssip_5000-ua/4.0.3.7562 (sn:0004f2e765da) "
     "type/application", "SSIP5000", "0004f2e765da"),
    ("FileTransport  PolycomVVX-VVX_400-UA/4.1.4.7430  Type/Application", "VVX400", None),
    ("FileTransport PolyCCX-CCX_600-UA/8.0.2.3267 (SN:48:25:67:B5:31:3F) Type/Application",
     "CCX600", "482567b5313f"),
    ("FILETRANSPORT POLYEDGE-EDGE_E450-UA/8.0.0.15602 TYPE/APPLICATION", "E450", None),
    ("FileTransport PolyEdge-Edge_E600-UA/9.1.0.1000 Type/Application", "E600", None),  # generic
]  # fmt: skip
VVX_UA = "FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Application"
# device.prov.tagSerialNo=1 adds the serial number, which is the MAC
SERIAL_UA = "FileTransport PolyCCX-CCX_600-UA/8.0.2.3267 (SN:482567b5313f) Type/Application"

OTHER_VENDORS = [
    ("001565aabbcc.cfg", UA_YEALINK),
    ("001565aabbcc.cfg", ""),  # Yealink OUI, no User-Agent
    ("001565aabbcc.cfg", "curl/8.5.0"),
    ("0004f2aabbcc.cfg", UA_YEALINK),  # UA names Yealink
    ("y000000000000.boot", UA_YEALINK),
    ("y000000000096.cfg", UA_YEALINK),
    ("0c383e07e16c.cfg", UA_FANVIL),
    ("snomD785-000413AABBCC.htm", "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 000413AABBCC)"),
    ("7C2F80AABBCC.xml", UA_GIGASET),
    ("cfg000b82aabbcc.xml", UA_GRANDSTREAM),
]
NOT_SERVED = [
    "sip.ld",
    "3111-48450-001.sip.ld",
    "0004f2aabbcc-phone.cfg",
    "0004f2aabbcc-web.cfg",
    "0004f2aabbcc-license.cfg",
    "000000000000-license.cfg",
    "0004f2aabbcc-directory.xml",
    "000000000000-directory.xml",
    "0004f2aabbcc-boot.log",
    "0004f2aabbcc-app.log",
    "x/0004f2aabbcc.cfg",
    "0004f2aabbc.cfg",
    "",
]


def parameters_of(xml: bytes) -> dict[str, str]:
    """Every attribute of every element; the document must parse and keys must be unique."""
    root = parse_xml(xml)
    found: dict[str, str] = {}
    for element in root.iter():
        for key, value in element.attrib.items():
            assert key not in found, key
            found[key] = value
    return found


def render(ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
    out = ADAPTER.render(ctx, templates)
    assert_no_template_syntax(out)
    return out


def context(make_context: ContextFactory, name: str, **kwargs: object) -> RenderContext:
    model = ADAPTER.model(name)
    assert model is not None
    return make_context(model, mac=MAC, **kwargs)


# --- models -------------------------------------------------------------------------------


def test_the_table_is_the_documented_installed_base() -> None:
    assert {m.name: (m.slots, m.family) for m in ADAPTER.models.values()} == TABLE
    assert all(m.kind == "desk" for m in ADAPTER.models.values())


@pytest.mark.parametrize(("name", "capacity"), list(TABLE.items()))
def test_model_capacities(name: str, capacity: tuple[int, str]) -> None:
    model = ADAPTER.model(name.lower())
    assert model is not None
    assert (model.name, model.kind, model.slots, model.family) == (name, "desk", *capacity)
    assert ADAPTER.resolve_model(name) == (model, True)


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("VVX 450", "VVX450"), ("Polycom VVX450", "VVX450"), ("vvx_1500", "VVX1500"),
     ("Poly Edge E450", "E450"), ("Edge_E450", "E450"), ("edge-e100", "E100"),
     ("SoundPoint IP 335", "SPIP335"), ("SPIP_335", "SPIP335"), ("IP 650", "SPIP650"),
     ("SoundStation IP 6000", "SSIP6000"), ("IP7000", "SSIP7000"),
     ("RealPresence Trio 8800", "Trio8800"), ("Poly Trio C60", "TrioC60"), ("CCX 505", "CCX505")],
)  # fmt: skip
def test_model_spellings(spelling: str, name: str) -> None:
    """Names as admins and Poly's documents write them find the table's model."""
    model = ADAPTER.model(spelling)
    assert model is not None
    assert model.name == name
    assert ADAPTER.model_name(spelling) == name


@pytest.mark.parametrize(
    ("name", "generic", "family"),
    [("VVX 455", "VVX455", "UCS"), ("VVX1600", "VVX1600", "UCS"), ("Edge E600", "E600", "PVOS"),
     ("Poly CCX 700", "CCX700", "PVOS"), ("CCX350", "CCX350", "PVOS"),
     ("Trio 8900", "Trio8900", "PVOS"), ("Poly Trio C70", "TrioC70", "PVOS")],
)  # fmt: skip
def test_generic_model_of_a_served_series(name: str, generic: str, family: str) -> None:
    """A VVX / Edge E / CCX / Trio the table lacks is served with one line."""
    assert ADAPTER.model(name) is None
    resolved = ADAPTER.resolve_model(name)
    assert resolved is not None
    model, known = resolved
    assert not known
    assert (model.name, model.kind, model.slots, model.family) == (generic, "desk", 1, family)


@pytest.mark.parametrize(
    "name",
    [
        # SIP 3.x-only SoundPoint / SoundStation IP (need Polycom's sip.cfg / phone1.cfg)
        "SPIP601", "SoundPoint IP 301", "IP 430", "SSIP4000", "SoundStation IP 4000",
        # discontinued lines whose table is complete
        "SPIP999", "SSIP8000",
        # Poly's OBi-based devices: other files, other keys
        "VVX D230", "VVX D60", "Edge B20", "Poly Edge B30", "OBi 302", "Rove B4", "Rove 30",
        # other vendors and nonsense
        "T54W", "SIP-T46S", "D785", "N870", "GXP2170", "", "VVX", "E", "Trio", "CCX",
        "VVX450\x00", "E450; DROP TABLE", "x" * 8192,
    ],
)  # fmt: skip
def test_names_no_served_poly_model_has_are_refused(name: str) -> None:
    assert ADAPTER.model(name) is None
    assert ADAPTER.generic_model(name) is None
    assert ADAPTER.resolve_model(name) is None


def test_user_fields() -> None:
    assert {"sip_credentials", "display_name", "extension", "language"} == ADAPTER.user_fields


# --- identify -----------------------------------------------------------------------------


def test_the_recorded_user_agents_span_every_firmware_line() -> None:
    lines = {ADAPTER.models[model.upper()].family for _, model, _ in USER_AGENTS}
    assert lines == {"UCS 4.0", "UCS 5.9", "UCS 6", "PVOS"}
    assert len(USER_AGENTS) >= 8


@pytest.mark.parametrize(("user_agent", "model", "ua_mac"), USER_AGENTS + USER_AGENT_VARIANTS)
def test_recorded_user_agents_name_vendor_model_and_mac(
    user_agent: str, model: str, ua_mac: str | None
) -> None:
    """Every format: with and without FileTransport, Type/Application or Type/Updater, a
    serial tag or a "_<mac>" suffix, in any case; the whole registry picks Poly."""
    found = identify("0004f2aabbcc-user.cfg", user_agent)
    assert found is not None
    adapter, request = found
    assert adapter.vendor == "poly"
    assert request == FileRequest("0004f2aabbcc-user.cfg", MAC, ua_mac, model)
    assert ADAPTER.resolve_model(model) is not None
    assert ADAPTER.identify("000000000000.cfg", user_agent) == FileRequest(
        "000000000000.cfg", ua_mac, ua_mac, model, shared=True
    )
    # <mac>.cfg is claimed for any MAC once the User-Agent names a Poly model
    assert ADAPTER.identify("001565aabbcc.cfg", user_agent) == FileRequest(
        "001565aabbcc.cfg", "001565aabbcc", ua_mac, model, shared=True
    )


@pytest.mark.parametrize(
    "user_agent",
    [
        "FileTransport PolycomVVX-T54W-UA/96.86.0.70 Type/Application",  # another vendor's model
        "FileTransport PolycomVVX-SIP_T46S-UA/66.86.0.15",
        "FileTransport PolycomVVX-VVX_D230-UA/7.1.0",  # OBi-based: not served here
        "FileTransport PolycomSoundPointIP-SPIP_601-UA/3.1.8.0070",  # SIP 3.x only
        "FileTransport Poly",
        "FileTransport PolycomVVX-" + "V" * 40 + "-UA/1.0",
    ],
)
def test_a_user_agent_naming_no_served_poly_model_gives_no_model(user_agent: str) -> None:
    """Treated as unknown: the path decides, the claimed model is dropped."""
    request = ADAPTER.identify("0004f2aabbcc-user.cfg", user_agent)
    assert request == FileRequest("0004f2aabbcc-user.cfg", MAC, None, None)
    assert ADAPTER.identify("001565aabbcc.cfg", user_agent) is None  # no Poly OUI, no Poly model


@pytest.mark.parametrize(
    ("path", "user_agent"),
    [
        ("0004f2aabbcc-user.cfg", "Yealink SIP-T54W 96.86.0.70 00:04:f2:aa:bb:cc"),
        ("0004f2aabbcc.cfg", "FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Yealink"),
        ("0004f2aabbcc.cfg", "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 0004f2aabbcc"),
        ("snomD785-0004F2AABBCC.htm", VVX_UA),  # another vendor's file name
        ("y000000000096.cfg", VVX_UA),
        ("cfg0004f2aabbcc.xml", VVX_UA),
        ("0004F2AABBCC.xml", VVX_UA),
    ],
)
def test_another_vendors_model_or_file_is_never_claimed(path: str, user_agent: str) -> None:
    assert ADAPTER.identify(path, user_agent) is None


@pytest.mark.parametrize(
    "user_agent",
    [
        VVX_UA + " " + "x" * 8192,  # 8 KB
        "x" * 8192 + VVX_UA,
        VVX_UA.replace(" Type", "\x00Type"),  # NUL
        VVX_UA + "\r\nX-Injected: 1",
        "\x07\x1b[31m" + VVX_UA,
        "Yealink\x00" + VVX_UA,
        "0004f2" * 1500,  # hex that looks like MACs, 9 KB
        ("PolycomPolycomVVX" * 600)[:8192],
    ],
)
def test_hostile_user_agents_are_treated_as_unknown(user_agent: str) -> None:
    """Too long or with control characters: no model and no MAC from it, never an exception;
    the path alone decides, as for a request without a User-Agent."""
    started = time.perf_counter()
    for path in ("0004f2aabbcc-user.cfg", "0004f2aabbcc.cfg", "000000000000.cfg"):
        request = ADAPTER.identify(path, user_agent)
        assert request == ADAPTER.identify(path, "")
    assert ADAPTER.identify("001565aabbcc.cfg", user_agent) is None
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("name", ["VVX455", "E600", "CCX700", "Trio8900"])
def test_generic_models_render(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    """A generic model gets the family's files: the same master and one registration."""
    model = ADAPTER.generic_model(name)
    assert model is not None
    out = render(make_context(model, mac=MAC, lines=1), templates)
    assert set(out) == {"000000000000.cfg", "0004f2aabbcc.cfg", "0004f2aabbcc-user.cfg"}
    params = parameters_of(out["0004f2aabbcc-user.cfg"])
    assert params["reg.1.address"] == "201"
    assert "reg.2.address" not in params
    assert params["voIpProt.SIP.specialEvent.checkSync.alwaysReboot"] == "0"
    assert ADAPTER.sip_event(model) == "check-sync"
    assert not ADAPTER.needs_maintenance_window(model)
    assert ADAPTER.pin_key(model) is None
    with pytest.raises(RenderError):
        ADAPTER.render(make_context(model, mac=MAC, lines=2), templates)


@pytest.mark.parametrize(
    "path",
    ["0004F2AABBCC.cfg", "0004f2aabbcc.cfg", "0004F2AABBCC-user.cfg", "0004F2AABBCC-USER.CFG"],
)
def test_file_names_are_canonical_whatever_the_case(path: str) -> None:
    request = ADAPTER.identify(path, VVX_UA)
    assert request is not None
    assert request.file in {"0004f2aabbcc.cfg", "0004f2aabbcc-user.cfg"}
    assert request.mac == MAC


@pytest.mark.parametrize(
    ("user_agent", "ua_mac"),
    [
        (SERIAL_UA, "482567b5313f"),
        (SERIAL_UA.replace("482567b5313f", "48:25:67:B5:31:3F"), "482567b5313f"),
        (SERIAL_UA.upper(), "482567b5313f"),
        (SERIAL_UA.replace(" ", "  "), "482567b5313f"),
        (VVX_UA, None),
        ("", None),
    ],
)
def test_user_agent_mac_forms(user_agent: str, ua_mac: str | None) -> None:
    request = ADAPTER.identify("482567b5313f-user.cfg", user_agent)
    assert request is not None
    assert (request.mac, request.user_agent_mac) == ("482567b5313f", ua_mac)


def test_mac_mismatch_is_reported() -> None:
    request = ADAPTER.identify("0004f2aabbcc-user.cfg", SERIAL_UA)
    assert request is not None
    assert request.mac == MAC
    assert request.user_agent_mac == "482567b5313f"


def test_default_master_takes_the_serial_as_device() -> None:
    request = ADAPTER.identify("000000000000.cfg", SERIAL_UA)
    assert request == FileRequest(
        "000000000000.cfg", "482567b5313f", "482567b5313f", "CCX600", True
    )


@pytest.mark.parametrize("oui", ["0004f2", "64167f", "482567"])
@pytest.mark.parametrize("user_agent", ["", "curl/8.5.0"])
def test_mac_cfg_without_poly_user_agent_needs_a_poly_oui(oui: str, user_agent: str) -> None:
    request = ADAPTER.identify(f"{oui}aabbcc.cfg", user_agent)
    assert request == FileRequest(f"{oui}aabbcc.cfg", f"{oui}aabbcc", None, None, shared=True)


def test_poly_user_agent_claims_any_mac_cfg() -> None:
    request = ADAPTER.identify("001565aabbcc.cfg", VVX_UA)
    assert request is not None
    assert request.mac == "001565aabbcc"


@pytest.mark.parametrize(("path", "user_agent"), OTHER_VENDORS)
def test_other_vendors_requests_are_not_polys(path: str, user_agent: str) -> None:
    assert ADAPTER.identify(path, user_agent) is None


@pytest.mark.parametrize("path", NOT_SERVED)
def test_optional_files_are_not_served(path: str) -> None:
    assert ADAPTER.identify(path, VVX_UA) is None


@pytest.mark.parametrize("name", MODELS)
def test_identified_names_are_the_rendered_names(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    rendered = render(context(make_context, name, lines=1), templates)
    paths = ["000000000000.cfg", "0004F2AABBCC.cfg", "0004f2aabbcc-user.cfg"]
    identified = {ADAPTER.identify(path, "") for path in paths}
    assert {request.file for request in identified if request} == set(rendered)


# --- render -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_master_files(name: str, make_context: ContextFactory, templates: Templates) -> None:
    out = render(context(make_context, name, lines=min(2, TABLE[name][0])), templates)
    assert set(out) == {"000000000000.cfg", "0004f2aabbcc.cfg", "0004f2aabbcc-user.cfg"}
    assert out["000000000000.cfg"] == out["0004f2aabbcc.cfg"]
    root = parse_xml(out["0004f2aabbcc.cfg"])
    assert root.tag == "APPLICATION"
    assert root.attrib["CONFIG_FILES"] == "[PHONE_MAC_ADDRESS]-user.cfg"
    assert root.attrib["APP_FILE_PATH"] == "sip.ld"
    assert ADAPTER.identify(root.attrib["APP_FILE_PATH"], "") is None
    assert b"Pr0v" not in out["0004f2aabbcc.cfg"]


@pytest.mark.parametrize("name", MODELS)
def test_user_file(name: str, make_context: ContextFactory, templates: Templates) -> None:
    ctx = context(make_context, name, lines=min(4, ADAPTER.models[name.upper()].slots))
    params = parameters_of(render(ctx, templates)["0004f2aabbcc-user.cfg"])

    for line in ctx.lines:
        n = line.slot
        assert params[f"reg.{n}.address"] == line.sip_user
        assert params[f"reg.{n}.auth.userId"] == line.sip_auth_user
        assert params[f"reg.{n}.auth.password"] == line.sip_password
        assert params[f"reg.{n}.displayName"] == line.display_name
        assert params[f"reg.{n}.label"] == line.extension
        assert params[f"reg.{n}.server.1.address"] == "pbx.example.net"
        assert params[f"reg.{n}.server.1.port"] == "5060"
        assert params[f"reg.{n}.server.1.transport"] == "UDPOnly"
    for n in range(len(ctx.lines) + 1, ADAPTER.models[name.upper()].slots + 1):
        assert params[f"reg.{n}.address"] == ""
        assert params[f"reg.{n}.auth.password"] == ""
    assert f"reg.{ADAPTER.models[name.upper()].slots + 1}.address" not in params

    assert params["device.set"] == "1"
    assert params["device.prov.serverName"] == ctx.provisioning_url
    assert params["device.prov.serverType"] == "HTTPS"
    assert params["device.prov.user"] == ctx.provisioning_user
    assert params["device.prov.password"] == ctx.provisioning_password
    for key in ("serverName", "serverType", "user", "password"):
        assert params[f"device.prov.{key}.set"] == "1"

    assert params["phoneLock.enabled"] == "0"
    assert params["voIpProt.SIP.specialEvent.checkSync.alwaysReboot"] == "0"

    assert params["lcl.ml.lang"] == "German_Germany"
    assert params["tcpIpApp.sntp.address"] == "pool.ntp.org"
    assert params["tcpIpApp.sntp.gmtOffset"] == "3600"
    assert params["tcpIpApp.sntp.daylightSavings.enable"] == "1"


# --- conformance: no reboot on push, no PIN on the phone (DESIGN "PIN on devices") -----------

#: Values Poly documents for ``reg.x.server.y.transport``.
DOCUMENTED_TRANSPORTS = {"DNSnaptr", "TCPpreferred", "UDPOnly", "TLS", "TCPOnly"}
#: The only ``device.*`` parameters the files set: device parameters restart the phone when they
#: change, so none may depend on a user.
DEVICE_PARAMETERS = {
    "device.set",
    "device.prov.serverName",
    "device.prov.serverName.set",
    "device.prov.serverType",
    "device.prov.serverType.set",
    "device.prov.user",
    "device.prov.user.set",
    "device.prov.password",
    "device.prov.password.set",
}


def with_pins(ctx: RenderContext, pin: str) -> RenderContext:
    """``ctx`` with every line carrying ``pin`` (what a careless service might hand over)."""
    lines = tuple(dataclasses.replace(line, pin=pin) for line in ctx.lines)
    return dataclasses.replace(ctx, lines=lines)


def device_parameters(params: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in params.items() if key.startswith("device.")}


@pytest.mark.parametrize("name", MODELS)
def test_push_never_reboots(name: str, make_context: ContextFactory, templates: Templates) -> None:
    model = ADAPTER.models[name.upper()]
    assert ADAPTER.sip_event(model) == "check-sync"
    assert ADAPTER.needs_maintenance_window(model) is False
    ctx = context(make_context, name, lines=min(2, model.slots))
    params = parameters_of(render(ctx, templates)["0004f2aabbcc-user.cfg"])
    assert params["voIpProt.SIP.specialEvent.checkSync.alwaysReboot"] == "0"
    assert set(device_parameters(params)) == DEVICE_PARAMETERS


@pytest.mark.parametrize("name", MODELS)
def test_user_changes_leave_device_parameters_alone(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    """Names, extensions, SIP secrets and PINs never reach a restarting ``device.*`` value."""
    before = context(make_context, name, lines=1)
    line = before.lines[0]
    changed = dataclasses.replace(
        before,
        lines=(
            dataclasses.replace(
                line,
                display_name="Someone Else",
                extension="299",
                sip_user="299",
                sip_auth_user="auth299",
                sip_password="0therSecret",
                pin="97531864",
                language="en",
            ),
        ),
    )
    old = parameters_of(render(before, templates)["0004f2aabbcc-user.cfg"])
    new = parameters_of(render(changed, templates)["0004f2aabbcc-user.cfg"])
    assert old != new
    assert device_parameters(old) == device_parameters(new)


@pytest.mark.parametrize("name", MODELS)
def test_no_pin_key_and_no_access_code(name: str) -> None:
    model = ADAPTER.models[name.upper()]
    assert ADAPTER.pin_key(model) is None
    assert ADAPTER.access_code_key(model) is None


@pytest.mark.parametrize("pin", ["4826", "482619375104"])  # shortest and longest policy PIN
@pytest.mark.parametrize("name", MODELS)
def test_pin_never_reaches_the_phone(
    name: str, pin: str, make_context: ContextFactory, templates: Templates
) -> None:
    """Every policy-valid PIN renders, and no file carries it, in any key or form."""
    lines = min(4, ADAPTER.models[name.upper()].slots)
    ctx = with_pins(context(make_context, name, lines=lines), pin)
    out = render(ctx, templates)
    for body in out.values():
        parse_xml(body)
        assert pin.encode() not in body
    params = parameters_of(out["0004f2aabbcc-user.cfg"])
    assert not [key for key in params if key.startswith("device.auth.")]
    assert pin not in params.values()
    assert params["phoneLock.enabled"] == "0"
    assert "feature.enhancedFeatureKeys.enabled" not in params


@pytest.mark.parametrize("name", MODELS)
def test_an_access_code_is_never_written(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    """Desk phones declare no access code; one handed over anyway goes nowhere."""
    ctx = with_pins(context(make_context, name, lines=1, access_code="7305"), "482619")
    for body in render(ctx, templates).values():
        assert b"7305" not in body


@pytest.mark.parametrize("name", MODELS)
def test_every_file_parses_and_values_are_documented(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    out = render(context(make_context, name, lines=ADAPTER.models[name.upper()].slots), templates)
    assert parse_xml(out["000000000000.cfg"]).tag == "APPLICATION"
    assert parse_xml(out["0004f2aabbcc.cfg"]).tag == "APPLICATION"
    params = parameters_of(out["0004f2aabbcc-user.cfg"])
    transports = {v for k, v in params.items() if k.endswith(".server.1.transport")}
    assert transports <= DOCUMENTED_TRANSPORTS
    assert params["device.prov.serverType"] in {"HTTP", "HTTPS"}


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "Europe/London", "Europe/Helsinki", "America/New_York", "UTC"]
)
def test_dst_values_lie_in_documented_ranges(
    zone: str, make_context: ContextFactory, templates: Templates
) -> None:
    """Polycom SIP admin guides: month 1-12, date 1-31, time 0-23, dayOfWeek 1-7 (1 = Sunday)."""
    site = Site(registrar_host="pbx.example.net", timezone=zone)
    params = parameters_of(
        render(context(make_context, "E350", lines=1, site=site), templates)[
            "0004f2aabbcc-user.cfg"
        ]
    )
    ranges = {"month": range(1, 13), "date": range(1, 32), "time": range(24),
              "dayOfWeek": range(1, 8), "dayOfWeek.lastInMonth": range(2)}  # fmt: skip
    for edge in ("start", "stop"):
        for key, allowed in ranges.items():
            value = params.get(f"tcpIpApp.sntp.daylightSavings.{edge}.{key}")
            assert value is None or int(value) in allowed, (edge, key, value)
    assert params["tcpIpApp.sntp.daylightSavings.enable"] in {"0", "1"}


@pytest.mark.parametrize(
    ("transport", "port", "expected"),
    [("udp", 5060, "UDPOnly"), ("tcp", 5060, "TCPOnly"), ("tls", 5061, "TLS")],
)
def test_transport(
    transport: SipTransport,
    port: int,
    expected: str,
    make_context: ContextFactory,
    templates: Templates,
) -> None:
    site = Site(registrar_host="sbc.example.org", registrar_port=port, transport=transport)
    params = parameters_of(
        render(context(make_context, "E450", lines=1, site=site), templates)[
            "0004f2aabbcc-user.cfg"
        ]
    )
    assert params["reg.1.server.1.address"] == "sbc.example.org"
    assert params["reg.1.server.1.port"] == str(port)
    assert params["reg.1.server.1.transport"] == expected


@pytest.mark.parametrize(
    ("zone", "offset", "dst"),
    [
        ("Europe/Berlin", 3600, {"enable": "1", "start.month": "3", "start.time": "2",
                                 "stop.month": "10", "stop.time": "3",
                                 "start.dayOfWeek.lastInMonth": "1"}),
        ("Europe/London", 0, {"enable": "1", "start.time": "1", "stop.time": "2"}),
        ("Europe/Helsinki", 7200, {"start.time": "3", "stop.time": "4"}),
        ("America/New_York", -18000, {"enable": "1", "start.month": "3", "start.date": "8",
                                      "stop.month": "11", "stop.date": "1",
                                      "stop.dayOfWeek.lastInMonth": "0"}),
        ("America/Phoenix", -25200, {"enable": "0"}),
        ("UTC", 0, {"enable": "0"}),
        ("Mars/Olympus_Mons", 3600, {"enable": "1", "start.time": "2"}),  # documented fallback
    ],
)  # fmt: skip
def test_time_zone(
    zone: str,
    offset: int,
    dst: dict[str, str],
    make_context: ContextFactory,
    templates: Templates,
) -> None:
    site = Site(registrar_host="pbx.example.net", timezone=zone, ntp_server="ntp.example.net")
    params = parameters_of(
        render(context(make_context, "VVX250", lines=1, site=site), templates)[
            "0004f2aabbcc-user.cfg"
        ]
    )
    assert params["tcpIpApp.sntp.gmtOffset"] == str(offset)
    assert params["tcpIpApp.sntp.address"] == "ntp.example.net"
    for key, value in dst.items():
        assert params[f"tcpIpApp.sntp.daylightSavings.{key}"] == value


@pytest.mark.parametrize(
    ("site_language", "line_language", "expected"),
    [("de", None, "German_Germany"), ("de", "en", "English_United_States"),
     ("xx", None, "English_United_States")],
)  # fmt: skip
def test_language(
    site_language: str,
    line_language: str | None,
    expected: str,
    make_context: ContextFactory,
    templates: Templates,
) -> None:
    site = Site(registrar_host="pbx.example.net", language=site_language)
    ctx = context(make_context, "VVX350", lines=0 if line_language is None else 1, site=site)
    if line_language is not None:
        ctx = dataclasses.replace(
            ctx, lines=(dataclasses.replace(ctx.lines[0], language=line_language),)
        )
    params = parameters_of(render(ctx, templates)["0004f2aabbcc-user.cfg"])
    assert params["lcl.ml.lang"] == expected


def test_plain_http_server(make_context: ContextFactory, templates: Templates) -> None:
    ctx = dataclasses.replace(
        context(make_context, "VVX150"), provisioning_url="http://10.0.0.1:8080/provisioning/"
    )
    params = parameters_of(render(ctx, templates)["0004f2aabbcc-user.cfg"])
    assert params["device.prov.serverType"] == "HTTP"
    assert params["device.prov.serverName"] == "http://10.0.0.1:8080/provisioning/"


def test_unusable_provisioning_url(make_context: ContextFactory, templates: Templates) -> None:
    ctx = dataclasses.replace(context(make_context, "VVX150"), provisioning_url="ftp://x/")
    with pytest.raises(RenderError):
        ADAPTER.render(ctx, templates)


@pytest.mark.parametrize("name", MODELS)
def test_too_many_lines(name: str, make_context: ContextFactory, templates: Templates) -> None:
    slots = ADAPTER.models[name.upper()].slots
    with pytest.raises(RenderError):
        ADAPTER.render(context(make_context, name, lines=slots + 1), templates)


@pytest.mark.parametrize("slots", [(2, 2), (0,), (3,)])
def test_bad_slots(
    slots: tuple[int, ...], make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context(make_context, "VVX150", lines=1)
    lines = tuple(dataclasses.replace(ctx.lines[0], slot=slot) for slot in slots)
    with pytest.raises(RenderError):
        ADAPTER.render(dataclasses.replace(ctx, lines=lines), templates)


@pytest.mark.parametrize("name", MODELS)
def test_render_is_deterministic(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context(make_context, name, lines=min(2, TABLE[name][0]))
    assert ADAPTER.render(ctx, templates) == ADAPTER.render(ctx, Templates("poly"))


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(lambda s: s + '" reg.1.auth.password="owned', id="quote"),
        pytest.param(lambda s: s + '\r\n/><reg reg.9.address="x"', id="newline-and-tag"),
        pytest.param(lambda s: s + "\x00\x07", id="control"),
    ],
)
def test_names_cannot_inject_parameters(
    inject: Callable[[str], str], make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context(make_context, "VVX450", lines=1)
    line = dataclasses.replace(ctx.lines[0], display_name=inject("Zoë"))
    params = parameters_of(
        render(dataclasses.replace(ctx, lines=(line,)), templates)["0004f2aabbcc-user.cfg"]
    )
    assert params["reg.1.auth.password"] == line.sip_password
    assert params["reg.9.address"] == ""
    assert params["reg.1.displayName"].startswith("Zoë")
    assert "\n" not in params["reg.1.displayName"]

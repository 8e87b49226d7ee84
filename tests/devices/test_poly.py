"""Poly adapter: request identification and rendering of VVX and Edge E configs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

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
MODELS = ["VVX150", "VVX250", "VVX350", "VVX450", "VVX501", "VVX601", "E350", "E450", "E550"]

# Recorded HTTP User-Agents: (header, model it names). Poly sends no MAC by default.
USER_AGENTS = [
    ("FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Application", "VVX450"),  # VENDORS.md
    ("FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Updater", "VVX450"),
    # provisioning-server sources quoting phones in the field
    ("FileTransport PolycomVVX-VVX_500-UA/5.9.7.4477 Type/Application", "VVX500"),
    ("FileTransport PolycomVVX-VVX_500-UA/5.9.7.47435 Type/Updater", "VVX500"),
    ("FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application", "VVX400"),
    ("FileTransport PolycomVVX-VVX_411-UA/5.9.5.0614", "VVX411"),
    ("FileTransport PolycomVVX-VVX_501-UA/6.4.6.0123", "VVX501"),
    ("FileTransport PolyEdge-Edge_E450-UA/8.0.0.15602 Type/Application", "E450"),
    ("FileTransport PolyEdge-Edge_E350-UA/8.0.0.1234", "E350"),
    ("FileTransport PolycomSoundPointIP-SPIP_450-UA/3.2.3.1734", "SPIP450"),
]
VVX_UA = USER_AGENTS[0][0]
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


@pytest.mark.parametrize(
    ("name", "slots"),
    [("VVX150", 2), ("VVX250", 4), ("VVX350", 6), ("VVX450", 12), ("VVX501", 12),
     ("VVX601", 16), ("E350", 8), ("E450", 16), ("E550", 24)],
)  # fmt: skip
def test_model_capacities(name: str, slots: int) -> None:
    model = ADAPTER.model(name.lower())
    assert model is not None
    assert (model.kind, model.slots) == ("desk", slots)


def test_user_fields() -> None:
    assert {"sip_credentials", "display_name", "extension", "language"} == ADAPTER.user_fields


# --- identify -----------------------------------------------------------------------------


@pytest.mark.parametrize(("user_agent", "model"), USER_AGENTS)
def test_boot_files_with_recorded_user_agents(user_agent: str, model: str) -> None:
    assert ADAPTER.identify("000000000000.cfg", user_agent) == FileRequest(
        "000000000000.cfg", None, None, model, shared=True
    )
    assert ADAPTER.identify("0004f2aabbcc.cfg", user_agent) == FileRequest(
        "0004f2aabbcc.cfg", MAC, None, model, shared=True
    )
    assert ADAPTER.identify("0004f2aabbcc-user.cfg", user_agent) == FileRequest(
        "0004f2aabbcc-user.cfg", MAC, None, model
    )


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
    out = render(context(make_context, name, lines=2), templates)
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
    ctx = context(make_context, name, lines=min(4, ADAPTER.models[name].slots))
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
    for n in range(len(ctx.lines) + 1, ADAPTER.models[name].slots + 1):
        assert params[f"reg.{n}.address"] == ""
        assert params[f"reg.{n}.auth.password"] == ""
    assert f"reg.{ADAPTER.models[name].slots + 1}.address" not in params

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
    model = ADAPTER.models[name]
    assert ADAPTER.sip_event(model) == "check-sync"
    assert ADAPTER.needs_maintenance_window(model) is False
    params = parameters_of(render(context(make_context, name), templates)["0004f2aabbcc-user.cfg"])
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
    model = ADAPTER.models[name]
    assert ADAPTER.pin_key(model) is None
    assert ADAPTER.access_code_key(model) is None


@pytest.mark.parametrize("pin", ["4826", "482619375104"])  # shortest and longest policy PIN
@pytest.mark.parametrize("name", MODELS)
def test_pin_never_reaches_the_phone(
    name: str, pin: str, make_context: ContextFactory, templates: Templates
) -> None:
    """Every policy-valid PIN renders, and no file carries it, in any key or form."""
    ctx = with_pins(context(make_context, name, lines=min(4, ADAPTER.models[name].slots)), pin)
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
    out = render(context(make_context, name, lines=ADAPTER.models[name].slots), templates)
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
    slots = ADAPTER.models[name].slots
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
    ctx = context(make_context, name, lines=2)
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

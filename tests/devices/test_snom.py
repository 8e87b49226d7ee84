"""Snom adapter: request identification and rendering of D-series and M-series configs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import pytest

from provisioner.devices.base import (
    FileRequest,
    Line,
    ModelInfo,
    RenderContext,
    RenderError,
    Site,
    Templates,
    names_vendor,
)
from provisioner.devices.snom import ADAPTER
from tests.devices.conftest import (
    UA_GIGASET,
    UA_GRANDSTREAM,
    UA_YEALINK,
    ContextFactory,
    assert_no_template_syntax,
    parse_xml,
)

MAC = "000413aabbcc"
#: Every model of the table, by firmware line (docs/vendors/snom.md, "Models and firmware lines").
DESK_8 = ["300", "320", "360", "370", "820", "821", "870"]
DESK_8_9 = ["710", "720", "760"]
DESK_10_EOL = ["D120", "D305", "D375", "D745", "D765"]
DESK_10 = ["D315", "D335", "D345", "D385", "D712", "D713", "D715", "D717", "D725", "D735", "D785",
           "D812", "D815", "D862", "D865"]  # fmt: skip
DESK_MODELS = DESK_8 + DESK_8_9 + DESK_10_EOL + DESK_10
DECT_MODELS = ["M300", "M400", "M700", "M900"]
#: The D715 and D725 name their files by the phone type their User-Agent carries.
PHONE_TYPE = {"D715": "715", "D725": "725"}

# Recorded HTTP User-Agents: (header, model it names, MAC it carries). Firmware 6.5 to 10.1 and
# the M-series 03.x/05.x; with and without a MAC, MAC upper and lower case, extra tokens.
USER_AGENTS = [
    # VENDORS.md
    ("Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IFX-05.01.12 000413922D24)",
     "D785", "000413922d24"),
    # wazo-provd-plugins plugins/wazo-snom/common/common.py, BaseSnomHTTPDeviceInfoExtractor
    # (the User-Agents its comment records, firmware 6.5 to 10.1)
    ("Mozilla/4.0 (compatible; snom320-SIP 6.5.20; snom320 jffs2 v3.36; snom320 linux 3.38)",
     "320", None),
    ("Mozilla/4.0 (compatible; snom320-SIP 7.3.30 1.1.3-u)", "320", None),
    ("Mozilla/4.0 (compatible; snom320-SIP 8.4.18 1.1.3-s)", "320", None),
    ("Mozilla/4.0 (compatible; snom710-SIP 8.7.3.19 1.1.5-IFX-05.01.12)", "710", None),
    ("Mozilla/4.0 (compatible; snom710-SIP 8.7.5.35 1.1.5-IFX-05.01.12 000413741767)",
     "710", "000413741767"),
    ("Mozilla/4.0 (compatible; snom760-SIP 8.7.3.19 2010.06)", "760", None),
    ("Mozilla/4.0 (compatible; snom820-SIP 8.4.35 1.1.4-IFX-26.11.09)", "820", None),
    ("Mozilla/4.0 (compatible; snom870-SIP 8.4.35 SPEAr300 SNOM 1.4)", "870", None),
    ("Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24"
     " SXM:0 UXM:0)", "D785", "000413922d24"),
    # FusionPBX app/provision/index.php (comment quoting a phone's User-Agent)
    ("Mozilla/4.0 (compatible; snomD785-SIP 10.1.169.16 2010.12-00001-gd311851f1"
     " (Feb 25 2019 - 14:19:43) 00041396D9B4 SXM:0 UXM:0 UXMC:0)", "D785", "00041396d9b4"),
    # wazo-provd-plugins plugins/wazo-snom/common_dect/common.py (M-series, MAC in lower case)
    ("Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413b60680)", "M900", "000413b60680"),
    # Snom "Provisioning Guide M700, M300" v1.04, "PNP": the base's SIP User-Agent (the guide
    # masks the MAC's last digits)
    ("snomM700/03.23.0005 (MAC=000413AABBCC; SER= 00000; HW=255)", "M700", "000413aabbcc"),
    # earlier fixtures of this file (firmware 8 without a MAC; source not recorded)
    ("Mozilla/4.0 (compatible; snom720 8.7.5.35)", "720", None),
    ("Mozilla/4.0 (compatible; snom320-SIP 8.4.35 1.1.3-n)", "320", None),
]  # fmt: skip
D785_UA = USER_AGENTS[0][0]
M900_UA = "Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413b60680)"

# Recorded User-Agents of Snom devices this adapter does not serve: the vendor is Snom, the model
# is unknown (None).
UNSERVED_USER_AGENTS = [
    # wazo-provd-plugins plugins/wazo-snom/common/common.py: firmware 6.5, no model token
    "Mozilla/4.0 (compatible; snom lid 3605)",
    # same: the PA1 paging adapter
    "Mozilla/4.0 (compatible; snomPA1-SIP 8.4.35 1.1.3-s)",
    # a FreePBX-Swiss provisioning script (comment): the old m9 DECT system, firmware 9
    "Mozilla/4.0 (compatible; snom m9 9.1.43)",
]

OTHER_VENDORS = [
    ("001565aabbcc.cfg", UA_YEALINK),
    ("y000000000000.boot", UA_YEALINK),
    ("7C2F80AABBCC.xml", UA_GIGASET),
    ("7C2F80AABBCC.xml", ""),
    ("0004f2aabbcc-user.cfg", "FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Application"),
    ("000000000000.cfg", "FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Updater"),
    ("cfg000b82aabbcc.xml", UA_GRANDSTREAM),
    ("Config0080F0C8C381.cfg", "Panasonic_KX-UT113/01.133 (0080f0c8c381)"),
    # a Snom-looking name requested by another vendor's phone
    ("snomD785.htm", UA_YEALINK),
]


def type_of(name: str) -> str:
    """The phone type in model ``name``'s file names."""
    return PHONE_TYPE.get(name, name)


def settings_of(xml: bytes) -> dict[tuple[str, str | None], str]:
    """``<phone-settings>`` as {(tag, idx): text}; the document must parse."""
    root = parse_xml(xml)
    assert root.tag == "settings"
    phone_settings = root.find("phone-settings")
    assert phone_settings is not None
    return {(el.tag, el.get("idx")): el.text or "" for el in phone_settings}


def file_urls(htm: bytes) -> list[str]:
    root = parse_xml(htm)
    assert root.tag == "setting-files"
    return [el.attrib["url"] for el in root.findall("file")]


def render(ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
    out = ADAPTER.render(ctx, templates)
    assert_no_template_syntax(out)
    return out


#: A base's access code as the service hands it over (random, 4 digits).
ACCESS_CODE = "7391"


def model_of(name: str) -> ModelInfo:
    model = ADAPTER.model(name)
    assert model is not None
    return model


def context_for(make_context: ContextFactory, name: str, **kwargs: object) -> RenderContext:
    """``make_context`` for Snom model ``name``; a base gets its access code, as in service."""
    model = model_of(name)
    if model.kind == "dect":
        kwargs.setdefault("access_code", ACCESS_CODE)
    return make_context(model, mac=MAC, **kwargs)


def with_pins(ctx: RenderContext, *pins: str | None) -> RenderContext:
    """``ctx`` with its lines' PINs replaced, in slot order."""
    pairs = zip(ctx.lines, pins, strict=True)
    lines = tuple(dataclasses.replace(line, pin=pin) for line, pin in pairs)
    return dataclasses.replace(ctx, lines=lines)


def occurrences(files: dict[str, bytes], secret: str) -> int:
    return sum(body.decode("utf-8").count(secret) for body in files.values())


# --- models -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "slots"),
    [("D712", "desk", 4), ("D713", "desk", 6), ("D717", "desk", 6), ("D785", "desk", 12),
     ("D862", "desk", 8), ("D865", "desk", 12), ("M400", "dect", 20), ("M700", "dect", 1000),
     ("M900", "dect", 1000), ("300", "desk", 4), ("320", "desk", 12), ("710", "desk", 4),
     ("760", "desk", 12), ("D120", "desk", 2), ("D305", "desk", 4), ("D315", "desk", 4),
     ("D335", "desk", 12), ("D812", "desk", 12)],
)  # fmt: skip
def test_model_capacities(name: str, kind: str, slots: int) -> None:
    model = ADAPTER.model(name.lower())
    assert model is not None
    assert (model.kind, model.slots) == (kind, slots)


def test_every_required_model_is_declared() -> None:
    for name in DESK_MODELS + DECT_MODELS:
        assert ADAPTER.model(name) is not None, name
    assert sorted(ADAPTER.models) == sorted(DESK_MODELS + DECT_MODELS)


@pytest.mark.parametrize(
    ("names", "family"),
    [(DESK_8, "8"), (DESK_8_9, "8.9"), (DESK_10_EOL, "10.1-eol"), (DESK_10, "10.1"),
     (DECT_MODELS, "M")],
)  # fmt: skip
def test_firmware_lines(names: list[str], family: str) -> None:
    assert {model_of(name).family for name in names} == {family}


@pytest.mark.parametrize(
    ("written", "model"),
    [("D785", "D785"), ("d785", "D785"), ("snomD785", "D785"), ("snomD785-SIP", "D785"),
     ("Snom D785", "D785"), ("D-785", "D785"), (" snom_d785 ", "D785"), ("Snom M900", "M900"),
     ("snomM700", "M700"), ("snom320", "320"), ("snom320-SIP", "320"),
     # the phone types of the D715/D725 and other names of the 710 and M400
     ("715", "D715"), ("snom715-SIP", "D715"), ("725", "D725"), ("D710", "710"),
     ("M400SC", "M400")],
)  # fmt: skip
def test_model_names_as_snom_writes_them(written: str, model: str) -> None:
    assert ADAPTER.resolve_model(written) == (model_of(model), True)
    assert ADAPTER.model_name(written) == model


def test_user_fields_leave_the_pin_to_pin_key() -> None:
    assert "pin" not in ADAPTER.user_fields
    assert "sip_credentials" in ADAPTER.user_fields


@pytest.mark.parametrize(
    ("name", "event"),
    [("D785", "check-sync;reboot=false"), ("M900", "check-sync;reboot=true")],
)
def test_sip_event(name: str, event: str) -> None:
    assert ADAPTER.sip_event(model_of(name)) == event


@pytest.mark.parametrize("name", DESK_MODELS)
def test_desk_pushes_never_reboot(name: str) -> None:
    model = model_of(name)
    assert ADAPTER.needs_maintenance_window(model) is False
    assert ADAPTER.sip_event(model) == "check-sync;reboot=false"


@pytest.mark.parametrize("name", DECT_MODELS)
def test_base_pushes_wait_for_the_maintenance_window(name: str) -> None:
    # No Snom document says an M-series base applies handset changes without a restart: its
    # pushes (which restart it) are held until the site's maintenance window.
    assert ADAPTER.needs_maintenance_window(model_of(name)) is True


@pytest.mark.parametrize("name", DESK_MODELS)
def test_desk_pin_key(name: str) -> None:
    key = ADAPTER.pin_key(model_of(name))
    assert key is not None
    assert key.name == "keyboard_lock_pw"
    assert key.min_digits <= 4
    assert key.max_digits >= 12
    assert "Key lock on Snom phones" in key.source
    assert ADAPTER.access_code_key(model_of(name)) is None


@pytest.mark.parametrize("name", DECT_MODELS)
def test_dect_keys(name: str) -> None:
    assert ADAPTER.pin_key(model_of(name)) is None
    key = ADAPTER.access_code_key(model_of(name))
    assert key is not None
    assert (key.name, key.digits) == ("subscr_dect_ac_code", 4)
    assert key.source


# --- identify -----------------------------------------------------------------------------


@pytest.mark.parametrize(("user_agent", "model", "ua_mac"), USER_AGENTS)
def test_user_agent_facts(user_agent: str, model: str, ua_mac: str | None) -> None:
    assert names_vendor(user_agent, "snom")
    # <MAC>.xml names no model: the model and the MAC are the User-Agent's.
    request = ADAPTER.identify("000413AABBCC.xml", user_agent)
    assert request == FileRequest("000413AABBCC.xml", MAC, ua_mac, model)
    # The boot file the device asks for first, by its phone type.
    shared = f"snom{type_of(model)}.htm"
    request = ADAPTER.identify(shared, user_agent)
    assert request == FileRequest(shared, ua_mac, ua_mac, model, shared=True)


@pytest.mark.parametrize("user_agent", UNSERVED_USER_AGENTS)
def test_user_agents_of_devices_not_served(user_agent: str) -> None:
    assert names_vendor(user_agent, "snom")
    request = ADAPTER.identify("000413AABBCC.xml", user_agent)
    assert request == FileRequest("000413AABBCC.xml", MAC, None, None)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda ua: ua.replace("000413922D24", "00:04:13:92:2D:24"), id="colons"),
        pytest.param(lambda ua: ua.replace("000413922D24", "00-04-13-92-2d-24"), id="dashes"),
        pytest.param(str.lower, id="lower-case"),
        pytest.param(lambda ua: ua.replace(" ", "  "), id="double-spaces"),
    ],
)
def test_user_agent_mac_forms(variant: Callable[[str], str]) -> None:
    request = ADAPTER.identify("snomD785-000413922D24.htm", variant(D785_UA))
    assert request is not None
    assert request.user_agent_mac == "000413922d24"
    assert request.mac == request.user_agent_mac
    assert request.model == "D785"


@pytest.mark.parametrize("name", DESK_MODELS + DECT_MODELS)
def test_every_boot_file_is_identified(name: str) -> None:
    ua = M900_UA if name.startswith("M") else D785_UA
    ua = ua.replace("000413b60680", "000413AABBCC").replace("000413922D24", "000413AABBCC")
    shared = ADAPTER.identify(f"snom{type_of(name)}.htm", ua)
    device_list = ADAPTER.identify(f"snom{type_of(name)}-000413AABBCC.htm", ua)
    settings = ADAPTER.identify("000413AABBCC.xml", ua)
    assert shared == FileRequest(f"snom{type_of(name)}.htm", MAC, MAC, name, shared=True)
    assert device_list == FileRequest(f"snom{type_of(name)}-000413AABBCC.htm", MAC, MAC, name)
    assert settings is not None
    assert (settings.file, settings.mac, settings.shared) == ("000413AABBCC.xml", MAC, False)


@pytest.mark.parametrize(
    ("path", "file"),
    [
        ("snomd785.htm", "snomD785.htm"),
        ("SNOMD785.HTM", "snomD785.htm"),
        ("snomd785-000413aabbcc.htm", "snomD785-000413AABBCC.htm"),
        ("000413aabbcc.xml", "000413AABBCC.xml"),
    ],
)
def test_file_names_are_canonical_whatever_the_case(path: str, file: str) -> None:
    request = ADAPTER.identify(path, D785_UA)
    assert request is not None
    assert request.file == file


@pytest.mark.parametrize(
    ("path", "file", "model"),
    [("snom715.htm", "snom715.htm", "D715"), ("snomD715.htm", "snom715.htm", "D715"),
     ("snom725-000413AABBCC.htm", "snom725-000413AABBCC.htm", "D725"),
     ("snomD725-000413aabbcc.htm", "snom725-000413AABBCC.htm", "D725"),
     ("snomD710.htm", "snom710.htm", "710"), ("snomM400SC.htm", "snomM400.htm", "M400")],
)  # fmt: skip
def test_phone_types_and_other_names_ask_for_the_models_files(
    path: str, file: str, model: str
) -> None:
    # The D715/D725 call themselves snom715/snom725 (Snom's redirection-service phone types,
    # firmware file names): docs/vendors/snom.md. The marketing name is accepted too.
    request = ADAPTER.identify(path, "")
    assert request is not None
    assert (request.file, request.model) == (file, model)


@pytest.mark.parametrize("name", DESK_MODELS + DECT_MODELS)
def test_identified_names_are_the_rendered_names(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    rendered = render(context_for(make_context, name, lines=1), templates)
    paths = [f"snom{name.lower()}.htm", f"snom{name}-000413aabbcc.htm", "000413aabbcc.xml"]
    identified = {ADAPTER.identify(path, "") for path in paths}
    assert {request.file for request in identified if request} == set(rendered)


def test_mac_mismatch_is_reported() -> None:
    request = ADAPTER.identify("snomD785-000413AABBCC.htm", D785_UA)
    assert request is not None
    assert request.mac == MAC
    assert request.user_agent_mac == "000413922d24"
    assert request.mac != request.user_agent_mac


def test_no_mac_in_user_agent_takes_the_path() -> None:
    request = ADAPTER.identify(
        "snomD785-000413AABBCC.htm", "Mozilla/4.0 (compatible; snom720 8.7.5.35)"
    )
    assert request is not None
    assert (request.mac, request.user_agent_mac) == (MAC, None)


def test_shared_file_without_any_mac() -> None:
    request = ADAPTER.identify("snomD785.htm", "")
    assert request == FileRequest("snomD785.htm", None, None, "D785", shared=True)


@pytest.mark.parametrize(
    ("user_agent", "claimed"),
    [
        ("", True),  # Snom OUI decides
        ("curl/8.5.0", True),
        (D785_UA, True),
        (UA_GIGASET, False),
    ],
)
def test_mac_xml_with_snom_oui(user_agent: str, claimed: bool) -> None:
    assert (ADAPTER.identify("000413AABBCC.xml", user_agent) is not None) is claimed


def test_mac_xml_with_foreign_oui_needs_a_snom_user_agent() -> None:
    assert ADAPTER.identify("7C2F80AABBCC.xml", "") is None
    assert ADAPTER.identify("7C2F80AABBCC.xml", "curl/8.5.0") is None
    request = ADAPTER.identify("7C2F80AABBCC.xml", D785_UA)
    assert request is not None
    assert request.mac != request.user_agent_mac


@pytest.mark.parametrize(("path", "user_agent"), OTHER_VENDORS)
def test_other_vendors_requests_are_not_snoms(path: str, user_agent: str) -> None:
    assert ADAPTER.identify(path, user_agent) is None


@pytest.mark.parametrize(
    "path",
    ["", "snom.htm", "snomD785-000413AABBC.htm", "x/snomD785.htm", "../000413AABBCC.xml",
     "000413AABBCC.xml.bak", "snomD785-firmware.htm", "000413AABBCC.cfg"],
)  # fmt: skip
def test_unrelated_paths(path: str) -> None:
    assert ADAPTER.identify(path, D785_UA) is None


# --- render -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DESK_MODELS + DECT_MODELS)
def test_render_files_and_setting_lists(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    model = model_of(name)
    ctx = context_for(make_context, name, lines=min(model.slots, 3))
    out = render(ctx, templates)
    shared, device_list = f"snom{type_of(name)}.htm", f"snom{type_of(name)}-000413AABBCC.htm"
    assert set(out) == {shared, device_list, "000413AABBCC.xml"}

    (shared_url,) = file_urls(out[shared])
    assert shared_url == f"https://prov.example.net/provisioning/snom{type_of(name)}-{{mac}}.htm"
    assert b"Pr0v" not in out[shared]

    (settings_url,) = file_urls(out[device_list])
    url = urlsplit(settings_url)
    assert (url.scheme, url.hostname, url.path) == (
        "https",
        "prov.example.net",
        "/provisioning/000413AABBCC.xml",
    )
    assert unquote(url.username or "") == ctx.provisioning_user
    assert unquote(url.password or "") == ctx.provisioning_password


@pytest.mark.parametrize("name", DESK_MODELS + DECT_MODELS)
@pytest.mark.parametrize("lines", [0, 1, 4])
def test_every_file_parses(
    name: str, lines: int, make_context: ContextFactory, templates: Templates
) -> None:
    lines = min(lines, model_of(name).slots)
    out = render(context_for(make_context, name, lines=lines, ipui=True), templates)
    assert file_urls(out[f"snom{type_of(name)}.htm"])
    assert file_urls(out[f"snom{type_of(name)}-000413AABBCC.htm"])
    assert settings_of(out["000413AABBCC.xml"])


@pytest.mark.parametrize("name", DESK_MODELS + DECT_MODELS)
def test_render_accounts(name: str, make_context: ContextFactory, templates: Templates) -> None:
    model = model_of(name)
    ctx = context_for(make_context, name, lines=min(model.slots, 4), ipui=True)
    settings = settings_of(render(ctx, templates)["000413AABBCC.xml"])

    for line in ctx.lines:
        idx = str(line.slot)
        assert settings["user_active", idx] == "on"
        assert settings["user_name", idx] == line.sip_user
        assert settings["user_pname", idx] == line.sip_auth_user
        assert settings["user_pass", idx] == line.sip_password
        assert settings["user_realname", idx] == line.display_name
    for slot in range(len(ctx.lines) + 1, model.slots + 1):
        assert settings["user_active", str(slot)] == "off"
        assert settings["user_pass", str(slot)] == ""
        assert settings["user_pname", str(slot)] == ""

    server = urlsplit(settings["setting_server", None])
    assert server.path == f"/provisioning/snom{type_of(name)}-000413AABBCC.htm"
    assert unquote(server.username or "") == ctx.provisioning_user
    assert unquote(server.password or "") == ctx.provisioning_password
    assert settings["language", None] == "Deutsch"
    assert settings["timezone", None] == "GER+1"
    assert settings["ntp_server", None] == "pool.ntp.org"


@pytest.mark.parametrize("name", DESK_MODELS)
def test_desk_registrar_no_reboot_and_keyboard_lock(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    site = Site(registrar_host="pbx.example.net", registrar_port=5061, transport="tls")
    ctx = context_for(make_context, name, lines=2, site=site)
    settings = settings_of(render(ctx, templates)["000413AABBCC.xml"])
    assert settings["user_host", "1"] == "pbx.example.net:5061"
    assert settings["user_outbound", "2"] == "pbx.example.net:5061;transport=tls"
    # A check-sync reloads the settings without forcing a reboot, whatever the event says.
    assert settings["checksync_action", None] == "sync"
    assert ctx.lines[0].pin
    assert settings["keyboard_lock_pw", None] == ctx.lines[0].pin
    assert settings["enable_keyboard_lock", None] == "on"
    # What 0 means is not documented: the automatic lock is left to the site.
    assert ("keyboard_lock_timeout", None) not in settings


@pytest.mark.parametrize("name", DESK_MODELS + DECT_MODELS)
@pytest.mark.parametrize("pin", ["4829", "482916", "482916735102"])
def test_shortest_and_longest_pin_render(
    name: str, pin: str, make_context: ContextFactory, templates: Templates
) -> None:
    model = model_of(name)
    ctx = with_pins(context_for(make_context, name, lines=1), pin)
    out = render(ctx, templates)
    settings = settings_of(out["000413AABBCC.xml"])
    if model.kind == "desk":
        key = ADAPTER.pin_key(model)
        assert key is not None
        assert key.min_digits <= len(pin) <= key.max_digits
        assert settings[key.name, None] == pin
        # The PIN is in the declared key and nowhere else.
        assert occurrences(out, pin) == 1
    else:
        # No user-PIN key on a base: the PIN stays on the server.
        assert occurrences(out, pin) == 0


@pytest.mark.parametrize("name", DESK_MODELS)
def test_desk_pin_only_in_the_declared_key(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    model = model_of(name)
    ctx = context_for(make_context, name, lines=min(model.slots, 3))
    out = render(ctx, templates)
    settings = settings_of(out["000413AABBCC.xml"])
    first, *others = ctx.lines
    assert first.pin is not None
    found = [key for key, value in settings.items() if value == first.pin]
    assert found == [("keyboard_lock_pw", None)]
    assert occurrences(out, first.pin) == 1
    for line in others:  # other identities' users do not unlock this phone
        assert line.pin is not None
        assert occurrences(out, line.pin) == 0


def test_desk_without_pin_clears_the_lock_pin(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = with_pins(context_for(make_context, "D785", lines=1), None)
    settings = settings_of(render(ctx, templates)["000413AABBCC.xml"])
    assert settings["keyboard_lock_pw", None] == ""


def test_desk_ignores_an_access_code(make_context: ContextFactory, templates: Templates) -> None:
    ctx = context_for(make_context, "D785", lines=1, access_code="5820")
    assert occurrences(render(ctx, templates), "5820") == 0


@pytest.mark.parametrize("name", DECT_MODELS)
def test_dect_handsets(name: str, make_context: ContextFactory, templates: Templates) -> None:
    model = model_of(name)
    site = Site(registrar_host="pbx.example.net", registrar_port=5080, transport="tcp")
    ctx = context_for(make_context, name, lines=3, ipui=True, site=site)
    settings = settings_of(render(ctx, templates)["000413AABBCC.xml"])
    assert settings["user_host", "1"] == "pbx.example.net:5080"
    assert settings["srv_sip_transport", "1"] == "tcp"
    assert settings["ac_code", None] == ACCESS_CODE
    for line in ctx.lines:
        idx = str(line.slot)
        assert settings["subscr_sip_hs_idx", idx] == idx
        assert settings["subscr_sip_ua_data_server_id", idx] == "1"
        assert settings["subscr_dect_ac_code", idx] == ACCESS_CODE
        assert line.ipui is not None
        assert settings["subscr_dect_ipui", idx] == "0x" + line.ipui
    # Every slot of the base, free ones too, asks a subscribing handset for the base's code.
    for slot in range(len(ctx.lines) + 1, model.slots + 1):
        assert settings["subscr_dect_ac_code", str(slot)] == ACCESS_CODE
    assert ("keyboard_lock_pw", None) not in settings
    assert ("checksync_action", None) not in settings


@pytest.mark.parametrize("name", DECT_MODELS)
def test_dect_access_code_is_not_the_pin(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context_for(make_context, name, lines=3)
    written = set()
    for pins in [("4829", "1111", "9876"), ("482916735102", "0000", None)]:
        assert ACCESS_CODE not in pins
        out = render(with_pins(ctx, *pins), templates)
        settings = settings_of(out["000413AABBCC.xml"])
        written |= {v for (k, _), v in settings.items() if k in ("subscr_dect_ac_code", "ac_code")}
        for pin in pins:  # the users' PINs never reach the base
            if pin is not None:
                assert occurrences(out, pin) == 0, pin
    # The code is the base's own, as the service hands it over: it does not follow the PINs.
    assert written == {ACCESS_CODE}


@pytest.mark.parametrize("name", DECT_MODELS)
@pytest.mark.parametrize("code", [None, "", "123", "12345", "12a4", "\uff11\uff12\uff13\uff14"])
def test_dect_without_a_valid_access_code_is_not_rendered(
    name: str, code: str | None, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context_for(make_context, name, lines=1, access_code=code)
    with pytest.raises(RenderError):
        ADAPTER.render(ctx, templates)


def test_dect_handset_without_ipui(make_context: ContextFactory, templates: Templates) -> None:
    ctx = context_for(make_context, "M900", lines=1)
    settings = settings_of(render(ctx, templates)["000413AABBCC.xml"])
    assert settings["subscr_dect_ac_code", "1"] == ACCESS_CODE
    assert ("subscr_dect_ipui", "1") not in settings


@pytest.mark.parametrize(
    ("ipui", "written"),
    [("0A1B2C3D4E", "0x0A1B2C3D4E"), ("0a1b2c3d4e", "0x0A1B2C3D4E"),
     ("0x0a1b2c3d4e", "0x0A1B2C3D4E")],
)  # fmt: skip
def test_dect_ipui_form(
    ipui: str, written: str, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context_for(make_context, "M700", lines=1)
    ctx = dataclasses.replace(ctx, lines=(dataclasses.replace(ctx.lines[0], ipui=ipui),))
    settings = settings_of(render(ctx, templates)["000413AABBCC.xml"])
    assert settings["subscr_dect_ipui", "1"] == written


@pytest.mark.parametrize("ipui", ["0A1B2C3D4", "0A1B2C3D4E5", "0A1B2C3D4G", "0x", "x0A1B2C3D4E"])
def test_dect_bad_ipui(ipui: str, make_context: ContextFactory, templates: Templates) -> None:
    ctx = context_for(make_context, "M700", lines=1)
    line: Line = dataclasses.replace(ctx.lines[0], ipui=ipui)
    with pytest.raises(RenderError):
        ADAPTER.render(dataclasses.replace(ctx, lines=(line,)), templates)


@pytest.mark.parametrize("name", DESK_MODELS + DECT_MODELS)
def test_too_many_lines(name: str, make_context: ContextFactory, templates: Templates) -> None:
    ctx = context_for(make_context, name, lines=model_of(name).slots + 1)
    with pytest.raises(RenderError):
        ADAPTER.render(ctx, templates)


@pytest.mark.parametrize("slots", [(1, 1), (0,), (13,)])
def test_bad_slots(
    slots: tuple[int, ...], make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context_for(make_context, "D785", lines=1)
    lines = tuple(dataclasses.replace(ctx.lines[0], slot=slot) for slot in slots)
    with pytest.raises(RenderError):
        ADAPTER.render(dataclasses.replace(ctx, lines=lines), templates)


@pytest.mark.parametrize("name", ["D785", "M900"])
def test_render_is_deterministic(
    name: str, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context_for(make_context, name, lines=4, ipui=True)
    assert ADAPTER.render(ctx, templates) == ADAPTER.render(ctx, Templates("snom"))


def test_control_characters_cannot_inject_settings(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = context_for(make_context, "D785", lines=1)
    line = dataclasses.replace(
        ctx.lines[0], display_name='Eve\r\n</user_realname><user_pass idx="1">x', sip_user="2\x0001"
    )
    settings = settings_of(
        render(dataclasses.replace(ctx, lines=(line,)), templates)["000413AABBCC.xml"]
    )
    assert settings["user_realname", "1"] == 'Eve</user_realname><user_pass idx="1">x'
    assert settings["user_pass", "1"] == line.sip_password
    assert settings["user_name", "1"] == "201"


@pytest.mark.parametrize(
    ("zone", "language", "expected_zone", "expected_language"),
    [
        ("America/New_York", "en", "USA-5", "English"),
        ("Europe/London", "fr", "GBR-0", "Francais"),
        ("Europe/Madrid", "es", "ESP+1", "Espanol"),
        ("Mars/Olympus_Mons", "xx", "GER+1", "English"),  # documented fallbacks
    ],
)
def test_timezone_and_language(
    zone: str,
    language: str,
    expected_zone: str,
    expected_language: str,
    make_context: ContextFactory,
    templates: Templates,
) -> None:
    site = Site(registrar_host="pbx.example.net", timezone=zone, language=language)
    ctx = context_for(make_context, "D735", lines=0, site=site)
    settings = settings_of(render(ctx, templates)["000413AABBCC.xml"])
    assert settings["timezone", None] == expected_zone
    assert settings["language", None] == expected_language


def test_line_language_wins_over_site(make_context: ContextFactory, templates: Templates) -> None:
    ctx = context_for(make_context, "D735", lines=1)
    lines = (dataclasses.replace(ctx.lines[0], language="en"),)
    settings = settings_of(
        render(dataclasses.replace(ctx, lines=lines), templates)["000413AABBCC.xml"]
    )
    assert settings["language", None] == "English"


def test_provisioning_url_without_trailing_slash(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = dataclasses.replace(
        context_for(make_context, "D785"), provisioning_url="http://10.0.0.1:8080/provisioning"
    )
    (url,) = file_urls(render(ctx, templates)["snomD785.htm"])
    assert url == "http://10.0.0.1:8080/provisioning/snomD785-{mac}.htm"


# --- models the table does not list ---------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "name", "kind", "slots"),
    [("D140", "D140", "desk", 1), ("snomD999-SIP", "D999", "desk", 1),
     ("d385n", "D385N", "desk", 1), ("380", "380", "desk", 1),
     ("M325", "M325", "dect", 20), ("snom m430", "M430", "dect", 20),
     ("M950", "M950", "dect", 20)],
)  # fmt: skip
def test_generic_model(written: str, name: str, kind: str, slots: int) -> None:
    resolved = ADAPTER.resolve_model(written)
    assert resolved is not None
    model, known = resolved
    assert not known
    assert (model.name, model.kind, model.slots) == (name, kind, slots)
    # Its firmware is unknown: no push restarts it outside the maintenance window.
    assert ADAPTER.needs_maintenance_window(model)
    reboot = "true" if kind == "dect" else "false"
    assert ADAPTER.sip_event(model) == f"check-sync;reboot={reboot}"
    if kind == "desk":
        assert ADAPTER.pin_key(model) is not None
        assert ADAPTER.access_code_key(model) is None
    else:
        assert ADAPTER.pin_key(model) is None
        assert ADAPTER.access_code_key(model) is not None


@pytest.mark.parametrize(
    "written",
    ["", "snom", "T54W", "SIP-T54W", "N870", "VVX450", "GXP2170",  # other vendors' models
     "M100", "M100KLE", "M200SC", "M215", "M500",  # bases of another file format
     "C520", "C620", "PA1", "MP", "m9",  # conference phones, paging adapter, the old m9
     "D7C", "D7", "D78", "D7855", "190", "200", "1000", "M30", "M3000", "D785X1",
     "x" * 300, "D785\x00"],
)  # fmt: skip
def test_names_that_are_no_snom_model_of_this_scheme(written: str) -> None:
    assert ADAPTER.resolve_model(written) is None
    assert ADAPTER.generic_model(written) is None


def test_table_models_are_not_generic() -> None:
    assert ADAPTER.generic_model("D785") is None
    assert ADAPTER.generic_model("715") is None


@pytest.mark.parametrize(("name", "kind"), [("D140", "desk"), ("M325", "dect")])
def test_generic_model_renders_and_is_identified(
    name: str, kind: str, make_context: ContextFactory, templates: Templates
) -> None:
    model = ADAPTER.generic_model(name)
    assert model is not None
    kwargs = {"access_code": ACCESS_CODE} if kind == "dect" else {}
    ctx = make_context(model, mac=MAC, lines=1, **kwargs)
    out = render(ctx, templates)
    assert set(out) == {f"snom{name}.htm", f"snom{name}-000413AABBCC.htm", "000413AABBCC.xml"}
    settings = settings_of(out["000413AABBCC.xml"])
    assert settings["user_pass", "1"] == ctx.lines[0].sip_password
    for path in [f"snom{name.lower()}.htm", f"snom{name}-000413aabbcc.htm"]:
        request = ADAPTER.identify(path, "")
        assert request is not None
        assert request.file in out
        assert request.model == name
    with pytest.raises(RenderError):  # the safe capacity is a hard limit
        ADAPTER.render(make_context(model, mac=MAC, lines=model.slots + 1, **kwargs), templates)


# --- bad input ------------------------------------------------------------------------------

HUGE_UA = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 000413922D24)" + " x" * 4096


@pytest.mark.parametrize(
    "user_agent",
    [
        pytest.param(HUGE_UA, id="8-kb"),
        pytest.param(D785_UA.replace(" 000413922D24", "\x00000413922D24"), id="nul"),
        pytest.param(D785_UA + "\r\nX-Injected: 1", id="crlf"),
        pytest.param(D785_UA.replace(" ", "\t"), id="tabs"),
        pytest.param(D785_UA + "\x7f\x85", id="del-and-c1"),
    ],
)
def test_oversized_or_control_character_user_agents_count_as_absent(user_agent: str) -> None:
    assert len(HUGE_UA) > 8192
    request = ADAPTER.identify("snomD785-000413AABBCC.htm", user_agent)
    assert request == FileRequest("snomD785-000413AABBCC.htm", MAC, None, "D785")
    assert ADAPTER.identify("snomD785.htm", user_agent) == FileRequest(
        "snomD785.htm", None, None, "D785", shared=True
    )
    # <MAC>.xml is Gigaset's name too: only the Snom OUI claims it now.
    assert ADAPTER.identify("000413AABBCC.xml", user_agent) == FileRequest(
        "000413AABBCC.xml", MAC, None, None
    )
    assert ADAPTER.identify("7C2F80AABBCC.xml", user_agent) is None


@pytest.mark.parametrize(
    ("path", "user_agent"),
    [
        # another vendor's phone asking for a Snom file name
        ("snomD785.htm", "Yealink SIP-T54W 96.86.0.70 00:15:65:aa:bb:cc"),
        ("snomD785-000413AABBCC.htm", UA_GIGASET),
        ("000413AABBCC.xml", "Mozilla/4.0 (compatible; snomD785-SIP 10.1 Yealink T54W)"),
        # a Snom file name for a model no Snom device has
        ("snomT54W.htm", D785_UA),
        ("snomT54W-000413AABBCC.htm", D785_UA),
        ("snomPA1.htm", ""),
        ("snomM500-000413AABBCC.htm", ""),
        ("snom" + "D" * 40 + ".htm", ""),
    ],
)
def test_requests_for_another_vendors_model_are_refused(path: str, user_agent: str) -> None:
    assert ADAPTER.identify(path, user_agent) is None


def test_a_user_agent_claiming_another_vendors_model_is_unknown() -> None:
    request = ADAPTER.identify(
        "000413AABBCC.xml", "Mozilla/4.0 (compatible; snomT54W-SIP 1.0 000413AABBCC)"
    )
    assert request == FileRequest("000413AABBCC.xml", MAC, MAC, None)


@pytest.mark.parametrize(
    "path",
    ["snomD785.htm", "snom715-000413AABBCC.htm", "000413AABBCC.xml", "snom.htm", "x" * 9000,
     "snomD785.htm\x00", "\x00", "snom\u0661\u0662\u0663.htm", "000413AABBC\u0663.xml"],
)  # fmt: skip
@pytest.mark.parametrize(
    "user_agent",
    ["", HUGE_UA, "\x00" * 100, "snom" * 2000, "Mozilla/4.0 (compatible; snom" + "9" * 5000,
     "Mozilla/4.0 (compatible; snomD785-SIP \udcff)", D785_UA],
)  # fmt: skip
def test_identify_never_raises(path: str, user_agent: str) -> None:
    request = ADAPTER.identify(path, user_agent)
    if request is not None:
        assert request.file.isascii()

"""Yealink adapter: request identification, rendered files and conformance with the PIN rules.

What each key means and where it is documented: docs/vendors/yealink.md.
"""

from __future__ import annotations

import dataclasses
import re

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
from provisioner.devices.yealink import ADAPTER, MODELS, common_file_name
from tests.devices.conftest import (
    UA_FANVIL,
    UA_GIGASET,
    UA_GRANDSTREAM,
    UA_POLY,
    UA_SNOM,
    ContextFactory,
    assert_no_template_syntax,
    make_line,
    parse_xml,
)

MAC = "001565aabbcc"

# User-Agents of Yealink's HTTP requests. The first two are the forms recorded in VENDORS.md and
# the adapter brief; the others are the field variants VENDORS.md lists (no MAC on old firmware,
# MAC without colons or in upper case, double spaces), applied to real model/firmware pairs.
UA_T54W = "Yealink SIP-T54W 96.86.0.70 00:15:65:aa:bb:cc"
UA_W70B = "Yealink W70B 146.85.0.20 80:5e:c0:aa:bb:cc"
UA_NO_MAC = "Yealink SIP-T46S 66.86.0.15"
UA_UPPER_COMPACT = "Yealink SIP-T48U 108.86.0.45 001565AABBCC"
UA_DOUBLE_SPACES = "Yealink  SIP-T33G  124.86.0.75  00:15:65:AA:BB:CC"

KEY_VALUE = re.compile(r"(?P<key>[a-z0-9_.]+) = (?P<value>.*)")

DESK = [m for m in MODELS if m.kind == "desk"]
DECT = [m for m in MODELS if m.kind == "dect"]

#: A DECT base's access code as the service hands it over (random, 4 digits), and PINs of the
#: shortest and the longest length the PIN policy admits.
ACCESS_CODE = "7305"
SHORTEST_PIN = "4096"
LONGEST_PIN = "918273645012"


def user_agent(model: ModelInfo, mac: str = MAC) -> str:
    """A User-Agent in the recorded form for ``model``."""
    prefix = "" if model.kind == "dect" else "SIP-"
    colons = ":".join(mac[i : i + 2] for i in range(0, 12, 2))
    return f"Yealink {prefix}{model.name} {model.family}.86.0.70 {colons}"


def parse_cfg(data: bytes) -> dict[str, str]:
    """A Yealink CFG file as a dict; fails on a malformed or repeated line."""
    lines = data.decode("utf-8").splitlines()
    assert lines[0] == "#!version:1.0.0.1"
    values: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        m = KEY_VALUE.fullmatch(line)
        assert m, f"not a key = value line: {line!r}"
        assert m["key"] not in values, f"key set twice: {m['key']}"
        values[m["key"]] = m["value"]
    return values


def render(make_context: ContextFactory, model: ModelInfo, **kwargs: object) -> dict[str, bytes]:
    return ADAPTER.render(make_context(model, **kwargs), Templates("yealink"))


# --- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "slots", "family"),
    [
        ("T54W", "desk", 16, "96"),
        ("t53w", "desk", 12, "95"),
        ("T57W", "desk", 16, "97"),
        ("T58W", "desk", 16, "150"),
        ("T46U", "desk", 16, "108"),
        ("T48U", "desk", 16, "109"),
        ("T43U", "desk", 12, "107"),
        ("T42U", "desk", 12, "116"),
        ("T46S", "desk", 16, "66"),
        ("T48S", "desk", 16, "65"),
        ("T31G", "desk", 2, "123"),
        ("T33G", "desk", 4, "124"),
        ("T34W", "desk", 4, "171"),
        ("T44W", "desk", 12, "174"),
        ("W70B", "dect", 10, "146"),
        ("W80B", "dect", 50, "103"),
        ("W80DM", "dect", 100, "103"),
    ],
)
def test_models(name: str, kind: str, slots: int, family: str) -> None:
    model = ADAPTER.model(name)
    assert model is not None
    assert (model.kind, model.slots, model.family) == (kind, slots, family)


def test_user_fields() -> None:
    assert ADAPTER.user_fields == {"display_name", "language", "sip_credentials"}


# --- conformance: pushes, PIN key, access code -------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_sip_event_asks_for_no_reboot(model: ModelInfo) -> None:
    assert ADAPTER.sip_event(model) == "check-sync;reboot=false"
    assert ADAPTER.needs_maintenance_window(model) is False


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_config_turns_notify_reboots_off(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    """``sip.notify_reboot_enable = 0``: a check-sync reboots only when it says reboot=true."""
    files = render(make_context, model)
    for name in (common_file_name(model), f"{MAC}.cfg"):
        assert parse_cfg(files[name])["sip.notify_reboot_enable"] == "0", name


@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
def test_desk_pin_key(model: ModelInfo) -> None:
    key = ADAPTER.pin_key(model)
    assert key is not None
    assert key.name == "phone_setting.phone_lock.unlock_pin"
    assert (key.min_digits, key.max_digits) == (1, 15)
    assert "Phone Lock" in key.source
    assert ADAPTER.access_code_key(model) is None


@pytest.mark.parametrize("model", DECT, ids=lambda m: m.name)
def test_dect_keys(model: ModelInfo) -> None:
    """No user-PIN key on the bases; the base PIN is the handsets' access code, 4 digits."""
    assert ADAPTER.pin_key(model) is None
    key = ADAPTER.access_code_key(model)
    assert key is not None
    assert (key.name, key.digits) == ("base.pin_code", 4)


def _with_pin(ctx: RenderContext, pin: str | None) -> RenderContext:
    return dataclasses.replace(
        ctx, lines=tuple(dataclasses.replace(line, pin=pin) for line in ctx.lines)
    )


def _cfg_values(files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    return {name: parse_cfg(body) for name, body in files.items() if name.endswith(".cfg")}


@pytest.mark.parametrize("pin", [SHORTEST_PIN, LONGEST_PIN], ids=["shortest", "longest"])
@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
def test_desk_pin_only_in_its_key(make_context: ContextFactory, model: ModelInfo, pin: str) -> None:
    """A PIN of any policy-valid length renders verbatim in the declared key, and nowhere else."""
    ctx = _with_pin(make_context(model, lines=min(model.slots, 2)), pin)
    files = ADAPTER.render(ctx, Templates("yealink"))
    key = ADAPTER.pin_key(model)
    assert key is not None
    assert key.min_digits <= len(pin) <= key.max_digits
    carrying = [
        (name, k)
        for name, values in _cfg_values(files).items()
        for k, v in values.items()
        if pin in v
    ]
    assert carrying == [(f"{MAC}.cfg", key.name)]
    assert parse_cfg(files[f"{MAC}.cfg"])[key.name] == pin
    for name, body in files.items():
        if name != f"{MAC}.cfg":
            assert pin not in body.decode("utf-8"), name


@pytest.mark.parametrize("pin", [SHORTEST_PIN, LONGEST_PIN], ids=["shortest", "longest"])
@pytest.mark.parametrize("model", DECT, ids=lambda m: m.name)
def test_dect_configs_never_carry_the_pin(
    make_context: ContextFactory, model: ModelInfo, pin: str
) -> None:
    """Even handed a PIN, a base renders without it: Yealink has no per-handset user PIN."""
    ctx = _with_pin(make_context(model, lines=3, access_code=ACCESS_CODE), pin)
    files = ADAPTER.render(ctx, Templates("yealink"))
    for name, body in files.items():
        assert pin not in body.decode("utf-8"), name
    cfg = parse_cfg(files[f"{MAC}.cfg"])
    assert not [key for key in cfg if key.startswith("phone_setting.phone_lock")]


@pytest.mark.parametrize("model", DECT, ids=lambda m: m.name)
def test_dect_access_code_in_its_key(make_context: ContextFactory, model: ModelInfo) -> None:
    """The base's access code goes into base.pin_code of the personal file, nowhere else."""
    ctx = make_context(model, lines=3, access_code=ACCESS_CODE)
    files = ADAPTER.render(ctx, Templates("yealink"))
    key = ADAPTER.access_code_key(model)
    assert key is not None
    cfg = parse_cfg(files[f"{MAC}.cfg"])
    assert cfg[key.name] == ACCESS_CODE
    assert [k for k, v in cfg.items() if ACCESS_CODE in v] == [key.name]
    for name, body in files.items():
        if name != f"{MAC}.cfg":
            assert ACCESS_CODE not in body.decode("utf-8"), name


@pytest.mark.parametrize("model", DECT, ids=lambda m: m.name)
def test_dect_access_code_is_not_the_pin(make_context: ContextFactory, model: ModelInfo) -> None:
    """The access code is what the service hands over: never the PIN, unchanged when PINs change."""
    ctx = make_context(model, lines=2, access_code=ACCESS_CODE)
    codes = set()
    for pin in (SHORTEST_PIN, LONGEST_PIN, None):
        cfg = parse_cfg(ADAPTER.render(_with_pin(ctx, pin), Templates("yealink"))[f"{MAC}.cfg"])
        codes.add(cfg["base.pin_code"])
        assert cfg["base.pin_code"] != pin
    assert codes == {ACCESS_CODE}


@pytest.mark.parametrize("model", DECT, ids=lambda m: m.name)
def test_dect_without_access_code_leaves_the_base_pin(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    cfg = parse_cfg(render(make_context, model, lines=2)[f"{MAC}.cfg"])
    assert "base.pin_code" not in cfg


@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
def test_desk_ignores_an_access_code(make_context: ContextFactory, model: ModelInfo) -> None:
    files = render(make_context, model, access_code=ACCESS_CODE)
    assert "base.pin_code" not in parse_cfg(files[f"{MAC}.cfg"])
    assert not [name for name, body in files.items() if ACCESS_CODE in body.decode("utf-8")]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_every_file_parses(make_context: ContextFactory, model: ModelInfo) -> None:
    """Yealink serves no XML; every CFG file is ``key = value`` lines, boot files include lines."""
    files = render(make_context, model, access_code=ACCESS_CODE if model.kind == "dect" else None)
    for name, body in files.items():
        if name.endswith(".xml"):
            parse_xml(body)
        elif name.endswith(".cfg"):
            parse_cfg(body)
        else:
            assert name.endswith(".boot"), name
            lines = body.decode("utf-8").splitlines()
            assert lines[0] == "#!version:1.0.0.1"
            assert all(re.fullmatch(r'include:config "[^"]+"', line) for line in lines[1:])


@pytest.mark.parametrize(
    ("language", "value"),
    [("de", "2"), ("en", "0"), ("fr", "1"), ("it", "3"), ("es", "6"), ("pl", "0"), ("DE", "2")],
)
@pytest.mark.parametrize("model", DECT, ids=lambda m: m.name)
def test_dect_handset_language(
    make_context: ContextFactory, model: ModelInfo, language: str, value: str
) -> None:
    """The handsets' menu language follows the site; unlisted languages fall back to English."""
    site = Site(registrar_host="pbx.example.net", language=language)
    files = render(make_context, model, site=site)
    for name in (common_file_name(model), f"{MAC}.cfg"):
        values = parse_cfg(files[name])
        assert values["custom.handset.language"] == value, name
        assert "lang.gui" not in values, name
        assert "lang.wui" in values, name


@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
def test_desk_has_no_handset_language(make_context: ContextFactory, model: ModelInfo) -> None:
    files = render(make_context, model)
    for name in (common_file_name(model), f"{MAC}.cfg"):
        assert "custom.handset.language" not in parse_cfg(files[name]), name


# --- identify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_identify_every_rendered_file(make_context: ContextFactory, model: ModelInfo) -> None:
    """Each file the boot sequence asks for is recognised under the name render gives it."""
    files = render(make_context, model, mac=MAC)
    assert set(files) == {
        f"{MAC}.boot",
        "y000000000000.boot",
        common_file_name(model),
        f"{MAC}.cfg",
    }
    for name in files:
        request = ADAPTER.identify(name, user_agent(model))
        assert request is not None, name
        assert request.file == name
        assert request.mac == MAC
        assert request.user_agent_mac == MAC
        assert request.model == model.name
        assert request.shared is (name != f"{MAC}.cfg")


def test_common_file_name_is_twelve_digits() -> None:
    assert common_file_name(ADAPTER.models["T54W"]) == "y000000000096.cfg"
    assert common_file_name(ADAPTER.models["T58W"]) == "y000000000150.cfg"


@pytest.mark.parametrize(
    ("ua", "model", "mac"),
    [
        (UA_T54W, "T54W", "001565aabbcc"),
        (UA_W70B, "W70B", "805ec0aabbcc"),
        (UA_NO_MAC, "T46S", None),
        (UA_UPPER_COMPACT, "T48U", "001565aabbcc"),
        (UA_DOUBLE_SPACES, "T33G", "001565aabbcc"),
        ("", None, None),
    ],
)
def test_identify_reads_the_user_agent(ua: str, model: str | None, mac: str | None) -> None:
    request = ADAPTER.identify("y000000000000.boot", ua)
    assert request is not None
    assert (request.model, request.user_agent_mac, request.mac) == (model, mac, mac)


def test_identify_takes_the_mac_from_the_path_first() -> None:
    request = ADAPTER.identify("001565AABBCC.cfg", UA_NO_MAC)
    assert request is not None
    assert (request.file, request.mac, request.user_agent_mac) == (f"{MAC}.cfg", MAC, None)


@pytest.mark.parametrize("path", [f"{MAC}.boot", f"{MAC}.cfg"])
def test_identify_reports_a_mac_mismatch(path: str) -> None:
    request = ADAPTER.identify(path, "Yealink SIP-T54W 96.86.0.70 00:15:65:11:22:33")
    assert request is not None
    assert request.mac == MAC
    assert request.user_agent_mac == "001565112233"


def test_identify_keeps_an_unknown_model_name() -> None:
    request = ADAPTER.identify("y000000000099.cfg", "Yealink SIP-T99X 99.86.0.1")
    assert request is not None
    assert request.model == "T99X"


@pytest.mark.parametrize(
    ("path", "ua"),
    [
        ("001565aabbcc.cfg", ""),  # Yealink OUI
        ("805ec0aabbcc.cfg", "curl/8.5.0"),  # Yealink OUI, unknown User-Agent
        ("0004f2aabbcc.cfg", UA_T54W),  # Yealink User-Agent wins over the OUI
    ],
)
def test_identify_claims_a_shared_name(path: str, ua: str) -> None:
    assert ADAPTER.identify(path, ua) is not None


@pytest.mark.parametrize(
    ("path", "ua"),
    [
        ("0004f2aabbcc.cfg", UA_POLY),
        ("000000000000.cfg", UA_POLY),
        ("000000000000.cfg", ""),
        ("0004f2aabbcc.cfg", ""),  # Poly OUI, no User-Agent
        ("0c383e07e16c.cfg", UA_FANVIL),
        ("001565aabbcc.cfg", UA_FANVIL),  # another vendor's User-Agent wins over the OUI
        ("0004f2aabbcc-phone.cfg", UA_POLY),
        ("snomD785.htm", UA_SNOM),
        ("snomD785-000413922D24.htm", UA_SNOM),
        ("7C2F80E0D605.xml", UA_GIGASET),
        ("cfg000b82aabbcc.xml", UA_GRANDSTREAM),
        ("cfg.xml", UA_GRANDSTREAM),
        ("y000000000000.boot", UA_GRANDSTREAM),
    ],
)
def test_identify_declines_other_vendors(path: str, ua: str) -> None:
    assert ADAPTER.identify(path, ua) is None


@pytest.mark.parametrize(
    "path",
    [
        "001565aabbcc-local.cfg",
        "y000000000000.cfg",
        "y00000000096.cfg",
        "yealink/001565aabbcc.cfg",
        "../001565aabbcc.cfg",
        "001565aabbc.cfg",
        "001565aabbcc.boot.bak",
        "",
    ],
)
def test_identify_declines_other_paths(path: str) -> None:
    assert ADAPTER.identify(path, UA_T54W) is None


# --- render ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_boot_files_name_the_common_and_the_device_file(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    files = render(make_context, model)
    expected = f'#!version:1.0.0.1\ninclude:config "{common_file_name(model)}"\n'
    expected += f'include:config "{MAC}.cfg"\n'
    assert files[f"{MAC}.boot"].decode() == expected
    assert files["y000000000000.boot"] == files[f"{MAC}.boot"]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_accounts(make_context: ContextFactory, model: ModelInfo) -> None:
    lines = min(model.slots, 4)
    ctx = make_context(model, lines=lines, site=Site(registrar_host="pbx.example.net"))
    cfg = parse_cfg(ADAPTER.render(ctx, Templates("yealink"))[f"{MAC}.cfg"])
    for line in ctx.lines:
        n = line.slot
        assert cfg[f"account.{n}.enable"] == "1"
        assert cfg[f"account.{n}.label"] == line.display_name
        assert cfg[f"account.{n}.display_name"] == line.display_name
        assert cfg[f"account.{n}.user_name"] == line.sip_user
        assert cfg[f"account.{n}.auth_name"] == line.sip_auth_user
        assert cfg[f"account.{n}.password"] == line.sip_password
        assert cfg[f"account.{n}.sip_server.1.address"] == "pbx.example.net"
        assert cfg[f"account.{n}.sip_server.1.port"] == "5060"
        assert cfg[f"account.{n}.sip_server.1.transport_type"] == "0"
    for n in range(lines + 1, model.slots + 1):
        assert cfg[f"account.{n}.enable"] == "0"
        assert cfg[f"account.{n}.password"] == "%NULL%"
        assert cfg[f"account.{n}.user_name"] == "%NULL%"
    assert f"account.{model.slots + 1}.enable" not in cfg


def test_names_and_secrets_survive_verbatim(make_context: ContextFactory) -> None:
    """Umlauts, quotes and XML specials are written as they are (key = value is not XML)."""
    cfg = render(make_context, ADAPTER.models["T54W"], lines=4)[f"{MAC}.cfg"].decode("utf-8")
    assert "account.1.label = Jürgen Müller\n" in cfg
    assert "account.2.display_name = Anna <Ops> & Co\n" in cfg
    assert 'account.3.label = Zoë "Z" O\'Neil\n' in cfg
    assert "account.2.password = Sip&Secret<2>x9Q\n" in cfg
    assert "&amp;" not in cfg
    assert "&lt;" not in cfg


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_provisioning_and_site_settings(make_context: ContextFactory, model: ModelInfo) -> None:
    ctx = make_context(model)
    files = ADAPTER.render(ctx, Templates("yealink"))
    cfg = parse_cfg(files[f"{MAC}.cfg"])
    assert cfg["static.auto_provision.server.url"] == ctx.provisioning_url
    assert cfg["static.auto_provision.server.username"] == ctx.provisioning_user
    assert cfg["static.auto_provision.server.password"] == ctx.provisioning_password
    for values in (cfg, parse_cfg(files[common_file_name(model)])):
        assert values["local_time.time_zone"] == "+1"
        assert values["local_time.time_zone_name"] == "Germany(Berlin)"
        assert values["local_time.summer_time"] == "2"
        assert values["local_time.ntp_server1"] == "pool.ntp.org"
        assert values["lang.wui"] == "German"
        if model.kind == "desk":
            assert values["lang.gui"] == "German"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_shared_files_carry_no_secret(make_context: ContextFactory, model: ModelInfo) -> None:
    ctx = make_context(model, access_code=ACCESS_CODE if model.kind == "dect" else None)
    files = ADAPTER.render(ctx, Templates("yealink"))
    secrets = [ctx.provisioning_password, *(line.sip_password for line in ctx.lines)]
    secrets += [line.pin for line in ctx.lines if line.pin]
    secrets += [ctx.access_code] if ctx.access_code else []
    for name in (f"{MAC}.boot", "y000000000000.boot", common_file_name(model)):
        text = files[name].decode("utf-8")
        assert not [secret for secret in secrets if secret in text], name


@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
def test_desk_phone_lock_uses_the_pin_of_line_1(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    ctx = make_context(model)
    cfg = parse_cfg(ADAPTER.render(ctx, Templates("yealink"))[f"{MAC}.cfg"])
    assert ctx.lines[0].pin == "482917"
    assert cfg["phone_setting.phone_lock.enable"] == "1"
    assert cfg["phone_setting.phone_lock.unlock_pin"] == "482917"
    assert cfg["phone_setting.phone_lock.lock_time_out"] == "0"


def test_desk_phone_lock_is_off_without_a_pin(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["T46U"])
    ctx = dataclasses.replace(ctx, lines=(dataclasses.replace(ctx.lines[0], pin=None),))
    cfg = parse_cfg(ADAPTER.render(ctx, Templates("yealink"))[f"{MAC}.cfg"])
    assert cfg["phone_setting.phone_lock.enable"] == "0"
    assert cfg["phone_setting.phone_lock.unlock_pin"] == "%NULL%"


def test_desk_phone_lock_needs_a_user_on_line_1(make_context: ContextFactory) -> None:
    model = ADAPTER.models["T46U"]
    ctx = make_context(model, lines=0)
    ctx = dataclasses.replace(ctx, lines=(make_line(2),))
    cfg = parse_cfg(ADAPTER.render(ctx, Templates("yealink"))[f"{MAC}.cfg"])
    assert cfg["phone_setting.phone_lock.enable"] == "0"
    assert cfg["account.1.enable"] == "0"
    assert cfg["account.2.user_name"] == "202"


@pytest.mark.parametrize("model", DECT, ids=lambda m: m.name)
def test_dect_handsets(make_context: ContextFactory, model: ModelInfo) -> None:
    ctx = make_context(model, lines=3)
    cfg = parse_cfg(ADAPTER.render(ctx, Templates("yealink"))[f"{MAC}.cfg"])
    for line in ctx.lines:
        n = line.slot
        assert cfg[f"handset.{n}.name"] == line.display_name
        assert cfg[f"handset.{n}.incoming_lines"] == str(n)
        assert cfg[f"handset.{n}.dial_out_lines"] == str(n)
        assert cfg[f"handset.{n}.dial_out_default_line"] == str(n)
        assert cfg[f"account.{n}.password"] == line.sip_password
    assert cfg["handset.4.name"] == "%NULL%"
    assert f"handset.{model.slots}.name" in cfg
    assert not [key for key in cfg if key.startswith("phone_setting.phone_lock")]
    assert not [value for value in cfg.values() if value == "482917"]


def test_a_line_break_cannot_inject_a_key(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["T54W"], lines=1)
    evil = dataclasses.replace(
        ctx.lines[0],
        display_name="Eve\nphone_setting.phone_lock.enable = 0",
        sip_password="pw\r\nstatic.auto_provision.server.url = http://evil/",
    )
    ctx = dataclasses.replace(ctx, lines=(evil,))
    cfg = parse_cfg(ADAPTER.render(ctx, Templates("yealink"))[f"{MAC}.cfg"])
    assert cfg["phone_setting.phone_lock.enable"] == "1"
    assert cfg["account.1.label"] == "Evephone_setting.phone_lock.enable = 0"
    assert cfg["static.auto_provision.server.url"] == ctx.provisioning_url


@pytest.mark.parametrize(("transport", "code"), [("udp", "0"), ("tcp", "1"), ("tls", "2")])
def test_transport(make_context: ContextFactory, transport: SipTransport, code: str) -> None:
    site = Site(registrar_host="pbx.example.net", registrar_port=5061, transport=transport)
    cfg = parse_cfg(render(make_context, ADAPTER.models["T54W"], site=site)[f"{MAC}.cfg"])
    assert cfg["account.1.sip_server.1.transport_type"] == code
    assert cfg["account.1.sip_server.1.port"] == "5061"


@pytest.mark.parametrize(
    ("zone", "offset", "name"),
    [
        ("America/New_York", "-5", "United States-Eastern Time"),
        ("Asia/Kolkata", "+5:30", None),
        ("Australia/Sydney", "+10", None),  # standard time falls in the northern summer
        ("UTC", "0", None),
        ("No/Such_Zone", "+1", "Germany(Berlin)"),  # falls back to the default site zone
    ],
)
def test_time_zone(make_context: ContextFactory, zone: str, offset: str, name: str | None) -> None:
    site = Site(registrar_host="pbx.example.net", timezone=zone)
    cfg = parse_cfg(render(make_context, ADAPTER.models["T54W"], site=site)[f"{MAC}.cfg"])
    assert cfg["local_time.time_zone"] == offset
    assert cfg.get("local_time.time_zone_name") == name


def test_language_of_line_1_wins_on_the_device(make_context: ContextFactory) -> None:
    ctx = make_context(ADAPTER.models["T54W"])
    ctx = dataclasses.replace(ctx, lines=(dataclasses.replace(ctx.lines[0], language="en"),))
    files = ADAPTER.render(ctx, Templates("yealink"))
    assert parse_cfg(files[f"{MAC}.cfg"])["lang.gui"] == "English"
    assert parse_cfg(files["y000000000096.cfg"])["lang.gui"] == "German"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_render_is_clean_and_deterministic(make_context: ContextFactory, model: ModelInfo) -> None:
    first = render(make_context, model)
    assert render(make_context, model) == first
    assert_no_template_syntax(first)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_too_many_lines(make_context: ContextFactory, model: ModelInfo) -> None:
    with pytest.raises(RenderError):
        render(make_context, model, lines=model.slots + 1)


@pytest.mark.parametrize(
    "slots",
    [(1, 1), (0,), (17,)],
    ids=["duplicate", "zero", "beyond-capacity"],
)
def test_bad_slots(make_context: ContextFactory, slots: tuple[int, ...]) -> None:
    ctx = make_context(ADAPTER.models["T54W"])
    lines: tuple[Line, ...] = tuple(dataclasses.replace(make_line(1), slot=s) for s in slots)
    with pytest.raises(RenderError):
        ADAPTER.render(dataclasses.replace(ctx, lines=lines), Templates("yealink"))

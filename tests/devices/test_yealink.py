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
from provisioner.devices.yealink import (
    ADAPTER,
    MODELS,
    TABLE,
    UNSUPPORTED,
    common_file_name,
    table_row,
)
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
# the adapter brief; the next three are the field variants VENDORS.md lists (no MAC on old
# firmware, MAC without colons or in upper case, double spaces), applied to real model/firmware
# pairs. The others are captures an open project records (sources in USER_AGENTS).
UA_T54W = "Yealink SIP-T54W 96.86.0.70 00:15:65:aa:bb:cc"
UA_W70B = "Yealink W70B 146.85.0.20 80:5e:c0:aa:bb:cc"
UA_NO_MAC = "Yealink SIP-T46S 66.86.0.15"
UA_UPPER_COMPACT = "Yealink SIP-T48U 108.86.0.45 001565AABBCC"
UA_DOUBLE_SPACES = "Yealink  SIP-T33G  124.86.0.75  00:15:65:AA:BB:CC"
UA_T28P = "yealink SIP-T28P 2.70.0.140 00:15:65:13:ae:0b"
UA_T18 = "yealink SIP-T18 18.0.0.80 00:15:65:27:3e:05"

#: (User-Agent, model it names, MAC it carries), firmware V70 to V86. Formats: "SIP-" prefix or
#: none, "SIP VP-" prefix, "Yealink-" with a hyphen, no vendor word at all, the model with an
#: "_E2" suffix, vendor in lower case, MAC with colons in either case, without colons, absent,
#: double spaces, an extra version token instead of the MAC.
USER_AGENTS: list[tuple[str, str | None, str | None]] = [
    # VENDORS.md and its field variants (see above)
    (UA_T54W, "T54W", "001565aabbcc"),
    (UA_W70B, "W70B", "805ec0aabbcc"),
    (UA_NO_MAC, "T46S", None),
    (UA_UPPER_COMPACT, "T48U", "001565aabbcc"),
    (UA_DOUBLE_SPACES, "T33G", "001565aabbcc"),
    # wazo-provd-plugins plugins/wazo-yealink/common/common.py, comment of _extract_from_ua
    # (V70 to V80 firmware)
    (UA_T28P, "T28P", "00156513ae0b"),
    (UA_T18, "T18", "001565273e05"),
    ("Yealink SIP-T19P_E2 53.80.0.3 00:15:65:4c:4c:26", "T19P_E2", "0015654c4c26"),
    ("Yealink SIP-T20P 9.72.0.30 00:15:65:5e:16:7c", "T20P", "0015655e167c"),
    ("Yealink SIP-T21P 34.72.0.1 00:15:65:4c:4c:26", "T21P", "0015654c4c26"),
    ("Yealink SIP-T21P_E2 52.80.0.3 00:15:65:4c:4c:26", "T21P_E2", "0015654c4c26"),
    ("Yealink SIP-T22P 7.72.0.30 00:15:65:39:31:fc", "T22P", "0015653931fc"),
    ("Yealink SIP-T23G 44.80.0.60 00:15:65:93:70:f2", "T23G", "0015659370f2"),
    ("Yealink SIP-T26P 6.72.0.30 00:15:65:4b:57:d2", "T26P", "0015654b57d2"),
    ("Yealink SIP-T27P 45.80.0.25 00:15:65:8c:48:12", "T27P", "0015658c4812"),
    ("Yealink SIP-T38G  38.70.0.125 00:15:65:2f:c3:5e", "T38G", "0015652fc35e"),
    ("Yealink SIP-T40P 54.80.0.10 00:15:65:94:86:64", "T40P", "001565948664"),
    ("Yealink SIP-T41P 36.72.0.1 00:15:65:53:83:22", "T41P", "001565538322"),
    ("Yealink SIP-T42G 29.72.0.1 00:15:65:4c:3b:b0", "T42G", "0015654c3bb0"),
    ("Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37", "T46G", "0015654aa937"),
    ("Yealink SIP-T48G 35.72.0.6 00:15:65:5c:60:82", "T48G", "0015655c6082"),
    ("Yealink SIP VP-T49G 51.80.0.10 00:15:65:9b:5a:44", "T49G", "0015659b5a44"),
    ("Yealink CP860 37.72.0.5 00:15:65:8a:37:86", "CP860", "0015658a3786"),
    ("Yealink SIP-W52P 25.73.0.20 00:15:65:40:ae:35", "W52P", "00156540ae35"),
    ("Yealink W52P 25.80.0.15 00:15:65:b8:60:05", "W52P", "001565b86005"),
    ("W52P 25.30.0.2 00:15:65:44:b3:7c", "W52P", "00156544b37c"),
    ("Yealink-T46G 28.71.0.81 28.1.0.128.0.0.0", "T46G", None),
    ("VP530P 23.70.0.40 00:15:65:31:4b:c0", "VP530", "001565314bc0"),
    ("VP530 23.70.0.41 00:15:65:3d:58:e3", "VP530", "0015653d58e3"),
    # wazo-provd-plugins plugins/wazo-yealink/v82/common.py, comment of _extract_from_ua (V85)
    ("Yealink SIP-T31G 124.85.257.55 80:5e:c0:d5:7d:72", "T31G", "805ec0d57d72"),
    ("Yealink SIP-T33G 124.85.257.55 80:5e:c0:bd:ea:ef", "T33G", "805ec0bdeaef"),
    # wazo-provd-plugins plugins/wazo-yealink/v85/tests/test_common.py
    ("Yealink SIP-CP920 78.85.0.5 00:15:65:5e:16:7c", "CP920", "0015655e167c"),
    # kazoo-provision issue #8 (github.com/urueedi/kazoo-provision/issues/8): a T48G on V80
    ("Yealink SIP-T48G 35.80.0.70 00:15:77:88:33:55", "T48G", "001577883355"),
    # No User-Agent at all
    ("", None, None),
]

KEY_VALUE = re.compile(r"(?P<key>[a-z0-9_.]+) = (?P<value>.*)")

DESK = [m for m in MODELS if m.kind == "desk"]
DECT = [m for m in MODELS if m.kind == "dect"]
#: Desk phones by firmware generation: V81+ keys with the phone lock, V70..V73 keys without.
DESK_V8X = [row.info for row in TABLE if row.info.kind == "desk" and row.generation == "v8x"]
DESK_V7X = [row.info for row in TABLE if row.generation == "v7x"]
#: Models served generically (not in the table): a newer desk phone and a newer DECT manager.
GENERIC_DESK = ADAPTER.generic_model("T73U")
GENERIC_DECT = ADAPTER.generic_model("W75DM")
assert GENERIC_DESK is not None
assert GENERIC_DECT is not None
EVERY_MODEL = [*MODELS, GENERIC_DESK, GENERIC_DECT]

#: A DECT base's access code as the service hands it over (random, 4 digits), and PINs of the
#: shortest and the longest length the PIN policy admits.
ACCESS_CODE = "7305"
SHORTEST_PIN = "4096"
LONGEST_PIN = "918273645012"


def user_agent(model: ModelInfo, mac: str = MAC) -> str:
    """A User-Agent in the recorded form for ``model`` (firmware family first in the version)."""
    prefix = "" if model.kind == "dect" else "SIP-"
    colons = ":".join(mac[i : i + 2] for i in range(0, 12, 2))
    row = table_row(model)
    firmware = (row.firmware if row else "") or model.family or "185"
    version = "73.0.50" if row and row.generation == "v7x" else "86.0.70"
    return f"Yealink {prefix}{model.name} {firmware}.{version} {colons}"


def common_files(model: ModelInfo) -> list[str]:
    """The model's common CFG file, when it has one."""
    name = common_file_name(model)
    return [name] if name else []


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
    """``model``'s files; two lines unless said otherwise (one on a single-line model)."""
    kwargs.setdefault("lines", min(model.slots, 2))
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
        # the installed base: earlier generations and the rest of the current one
        ("T28P", "desk", 6, "0"),
        ("T20P", "desk", 2, "7"),
        ("T38G", "desk", 6, "38"),
        ("T19P_E2", "desk", 1, "53"),
        ("T21P_E2", "desk", 2, "52"),
        ("T23G", "desk", 3, "44"),
        ("T27G", "desk", 6, "69"),
        ("T29G", "desk", 16, "46"),
        ("T40G", "desk", 3, "76"),
        ("T41P", "desk", 6, "36"),
        ("T42G", "desk", 12, "29"),
        ("T46G", "desk", 16, "28"),
        ("T48G", "desk", 16, "35"),
        ("T52S", "desk", 12, "74"),
        ("T54S", "desk", 16, "70"),
        ("T58", "desk", 16, "58"),
        ("CP920", "desk", 1, "78"),
        ("T30P", "desk", 1, "127"),
        ("T33P", "desk", 4, "124"),
        ("T41U", "desk", 6, ""),
        ("W52P", "dect", 5, "25"),
        ("W60B", "dect", 8, "77"),
        ("W90DM", "dect", 250, "130"),
    ],
)
def test_models(name: str, kind: str, slots: int, family: str) -> None:
    model = ADAPTER.model(name)
    assert model is not None
    assert (model.kind, model.slots, model.family) == (kind, slots, family)


def test_the_table_is_consistent() -> None:
    """Names and aliases are unique however written; numbers are numbers; v7x is desk only."""
    names = [name for row in TABLE for name in (row.info.name, *row.aliases)]
    compact = {"".join(c for c in name.upper() if c.isalnum()) for name in names}
    assert len(compact) == len(names)
    assert len(TABLE) == len(ADAPTER.models) >= 60
    for row in TABLE:
        assert ADAPTER.model(row.info.name) is row.info
        assert not row.info.family or row.info.family.isdigit()
        assert not row.firmware or row.firmware.isdigit()
        assert row.generation == "v8x" or row.info.kind == "desk"
        for alias in row.aliases:
            assert ADAPTER.model(alias) is row.info


@pytest.mark.parametrize(
    ("name", "model"),
    [
        # Yealink's own spelling ([$MODEL] names of the Administrator's Guide), any case
        ("T21P_E2", "T21P_E2"),
        ("t46s", "T46S"),
        # with separators, without them, with the vendor and the SIP- prefix of the User-Agent
        ("T21P E2", "T21P_E2"),
        ("T21PE2", "T21P_E2"),
        ("SIP-T19P_E2", "T19P_E2"),
        ("Yealink SIP-T54W", "T54W"),
        ("yealink t48u", "T48U"),
        ("SIP VP-T49G", "T49G"),
        ("VP-T49G", "T49G"),
        ("W80-DM", "W80DM"),
        (" w70b ", "W70B"),
        # the variant without PoE and the packages a base is sold in
        ("T21_E2", "T21P_E2"),
        ("T58A", "T58"),
        ("T58V", "T58"),
        ("VP530P", "VP530"),
        ("W56P", "W52P"),
        ("W60P", "W60B"),
        ("W73P", "W70B"),
    ],
)
def test_model_names_in_every_spelling(name: str, model: str) -> None:
    found = ADAPTER.resolve_model(name)
    assert found is not None
    assert (found[0].name, found[1]) == (model, True)
    assert ADAPTER.model_name(name) == model


# --- unknown models of the family -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("T73U", ModelInfo("T73U", "desk", 1)),
        ("sip-t88w", ModelInfo("T88W", "desk", 1)),
        ("Yealink T85W", ModelInfo("T85W", "desk", 1)),
        ("T27 E2", ModelInfo("T27_E2", "desk", 1)),
        ("CP935", ModelInfo("CP935", "desk", 1)),
        ("VP59", ModelInfo("VP59", "desk", 1)),
        ("W75DM", ModelInfo("W75DM", "dect", 5)),
        ("w75b", ModelInfo("W75B", "dect", 5)),
        ("W78P", ModelInfo("W78P", "dect", 5)),
    ],
)
def test_generic_model(name: str, expected: ModelInfo) -> None:
    """A Yealink-shaped name outside the table: one line or five handsets, no common file."""
    assert ADAPTER.model(name) is None
    assert ADAPTER.resolve_model(name) == (expected, False)


@pytest.mark.parametrize(
    "name",
    [
        "W56H",  # a handset: it fetches nothing itself
        "CP930W",  # a DECT conference phone registered to a base
        "T18P",  # pre-V70 firmware: another configuration format
        "T18",
        "GXP2170",  # another vendor's models
        "VVX400",
        "D785",
        "N870",
        "",
        "T" * 200,
        "T46S\x00",
        "Yealink",
    ],
)
def test_no_generic_model(name: str) -> None:
    assert ADAPTER.resolve_model(name) is None


def test_generic_models_are_conservative(make_context: ContextFactory) -> None:
    """No PIN (its key is not known), no reboot wait, a DECT base still gets its access code."""
    assert ADAPTER.pin_key(GENERIC_DESK) is None
    assert ADAPTER.pin_key(GENERIC_DECT) is None
    assert ADAPTER.access_code_key(GENERIC_DESK) is None
    assert ADAPTER.access_code_key(GENERIC_DECT) == ADAPTER.access_code_key(ADAPTER.models["W70B"])
    assert not ADAPTER.needs_maintenance_window(GENERIC_DESK)
    assert common_file_name(GENERIC_DESK) is None

    files = render(make_context, GENERIC_DESK, lines=1)
    assert set(files) == {f"{MAC}.boot", "y000000000000.boot", f"{MAC}.cfg"}
    assert files[f"{MAC}.boot"].decode() == f'#!version:1.0.0.1\ninclude:config "{MAC}.cfg"\n'
    cfg = parse_cfg(files[f"{MAC}.cfg"])
    assert cfg["account.1.user_name"] == "201"
    assert cfg["static.auto_provision.server.url"] == "https://prov.example.net/provisioning/"
    assert cfg["sip.notify_reboot_enable"] == "0"
    assert not [key for key in cfg if key.startswith("phone_setting.phone_lock")]
    assert "482917" not in files[f"{MAC}.cfg"].decode()
    with pytest.raises(RenderError):
        render(make_context, GENERIC_DESK, lines=2)

    cfg = parse_cfg(
        render(make_context, GENERIC_DECT, lines=5, access_code=ACCESS_CODE)[f"{MAC}.cfg"]
    )
    assert cfg["base.pin_code"] == ACCESS_CODE
    assert cfg["handset.5.incoming_lines"] == "5"


def test_user_fields() -> None:
    assert ADAPTER.user_fields == {"display_name", "language", "sip_credentials"}


# --- conformance: pushes, PIN key, access code -------------------------------------------------


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
def test_sip_event_asks_for_no_reboot(model: ModelInfo) -> None:
    """V70..V73 firmware may not honour notify_reboot_enable: pushes to it wait for the window."""
    assert ADAPTER.sip_event(model) == "check-sync;reboot=false"
    assert ADAPTER.needs_maintenance_window(model) is (model in DESK_V7X)


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
def test_every_config_turns_notify_reboots_off(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    """``sip.notify_reboot_enable = 0``: a check-sync reboots only when it says reboot=true."""
    files = render(make_context, model, lines=1)
    for name in (*common_files(model), f"{MAC}.cfg"):
        assert parse_cfg(files[name])["sip.notify_reboot_enable"] == "0", name


@pytest.mark.parametrize("model", DESK_V8X, ids=lambda m: m.name)
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


@pytest.mark.parametrize("model", DESK_V7X, ids=lambda m: m.name)
def test_v7x_desk_has_no_pin_key(make_context: ContextFactory, model: ModelInfo) -> None:
    """No V7x document read shows the phone-lock keys: the PIN stays on the server."""
    assert ADAPTER.pin_key(model) is None
    assert ADAPTER.access_code_key(model) is None
    ctx = _with_pin(make_context(model, lines=min(model.slots, 2)), LONGEST_PIN)
    files = ADAPTER.render(ctx, Templates("yealink"))
    assert not [name for name, body in files.items() if LONGEST_PIN in body.decode("utf-8")]
    assert not [key for key in parse_cfg(files[f"{MAC}.cfg"]) if "phone_lock" in key]


@pytest.mark.parametrize("pin", [SHORTEST_PIN, LONGEST_PIN], ids=["shortest", "longest"])
@pytest.mark.parametrize("model", DESK_V8X, ids=lambda m: m.name)
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


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
def test_every_file_parses(make_context: ContextFactory, model: ModelInfo) -> None:
    """Yealink serves no XML; every CFG file is ``key = value`` lines, boot files include lines."""
    code = ACCESS_CODE if model.kind == "dect" else None
    files = render(make_context, model, lines=min(model.slots, 2), access_code=code)
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
    for name in (*common_files(model), f"{MAC}.cfg"):
        values = parse_cfg(files[name])
        assert values["custom.handset.language"] == value, name
        assert "lang.gui" not in values, name
        assert "lang.wui" in values, name


@pytest.mark.parametrize("model", DESK, ids=lambda m: m.name)
def test_desk_has_no_handset_language(make_context: ContextFactory, model: ModelInfo) -> None:
    files = render(make_context, model, lines=1)
    for name in (*common_files(model), f"{MAC}.cfg"):
        assert "custom.handset.language" not in parse_cfg(files[name]), name


# --- identify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
def test_identify_every_rendered_file(make_context: ContextFactory, model: ModelInfo) -> None:
    """Each file the boot sequence asks for is recognised under the name render gives it."""
    files = render(make_context, model, mac=MAC, lines=1)
    assert set(files) == {f"{MAC}.boot", "y000000000000.boot", *common_files(model), f"{MAC}.cfg"}
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
    assert common_file_name(ADAPTER.models["T20P"]) == "y000000000007.cfg"
    assert common_file_name(ADAPTER.models["T28P"]) == "y000000000000.cfg"
    assert common_file_name(ADAPTER.models["T41U"]) is None


def test_only_a_t28p_asks_for_y000000000000_cfg() -> None:
    """The T28P's common file is y000000000000.cfg (Yealink's NN 00); for any other model or
    without a User-Agent that name is nobody's."""
    request = ADAPTER.identify("y000000000000.cfg", UA_T28P)
    assert request is not None
    assert (request.file, request.mac, request.model, request.shared) == (
        "y000000000000.cfg",
        "00156513ae0b",
        "T28P",
        True,
    )
    assert ADAPTER.identify("y000000000000.cfg", UA_T54W) is None
    assert ADAPTER.identify("y000000000000.cfg", "") is None


@pytest.mark.parametrize(("ua", "model", "mac"), USER_AGENTS)
def test_identify_reads_the_user_agent(ua: str, model: str | None, mac: str | None) -> None:
    """Every recorded format maps to the model of the table (or its generic name) and the MAC."""
    request = ADAPTER.identify("y000000000000.boot", ua)
    assert request is not None
    assert (request.model, request.user_agent_mac, request.mac) == (model, mac, mac)
    if model is not None and model not in UNSUPPORTED:
        assert ADAPTER.resolve_model(model) is not None


def test_the_user_agent_table_spans_the_generations() -> None:
    """At least 8 recorded User-Agents, from V70 to V86 firmware, desk phones and DECT bases."""
    recorded = [ua for ua, _, _ in USER_AGENTS if ua]
    assert len(recorded) >= 8
    models = {model for _, model, _ in USER_AGENTS if model}
    generations = {row.generation for row in TABLE if row.info.name in models}
    assert generations == {"v7x", "v8x"}
    assert {"W52P", "W70B"} <= models


def test_an_unsupported_model_is_recognised_but_not_served() -> None:
    """The T18 (pre-V70 configuration format) is Yealink's, but no model of the table."""
    request = ADAPTER.identify("001565273e05.cfg", UA_T18)
    assert request is not None
    assert request.model == "T18"
    assert ADAPTER.resolve_model("T18") is None


@pytest.mark.parametrize(
    "ua",
    [
        "Yealink SIP-T54W 96.86.0.70 00:15:65:aa:bb:cc " + "x" * 8192,  # 8 KB
        "Yealink SIP-T54W 96.86.0.70\x00 00:15:65:aa:bb:cc",  # NUL
        "Yealink SIP-T54W 96.86.0.70\r\nX-Injected: 1 00:15:65:aa:bb:cc",  # CR LF
        "Yealink SIP-T54W\x1b[2J 96.86.0.70 00:15:65:aa:bb:cc",  # escape sequence
        "Yealink\x7fSIP-T54W 96.86.0.70 00:15:65:aa:bb:cc",  # DEL
    ],
    ids=["8kb", "nul", "crlf", "escape", "del"],
)
def test_an_unreadable_user_agent_counts_as_none(ua: str) -> None:
    """Too long or with control characters: no model, no MAC from it; the OUI alone decides."""
    request = ADAPTER.identify(f"{MAC}.cfg", ua)
    assert request is not None
    assert (request.mac, request.user_agent_mac, request.model) == (MAC, None, None)
    assert ADAPTER.identify("0004f2aabbcc.cfg", ua) is None
    request = ADAPTER.identify("y000000000000.boot", ua)
    assert request is not None
    assert (request.mac, request.model) == (None, None)


@pytest.mark.parametrize(
    "ua",
    [
        "Yealink SIP-GXP2170 1.0.11.3 00:0b:82:aa:bb:cc",  # a Grandstream model
        "Yealink SIP-VVX400 4.1.4.7430 00:04:f2:aa:bb:cc",  # a Poly model
        "Yealink D785 10.1.33.33 00:04:13:92:2d:24",  # a Snom model
        "Yealink SIP-W56H 61.85.0.20 00:15:65:aa:bb:cc",  # a handset fetches nothing
    ],
)
def test_a_user_agent_claiming_another_vendors_model(ua: str) -> None:
    """A "Yealink" User-Agent with a model that is no Yealink SIP phone or base: the model is
    unknown, and a <mac>.cfg outside Yealink's OUIs is not Yealink's to claim."""
    request = ADAPTER.identify(f"{MAC}.cfg", ua)
    assert request is not None
    assert request.model is None
    assert ADAPTER.identify("000b82aabbcc.cfg", ua) is None
    assert ADAPTER.identify("0004f2aabbcc.cfg", ua) is None


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


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
def test_boot_files_name_the_common_and_the_device_file(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    files = render(make_context, model)
    expected = "#!version:1.0.0.1\n"
    expected += "".join(
        f'include:config "{name}"\n' for name in (*common_files(model), f"{MAC}.cfg")
    )
    assert files[f"{MAC}.boot"].decode() == expected
    assert files["y000000000000.boot"] == files[f"{MAC}.boot"]


@pytest.mark.parametrize(
    "model", [m for m in EVERY_MODEL if m not in DESK_V7X], ids=lambda m: m.name
)
def test_accounts(make_context: ContextFactory, model: ModelInfo) -> None:
    lines = min(model.slots, 4)
    ctx = make_context(model, lines=lines, site=Site(registrar_host="pbx.example.net"))
    cfg = parse_cfg(ADAPTER.render(ctx, Templates("yealink"))[f"{MAC}.cfg"])
    assert "account.1.transport" not in cfg
    assert "account.1.sip_server_host" not in cfg
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


@pytest.mark.parametrize("model", DESK_V7X, ids=lambda m: m.name)
def test_v7x_accounts(make_context: ContextFactory, model: ModelInfo) -> None:
    """V70/V71 names (sip_server_host/_port), V72+ names (sip_server.1.*), V7x transport key."""
    lines = min(model.slots, 2)
    site = Site(registrar_host="pbx.example.net", registrar_port=5061, transport="tls")
    ctx = make_context(model, lines=lines, site=site)
    cfg = parse_cfg(ADAPTER.render(ctx, Templates("yealink"))[f"{MAC}.cfg"])
    for line in ctx.lines:
        n = line.slot
        assert cfg[f"account.{n}.enable"] == "1"
        assert cfg[f"account.{n}.user_name"] == line.sip_user
        assert cfg[f"account.{n}.auth_name"] == line.sip_auth_user
        assert cfg[f"account.{n}.password"] == line.sip_password
        assert cfg[f"account.{n}.sip_server_host"] == "pbx.example.net"
        assert cfg[f"account.{n}.sip_server_port"] == "5061"
        assert cfg[f"account.{n}.sip_server.1.address"] == "pbx.example.net"
        assert cfg[f"account.{n}.sip_server.1.port"] == "5061"
        assert cfg[f"account.{n}.transport"] == "2"
        assert f"account.{n}.sip_server.1.transport_type" not in cfg
    for n in range(lines + 1, model.slots + 1):
        assert cfg[f"account.{n}.enable"] == "0"
        assert cfg[f"account.{n}.password"] == "%NULL%"
        assert cfg[f"account.{n}.sip_server_host"] == "%NULL%"
    assert f"account.{model.slots + 1}.enable" not in cfg


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
def test_provisioning_and_site_settings(make_context: ContextFactory, model: ModelInfo) -> None:
    """V81+ keys carry the "static." prefix; V70..V73 ones do not."""
    ctx = make_context(model, lines=1)
    files = ADAPTER.render(ctx, Templates("yealink"))
    cfg = parse_cfg(files[f"{MAC}.cfg"])
    prefix = "" if model in DESK_V7X else "static."
    assert cfg[f"{prefix}auto_provision.server.url"] == ctx.provisioning_url
    assert cfg[f"{prefix}auto_provision.server.username"] == ctx.provisioning_user
    assert cfg[f"{prefix}auto_provision.server.password"] == ctx.provisioning_password
    assert len([key for key in cfg if "auto_provision" in key]) == 3
    for values in (cfg, *(parse_cfg(files[name]) for name in common_files(model))):
        assert values["local_time.time_zone"] == "+1"
        assert values["local_time.time_zone_name"] == "Germany(Berlin)"
        assert values["local_time.summer_time"] == "2"
        assert values["local_time.ntp_server1"] == "pool.ntp.org"
        assert values["lang.wui"] == "German"
        if model.kind == "desk":
            assert values["lang.gui"] == "German"


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
def test_shared_files_carry_no_secret(make_context: ContextFactory, model: ModelInfo) -> None:
    code = ACCESS_CODE if model.kind == "dect" else None
    ctx = make_context(model, lines=min(model.slots, 2), access_code=code)
    files = ADAPTER.render(ctx, Templates("yealink"))
    secrets = [ctx.provisioning_password, *(line.sip_password for line in ctx.lines)]
    secrets += [line.pin for line in ctx.lines if line.pin]
    secrets += [ctx.access_code] if ctx.access_code else []
    for name in (f"{MAC}.boot", "y000000000000.boot", *common_files(model)):
        text = files[name].decode("utf-8")
        assert not [secret for secret in secrets if secret in text], name


@pytest.mark.parametrize("model", DESK_V8X, ids=lambda m: m.name)
def test_desk_phone_lock_uses_the_pin_of_line_1(
    make_context: ContextFactory, model: ModelInfo
) -> None:
    ctx = make_context(model, lines=1)
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


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
def test_render_is_clean_and_deterministic(make_context: ContextFactory, model: ModelInfo) -> None:
    first = render(make_context, model)
    assert render(make_context, model) == first
    assert_no_template_syntax(first)


@pytest.mark.parametrize("model", EVERY_MODEL, ids=lambda m: m.name)
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

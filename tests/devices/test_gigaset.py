"""Gigaset Nx70 adapter: request identification and the provisioning file."""

from __future__ import annotations

import zoneinfo
from dataclasses import replace
from urllib.parse import unquote, urlsplit

import pytest

from provisioner.devices.base import (
    ModelInfo,
    RenderContext,
    RenderError,
    Site,
    Templates,
    standard_utc_offset,
)
from provisioner.devices.gigaset import ADAPTER, GIGASET_TIME_ZONES, gigaset_time_zone
from tests.devices.conftest import NAMES, ContextFactory, assert_no_template_syntax, parse_xml

MAC = "7c2f80e0d605"

# Sources of the User-Agents below (docs/vendors/gigaset.md, "User-Agents"):
# [W-Nx70]  wazo-platform/wazo-provd-plugins, plugins/wazo-gigaset/Nx70-83.v2.49.1/common.py,
#           comment in GigasetHTTPDeviceInfoExtractor._extract_from_ua (an N870 capture).
# [W-old]   same repository, plugins/wazo-gigaset/common/common.py, comments in _extract_from_ua
#           (N720 DM PRO, N510 IP PRO and Maxwell 3 captures, with and without MAC).
# [W-107]   same repository, pull request 107 "gigaset N870: handle Handset= in User-Agent"; the
#           plugin's regex accepts a ";Handset=<n>" field after the MAC.
# [W-147]   same repository, pull request 147: Nx70 firmware 2.39 sends its User-Agent "between
#           plain double quotes" while fetching new firmware.
# [constr.] constructed from a captured format, changing only what the comment says (no capture
#           of that exact string was found).
UA_N870 = "Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605"  # [W-Nx70]
UA_N870_HANDSET = UA_N870 + ";Handset=3"  # [W-107]
UA_N870_QUOTED = '"Gigaset N870 IP PRO/83.V2.39.0;7C2F80E0D605"'  # [W-147], constr. version
UA_N720_MAC = "Gigaset N720 DM PRO/70.089.00.000.000;7C2F80CA21E4"  # [W-old]
UA_N720_NO_MAC = "Gigaset N720 DM PRO/70.108.00.000.000"  # [W-old]
UA_N720_HYPHENS = "N720-DM-PRO/70.040.00.000.000"  # [W-old]: no vendor word, hyphens, no MAC
UA_N510_MAC = "N510 IP PRO/42.245.00.000.000;7C2F804DF9A9"  # [W-old]: no vendor word
UA_N510_NO_MAC = "N510 IP PRO/42.245.00.000.000"  # [W-old]
UA_N510_250 = "N510 IP PRO/42.250.00.000.000;7C2F806257D7"  # [W-old]
UA_MAXWELL = "Maxwell 3 PRO/82.2.18.4-release;7C2F80E61AF4"  # [W-old]: a desk phone
UA_N670 = "Gigaset N670 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605"  # constr.: model token
UA_N870E = "Gigaset N870E IP PRO/83.V2.11.0+build.a546b91;589EC6123456"  # constr.: model, MAC
UA_N610 = "Gigaset N610 IP PRO/83.V2.11.0+build.a546b91;7C2F80A1B2C3"  # constr.: model, MAC
UA_NO_MAC = "Gigaset N870 IP PRO/83.V2.11.0+build.a546b91"  # constr.: as [W-old] without MAC
UA_DOUBLE_SPACE = "Gigaset  N870  IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605"  # constr.
UA_LOWER_MAC = "Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7c2f80e0d605"  # constr.
UA_COLON_MAC = "Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C:2F:80:E0:D6:05"  # constr.

#: Every User-Agent format: what the adapter reads from it (model, MAC).
USER_AGENTS = [
    pytest.param(UA_N870, "N870", MAC, id="nx70"),
    pytest.param(UA_N870_HANDSET, "N870", MAC, id="nx70-handset-field"),
    pytest.param(UA_N870_QUOTED, "N870", MAC, id="nx70-quoted"),
    pytest.param(UA_N670, "N670", MAC, id="nx70-n670"),
    pytest.param(UA_N870E, "N870E", "589ec6123456", id="nx70-n870e"),
    pytest.param(UA_N610, "N610", "7c2f80a1b2c3", id="nx70-n610"),
    pytest.param(UA_NO_MAC, "N870", None, id="nx70-no-mac"),
    pytest.param(UA_DOUBLE_SPACE, "N870", MAC, id="nx70-double-space"),
    pytest.param(UA_LOWER_MAC, "N870", MAC, id="nx70-lower-mac"),
    pytest.param(UA_COLON_MAC, "N870", MAC, id="nx70-colon-mac"),
    pytest.param(UA_N720_MAC, "N720", "7c2f80ca21e4", id="n720"),
    pytest.param(UA_N720_NO_MAC, "N720", None, id="n720-no-mac"),
    pytest.param(UA_N720_HYPHENS, "N720", None, id="n720-no-vendor-hyphens"),
    pytest.param(UA_N510_MAC, "N510", "7c2f804df9a9", id="n510-no-vendor"),
    pytest.param(UA_N510_NO_MAC, "N510", None, id="n510-no-mac"),
    pytest.param(UA_N510_250, "N510", "7c2f806257d7", id="n510-later-firmware"),
    pytest.param(UA_MAXWELL, "Maxwell 3", "7c2f80e61af4", id="maxwell-desk-phone"),
]

UA_SNOM = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 000413922D24 x)"
UA_YEALINK = "Yealink SIP-T54W 96.86.0.70 80:5e:c0:aa:bb:cc"

MODELS = sorted(ADAPTER.models.values(), key=lambda m: m.name)


def params(body: bytes) -> dict[str, str]:
    root = parse_xml(body)
    return {p.attrib["name"]: p.attrib["value"] for p in root.iter("param")}


def handset_keys(body: bytes) -> list[str]:
    root = parse_xml(body)
    return [o.attrib["value"] for o in root.iter("oper") if o.attrib["name"] == "add_hs"]


# --- models ------------------------------------------------------------------------------


def test_models_capacities() -> None:
    assert {m.name: m.slots for m in MODELS} == {"N610": 8, "N670": 20, "N870": 250, "N870E": 250}
    assert all(m.kind == "dect" and m.family == "e2" for m in MODELS)
    assert ADAPTER.model(" n870e ") is ADAPTER.models["N870E"]


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("Gigaset N870 IP PRO", "N870"),
        ("N870-IP-PRO", "N870"),
        ("gigaset n870e ip pro", "N870E"),
        ("N670 IP PRO", "N670"),
        ("Gigaset_N610", "N610"),
    ],
)
def test_models_in_the_vendors_spelling(name: str, model: str) -> None:
    assert ADAPTER.model(name) is ADAPTER.models[model]
    assert ADAPTER.resolve_model(name) == (ADAPTER.models[model], True)
    assert ADAPTER.model_name(name) == model


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("N770", "N770"),  # Gigaset files its auto-provisioning FAQ for N870(E)/N770/N670/N610/N530
        ("Gigaset N530 IP PRO", "N530"),
        ("n970e", "N970E"),
    ],
)
def test_generic_model_is_an_unlisted_system_of_the_nx70_line(name: str, model: str) -> None:
    generic = ADAPTER.generic_model(name)
    assert generic == ModelInfo(model, "dect", 8, family="e2")
    assert ADAPTER.resolve_model(name) == (generic, False)


@pytest.mark.parametrize(
    "name",
    [
        # Older bases: another format (ProviderFrame/SYMB_ITEM) behind binary redirect files.
        "N720",
        "Gigaset N720 DM PRO",
        "N720 IP PRO",
        "N510 IP PRO",
        "N300",
        # Desk phones and other vendors' models.
        "Maxwell 3",
        "P710 IP PRO",
        "T54W",
        "SIP-DECT",
        "",
    ],
)
def test_no_generic_model_for_what_this_format_does_not_reach(name: str) -> None:
    assert ADAPTER.generic_model(name) is None
    assert ADAPTER.resolve_model(name) is None


def test_generic_model_renders_a_well_formed_file(
    make_context: ContextFactory, templates: Templates
) -> None:
    generic = ADAPTER.generic_model("N770")
    assert generic is not None
    ctx = make_context(generic, mac=MAC, lines=generic.slots, access_code=AC)
    body = ADAPTER.render(ctx, templates)["provisioning.xml"]
    assert parse_xml(body).attrib == {"version": "1.1", "productID": "e2"}
    assert len(handset_keys(body)) == 8
    with pytest.raises(RenderError):
        ADAPTER.render(make_context(generic, lines=9, access_code=AC), templates)


# --- identify ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["7C2F80E0D605.xml", "7c2f80e0d605.xml", "/7C2F80E0D605.xml"])
def test_identify_mac_file_either_case(path: str) -> None:
    req = ADAPTER.identify(path, UA_N870)
    assert req is not None
    assert req.file == "7C2F80E0D605.xml"
    assert req.mac == MAC
    assert req.user_agent_mac == MAC
    assert req.model == "N870"
    assert not req.shared


@pytest.mark.parametrize(("user_agent", "model", "mac"), USER_AGENTS)
def test_identify_folder_file_takes_mac_from_user_agent(
    user_agent: str, model: str, mac: str | None
) -> None:
    req = ADAPTER.identify("provisioning.xml", user_agent)
    assert req is not None
    assert req.file == "provisioning.xml"
    assert req.mac == mac
    assert req.user_agent_mac == mac
    assert req.model == model


@pytest.mark.parametrize(("user_agent", "model", "mac"), USER_AGENTS)
def test_identify_mac_file_with_every_user_agent(
    user_agent: str, model: str, mac: str | None
) -> None:
    path_mac = mac or "7c2f80000001"
    req = ADAPTER.identify(f"{path_mac.upper()}.xml", user_agent)
    assert req is not None
    assert (req.file, req.mac, req.user_agent_mac, req.model) == (
        f"{path_mac.upper()}.xml",
        path_mac,
        mac,
        model,
    )


@pytest.mark.parametrize(
    ("user_agent", "served"),
    [
        (UA_N870, True),
        (UA_N870E, True),
        (UA_N720_MAC, False),  # recognised, but the Nx70 file is not this base's format
        (UA_N510_MAC, False),
        (UA_MAXWELL, False),
    ],
)
def test_what_the_user_agents_model_is_served_as(user_agent: str, served: bool) -> None:
    req = ADAPTER.identify("provisioning.xml", user_agent)
    assert req is not None
    assert req.model is not None
    assert (ADAPTER.served_model(req.model) is not None) is served


def test_identify_folder_file_without_mac_in_user_agent() -> None:
    req = ADAPTER.identify("provisioning.xml", UA_NO_MAC)
    assert req is not None
    assert req.mac is None
    assert req.user_agent_mac is None


def test_identify_mac_file_without_mac_in_user_agent() -> None:
    req = ADAPTER.identify("7C2F80E0D605.xml", UA_NO_MAC)
    assert req is not None
    assert (req.mac, req.user_agent_mac) == (MAC, None)


def test_identify_reports_mac_mismatch() -> None:
    req = ADAPTER.identify("7C2F80AAAAAA.xml", UA_N870)
    assert req is not None
    assert req.mac == "7c2f80aaaaaa"
    assert req.user_agent_mac == MAC
    assert req.user_agent_mac != req.mac


@pytest.mark.parametrize("user_agent", ["", "Wget/1.21", "python-requests/2.31"])
def test_identify_unknown_user_agent_needs_gigaset_oui(user_agent: str) -> None:
    gigaset = ADAPTER.identify("7C2F80E0D605.xml", user_agent)
    assert gigaset is not None
    assert gigaset.mac == MAC
    assert gigaset.user_agent_mac is None
    assert ADAPTER.identify("000413AABBCC.xml", user_agent) is None
    # provisioning.xml names no device; only a Gigaset User-Agent can.
    assert ADAPTER.identify("provisioning.xml", user_agent) is None


@pytest.mark.parametrize(
    "user_agent",
    [
        "Gigaset N870 IP PRO/83.V2.11.0;7C2F80E0D605" + " x" * 4096,  # 8 KB
        "Gigaset N870 IP PRO/83.V2.11.0\x00;7C2F80E0D605",
        "Gigaset N870 IP PRO/83.V2.11.0;7C2F80E0D605\r\nX-Injected: 1",
        "Gigaset N870 IP PRO/83.V2.11.0;7C2F80E0D605\x85",
        "\x1b[2JGigaset N870 IP PRO/83.V2.11.0;7C2F80E0D605",
    ],
    ids=["8kb", "nul", "crlf", "c1-control", "escape"],
)
def test_hostile_user_agents_count_as_absent(user_agent: str) -> None:
    # No Gigaset sends these: the request is judged by its path alone.
    assert ADAPTER.identify("provisioning.xml", user_agent) is None
    req = ADAPTER.identify("7C2F80E0D605.xml", user_agent)
    assert req is not None
    assert (req.mac, req.user_agent_mac, req.model) == (MAC, None, None)
    assert ADAPTER.identify("000413922D24.xml", user_agent) is None


@pytest.mark.parametrize(
    "user_agent",
    [
        "Gigaset SIP-T54W/96.86.0.70;7C2F80E0D605",  # another vendor's model behind "Gigaset"
        "Gigaset T54W/96.86.0.70;7C2F80E0D605",
        "Gigaset snomD785/10.1.33.33;7C2F80E0D605",
        "N870/83.V2.11.0;7C2F80E0D605",  # an N number without vendor word or product suffix
    ],
)
def test_a_model_of_another_vendor_is_unknown(user_agent: str) -> None:
    req = ADAPTER.identify("7C2F80E0D605.xml", user_agent)
    assert req is None or req.model is None


@pytest.mark.parametrize(
    ("path", "user_agent"),
    [
        ("7C2F80E0D605.xml", "Yealink SIP-T54W 96.86.0.70 7c:2f:80:e0:d6:05"),
        ("7C2F80E0D605.xml", "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 7C2F80E0D605)"),
        ("provisioning.xml", "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 7c2f80e0d605"),
    ],
)
def test_another_vendors_user_agent_on_a_gigaset_file_name_is_refused(
    path: str, user_agent: str
) -> None:
    assert ADAPTER.identify(path, user_agent) is None


@pytest.mark.parametrize(
    ("path", "user_agent"),
    [
        ("000413922D24.xml", UA_SNOM),  # Snom's <MAC>.xml from its setting-files list
        ("7C2F80E0D605.xml", UA_SNOM),  # even with a Gigaset OUI: the UA names Snom
        ("snomD785-000413922D24.htm", UA_SNOM),
        ("805ec0aabbcc.cfg", UA_YEALINK),
        ("y000000000096.cfg", UA_YEALINK),
        ("provisioning.xml", UA_YEALINK),
    ],
)
def test_identify_other_vendors(path: str, user_agent: str) -> None:
    assert ADAPTER.identify(path, user_agent) is None


@pytest.mark.parametrize(
    "path",
    [
        "7C2F80E0D605.cfg",
        "7C2F80E0D605.xml.bak",
        "cfg7c2f80e0d605.xml",
        "7C2F80E0D60.xml",
        "sub/7C2F80E0D605.xml",
        "ipdect.cfg",
        "",
    ],
)
def test_identify_foreign_paths(path: str) -> None:
    assert ADAPTER.identify(path, UA_N870) is None


# --- render ------------------------------------------------------------------------------

#: The base's access code as the service hands it over: random, 4 digits, not the PIN.
AC = "7305"
#: The shortest and the longest PIN the policy admits (4..12 digits).
PINS = ["4829", "482916390571"]


def with_pins(ctx: RenderContext, pin: str | None) -> RenderContext:
    return replace(ctx, lines=tuple(replace(line, pin=pin) for line in ctx.lines))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_render_files_and_structure(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(model, mac=MAC, lines=min(4, model.slots), access_code=AC)
    files = ADAPTER.render(ctx, templates)

    assert set(files) == {"7C2F80E0D605.xml", "provisioning.xml"}
    assert files["7C2F80E0D605.xml"] == files["provisioning.xml"]
    assert_no_template_syntax(files)
    for body in files.values():
        assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
        root = parse_xml(body)
        assert root.tag == "provisioning"
        assert root.attrib == {"version": "1.1", "productID": "e2"}
        nvm = root.find("nvm")
        assert nvm is not None
        # Gigaset: "This parameter must be on top of the provisioning file."
        first = nvm[0]
        assert (first.tag, first.attrib) == ("oper", {"name": "DeleteNotProvisionedHS"})


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_render_sip_accounts(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(model, mac=MAC, lines=min(4, model.slots), access_code=AC)
    body = ADAPTER.render(ctx, templates)["provisioning.xml"]
    values = params(body)

    assert handset_keys(body) == [f"{line.slot:05d}" for line in ctx.lines]
    for line in ctx.lines:
        key = f"{line.slot:05d}"
        assert values[f"SipAccount.{key}.UserName"] == line.sip_user
        assert values[f"SipAccount.{key}.AuthName"] == line.sip_auth_user
        assert values[f"SipAccount.{key}.AuthPassword"] == line.sip_password
        assert values[f"SipAccount.{key}.DisplayName"] == line.display_name
        assert values[f"SipAccount.{key}.ProviderId"] == "0"
    assert {values[f"SipAccount.{line.slot:05d}.DisplayName"] for line in ctx.lines} <= set(NAMES)


# --- no reboot ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_push_never_reboots(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    assert ADAPTER.sip_event(model) == "check-sync;reboot=false"
    assert ADAPTER.needs_maintenance_window(model) is False
    values = params(
        ADAPTER.render(make_context(model, access_code=AC), templates)["provisioning.xml"]
    )
    # Both switches that would turn a check-sync into a reboot stay off.
    assert values["SystemSettings.global.CheckSyncRebootEnabled"] == "0"
    assert values["SIP.Checksync.Simple"] == "0"


# --- PIN and access code -----------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_no_user_pin_key(model: ModelInfo) -> None:
    assert ADAPTER.pin_key(model) is None


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_access_code_key(model: ModelInfo) -> None:
    key = ADAPTER.access_code_key(model)
    assert key is not None
    assert key.name == "hs.<handset>.DECT_AC"
    assert key.digits == 4
    assert "OpenScape Cordless IP V2" in key.source


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_access_code_on_every_handset(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(model, lines=min(4, model.slots), access_code=AC)
    body = ADAPTER.render(ctx, templates)["provisioning.xml"]
    values = params(body)
    codes = {name: value for name, value in values.items() if name.endswith(".DECT_AC")}
    assert codes == {f"hs.{key}.DECT_AC": AC for key in handset_keys(body)}


@pytest.mark.parametrize("pin", PINS)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_shortest_and_longest_pin_render_without_the_pin(
    model: ModelInfo, pin: str, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = with_pins(make_context(model, lines=min(4, model.slots), access_code=AC), pin)
    files = ADAPTER.render(ctx, templates)
    for body in files.values():
        parse_xml(body)
        # The Nx70 has no user-PIN key: the PIN is nowhere in its config.
        assert pin.encode() not in body
        assert AC in params(body).values()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_access_code_is_not_derived_from_the_pin(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(model, lines=min(4, model.slots), access_code=AC)
    renders = {ADAPTER.render(with_pins(ctx, pin), templates)["provisioning.xml"] for pin in PINS}
    renders.add(ADAPTER.render(with_pins(ctx, None), templates)["provisioning.xml"])
    # A PIN change changes nothing on the base (so it is never pushed there for one) ...
    assert len(renders) == 1
    # ... while a new access code reaches every handset entry.
    other = ADAPTER.render(replace(ctx, access_code="0381"), templates)["provisioning.xml"]
    assert {v for k, v in params(other).items() if k.endswith(".DECT_AC")} == {"0381"}


@pytest.mark.parametrize("access_code", [None, "", "123", "12345", "12a4", " 1234", "١٢٣٤"])
def test_render_needs_a_valid_access_code(
    access_code: str | None, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["N870"], lines=1, access_code=access_code)
    with pytest.raises(RenderError) as excinfo:
        ADAPTER.render(ctx, templates)
    if access_code:
        assert access_code.strip() not in str(excinfo.value)


def test_user_fields() -> None:
    assert "pin" not in ADAPTER.user_fields
    assert "sip_credentials" in ADAPTER.user_fields
    assert ADAPTER.vendor == "gigaset"


# --- handsets ----------------------------------------------------------------------------


def test_render_add_hs_registers(make_context: ContextFactory, templates: Templates) -> None:
    ctx = make_context(ADAPTER.models["N870"], lines=2, access_code=AC)
    root = parse_xml(ADAPTER.render(ctx, templates)["provisioning.xml"])
    for oper in root.iter("oper"):
        if oper.attrib["name"] == "add_hs":
            (reg,) = list(oper)
            assert reg.attrib == {"name": "hs.RegStatus", "value": "ToReg"}


def test_render_uses_ipui_as_handset_key(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["N870"], lines=2, ipui=True, access_code=AC)
    body = ADAPTER.render(ctx, templates)["provisioning.xml"]
    values = params(body)
    assert handset_keys(body) == ["0000112345", "0000212345"]
    assert values["hs.0000112345.DECT_AC"] == AC
    assert values["SipAccount.0000212345.AuthName"] == ctx.lines[1].sip_auth_user
    assert not any(".00001." in name or ".00002." in name for name in values)


def test_render_every_handset_without_pin_or_ipui(
    make_context: ContextFactory, templates: Templates
) -> None:
    # Subscribing needs the base's random access code, so a slot without an IPUI is safe to
    # offer; the user's PIN plays no part in it.
    ctx = make_context(ADAPTER.models["N870"], lines=3, access_code=AC)
    no_pin = replace(ctx.lines[1], pin=None)
    bound = replace(ctx.lines[2], pin=None, ipui=" 02B6EC8AA5 ")
    ctx = replace(ctx, lines=(ctx.lines[0], no_pin, bound))
    body = ADAPTER.render(ctx, templates)["provisioning.xml"]
    values = params(body)
    assert handset_keys(body) == ["00001", "00002", "02b6ec8aa5"]
    assert values["SipAccount.00002.AuthPassword"] == no_pin.sip_password
    assert values["hs.00002.DECT_AC"] == AC
    assert values["hs.02b6ec8aa5.DECT_AC"] == AC
    assert values["SipAccount.02b6ec8aa5.AuthName"] == bound.sip_auth_user


def test_render_rejects_bad_ipui(make_context: ContextFactory, templates: Templates) -> None:
    ctx = make_context(ADAPTER.models["N870"], lines=1, access_code=AC)
    ctx = replace(ctx, lines=(replace(ctx.lines[0], ipui='02b6"/><x a="'),))
    with pytest.raises(RenderError):
        ADAPTER.render(ctx, templates)


def test_render_rejects_slot_beyond_capacity(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["N610"], lines=1, access_code=AC)
    ctx = replace(ctx, lines=(replace(ctx.lines[0], slot=9),))
    with pytest.raises(RenderError):
        ADAPTER.render(ctx, templates)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_render_too_many_lines(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    ADAPTER.render(make_context(model, lines=model.slots, access_code=AC), templates)
    with pytest.raises(RenderError):
        ADAPTER.render(make_context(model, lines=model.slots + 1, access_code=AC), templates)


def test_render_full_system(make_context: ContextFactory, templates: Templates) -> None:
    model = ADAPTER.models["N870"]
    ctx = make_context(model, lines=model.slots, access_code=AC)
    body = ADAPTER.render(ctx, templates)["provisioning.xml"]
    assert len(handset_keys(body)) == model.slots


# --- site settings -----------------------------------------------------------------------


def test_render_site_settings(make_context: ContextFactory, templates: Templates) -> None:
    site = Site(
        registrar_host="sip.example.org",
        registrar_port=5061,
        transport="tls",
        timezone="Europe/Vienna",
        ntp_server="ntp.example.org",
    )
    ctx = make_context(ADAPTER.models["N670"], mac=MAC, site=site, access_code=AC)
    values = params(ADAPTER.render(ctx, templates)["provisioning.xml"])
    assert values["SipProvider.0.Name"] == "PBX"
    assert values["SipProvider.0.Domain"] == "sip.example.org"
    assert values["SipProvider.0.ProxyServerAddress"] == "sip.example.org"
    assert values["SipProvider.0.ProxyServerPort"] == "5061"
    assert values["SipProvider.0.RegServerAddress"] == "sip.example.org"
    assert values["SipProvider.0.RegServerPort"] == "5061"
    assert values["SipProvider.0.TransportProtocol"] == "3"
    assert values["DmGlobal.0.TimeZone"] == "Europe/Vienna"
    assert values["DmGlobal.0.NtpServer"] == "ntp.example.org"


@pytest.mark.parametrize(("transport", "value"), [("udp", "1"), ("tcp", "2"), ("tls", "3")])
def test_render_transport(
    transport: str, value: str, make_context: ContextFactory, templates: Templates
) -> None:
    site = Site(registrar_host="pbx.example.net", transport=transport)  # type: ignore[arg-type]
    ctx = make_context(ADAPTER.models["N870"], site=site, access_code=AC)
    values = params(ADAPTER.render(ctx, templates)["provisioning.xml"])
    assert values["SipProvider.0.TransportProtocol"] == value


@pytest.mark.parametrize(
    ("zone", "written"),
    [
        ("Europe/Berlin", "Europe/Berlin"),  # on the base's list
        ("Europe/Dublin", "Europe/Dublin"),
        ("Europe/Kyiv", "Europe/Athens"),  # renamed zone, same clock as listed ones
        ("UTC", "Greenwich"),
        ("Australia/Perth", "Asia/Hong_Kong"),  # UTC+8 without daylight saving time
        ("Asia/Seoul", "Asia/Tokyo"),
        ("America/Toronto", "America/New_York"),
        ("America/Phoenix", "America/Denver"),  # same standard offset, DST differs
        ("Asia/Kolkata", None),  # no listed zone at UTC+5:30: keep the base's own setting
        ("Mars/Olympus_Mons", None),
        ("../../etc/passwd", None),
    ],
)
def test_render_time_zone(
    zone: str, written: str | None, make_context: ContextFactory, templates: Templates
) -> None:
    site = Site(registrar_host="pbx.example.net", timezone=zone)
    ctx = make_context(ADAPTER.models["N870"], site=site, access_code=AC)
    values = params(ADAPTER.render(ctx, templates)["provisioning.xml"])
    assert values.get("DmGlobal.0.TimeZone") == written


def test_time_zone_mapping_covers_the_database() -> None:
    assert len(GIGASET_TIME_ZONES) == 82
    for zone in GIGASET_TIME_ZONES:
        assert gigaset_time_zone(zone) == zone
    for zone in sorted(zoneinfo.available_timezones()):
        written = gigaset_time_zone(zone)
        assert written is None or written in GIGASET_TIME_ZONES, zone
        if written is not None:
            assert standard_utc_offset(written) == standard_utc_offset(zone), zone


def test_render_provisioning_server_and_credential(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["N870"], mac=MAC, access_code=AC)
    values = params(ADAPTER.render(ctx, templates)["provisioning.xml"])
    url = urlsplit(values["Provisioning.global.ProvisioningServer"])
    assert (url.scheme, url.hostname) == ("https", "prov.example.net")
    assert url.path == "/provisioning/7C2F80E0D605.xml"
    assert unquote(url.username or "") == ctx.provisioning_user
    assert unquote(url.password or "") == ctx.provisioning_password


def test_render_control_characters_cannot_break_out(
    make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(ADAPTER.models["N870"], lines=1, access_code=AC)
    evil = replace(ctx.lines[0], display_name='Eve\n"/><param name="x" value="\x00')
    body = ADAPTER.render(replace(ctx, lines=(evil,)), templates)["provisioning.xml"]
    values = params(body)
    assert values["SipAccount.00001.DisplayName"] == 'Eve"/><param name="x" value="'
    assert "x" not in values


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_render_is_deterministic(
    model: ModelInfo, make_context: ContextFactory, templates: Templates
) -> None:
    ctx = make_context(model, lines=min(4, model.slots), access_code=AC)
    reordered = replace(ctx, lines=tuple(reversed(ctx.lines)))
    assert ADAPTER.render(ctx, templates) == ADAPTER.render(ctx, templates)
    assert ADAPTER.render(ctx, templates) == ADAPTER.render(reordered, templates)

"""Snom desk phones (3xx/8xx on firmware 8, 7xx on 8.9, D1xx/D3xx/D7xx/D8xx on 10.1) and Snom
M-series DECT bases (M300, M400, M700, M900).

Sources for every key and model, and what is still unverified: ``docs/vendors/snom.md``.

Boot sequence (Snom service wiki, "Auto Provisioning", step 2): the device fetches
``snom<type>.htm``, a ``<setting-files>`` list; it names ``snom<type>-<MAC>.htm`` (``{mac}`` in a
URL is replaced by the device's MAC in upper case), a second list that names the device's
settings ``<MAC>.xml``. All three are rendered here:

* ``snom<type>.htm`` carries no secret (``shared``); its URL holds the ``{mac}`` placeholder.
* ``snom<type>-<MAC>.htm`` and ``<MAC>.xml`` carry the per-device provisioning credential as
  RFC 3986 userinfo in their URLs; ``<MAC>.xml`` carries the SIP accounts, on a desk phone the
  user's PIN, on a base the DECT access code.

``<type>`` is the phone type the device names itself by (its User-Agent's ``snom<type>`` token),
which is the model name except for the D715 and D725: they call themselves ``snom715`` and
``snom725`` (:data:`PHONE_TYPES`). Every firmware line from 8 on takes the same XML keys, so one
template per kind serves all of them; firmware 6 and older read no XML settings (old Snom wiki,
"Setting Files"): such a phone is identified, but what it is served is of no use until upgraded.

The PIN: on desk phones it is ``keyboard_lock_pw``, the PIN a locked keypad asks for (Snom
service wiki, "Key lock on Snom phones", section "Key lock with PIN"); Snom documents no length
limit for it. The M-series has no documented per-handset *user* PIN, so a base's files never
carry the PIN (the PBX's hot-desk login uses it). ``subscr_dect_ac_code`` is the handset's DECT
*access code* for subscribing: it carries the base's random access code
(:attr:`RenderContext.access_code`), never the PIN.

Pushes: desk phones get ``check-sync;reboot=false`` and ``checksync_action`` is provisioned as
``sync`` (Snom service wiki, "checksync_action", firmware 10.1.180+: reload the configuration
without enforcing a reboot, whatever the event says; older firmware follows the event). No Snom
document says an M-series base applies handset or user changes without restarting, so M-series
pushes wait for the site's maintenance window (:meth:`SnomAdapter.needs_maintenance_window`) and
then reboot the base; so do a generically served desk phone's, whose firmware is unknown.

Snom's ``http_user``/``http_pass`` are the credentials of the device's *own* web interface, not
of the provisioning server, so they are deliberately not used for provisioning.

M-series multicell systems: only the primary base ("data master") is registered as a device and
takes the full data; it distributes it to the secondary bases (Snom service wiki, M-series
provisioning page, "Primary Base (Data Master)"). Requests from secondary bases are still
identified (they carry their own MAC) and end in 404 because no device has that MAC.
"""

from __future__ import annotations

import logging
import re

from markupsafe import Markup

from provisioner.devices.base import (
    AccessCodeKey,
    Adapter,
    FileRequest,
    Line,
    ModelInfo,
    PinKey,
    RenderContext,
    RenderError,
    Templates,
    UserField,
    check_slots,
    clean_text,
    free_slots,
    has_oui,
    last_mac_in,
    models_by_name,
    names_other_vendor,
    with_credentials,
    xml_block,
    xml_text,
)

log = logging.getLogger(__name__)

SNOM_OUIS = frozenset({"000413"})

#: Firmware lines (:attr:`ModelInfo.family`). The desk lines are the last firmware a model runs:
#: ``8`` (3xx/8xx, firmware 8.4 to 8.7.5), ``8.9`` (710/720/760, last 8.9.3.x), ``10.1-eol``
#: (D120/D3x5/D7x5 models whose 10.1 firmware ended early; whether they got 10.1.180, the first
#: with ``checksync_action``, is unverified) and ``10.1`` (current). ``M`` is the M-series
#: (firmware 05.x/06.x). Files and keys are the same on every line (docs/vendors/snom.md,
#: "Firmware lines").
FW_8, FW_8_9, FW_10_EOL, FW_10, FW_DECT = "8", "8.9", "10.1-eol", "10.1", "M"
#: The family of models served generically (:meth:`SnomAdapter.generic_model`): firmware unknown.
FW_GENERIC = "generic"

#: Identities of desk phones and handset subscriptions of DECT systems. Desk counts are the
#: identities field plugins list per model and firmware (wazo-provd-plugins ``plugin-info``;
#: the snom 300 from FusionPBX's template, see docs/vendors/snom.md); DECT counts are the handset
#: subscriptions a base can hold (multicell systems as a whole). Conference phones (MeetingPoint,
#: C520, C620), the PA1 paging adapter and the M100/M200/M500 bases are not served: the first and
#: last take another file format, and none is a desk phone or a base of this scheme.
MODELS: tuple[ModelInfo, ...] = (
    # firmware 8 (8.4/8.7): end of sale, still on desks
    ModelInfo("300", "desk", 4, FW_8),
    ModelInfo("320", "desk", 12, FW_8),
    ModelInfo("360", "desk", 12, FW_8),
    ModelInfo("370", "desk", 12, FW_8),
    ModelInfo("820", "desk", 12, FW_8),
    ModelInfo("821", "desk", 12, FW_8),
    ModelInfo("870", "desk", 12, FW_8),
    # firmware 8.9
    ModelInfo("710", "desk", 4, FW_8_9),
    ModelInfo("720", "desk", 12, FW_8_9),
    ModelInfo("760", "desk", 12, FW_8_9),
    # firmware 10.1, ended early
    ModelInfo("D120", "desk", 2, FW_10_EOL),
    ModelInfo("D305", "desk", 4, FW_10_EOL),
    ModelInfo("D375", "desk", 12, FW_10_EOL),
    ModelInfo("D745", "desk", 12, FW_10_EOL),
    ModelInfo("D765", "desk", 12, FW_10_EOL),
    # firmware 10.1, current
    ModelInfo("D315", "desk", 4, FW_10),
    ModelInfo("D335", "desk", 12, FW_10),
    ModelInfo("D345", "desk", 12, FW_10),
    ModelInfo("D385", "desk", 12, FW_10),
    ModelInfo("D712", "desk", 4, FW_10),
    ModelInfo("D713", "desk", 6, FW_10),
    ModelInfo("D715", "desk", 4, FW_10),
    ModelInfo("D717", "desk", 6, FW_10),
    ModelInfo("D725", "desk", 12, FW_10),
    ModelInfo("D735", "desk", 12, FW_10),
    ModelInfo("D785", "desk", 12, FW_10),
    ModelInfo("D812", "desk", 12, FW_10),
    ModelInfo("D815", "desk", 12, FW_10),
    ModelInfo("D862", "desk", 8, FW_10),
    ModelInfo("D865", "desk", 12, FW_10),
    # M-series DECT
    ModelInfo("M300", "dect", 20, FW_DECT),
    ModelInfo("M400", "dect", 20, FW_DECT),
    ModelInfo("M700", "dect", 1000, FW_DECT),
    ModelInfo("M900", "dect", 1000, FW_DECT),
)

#: Models whose phone type (the ``snom<type>`` of their User-Agent and file names) is not their
#: name: the D715 and D725 call themselves ``snom715`` and ``snom725`` (Snom's redirection
#: service phone types and firmware file names; wazo-provd-plugins' 10.1 plugins list them as
#: ``715``/``725``).
PHONE_TYPES: dict[str, str] = {"D715": "715", "D725": "725"}
#: Other names a model goes by, normalised (:func:`normalise_model`), to the table's name.
MODEL_ALIASES: dict[str, str] = {
    **{phone_type: name for name, phone_type in PHONE_TYPES.items()},
    "D710": "710",  # the snom 710 was also sold as D710 (same phone type)
    "M400SC": "M400",  # phone type in a Snom redirection-service client's list
}

#: A name the table does not list but that can be a Snom desk phone of this scheme: a D-series
#: model (``D140``, ``D385N``) or a number of the 3xx-8xx generations. Served with one identity
#: (every Snom desk phone has at least one; identities beyond the first are then neither written
#: nor emptied) and its pushes wait for the maintenance window (its firmware is unknown).
_GENERIC_DESK = re.compile(r"D[1-9][0-9]{2}[A-Z]?|[3-8][0-9]{2}")
GENERIC_DESK_IDENTITIES = 1
#: An unlisted M-series base of the M300/M400/M700/M900 scheme (``M325``, ``M430``): the
#: smallest base's 20 handsets. M1xx, M2xx and M5xx bases take another file format: refused.
_GENERIC_DECT = re.compile(r"M[3479][0-9]{2}")
GENERIC_DECT_HANDSETS = 20

#: Snom's own time zone codes (``timezone`` setting). ``GER+1``, ``ITA+1`` and ``USA-5`` appear
#: in Snom's wiki examples; the others are in the same list of the phone's web interface as open
#: provisioning projects copy it (docs/vendors/snom.md).
TIMEZONES: dict[str, str] = {
    "Europe/Berlin": "GER+1",
    "Europe/Vienna": "AUT+1",
    "Europe/Zurich": "CHE+1",
    "Europe/Paris": "FRA+1",
    "Europe/Rome": "ITA+1",
    "Europe/Madrid": "ESP+1",
    "Europe/Amsterdam": "NLD+1",
    "Europe/Brussels": "BEL+1",
    "Europe/Luxembourg": "LUX+1",
    "Europe/Warsaw": "POL+1",
    "Europe/Prague": "CZE+1",
    "Europe/Copenhagen": "DNK+1",
    "Europe/Stockholm": "SWE+1",
    "Europe/Oslo": "NOR+1",
    "Europe/Helsinki": "FIN+2",
    "Europe/Athens": "GRC+2",
    "Europe/London": "GBR-0",
    "Europe/Dublin": "IRL-0",
    "Europe/Lisbon": "PRT-0",
    "America/New_York": "USA-5",
    "America/Chicago": "USA-6",
    "America/Denver": "USA-7",
    "America/Los_Angeles": "USA-8",
}
#: Used for a zone missing from :data:`TIMEZONES`: the product's default site zone
#: (Europe/Berlin). A wrong clock is better than refusing to provision SIP credentials.
FALLBACK_TIMEZONE = "GER+1"

#: ISO 639-1 code to the value of Snom's ``language`` setting. ``Deutsch`` and ``English`` are in
#: Snom's wiki examples; the others are spelt without accents as open provisioning projects
#: write them (docs/vendors/snom.md).
LANGUAGES: dict[str, str] = {
    "de": "Deutsch",
    "en": "English",
    "fr": "Francais",
    "it": "Italiano",
    "es": "Espanol",
}
FALLBACK_LANGUAGE = "English"

#: The desk phone's unlock PIN. Snom's "Key lock on Snom phones" page names no length limit for
#: ``keyboard_lock_pw``; 12 is the longest PIN the PIN policy admits, and every length up to it
#: is rendered as is (no digit is dropped or padded). Unverified on hardware: docs/vendors/snom.md.
KEYBOARD_LOCK_PW_MAX_DIGITS = 12
DESK_PIN_KEY = PinKey(
    name="keyboard_lock_pw",
    max_digits=KEYBOARD_LOCK_PW_MAX_DIGITS,
    source=(
        'Snom service wiki, "Key lock on Snom phones", section "Key lock with PIN" '
        "(no length limit documented)"
    ),
    min_digits=1,
)
#: The handset's DECT access code for subscribing to an M-series base. No Snom document found
#: gives its length; 4 digits is the DECT default and what open projects write.
DECT_ACCESS_CODE_KEY = AccessCodeKey(
    name="subscr_dect_ac_code",
    source=(
        "wazo-provd-plugins plugins/wazo-snom/common_dect/templates/base.tpl (per handset idx, "
        "4 digits); no Snom document found: docs/vendors/snom.md"
    ),
    digits=4,
)

#: Desk phones reload their settings without a reboot (Snom service wiki, "checksync_action");
#: ``checksync_action`` = ``sync`` makes them do so whatever a check-sync event asks for. Firmware
#: before 10.1.180 has no ``checksync_action`` and follows the event, which says ``reboot=false``
#: (what wazo-provd-plugins sends to every desk generation from 8.7 on).
DESK_EVENT = "check-sync;reboot=false"
CHECKSYNC_ACTION = "sync"
#: M-series bases: sent only inside the site's maintenance window (see
#: :meth:`SnomAdapter.needs_maintenance_window`), where a restart is what applies the change.
DECT_EVENT = "check-sync;reboot=true"

#: The longest User-Agent read for facts; a longer one, or one with control characters, is
#: treated as absent (the recorded ones are under 130 characters).
MAX_USER_AGENT = 512

_IPUI = re.compile(r"(?:0[xX])?(?P<hex>[0-9A-Fa-f]{10})")
_SHARED_HTM = re.compile(r"snom(?P<model>[A-Za-z0-9]{1,16})\.htm", re.IGNORECASE)
_DEVICE_HTM = re.compile(
    r"snom(?P<model>[A-Za-z0-9]{1,16})-(?P<mac>[0-9A-Fa-f]{12})\.htm", re.IGNORECASE
)
_DEVICE_XML = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.xml", re.IGNORECASE)

_UA_IS_SNOM = re.compile(r"\bsnom", re.IGNORECASE)
#: The model token of a Snom User-Agent, in every form recorded (docs/vendors/snom.md):
#: ``snomD785-SIP 10.1...``, ``snom320-SIP 6.5.20; snom320 jffs2 ...``, ``snom720 8.7...``,
#: ``Snom M900 05.20...``, ``snomM700/03.23...``, ``snom m9 9.1.43``.
_UA_MODEL = re.compile(
    r"\bsnom[ _-]?(?P<model>[A-Z]{0,2}[0-9]{1,3}[A-Z]{0,3})(?![A-Z0-9.])", re.IGNORECASE
)
_NAME_SEPARATORS = re.compile(r"[\s_-]+")


def normalise_model(name: str) -> str:
    """``name`` as the model table spells it: upper case, without the vendor prefix, separators or
    the ``-SIP`` suffix of the phone type (``snom D785``, ``snomD785-SIP``, ``d-785`` -> ``D785``).
    """
    text = name.strip().upper().removeprefix("SNOM")
    text = re.sub(r"[\s_-]SIP$", "", text)
    return _NAME_SEPARATORS.sub("", text)


def phone_type(model: ModelInfo) -> str:
    """The ``<type>`` in ``model``'s file names ``snom<type>.htm`` and ``snom<type>-<MAC>.htm``."""
    return PHONE_TYPES.get(model.name, model.name)


class SnomAdapter(Adapter):
    """Snom desk phones (firmware 8 to 10.1) and M-series DECT bases."""

    vendor = "snom"
    models = models_by_name(MODELS)
    user_fields = frozenset[UserField]({"display_name", "language", "sip_credentials"})

    def model(self, name: str) -> ModelInfo | None:
        """Look a model up by name, also as Snom writes it (``snomD785``, ``snom715-SIP``,
        ``Snom M900``, ``D-785``) and by its other names (:data:`MODEL_ALIASES`)."""
        key = normalise_model(name)
        return self.models.get(MODEL_ALIASES.get(key, key))

    def generic_model(self, name: str) -> ModelInfo | None:
        """An unlisted Snom desk phone (``D140``, ``D385N``, ``380``) or M-series base of the
        M300-M900 scheme (``M325``): served with the family's files and templates.

        A desk phone gets one identity and a base the smallest base's 20 handsets; the firmware
        of either is unknown, so its pushes wait for the maintenance window. None for names of
        the table, for bases and phones of other formats (M100, M200, M500, C520, PA1,
        MeetingPoint) and for anything else.
        """
        key = normalise_model(name)
        if self.model(key) is not None:
            return None
        if _GENERIC_DESK.fullmatch(key):
            return ModelInfo(key, "desk", GENERIC_DESK_IDENTITIES, FW_GENERIC)
        if _GENERIC_DECT.fullmatch(key):
            return ModelInfo(key, "dect", GENERIC_DECT_HANDSETS, FW_DECT)
        return None

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``snom<type>.htm``, ``snom<type>-<MAC>.htm`` and ``<MAC>.xml``.

        ``<type>`` must be a model of the table (by any of its names) or one
        :meth:`generic_model` accepts; the file is named the way :meth:`render` names it
        (``snomD715.htm`` and ``snom715.htm`` are both the D715's ``snom715.htm``).
        ``<MAC>.xml`` is also Gigaset's file name: it is claimed when the User-Agent is Snom's,
        or, with an empty or unknown User-Agent, when the MAC carries Snom's OUI. A User-Agent
        that names another vendor refuses the request; one that is too long or carries control
        characters counts as absent.
        """
        if "/" in path or names_other_vendor(user_agent, self.vendor):
            return None
        if len(user_agent) > MAX_USER_AGENT or clean_text(user_agent) != user_agent:
            user_agent = ""
        ua_mac = last_mac_in(user_agent)

        if m := _DEVICE_HTM.fullmatch(path):
            model = self._served(m["model"])
            if model is None:
                return None
            mac = m["mac"].lower()
            return FileRequest(
                file=f"snom{phone_type(model)}-{mac.upper()}.htm",
                mac=mac,
                user_agent_mac=ua_mac,
                model=model.name,
            )
        if m := _SHARED_HTM.fullmatch(path):
            model = self._served(m["model"])
            if model is None:
                return None
            return FileRequest(
                file=f"snom{phone_type(model)}.htm",
                mac=ua_mac,
                user_agent_mac=ua_mac,
                model=model.name,
                shared=True,
            )
        if m := _DEVICE_XML.fullmatch(path):
            mac = m["mac"].lower()
            if not _UA_IS_SNOM.search(user_agent) and not has_oui(mac, SNOM_OUIS):
                return None
            ua_model = self._model_in_user_agent(user_agent)
            return FileRequest(
                file=f"{mac.upper()}.xml", mac=mac, user_agent_mac=ua_mac, model=ua_model
            )
        return None

    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        """Render the two ``<setting-files>`` lists and the device's ``<MAC>.xml``."""
        model = ctx.device.model
        lines = check_slots(ctx.lines, model, f"Snom {model.name}")
        mac = ctx.device.mac.upper()
        base_url = ctx.provisioning_url.rstrip("/") + "/"
        auth_url = with_credentials(base_url, ctx.provisioning_user, ctx.provisioning_password)
        file_type = phone_type(model)
        device_list = f"snom{file_type}-{mac}.htm"
        settings = f"{mac}.xml"
        language = lines[0].language if lines else ctx.site.language

        free = free_slots(lines, model)
        values = {
            "model": model,
            "lines": lines,
            "free_slots": free,
            "site": ctx.site,
            "setting_server": auth_url + device_list,
            "language": LANGUAGES.get(language.lower(), FALLBACK_LANGUAGE),
            "timezone": _snom_timezone(ctx.site.timezone),
            "registrar": f"{ctx.site.registrar_host}:{ctx.site.registrar_port}",
            "transport": ctx.site.transport,
        }
        if model.kind == "dect":
            access_code = _access_code(ctx, model)
            ipuis = {line.slot: _ipui(line) for line in lines if line.ipui}
            settings_xml = templates.render(
                "dect-settings.xml",
                access_code=access_code,
                ipuis=ipuis,
                handsets=_handset_keys(lines, free, ipuis, access_code),
                **values,
            )
        else:
            # The lock PIN of the phone is the PIN of the user on its first identity; without
            # one the lock asks for no PIN (the old one is cleared).
            first = next((line for line in lines if line.slot == 1), None)
            settings_xml = templates.render(
                "desk-settings.xml",
                keyboard_lock_pw=first.pin if first and first.pin else "",
                checksync_action=CHECKSYNC_ACTION,
                **values,
            )
        return {
            f"snom{file_type}.htm": templates.render(
                "setting-files.htm", urls=[f"{base_url}snom{file_type}-{{mac}}.htm"]
            ),
            device_list: templates.render("setting-files.htm", urls=[auth_url + settings]),
            settings: settings_xml,
        }

    def sip_event(self, model: ModelInfo) -> str | None:
        """Desk phones reload without a reboot; a base is restarted, inside its window only."""
        return DECT_EVENT if model.kind == "dect" else DESK_EVENT

    def needs_maintenance_window(self, model: ModelInfo) -> bool:
        """M-series bases: no Snom document says they apply changes without restarting. A desk
        phone served generically too: its firmware, and so whether it honours ``reboot=false``,
        is unknown."""
        return model.kind == "dect" or model.family == FW_GENERIC

    def pin_key(self, model: ModelInfo) -> PinKey | None:
        """Desk phones: ``keyboard_lock_pw``; bases have no documented user-PIN key."""
        return DESK_PIN_KEY if model.kind == "desk" else None

    def access_code_key(self, model: ModelInfo) -> AccessCodeKey | None:
        """M-series bases: ``subscr_dect_ac_code`` (per handset, the base's one code)."""
        return DECT_ACCESS_CODE_KEY if model.kind == "dect" else None

    def _served(self, name: str) -> ModelInfo | None:
        """The table's model ``name`` names, else the generic one, else None."""
        resolved = self.resolve_model(name)
        return None if resolved is None else resolved[0]

    def _model_in_user_agent(self, user_agent: str) -> str | None:
        """The first model token of ``user_agent`` that names a Snom model this adapter serves
        (``snomT54W`` or ``snomPA1`` names none: unknown)."""
        for m in _UA_MODEL.finditer(user_agent):
            model = self._served(m["model"])
            if model is not None:
                return model.name
        return None


def _access_code(ctx: RenderContext, model: ModelInfo) -> str:
    """The base's access code as the service hands it over: exactly the digits the key takes."""
    code = ctx.access_code
    digits = DECT_ACCESS_CODE_KEY.digits
    if code is None or len(code) != digits or not (code.isascii() and code.isdigit()):
        raise RenderError(f"Snom {model.name}: the DECT access code must be {digits} digits")
    return code


def _handset_keys(
    lines: list[Line], free: list[int], ipuis: dict[int, str], access_code: str
) -> Markup:
    """The handset keys of a base's ``<MAC>.xml`` (``handsets`` in ``dect-settings.xml``): every
    line's in slot order, then every free slot's, emptied.

    Written here rather than in the template: a base holds up to 1,000 handsets, and the Jinja
    expressions per key made its render miss the target (README, "Performance"; issue 14).
    Values are escaped as the template's autoescape escapes them (:func:`xml_text`).
    """
    code = xml_text(access_code)
    parts = []
    for line in lines:
        slot = line.slot
        parts.append(
            f'    <user_active idx="{slot}" perm="R">on</user_active>\n'
            f'    <user_realname idx="{slot}" perm="R">'
            f"{xml_text(line.display_name)}</user_realname>\n"
            f'    <user_name idx="{slot}" perm="R">{xml_text(line.sip_user)}</user_name>\n'
            f'    <user_pname idx="{slot}" perm="R">{xml_text(line.sip_auth_user)}</user_pname>\n'
            f'    <user_pass idx="{slot}" perm="R">{xml_text(line.sip_password)}</user_pass>\n'
            f'    <subscr_sip_hs_idx idx="{slot}" perm="R">{slot}</subscr_sip_hs_idx>\n'
            f'    <subscr_sip_ua_data_server_id idx="{slot}" perm="R">1'
            "</subscr_sip_ua_data_server_id>\n"
            f'    <subscr_dect_ac_code idx="{slot}" perm="R">{code}</subscr_dect_ac_code>\n'
        )
        if (ipui := ipuis.get(slot)) is not None:
            parts.append(
                f'    <subscr_dect_ipui idx="{slot}" perm="R">{xml_text(ipui)}</subscr_dect_ipui>\n'
            )
    parts.extend(
        f'    <user_active idx="{slot}" perm="R">off</user_active>\n'
        f'    <user_realname idx="{slot}" perm="R"></user_realname>\n'
        f'    <user_name idx="{slot}" perm="R"></user_name>\n'
        f'    <user_pname idx="{slot}" perm="R"></user_pname>\n'
        f'    <user_pass idx="{slot}" perm="R"></user_pass>\n'
        f'    <subscr_dect_ac_code idx="{slot}" perm="R">{code}</subscr_dect_ac_code>\n'
        for slot in free
    )
    return xml_block(parts)


def _ipui(line: Line) -> str:
    """The handset's IPUI in the form the base takes: ``0x`` and 10 upper-case hex digits."""
    m = _IPUI.fullmatch((line.ipui or "").strip())
    if m is None:
        raise RenderError(f"handset {line.slot}: the IPUI must be 10 hex digits")
    return "0x" + m["hex"].upper()


def _snom_timezone(zone: str) -> str:
    code = TIMEZONES.get(zone)
    if code is None:
        log.warning("no Snom time zone code for %s, using %s", zone, FALLBACK_TIMEZONE)
        return FALLBACK_TIMEZONE
    return code


ADAPTER = SnomAdapter()

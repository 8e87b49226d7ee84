"""Snom desk phones (D7xx, D8xx) and Snom M-series DECT bases (M300, M400, M700, M900).

Sources for every key, and what is still unverified: ``docs/vendors/snom.md``.

Boot sequence (Snom service wiki, "Auto Provisioning", step 2): the device fetches
``snom<model>.htm``, a ``<setting-files>`` list; it names ``snom<model>-<MAC>.htm`` (``{mac}`` in a
URL is replaced by the device's MAC in upper case), a second list that names the device's
settings ``<MAC>.xml``. All three are rendered here:

* ``snom<model>.htm`` carries no secret (``shared``); its URL holds the ``{mac}`` placeholder.
* ``snom<model>-<MAC>.htm`` and ``<MAC>.xml`` carry the per-device provisioning credential as
  RFC 3986 userinfo in their URLs; ``<MAC>.xml`` carries the SIP accounts, on a desk phone the
  user's PIN, on a base the DECT access code.

The PIN: on desk phones it is ``keyboard_lock_pw``, the PIN a locked keypad asks for (Snom
service wiki, "Key lock on Snom phones", section "Key lock with PIN"); Snom documents no length
limit for it. The M-series has no documented per-handset *user* PIN, so a base's files never
carry the PIN (the PBX's hot-desk login uses it). ``subscr_dect_ac_code`` is the handset's DECT
*access code* for subscribing: it carries the base's random access code
(:attr:`RenderContext.access_code`), never the PIN.

Pushes: desk phones get ``check-sync;reboot=false`` and ``checksync_action`` is provisioned as
``sync`` (Snom service wiki, "checksync_action", firmware 10.1.180+: reload the configuration
without enforcing a reboot, whatever the event says). No Snom document says an M-series base
applies handset or user changes without restarting, so M-series pushes wait for the site's
maintenance window (:meth:`SnomAdapter.needs_maintenance_window`) and then reboot the base.

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
    free_slots,
    has_oui,
    last_mac_in,
    models_by_name,
    names_other_vendor,
    with_credentials,
)

log = logging.getLogger(__name__)

SNOM_OUIS = frozenset({"000413"})

#: Identities of desk phones and handset subscriptions of DECT systems. Desk counts are the
#: "identities" of Snom's datasheets (D7xx/D86x as listed by field plugins for 10.1.x firmware);
#: DECT counts are the handset subscriptions a base can hold (multicell systems as a whole).
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("D712", "desk", 4, "D7"),
    ModelInfo("D713", "desk", 6, "D7"),
    ModelInfo("D715", "desk", 4, "D7"),
    ModelInfo("D717", "desk", 6, "D7"),
    ModelInfo("D725", "desk", 12, "D7"),
    ModelInfo("D735", "desk", 12, "D7"),
    ModelInfo("D745", "desk", 12, "D7"),
    ModelInfo("D765", "desk", 12, "D7"),
    ModelInfo("D785", "desk", 12, "D7"),
    ModelInfo("D815", "desk", 12, "D8"),
    ModelInfo("D862", "desk", 8, "D8"),
    ModelInfo("D865", "desk", 12, "D8"),
    ModelInfo("M300", "dect", 20, "M"),
    ModelInfo("M400", "dect", 20, "M"),
    ModelInfo("M700", "dect", 1000, "M"),
    ModelInfo("M900", "dect", 1000, "M"),
)

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
#: ``checksync_action`` = ``sync`` makes them do so whatever a check-sync event asks for.
DESK_EVENT = "check-sync;reboot=false"
CHECKSYNC_ACTION = "sync"
#: M-series bases: sent only inside the site's maintenance window (see
#: :meth:`SnomAdapter.needs_maintenance_window`), where a restart is what applies the change.
DECT_EVENT = "check-sync;reboot=true"

_IPUI = re.compile(r"(?:0[xX])?(?P<hex>[0-9A-Fa-f]{10})")
_SHARED_HTM = re.compile(r"snom(?P<model>[A-Za-z0-9]+)\.htm", re.IGNORECASE)
_DEVICE_HTM = re.compile(
    r"snom(?P<model>[A-Za-z0-9]+)-(?P<mac>[0-9A-Fa-f]{12})\.htm", re.IGNORECASE
)
_DEVICE_XML = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.xml", re.IGNORECASE)

_UA_IS_SNOM = re.compile(r"\bsnom", re.IGNORECASE)
# "snomD785-SIP 10.1...", "Snom M900 05.20...", "snom720 8.7...", "snomM700/03.23..."
_UA_MODEL = re.compile(r"\bsnom\s?(?P<model>[A-Z]?[0-9]{3})(?![0-9])", re.IGNORECASE)


class SnomAdapter(Adapter):
    """Snom D-series desk phones and M-series DECT bases."""

    vendor = "snom"
    models = models_by_name(MODELS)
    user_fields = frozenset[UserField]({"display_name", "language", "sip_credentials"})

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``snom<model>.htm``, ``snom<model>-<MAC>.htm`` and ``<MAC>.xml``.

        ``<MAC>.xml`` is also Gigaset's file name: it is claimed when the User-Agent is Snom's,
        or, with an empty or unknown User-Agent, when the MAC carries Snom's OUI.
        """
        if "/" in path or names_other_vendor(user_agent, self.vendor):
            return None
        ua_mac = last_mac_in(user_agent)
        ua_model = self._model_in_user_agent(user_agent)

        if m := _DEVICE_HTM.fullmatch(path):
            mac = m["mac"].lower()
            model = self._canonical_model(m["model"])
            return FileRequest(
                file=f"snom{model}-{mac.upper()}.htm",
                mac=mac,
                user_agent_mac=ua_mac,
                model=model,
            )
        if m := _SHARED_HTM.fullmatch(path):
            model = self._canonical_model(m["model"])
            return FileRequest(
                file=f"snom{model}.htm",
                mac=ua_mac,
                user_agent_mac=ua_mac,
                model=model,
                shared=True,
            )
        if m := _DEVICE_XML.fullmatch(path):
            mac = m["mac"].lower()
            if not _UA_IS_SNOM.search(user_agent) and not has_oui(mac, SNOM_OUIS):
                return None
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
        device_list = f"snom{model.name}-{mac}.htm"
        settings = f"{mac}.xml"
        language = lines[0].language if lines else ctx.site.language

        values = {
            "model": model,
            "lines": lines,
            "free_slots": free_slots(lines, model),
            "site": ctx.site,
            "setting_server": auth_url + device_list,
            "language": LANGUAGES.get(language.lower(), FALLBACK_LANGUAGE),
            "timezone": _snom_timezone(ctx.site.timezone),
            "registrar": f"{ctx.site.registrar_host}:{ctx.site.registrar_port}",
            "transport": ctx.site.transport,
        }
        if model.kind == "dect":
            settings_xml = templates.render(
                "dect-settings.xml",
                access_code=_access_code(ctx, model),
                ipuis={line.slot: _ipui(line) for line in lines if line.ipui},
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
            f"snom{model.name}.htm": templates.render(
                "setting-files.htm", urls=[f"{base_url}snom{model.name}-{{mac}}.htm"]
            ),
            device_list: templates.render("setting-files.htm", urls=[auth_url + settings]),
            settings: settings_xml,
        }

    def sip_event(self, model: ModelInfo) -> str | None:
        """Desk phones reload without a reboot; a base is restarted, inside its window only."""
        return DECT_EVENT if model.kind == "dect" else DESK_EVENT

    def needs_maintenance_window(self, model: ModelInfo) -> bool:
        """M-series bases: no Snom document says they apply changes without restarting."""
        return model.kind == "dect"

    def pin_key(self, model: ModelInfo) -> PinKey | None:
        """Desk phones: ``keyboard_lock_pw``; bases have no documented user-PIN key."""
        return DESK_PIN_KEY if model.kind == "desk" else None

    def access_code_key(self, model: ModelInfo) -> AccessCodeKey | None:
        """M-series bases: ``subscr_dect_ac_code`` (per handset, the base's one code)."""
        return DECT_ACCESS_CODE_KEY if model.kind == "dect" else None

    def _canonical_model(self, raw: str) -> str:
        known = self.model(raw)
        return known.name if known else raw

    def _model_in_user_agent(self, user_agent: str) -> str | None:
        m = _UA_MODEL.search(user_agent)
        return self._canonical_model(m["model"]) if m else None


def _access_code(ctx: RenderContext, model: ModelInfo) -> str:
    """The base's access code as the service hands it over: exactly the digits the key takes."""
    code = ctx.access_code
    digits = DECT_ACCESS_CODE_KEY.digits
    if code is None or len(code) != digits or not (code.isascii() and code.isdigit()):
        raise RenderError(f"Snom {model.name}: the DECT access code must be {digits} digits")
    return code


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

"""Yealink desk phones (T3x/T4x/T5x) and Yealink DECT bases (W70B, W80).

Sources for every key, and what is still unverified: ``docs/vendors/yealink.md``.

Boot sequence (Yealink Administrator's Guide for SIP-T2/T4/T5/CP920, "Boot Files"): the phone
asks for its MAC-oriented boot file ``<mac>.boot``, else the common boot file
``y000000000000.boot``, then every file the boot file names in ``include:config "..."`` lines, in
order; without any boot file it asks for the common CFG file ``y0000000000NN.cfg`` and then the
MAC-oriented ``<mac>.cfg``. ``NN`` is a per-model number (:attr:`ModelInfo.family`), not the
firmware family: T43U/T46U/T48U/T42U share firmware 108 but ask for 107/108/109/116.

Every file is rendered per device (the server picks the device by the MAC in the path, else in the
User-Agent), so both boot files can name the device's own two CFG files:

* ``<mac>.boot`` and ``y000000000000.boot``: the same two include lines; no secret (``shared``).
* ``y0000000000NN.cfg``: site settings (time, NTP, language, no-reboot resync); no secret.
* ``<mac>.cfg``: the SIP accounts, the provisioning credential, the desk phone's unlock PIN or the
  DECT base's access code, and the site settings again so the device is complete even when the
  common file is not fetched.

The PIN: on desk phones it is ``phone_setting.phone_lock.unlock_pin``, the PIN that unlocks a
locked phone (Administrator's Guide, "Phone Lock"; a web-interface language file labels the field
"Phone Unlock PIN (0~15 Digit)", Yealink's own parameter table was not read). The DECT bases have
no documented per-handset *user* PIN, so a base's files never carry the PIN (the PBX's hot-desk
login uses it). ``base.pin_code`` is the base PIN a handset must enter to register (subscribe) to
the base, i.e. the DECT access code: it carries the base's random access code
(:attr:`RenderContext.access_code`), never the PIN.

Pushes: ``check-sync`` makes a Yealink device re-fetch; whether it also reboots is
``sip.notify_reboot_enable`` (Administrator's Guide, "Configuring the Update Mode" and
Troubleshooting, "How to reboot the IP phone remotely?": 1, the default, always reboots; 0
reboots only when the event carries ``reboot=true``; 2 ignores the NOTIFY). Every config sets it
to 0 and the event says ``reboot=false``; new settings then take effect after the fetch, except
the few the guide marks as needing a reboot (network settings and the like), none of which these
templates set.

``<mac>.cfg`` is Poly's and Fanvil's file name too: it is claimed when the User-Agent is
Yealink's, or, with an empty or unknown User-Agent, when the MAC carries a Yealink OUI.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from provisioner.devices.base import (
    AccessCodeKey,
    Adapter,
    FileRequest,
    ModelInfo,
    PinKey,
    RenderContext,
    Templates,
    UserField,
    check_slots,
    first_mac,
    has_oui,
    models_by_name,
    names_other_vendor,
    slot_table,
    standard_utc_offset,
)

log = logging.getLogger(__name__)

#: Yealink MAC prefixes (VENDORS.md); Yealink holds more, these are the ones seen in the field.
YEALINK_OUIS = frozenset({"001565", "805ec0", "805e0c", "249ad8", "44dbd2", "e434d7"})

#: Lines (desk) or handsets (DECT) per model, from Yealink's datasheets; ``family`` is the NN of
#: the model's common file ``y0000000000NN.cfg``.
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("T31G", "desk", 2, "123"),
    ModelInfo("T33G", "desk", 4, "124"),
    ModelInfo("T34W", "desk", 4, "171"),
    ModelInfo("T41S", "desk", 6, "68"),
    ModelInfo("T42S", "desk", 12, "67"),
    ModelInfo("T42U", "desk", 12, "116"),
    ModelInfo("T43U", "desk", 12, "107"),
    ModelInfo("T44W", "desk", 12, "174"),
    ModelInfo("T46S", "desk", 16, "66"),
    ModelInfo("T46U", "desk", 16, "108"),
    ModelInfo("T48S", "desk", 16, "65"),
    ModelInfo("T48U", "desk", 16, "109"),
    ModelInfo("T53", "desk", 12, "95"),
    ModelInfo("T53W", "desk", 12, "95"),
    ModelInfo("T54W", "desk", 16, "96"),
    ModelInfo("T57W", "desk", 16, "97"),
    ModelInfo("T58W", "desk", 16, "150"),
    ModelInfo("W70B", "dect", 10, "146"),
    # W80 multi-cell: the DECT manager carries 100 accounts, one per handset (Yealink's "Supported
    # Accounts" table); a W80B acting as DM-base carries fewer (50: unverified).
    ModelInfo("W80B", "dect", 50, "103"),
    ModelInfo("W80DM", "dect", 100, "103"),
)

COMMON_BOOT = "y000000000000.boot"

#: ``account.N.sip_server.1.transport_type``: 0 UDP, 1 TCP, 2 TLS (3 would be DNS-NAPTR).
TRANSPORTS = {"udp": 0, "tcp": 1, "tls": 2}

#: ISO 639-1 code to the value of ``lang.gui`` / ``lang.wui`` (the names Yealink's templates use).
LANGUAGES: dict[str, str] = {
    "de": "German",
    "en": "English",
    "fr": "French",
    "it": "Italian",
    "es": "Spanish",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "tr": "Turkish",
}
FALLBACK_LANGUAGE = "English"

#: ISO 639-1 code to the value of ``custom.handset.language`` on the DECT bases: the handsets'
#: menu language, one value for every handset of the base. Only the values an open project uses
#: (wazo-provd-plugins, plugins/wazo-yealink/v85/common.py) are listed; others fall back to English.
HANDSET_LANGUAGES: dict[str, int] = {"en": 0, "fr": 1, "de": 2, "it": 3, "es": 6}
FALLBACK_HANDSET_LANGUAGE = 0

#: Yealink's names for ``local_time.time_zone_name`` (the phone's own list); with
#: ``local_time.summer_time = 2`` the name selects the daylight-saving rule.
TIMEZONE_NAMES: dict[str, str] = {
    "Europe/Berlin": "Germany(Berlin)",
    "Europe/Vienna": "Austria(Vienna)",
    "Europe/Zurich": "Switzerland(Bern)",
    "Europe/Paris": "France(Paris)",
    "Europe/Amsterdam": "Netherlands(Amsterdam)",
    "Europe/London": "United Kingdom(London)",
    "America/New_York": "United States-Eastern Time",
    "America/Chicago": "United States-Central Time",
    "America/Denver": "United States-Mountain Time",
    "America/Los_Angeles": "United States-Pacific Time",
}
#: Used for a zone the time zone database does not know: the product's default site zone and its
#: standard offset. A wrong clock is better than refusing to provision SIP credentials.
FALLBACK_TIMEZONE = "Europe/Berlin"
FALLBACK_OFFSET = timedelta(hours=1)

#: Seconds of inactivity before a desk phone locks itself; 0 means it never locks by itself (the
#: user locks it by long-pressing ``#``) and the PIN unlocks it (Administrator's Guide, "Phone
#: Lock": "If the waiting time is set to 0, the phone will not be automatically locked").
LOCK_TIMEOUT = 0

#: The desk phone's unlock PIN. 15 digits is the limit the phone's web interface names ("Phone
#: Unlock PIN (0~15 Digit)"); Yealink's parameter table for the key could not be read.
UNLOCK_PIN_MAX_DIGITS = 15
DESK_PIN_KEY = PinKey(
    name="phone_setting.phone_lock.unlock_pin",
    max_digits=UNLOCK_PIN_MAX_DIGITS,
    source=(
        'Yealink Administrator\'s Guide for SIP-T2/T4/T5/CP920 IP Phones, "Phone Lock"; web '
        'interface field "Phone Unlock PIN (0~15 Digit)": docs/vendors/yealink.md'
    ),
    min_digits=1,
)
#: The base PIN a handset enters to register (subscribe) to a W70B/W80 base: the base's DECT
#: access code. 4 digits, the default ``0000`` and the DECT default; no Yealink table for its
#: range was found.
DECT_ACCESS_CODE_KEY = AccessCodeKey(
    name="base.pin_code",
    source=(
        'Yealink W52P/W60B CFG template, section "Security Settings" (base.pin_code = 0000); '
        "Yealink DECT how-tos: the base PIN is entered to register or de-register a handset: "
        "docs/vendors/yealink.md"
    ),
    digits=4,
)

#: ``check-sync`` with ``reboot=false``: with ``sip.notify_reboot_enable = 0`` (written into every
#: config) the device re-fetches and applies its files without rebooting.
EVENT = "check-sync;reboot=false"

_DEVICE_BOOT = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.boot")
_DEVICE_CFG = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.cfg")
_COMMON_CFG = re.compile(r"y(?P<family>[0-9]{12})\.cfg")
# "Yealink SIP-T54W 96.86.0.70 80:5e:c0:aa:bb:cc", "Yealink W70B 146.85.0.20 ..."
_UA = re.compile(r"\byealink\s+(?:sip-)?(?P<model>[A-Za-z0-9]+)(?P<rest>.*)", re.IGNORECASE)


class YealinkAdapter(Adapter):
    """Yealink desk phones and DECT bases."""

    vendor = "yealink"
    models = models_by_name(MODELS)
    user_fields = frozenset[UserField]({"display_name", "language", "sip_credentials"})

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``<mac>.boot``, ``y000000000000.boot``, ``y0000000000NN.cfg``, ``<mac>.cfg``.

        Requests whose User-Agent names another vendor are never Yealink's.
        """
        if "/" in path or names_other_vendor(user_agent, self.vendor):
            return None
        ua_model, ua_mac = self._parse_user_agent(user_agent)

        if m := _DEVICE_BOOT.fullmatch(path):
            mac = m["mac"].lower()
            return FileRequest(f"{mac}.boot", mac, ua_mac, ua_model, shared=True)
        if path == COMMON_BOOT:
            return FileRequest(COMMON_BOOT, ua_mac, ua_mac, ua_model, shared=True)
        if (m := _COMMON_CFG.fullmatch(path)) and int(m["family"]):
            return FileRequest(path, ua_mac, ua_mac, ua_model, shared=True)
        if m := _DEVICE_CFG.fullmatch(path):
            mac = m["mac"].lower()
            if ua_model is None and not has_oui(mac, YEALINK_OUIS):
                return None
            return FileRequest(f"{mac}.cfg", mac, ua_mac, ua_model)
        return None

    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        """Render both boot files, the model's common file and ``<mac>.cfg``.

        A desk phone carries the PIN of the user on line 1 as its unlock PIN; a DECT base never
        carries a PIN, only its access code.
        """
        model = ctx.device.model
        mac = ctx.device.mac
        slots = slot_table(check_slots(ctx.lines, model, f"Yealink {model.name}"), model)
        common = common_file_name(model)
        first = slots[0][1]
        dect = model.kind == "dect"
        site_values = {
            "site": ctx.site,
            "timezone": _timezone(ctx.site.timezone),
            "handset_language": _handset_language(ctx.site.language) if dect else None,
            "gui": not dect,
        }
        boot = templates.render("device.boot", includes=[common, f"{mac}.cfg"])
        device_values = {
            **site_values,
            "language": _language(first.language if first else ctx.site.language),
            "accounts": slots,
            "transport": TRANSPORTS[ctx.site.transport],
            "provisioning_url": ctx.provisioning_url,
            "provisioning_user": ctx.provisioning_user,
            "provisioning_password": ctx.provisioning_password,
        }
        if dect:
            device_cfg = templates.render("dect.cfg", access_code=ctx.access_code, **device_values)
        else:
            device_cfg = templates.render(
                "desk.cfg",
                unlock_pin=first.pin if first else None,
                lock_timeout=LOCK_TIMEOUT,
                **device_values,
            )
        return {
            f"{mac}.boot": boot,
            COMMON_BOOT: boot,
            common: templates.render(
                "common.cfg", language=_language(ctx.site.language), **site_values
            ),
            f"{mac}.cfg": device_cfg,
        }

    def sip_event(self, model: ModelInfo) -> str | None:
        """``check-sync;reboot=false`` for every model (configs set ``notify_reboot_enable``)."""
        return EVENT

    def needs_maintenance_window(self, model: ModelInfo) -> bool:
        """False: every model applies a re-fetched config without rebooting (see module doc)."""
        return False

    def pin_key(self, model: ModelInfo) -> PinKey | None:
        """Desk phones: ``phone_setting.phone_lock.unlock_pin``; bases have no user-PIN key."""
        return DESK_PIN_KEY if model.kind == "desk" else None

    def access_code_key(self, model: ModelInfo) -> AccessCodeKey | None:
        """DECT bases: ``base.pin_code``, the base PIN a handset enters to register."""
        return DECT_ACCESS_CODE_KEY if model.kind == "dect" else None

    def _parse_user_agent(self, user_agent: str) -> tuple[str | None, str | None]:
        """The model and the MAC a Yealink User-Agent names (either may be missing)."""
        m = _UA.search(user_agent)
        if m is None:
            return None, None
        macs = (token.strip("()[];,") for token in m["rest"].split())
        return self.model_name(m["model"]), first_mac(macs)


def common_file_name(model: ModelInfo) -> str:
    """``y0000000000NN.cfg``: the model's number, zero-padded to twelve digits."""
    return f"y{int(model.family):012d}.cfg"


def _language(code: str) -> str:
    return LANGUAGES.get(code.lower(), FALLBACK_LANGUAGE)


def _handset_language(code: str) -> int:
    return HANDSET_LANGUAGES.get(code.lower(), FALLBACK_HANDSET_LANGUAGE)


def _timezone(zone: str) -> dict[str, str | None]:
    """``local_time.time_zone`` (standard offset as ``+1``, ``-5``, ``+5:30``) and the name."""
    offset = standard_utc_offset(zone)
    if offset is None:
        log.warning("unknown time zone %s, using %s", zone, FALLBACK_TIMEZONE)
        zone, offset = FALLBACK_TIMEZONE, FALLBACK_OFFSET
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    text = "0" if minutes == 0 else f"{sign}{hours}" + (f":{rest:02d}" if rest else "")
    return {"offset": text, "name": TIMEZONE_NAMES.get(zone)}


ADAPTER = YealinkAdapter()

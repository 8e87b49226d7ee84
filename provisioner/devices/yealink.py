"""Yealink desk phones (T3x/T4x/T5x) and Yealink DECT bases (W70B, W80).

Boot sequence (Yealink Administrator's Guide for SIP-T2/T4/T5/CP920, "Boot Files"): the phone
asks for its MAC-oriented boot file ``<mac>.boot``, else the common boot file
``y000000000000.boot``, then every file the boot file names in ``include:config "..."`` lines, in
order; without any boot file it asks for the common CFG file ``y0000000000NN.cfg`` and then the
MAC-oriented ``<mac>.cfg``. ``NN`` is a per-model number (:attr:`ModelInfo.family`), not the
firmware family: T43U/T46U/T48U/T42U share firmware 108 but ask for 107/108/109/116.

Every file is rendered per device (the server picks the device by the MAC in the path, else in the
User-Agent), so both boot files can name the device's own two CFG files:

* ``<mac>.boot`` and ``y000000000000.boot``: the same two include lines; no secret (``shared``).
* ``y0000000000NN.cfg``: site settings (time, NTP, language); no secret (``shared``).
* ``<mac>.cfg``: the SIP accounts, the provisioning credential, the desk phone's unlock PIN, and
  the site settings again so the device is complete even when the common file is not fetched.

``<mac>.cfg`` is Poly's and Fanvil's file name too: it is claimed when the User-Agent is
Yealink's, or, with an empty or unknown User-Agent, when the MAC carries a Yealink OUI.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from provisioner.devices.base import (
    Adapter,
    FileRequest,
    ModelInfo,
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

#: ISO 639-1 code to the value of ``lang.gui`` / ``lang.wui``.
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
#: user locks it, e.g. by holding ``#``) and the PIN unlocks it.
LOCK_TIMEOUT = 0

#: Yealink phones resync on ``check-sync``; whether they also reboot is the phone's
#: ``sip.notify_reboot_enable`` (left at its default).
EVENT = "check-sync"

_DEVICE_BOOT = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.boot")
_DEVICE_CFG = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.cfg")
_COMMON_CFG = re.compile(r"y(?P<family>[0-9]{12})\.cfg")
# "Yealink SIP-T54W 96.86.0.70 80:5e:c0:aa:bb:cc", "Yealink W70B 146.85.0.20 ..."
_UA = re.compile(r"\byealink\s+(?:sip-)?(?P<model>[A-Za-z0-9]+)(?P<rest>.*)", re.IGNORECASE)


class YealinkAdapter(Adapter):
    """Yealink desk phones and DECT bases."""

    vendor = "yealink"
    models = models_by_name(MODELS)
    user_fields = frozenset[UserField]({"pin", "display_name", "language", "sip_credentials"})

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
        """Render both boot files, the model's common file and ``<mac>.cfg``."""
        model = ctx.device.model
        mac = ctx.device.mac
        slots = slot_table(check_slots(ctx.lines, model, f"Yealink {model.name}"), model)
        common = common_file_name(model)
        first = slots[0][1]
        site_values = {
            "site": ctx.site,
            "timezone": _timezone(ctx.site.timezone),
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
        if model.kind == "dect":
            device_cfg = templates.render("dect.cfg", **device_values)
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
        return EVENT

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

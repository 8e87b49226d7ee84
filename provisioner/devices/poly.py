"""Poly (Polycom) VVX and Poly Edge E desk phones running UC Software / PVOS.

Boot sequence (Polycom UC Software administrator guides): the phone fetches its master
configuration file ``<mac>.cfg``, else the default master ``000000000000.cfg``; the master's
``APPLICATION`` element names the firmware (``APP_FILE_PATH``) and the configuration files
(``CONFIG_FILES``, ``[PHONE_MAC_ADDRESS]`` replaced by the phone's MAC). Served here:

* ``000000000000.cfg`` and ``<mac>.cfg``: identical master files (``shared``, no secret) naming
  ``[PHONE_MAC_ADDRESS]-user.cfg``.
* ``<mac>-user.cfg``: SIP registrations, provisioning server and credential, locale and time.

Answered 404 (``identify`` returns None): the firmware ``sip.ld`` (provisioner hosts no firmware:
the phone keeps the application it runs; a site override of ``master.xml`` may point
``APP_FILE_PATH`` at a firmware server), ``<mac>-phone.cfg`` / ``<mac>-web.cfg`` (overrides the
phone itself uploads; without them the central configuration is authoritative),
``<mac>-license.cfg``, ``<mac>-directory.xml``, ``000000000000-directory.xml`` and the
``<mac>-boot.log`` / ``<mac>-app.log`` uploads.

Poly's User-Agent carries no MAC unless ``device.prov.tagSerialNo`` is set (then
``(SN:<serial>)``, the serial number being the MAC); the MAC comes from the path.

The PIN: no key carries it (:meth:`PolyAdapter.pin_key` is None). Poly's phone lock is unlocked
with the phone's *user password* (VVX user guides, "Locking the Phone": "You can unlock the phone
by entering your user password"), which is the device parameter ``device.auth.localUserPassword``
(also the Web Configuration Utility's "User" login). Poly documents every
``device.*`` parameter as "Change causes system to restart or reboot" (Polycom CX5100 / UC
Software administrator guide, "Use Caution When Changing Device Parameters", device parameter
table), so a PIN change written there would restart a phone in use. The PIN therefore stays on the
server (the PBX's hot-desk login uses it) and the phone lock is switched off
(``phoneLock.enabled="0"``). Sources and unverified keys: ``docs/vendors/poly.md``.

Push: SIP NOTIFY ``Event: check-sync`` with ``voIpProt.SIP.specialEvent.checkSync.alwaysReboot=0``
(the phone re-reads its files and restarts only when a changed parameter needs it). The files'
``device.*`` values (provisioning server and credential) do not depend on users, so a user's
change never touches a parameter that restarts the phone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from provisioner.devices.base import (
    Adapter,
    FileRequest,
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
)

log = logging.getLogger(__name__)

POLY_OUIS = frozenset({"0004f2", "64167f", "482567"})

#: Line registrations per model (Poly datasheets; VVX counts match the UC Software 5.9 field
#: plugins, Edge E counts are the datasheets' "lines").
MODELS: tuple[ModelInfo, ...] = (
    ModelInfo("VVX150", "desk", 2, "VVX"),
    ModelInfo("VVX250", "desk", 4, "VVX"),
    ModelInfo("VVX350", "desk", 6, "VVX"),
    ModelInfo("VVX450", "desk", 12, "VVX"),
    ModelInfo("VVX501", "desk", 12, "VVX"),
    ModelInfo("VVX601", "desk", 16, "VVX"),
    ModelInfo("E350", "desk", 8, "Edge"),
    ModelInfo("E450", "desk", 16, "Edge"),
    ModelInfo("E550", "desk", 24, "Edge"),
)

MASTER_FILE = "000000000000.cfg"
#: Poly answers ``check-sync`` by re-reading its configuration; with
#: ``voIpProt.SIP.specialEvent.checkSync.alwaysReboot=0`` it restarts only when a changed
#: parameter needs it (``device.*`` parameters do; ``reg.*`` ones do not).
CHECK_SYNC_EVENT = "check-sync"
#: Deliberately absent from the server (see module docstring).
APP_FILE_PATH = "sip.ld"

DstRule = Literal["eu", "us"]


@dataclass(frozen=True)
class Zone:
    """What the phone needs to know of a time zone: standard offset and DST rule."""

    gmt_offset: int
    """Seconds east of UTC outside daylight saving time (``tcpIpApp.sntp.gmtOffset``)."""
    dst: DstRule | None


ZONES: dict[str, Zone] = {
    "UTC": Zone(0, None),
    "Europe/London": Zone(0, "eu"),
    "Europe/Dublin": Zone(0, "eu"),
    "Europe/Lisbon": Zone(0, "eu"),
    "Europe/Berlin": Zone(3600, "eu"),
    "Europe/Vienna": Zone(3600, "eu"),
    "Europe/Zurich": Zone(3600, "eu"),
    "Europe/Paris": Zone(3600, "eu"),
    "Europe/Rome": Zone(3600, "eu"),
    "Europe/Madrid": Zone(3600, "eu"),
    "Europe/Amsterdam": Zone(3600, "eu"),
    "Europe/Brussels": Zone(3600, "eu"),
    "Europe/Luxembourg": Zone(3600, "eu"),
    "Europe/Warsaw": Zone(3600, "eu"),
    "Europe/Prague": Zone(3600, "eu"),
    "Europe/Copenhagen": Zone(3600, "eu"),
    "Europe/Stockholm": Zone(3600, "eu"),
    "Europe/Oslo": Zone(3600, "eu"),
    "Europe/Helsinki": Zone(7200, "eu"),
    "Europe/Athens": Zone(7200, "eu"),
    "America/New_York": Zone(-18000, "us"),
    "America/Chicago": Zone(-21600, "us"),
    "America/Denver": Zone(-25200, "us"),
    "America/Phoenix": Zone(-25200, None),
    "America/Los_Angeles": Zone(-28800, "us"),
}
#: Used for a zone missing from :data:`ZONES`: the product's default site zone.
FALLBACK_ZONE = "Europe/Berlin"

#: ISO 639-1 code to ``lcl.ml.lang`` (partly unverified: see ``docs/vendors/poly.md``).
LANGUAGES: dict[str, str] = {
    "de": "German_Germany",
    "en": "English_United_States",
    "fr": "French_France",
    "it": "Italian_Italy",
    "es": "Spanish_Spain",
    "nl": "Dutch_Netherlands",
}
FALLBACK_LANGUAGE = "English_United_States"

#: Site transport to ``reg.x.server.y.transport`` (Poly documents DNSnaptr, TCPpreferred,
#: UDPOnly, TLS, TCPOnly).
TRANSPORTS = {"udp": "UDPOnly", "tcp": "TCPOnly", "tls": "TLS"}

_MASTER = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.cfg")
_USER = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})-user\.cfg", re.IGNORECASE)
# "FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Application",
# "FileTransport PolyEdge-Edge_E450-UA/8.0.0.15602 Type/Application"
_UA = re.compile(r"FileTransport\s+Poly(?:com)?[A-Za-z]*-(?P<model>[A-Za-z0-9_]+)-UA/", re.I)


class PolyAdapter(Adapter):
    """Poly VVX and Edge E phones.

    No configuration key carries the user's PIN: the only documented unlock secret,
    ``device.auth.localUserPassword``, is a device parameter whose change restarts the phone
    (see the module docstring and ``docs/vendors/poly.md``).
    """

    vendor = "poly"
    models = models_by_name(MODELS)
    user_fields = frozenset[UserField]({"display_name", "extension", "language", "sip_credentials"})

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise the master files and ``<mac>-user.cfg``.

        ``<mac>.cfg`` is also Yealink's name for a device file: it is claimed when the
        User-Agent is Poly's, or, with an empty or unknown User-Agent, when the MAC carries one
        of Poly's OUIs. A User-Agent naming another vendor is never claimed.
        """
        if "/" in path or names_other_vendor(user_agent, self.vendor):
            return None
        ua_mac = last_mac_in(user_agent)
        ua_model = self._model_in_user_agent(user_agent)

        if path == MASTER_FILE:
            return FileRequest(
                file=MASTER_FILE, mac=ua_mac, user_agent_mac=ua_mac, model=ua_model, shared=True
            )
        if m := _USER.fullmatch(path):
            mac = m["mac"].lower()
            return FileRequest(
                file=f"{mac}-user.cfg", mac=mac, user_agent_mac=ua_mac, model=ua_model
            )
        if m := _MASTER.fullmatch(path):
            mac = m["mac"].lower()
            if ua_model is None and not has_oui(mac, POLY_OUIS):
                return None
            return FileRequest(
                file=f"{mac}.cfg", mac=mac, user_agent_mac=ua_mac, model=ua_model, shared=True
            )
        return None

    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        """Render both master files and ``<mac>-user.cfg``."""
        model = ctx.device.model
        lines = check_slots(ctx.lines, model, f"Poly {model.name}", noun="lines")
        mac = ctx.device.mac.lower()
        scheme = urlsplit(ctx.provisioning_url).scheme.upper()
        if scheme not in {"HTTP", "HTTPS"}:
            raise RenderError(f"Poly phones cannot fetch from a {scheme or 'relative'} URL")
        language = lines[0].language if lines else ctx.site.language
        zone = _zone(ctx.site.timezone)

        master = templates.render(
            "master.xml",
            app_file_path=APP_FILE_PATH,
            config_files="[PHONE_MAC_ADDRESS]-user.cfg",
        )
        user = templates.render(
            "user.xml",
            lines=lines,
            free_slots=free_slots(lines, model),
            site=ctx.site,
            transport=TRANSPORTS[ctx.site.transport],
            server_name=ctx.provisioning_url,
            server_type=scheme,
            prov_user=ctx.provisioning_user,
            prov_password=ctx.provisioning_password,
            language=LANGUAGES.get(language.lower(), FALLBACK_LANGUAGE),
            gmt_offset=zone.gmt_offset,
            dst=_dst_parameters(zone),
        )
        return {MASTER_FILE: master, f"{mac}.cfg": master, f"{mac}-user.cfg": user}

    def sip_event(self, model: ModelInfo) -> str | None:
        """Every model answers the plain ``check-sync`` event without a reboot.

        The files set ``voIpProt.SIP.specialEvent.checkSync.alwaysReboot=0``: the phone fetches
        its files and restarts only when a changed parameter requires it.
        """
        return CHECK_SYNC_EVENT

    def needs_maintenance_window(self, model: ModelInfo) -> bool:
        """False: what a push changes (``reg.*``, labels, names) applies without a restart.

        Only ``device.*`` parameters restart the phone, and their values here (provisioning
        server and the device's own credential) do not change with users or PINs.
        """
        return False

    def pin_key(self, model: ModelInfo) -> PinKey | None:
        """None: Poly's lock PIN is ``device.auth.localUserPassword``, which restarts the phone.

        A PIN change must never restart a phone in use, and no other Poly key for a user's lock
        PIN was found, so the PIN stays on the server.
        """
        return None

    def _model_in_user_agent(self, user_agent: str) -> str | None:
        m = _UA.search(user_agent)
        if m is None:
            return None
        raw = m["model"]
        raw = raw.split("_", 1)[1] if raw.lower().startswith("edge_") else raw
        return self.model_name(raw.replace("_", ""))


def _zone(name: str) -> Zone:
    zone = ZONES.get(name)
    if zone is None:
        log.warning("no Poly time zone rule for %s, using %s", name, FALLBACK_ZONE)
        return ZONES[FALLBACK_ZONE]
    return zone


def _dst_parameters(zone: Zone) -> dict[str, int]:
    """``tcpIpApp.sntp.daylightSavings.*`` (suffix after that prefix) for ``zone``'s rule.

    Times are local wall-clock hours. EU: last Sunday of March 01:00 UTC to last Sunday of
    October 01:00 UTC. US: second Sunday of March to first Sunday of November, 02:00 local.
    ``dayOfWeek`` counts from 1 = Sunday; without ``lastInMonth`` the phone takes the first
    such day on or after ``date``.
    """
    if zone.dst is None:
        return {"enable": 0}
    if zone.dst == "eu":
        hours = zone.gmt_offset // 3600
        return {
            "enable": 1,
            "fixedDayEnable": 0,
            "start.month": 3,
            "start.date": 25,
            "start.dayOfWeek": 1,
            "start.dayOfWeek.lastInMonth": 1,
            "start.time": 1 + hours,
            "stop.month": 10,
            "stop.date": 25,
            "stop.dayOfWeek": 1,
            "stop.dayOfWeek.lastInMonth": 1,
            "stop.time": 2 + hours,
        }
    return {
        "enable": 1,
        "fixedDayEnable": 0,
        "start.month": 3,
        "start.date": 8,
        "start.dayOfWeek": 1,
        "start.dayOfWeek.lastInMonth": 0,
        "start.time": 2,
        "stop.month": 11,
        "stop.date": 1,
        "stop.dayOfWeek": 1,
        "stop.dayOfWeek.lastInMonth": 0,
        "stop.time": 2,
    }


ADAPTER = PolyAdapter()

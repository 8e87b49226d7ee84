"""Poly (Polycom) phones that run UC Software (UCS) 4.0 and later or its successor PVOS.

The installed base this adapter serves (``docs/vendors/poly.md``, "Models and firmware lines"):
SoundPoint IP 321-670 and SoundStation IP 5000-7000 (last on UCS 4.0.x), the first VVX generation
(101-600, 1500; last on UCS 5.9.x), VVX 150-601 (UCS 6), Poly Edge E, CCX (in OpenSIP mode) and
Trio (PVOS). They all read the same master file and the same parameter names, so one template
variant serves every model; the table differs only in line counts and the firmware line it
names. Older phones that only run SIP 3.x or earlier and Poly's OBi-based devices (VVX D230,
Edge B) use other files, and the Rove DECT systems were not researched: none of them is in the
table or accepted as a generic model.

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

User-Agents (``FileTransport <product>-<model>-UA/<version> [(SN:<serial>)] [Type/<stage>]``;
the SIP form drops ``FileTransport``, and UCS 4.x SIP ones append ``_<mac>`` to the version):
the model token is ``VVX_450``, ``SPIP_335``, ``SSIP_6000``, ``Edge_E450``, ``CCX_600``,
``Trio_8800``, and is reduced to the table's spelling by :func:`canonical_model`. Poly's
User-Agent carries no MAC unless ``device.prov.tagSerialNo`` is set (then ``(SN:<serial>)``, the
serial number being the MAC) or in that ``_<mac>`` form; the device's MAC comes from the path.

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

#: Firmware lines (``ModelInfo.family``): the newest software line a model runs. Every line reads
#: the same files and keys (``docs/vendors/poly.md``, "Older firmware").
UCS4 = "UCS 4.0"
UCS5 = "UCS 5.9"
UCS6 = "UCS 6"
PVOS = "PVOS"
#: A VVX the table does not list: UCS 5.x or 6.x, which read the same files.
UCS = "UCS"

#: Line registrations per model. Sources per group in ``docs/vendors/poly.md`` ("Models and
#: firmware lines"); counts marked there as unverified are conservative guesses.
MODELS: tuple[ModelInfo, ...] = (
    # SoundPoint IP / SoundStation IP, end of sale; UCS 4.0.x is their last software (SIP 3.1
    # administrator's guide, "Registration <reg/>": 550/560 four, 650/670 six without
    # expansion modules, SoundStation IP one; 321/331/335 two, 450 three: unverified).
    ModelInfo("SPIP321", "desk", 2, UCS4),
    ModelInfo("SPIP331", "desk", 2, UCS4),
    ModelInfo("SPIP335", "desk", 2, UCS4),
    ModelInfo("SPIP450", "desk", 3, UCS4),
    ModelInfo("SPIP550", "desk", 4, UCS4),
    ModelInfo("SPIP560", "desk", 4, UCS4),
    ModelInfo("SPIP650", "desk", 6, UCS4),
    ModelInfo("SPIP670", "desk", 6, UCS4),
    ModelInfo("SSIP5000", "desk", 1, UCS4),
    ModelInfo("SSIP6000", "desk", 1, UCS4),
    ModelInfo("SSIP7000", "desk", 1, UCS4),
    # First VVX generation, end of sale; last on UCS 5.9.x (wazo-provd-plugins 5.9.2
    # plugin-info, "lines").
    ModelInfo("VVX101", "desk", 1, UCS5),
    ModelInfo("VVX201", "desk", 2, UCS5),
    ModelInfo("VVX300", "desk", 6, UCS5),
    ModelInfo("VVX301", "desk", 6, UCS5),
    ModelInfo("VVX310", "desk", 6, UCS5),
    ModelInfo("VVX311", "desk", 6, UCS5),
    ModelInfo("VVX400", "desk", 12, UCS5),
    ModelInfo("VVX401", "desk", 12, UCS5),
    ModelInfo("VVX410", "desk", 12, UCS5),
    ModelInfo("VVX411", "desk", 12, UCS5),
    ModelInfo("VVX500", "desk", 12, UCS5),
    ModelInfo("VVX600", "desk", 16, UCS5),
    ModelInfo("VVX1500", "desk", 6, UCS5),
    # VVX x50 and x01 (UCS 6.x).
    ModelInfo("VVX150", "desk", 2, UCS6),
    ModelInfo("VVX250", "desk", 4, UCS6),
    ModelInfo("VVX350", "desk", 6, UCS6),
    ModelInfo("VVX450", "desk", 12, UCS6),
    ModelInfo("VVX501", "desk", 12, UCS6),
    ModelInfo("VVX601", "desk", 16, UCS6),
    # Poly Edge E (PVOS 8+). E350/E450/E550 from the datasheets; the siblings of a series are
    # given the same count and E100/E220 two lines: unverified.
    ModelInfo("E100", "desk", 2, PVOS),
    ModelInfo("E220", "desk", 2, PVOS),
    ModelInfo("E300", "desk", 8, PVOS),
    ModelInfo("E320", "desk", 8, PVOS),
    ModelInfo("E350", "desk", 8, PVOS),
    ModelInfo("E400", "desk", 16, PVOS),
    ModelInfo("E450", "desk", 16, PVOS),
    ModelInfo("E500", "desk", 24, PVOS),
    ModelInfo("E550", "desk", 24, PVOS),
    # CCX in OpenSIP mode and Trio conference phones (PVOS): no line count found, one line.
    ModelInfo("CCX400", "desk", 1, PVOS),
    ModelInfo("CCX500", "desk", 1, PVOS),
    ModelInfo("CCX505", "desk", 1, PVOS),
    ModelInfo("CCX600", "desk", 1, PVOS),
    ModelInfo("Trio8300", "desk", 1, PVOS),
    ModelInfo("Trio8500", "desk", 1, PVOS),
    ModelInfo("Trio8800", "desk", 1, PVOS),
    ModelInfo("TrioC60", "desk", 1, PVOS),
)

#: Poly models that only ever ran SIP 3.x or earlier. Their application needs Polycom's own
#: ``sip.cfg`` / ``phone1.cfg`` defaults, which this service does not host: refused, not served
#: generically (``docs/vendors/poly.md``, "Older firmware").
SIP3_ONLY = frozenset(
    {"SPIP300", "SPIP301", "SPIP320", "SPIP330", "SPIP430", "SPIP500", "SPIP501", "SPIP600",
     "SPIP601", "SSIP4000"}
)  # fmt: skip

#: Names a model of a family this adapter serves may have beyond the table (canonical form), and
#: the firmware line such a model runs. OBi-based devices (VVX D230, Edge B, Rove, OBi) match
#: none of them.
GENERIC_SERIES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"VVX\d{3,4}"), UCS),
    (re.compile(r"E\d{3}"), PVOS),
    (re.compile(r"CCX\d{3}"), PVOS),
    (re.compile(r"TRIO(?:\d{4}|C\d{2})"), PVOS),
)
#: A generic model gets one line: every model of these series has at least registration 1.
GENERIC_SLOTS = 1

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
# "FileTransport PolyEdge-Edge_E450-UA/8.0.0.15602 Type/Application",
# "Polycom/5.5.2.8571 PolycomVVX-VVX_310-UA/5.5.2.8571" (SIP form, no FileTransport).
# Bounded repetitions keep a search linear however long the header.
_UA = re.compile(r"\bPoly(?:com)?[A-Za-z]{0,24}-(?P<model>[A-Za-z0-9_]{1,24})-UA/", re.I)
#: Longer User-Agents, or ones with control characters, are no phone's: treated as absent.
MAX_USER_AGENT = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_SEPARATORS = re.compile(r"[\s_./-]+")
#: Series words as Poly writes them in names and User-Agents, to the table's prefix.
_SERIES_WORDS = (
    ("SOUNDPOINTIP", "SPIP"),
    ("SOUNDSTATIONIP", "SSIP"),
    ("REALPRESENCETRIO", "TRIO"),
    ("EDGE", ""),
)
_BARE_IP = re.compile(r"IP(?P<number>\d{3,4})")
_MAX_MODEL_NAME = 64


def canonical_model(name: str) -> str:
    """``name`` in the table's form, upper case: ``Poly Edge E450`` and ``Edge_E450`` → ``E450``,
    ``SoundPoint IP 335`` / ``SPIP_335`` / ``IP 335`` → ``SPIP335``, ``RealPresence Trio 8800`` /
    ``Trio_8800`` → ``TRIO8800``, ``Polycom VVX 450`` → ``VVX450``.

    Separators (space, ``_``, ``-``, ``.``, ``/``) and a ``Poly`` / ``Polycom`` prefix are
    dropped. Pure; an over-long name gives ``""`` (no model).
    """
    if len(name) > _MAX_MODEL_NAME:
        return ""
    text = _SEPARATORS.sub("", name.upper())
    for prefix in ("POLYCOM", "POLY"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    for word, short in _SERIES_WORDS:
        if text.startswith(word) and text != word:
            text = short + text[len(word) :]
            break
    if m := _BARE_IP.fullmatch(text):
        number = m["number"]
        text = ("SPIP" if len(number) == 3 else "SSIP") + number
    return text


class PolyAdapter(Adapter):
    """Poly phones on UC Software 4.0 and later / PVOS (see the module docstring).

    No configuration key carries the user's PIN: the only documented unlock secret,
    ``device.auth.localUserPassword``, is a device parameter whose change restarts the phone
    (see the module docstring and ``docs/vendors/poly.md``).
    """

    vendor = "poly"
    models = models_by_name(MODELS)
    user_fields = frozenset[UserField]({"display_name", "extension", "language", "sip_credentials"})

    def model(self, name: str) -> ModelInfo | None:
        """Look a model up by name in any of Poly's spellings (:func:`canonical_model`)."""
        return self.models.get(canonical_model(name))

    def generic_model(self, name: str) -> ModelInfo | None:
        """A VVX, Edge E, CCX or Trio model the table does not list, with one line.

        The name must be one of :data:`GENERIC_SERIES` once canonical (``VVX\\d{3,4}``,
        ``E\\d{3}``, ``CCX\\d{3}``, ``Trio`` + 4 digits or ``C`` + 2 digits). Every model of
        these series reads the same master file and keys, so nothing of the rendering depends
        on the model beyond its line count; one line is what each of them surely has. None for
        SIP 3.x-only SoundPoint / SoundStation IP models (:data:`SIP3_ONLY`), for the
        discontinued SoundPoint / SoundStation lines (the table is complete), for OBi-based
        devices (VVX D230, Edge B, Rove) and for anything else.
        """
        canonical = canonical_model(name)
        if canonical in SIP3_ONLY:
            return None
        for pattern, family in GENERIC_SERIES:
            if pattern.fullmatch(canonical):
                spelled = "Trio" + canonical[4:] if canonical.startswith("TRIO") else canonical
                return ModelInfo(spelled, "desk", GENERIC_SLOTS, family)
        return None

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise the master files and ``<mac>-user.cfg``.

        ``<mac>.cfg`` is also Yealink's name for a device file: it is claimed when the
        User-Agent is Poly's (names a Poly model), or, with an empty or unknown User-Agent, when
        the MAC carries one of Poly's OUIs. A User-Agent naming another vendor is never claimed.
        A User-Agent longer than :data:`MAX_USER_AGENT` or with control characters is treated as
        absent (no model, no MAC from it).
        """
        if "/" in path:
            return None
        if len(user_agent) > MAX_USER_AGENT or _CONTROL.search(user_agent):
            user_agent = ""
        if names_other_vendor(user_agent, self.vendor):
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
        """The model the User-Agent names, in the table's spelling or as a generic model of a
        served series; None when it names none, or a model this adapter does not serve."""
        m = _UA.search(user_agent)
        if m is None:
            return None
        resolved = self.resolve_model(m["model"])
        return None if resolved is None else resolved[0].name


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

"""Yealink desk phones (T2x/T3x/T4x/T5x, CP, VP) and Yealink DECT bases (W52P to W90).

Sources for every key and model, and what is still unverified: ``docs/vendors/yealink.md``.

Boot sequence (Yealink Administrator's Guide for SIP-T2/T4/T5/CP920, "Boot Files"): the phone
asks for its MAC-oriented boot file ``<mac>.boot``, else the common boot file
``y000000000000.boot``, then every file the boot file names in ``include:config "..."`` lines, in
order; without any boot file it asks for the common CFG file ``y0000000000NN.cfg`` and then the
MAC-oriented ``<mac>.cfg`` (what V70..V80 firmware does: the guides read describe boot files from
V81 on). ``NN`` is a per-model number (:attr:`ModelInfo.family`), not the firmware family:
T41S/T42S/T46S/T48S share firmware 66 but ask for 68/67/66/65. A model whose number is not known
has ``family`` "": it gets no common file and its boot files name only ``<mac>.cfg``, which
carries every setting anyway (a 404 for the common file is harmless).

Every file is rendered per device (the server picks the device by the MAC in the path, else in the
User-Agent), so both boot files can name the device's own CFG files:

* ``<mac>.boot`` and ``y000000000000.boot``: the include lines; no secret (``shared``).
* ``y0000000000NN.cfg``: site settings (time, NTP, language, no-reboot resync); no secret.
* ``<mac>.cfg``: the SIP accounts, the provisioning credential, the desk phone's unlock PIN or the
  DECT base's access code, and the site settings again so the device is complete even when the
  common file is not fetched.

Firmware generations (the "template variant" of a model, :class:`Generation`): a model is
rendered for the last firmware generation Yealink released for it. ``v8x`` (V81 and later) is the
current key set. ``v7x`` is for the T2xP/T19P/T21P/T32G/T38G/VP530 generation, whose last
firmware is V70 to V73: no ``static.`` prefix on the provisioning keys, ``account.N.transport``
instead of ``account.N.sip_server.1.transport_type``, and ``account.N.sip_server_host`` /
``sip_server_port`` (V70/V71) written beside ``account.N.sip_server.1.address`` / ``port`` (V72+).
No Yealink V7x document read shows the phone-lock keys, so a v7x phone carries no PIN, and
whether its firmware honours ``sip.notify_reboot_enable`` is only known for V73 from an open
project, so pushes to it wait for the maintenance window.

The PIN: on v8x desk phones it is ``phone_setting.phone_lock.unlock_pin``, the PIN that unlocks a
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

Unknown models (:meth:`YealinkAdapter.generic_model`): a name shaped like a Yealink desk phone
(``T73U``, ``CP9xx``, ``VPxx``) or DECT base (``W75B``, ``W75DM``, ``W78P``) that is not in the
table is served as a v8x device with one line (desk) or five handsets (DECT, the smallest Yealink
base), no common file and no PIN (its phone-lock key is not known to exist).

``<mac>.cfg`` is Poly's and Fanvil's file name too: it is claimed when the User-Agent names a
Yealink model, or, with an empty or unknown User-Agent, when the MAC carries a Yealink OUI.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Literal

from provisioner.devices.base import (
    AccessCodeKey,
    Adapter,
    DeviceKind,
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

#: ``v8x``: firmware V81 and later (the current key set). ``v7x``: firmware V70 to V73 (older keys,
#: no phone-lock PIN, pushes wait for the maintenance window). See the module doc.
Generation = Literal["v7x", "v8x"]


@dataclass(frozen=True)
class YealinkModel:
    """One row of the model table: the capabilities and what the templates need beyond them."""

    info: ModelInfo
    firmware: str
    """The leading number of the firmware versions the model runs (``66`` in ``66.86.0.15``);
    "" when not known. Several models share one firmware (T41S..T48S: 66)."""
    generation: Generation
    """The model's last firmware generation, which picks the template variant."""
    aliases: tuple[str, ...] = ()
    """Other names the same device goes by (a package name, a variant without PoE)."""


def _row(
    name: str,
    kind: DeviceKind,
    slots: int,
    common: str,
    firmware: str,
    generation: Generation = "v8x",
    *aliases: str,
) -> YealinkModel:
    return YealinkModel(ModelInfo(name, kind, slots, common), firmware, generation, aliases)


#: Every model of the current and the previous generations still in service, with its SIP
#: accounts (desk) or handsets (DECT), the NN of its common file ``y0000000000NN.cfg`` ("" when
#: not known) and its firmware family. Accounts: Yealink's Administrator's Guide ("X is the account
#: ID. For T54S/T48S/T48G/T46S/T46G/T29G, X=1-16; ..."), datasheets and open projects; the source
#: of each figure is in docs/vendors/yealink.md.
TABLE: tuple[YealinkModel, ...] = (
    # T2xP, T19P, T21P, T3xG, VP530: last firmware V70..V73.
    _row("T19P", "desk", 1, "31", "31", "v7x"),
    _row("T20P", "desk", 2, "7", "9", "v7x"),
    _row("T21P", "desk", 2, "34", "34", "v7x"),
    _row("T22P", "desk", 3, "5", "7", "v7x"),
    _row("T26P", "desk", 3, "4", "6", "v7x"),
    _row("T28P", "desk", 6, "0", "2", "v7x"),
    _row("T32G", "desk", 3, "32", "32", "v7x"),
    _row("T38G", "desk", 6, "38", "38", "v7x"),
    _row("VP530", "desk", 4, "23", "23", "v7x", "VP530P"),
    # T2x E2, T4xG/P, T4xS, T5xS, T5xA, CP8xx/9xx, W52P, W60B: last firmware V81..V86.
    _row("T19P_E2", "desk", 1, "53", "53", "v8x", "T19_E2"),
    _row("T21P_E2", "desk", 2, "52", "52", "v8x", "T21_E2"),
    _row("T23P", "desk", 3, "44", "44"),
    _row("T23G", "desk", 3, "44", "44"),
    _row("T27P", "desk", 6, "45", "45"),
    _row("T27G", "desk", 6, "69", "69"),
    _row("T29G", "desk", 16, "46", "46"),
    _row("T40P", "desk", 3, "54", "54"),
    _row("T40G", "desk", 3, "76", "76"),
    _row("T41P", "desk", 6, "36", "36"),
    _row("T42G", "desk", 12, "29", "29"),
    _row("T46G", "desk", 16, "28", "28"),
    _row("T48G", "desk", 16, "35", "35"),
    _row("T49G", "desk", 16, "51", "51"),
    _row("T41S", "desk", 6, "68", "66"),
    _row("T42S", "desk", 12, "67", "66"),
    _row("T46S", "desk", 16, "66", "66"),
    _row("T48S", "desk", 16, "65", "66"),
    _row("T52S", "desk", 12, "74", "70"),
    _row("T54S", "desk", 16, "70", "70"),
    _row("T56A", "desk", 16, "", "58"),
    _row("T58", "desk", 16, "58", "58", "v8x", "T58A", "T58V"),
    _row("CP860", "desk", 1, "37", "37"),
    _row("CP920", "desk", 1, "78", "78"),
    _row("CP960", "desk", 1, "73", "73"),
    _row("W52P", "dect", 5, "25", "25", "v8x", "W56P"),
    _row("W60B", "dect", 8, "77", "77", "v8x", "W60P", "W53P"),
    # T3x, T4xU/W, T5xW, CP925/965, W70B, W80, W90: current firmware (V85/V86 and later).
    _row("T30", "desk", 1, "127", "124"),
    _row("T30P", "desk", 1, "127", "124"),
    _row("T31", "desk", 2, "123", "124"),
    _row("T31P", "desk", 2, "123", "124"),
    _row("T31G", "desk", 2, "123", "124"),
    _row("T31W", "desk", 2, "172", ""),
    _row("T33P", "desk", 4, "124", "124"),
    _row("T33G", "desk", 4, "124", "124"),
    _row("T34W", "desk", 4, "171", ""),
    _row("T41U", "desk", 6, "", "108"),
    _row("T42U", "desk", 12, "116", "108"),
    _row("T43U", "desk", 12, "107", "108"),
    _row("T44U", "desk", 12, "", ""),
    _row("T44W", "desk", 12, "174", ""),
    _row("T46U", "desk", 16, "108", "108"),
    _row("T48U", "desk", 16, "109", "108"),
    _row("T53", "desk", 12, "95", "96"),
    _row("T53C", "desk", 12, "95", "96"),
    _row("T53W", "desk", 12, "95", "96"),
    _row("T54W", "desk", 16, "96", "96"),
    _row("T57W", "desk", 16, "97", "96"),
    _row("T58W", "desk", 16, "150", "150"),
    _row("CP925", "desk", 1, "148", ""),
    _row("CP965", "desk", 1, "143", ""),
    _row("W70B", "dect", 10, "146", "146", "v8x", "W73P", "W76P", "W79P"),
    # W80/W90 multi-cell: the DECT manager carries 100 (W80DM) or 250 (W90DM) accounts, one per
    # handset; a base acting as DM-base carries fewer (50: unverified).
    _row("W80B", "dect", 50, "103", "103"),
    _row("W80DM", "dect", 100, "103", "103"),
    _row("W90B", "dect", 50, "130", "130"),
    _row("W90DM", "dect", 250, "130", "130"),
)

MODELS: tuple[ModelInfo, ...] = tuple(row.info for row in TABLE)

#: Models whose firmware predates auto provisioning with these keys (pre-V70 configuration
#: format): recognised in a User-Agent, never served (neither from the table nor generically).
UNSUPPORTED = frozenset({"T18", "T18P"})

#: What an unknown model of the family is served with (see :meth:`YealinkAdapter.generic_model`).
GENERIC_DESK_SLOTS = 1
GENERIC_DECT_SLOTS = 5

COMMON_BOOT = "y000000000000.boot"

#: ``account.N.sip_server.1.transport_type`` (v8x) and ``account.N.transport`` (v7x): 0 UDP,
#: 1 TCP, 2 TLS (3 would be DNS-NAPTR).
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
#: The base PIN a handset enters to register (subscribe) to a Yealink DECT base: the base's DECT
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

#: The longest User-Agent read. Yealink's are under 80 characters; a longer one, or one with
#: control characters, is treated as no User-Agent at all (the request is then the OUI's to claim).
MAX_USER_AGENT = 256

_DEVICE_BOOT = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.boot")
_DEVICE_CFG = re.compile(r"(?P<mac>[0-9A-Fa-f]{12})\.cfg")
_COMMON_CFG = re.compile(r"y(?P<family>[0-9]{12})\.cfg")
_UNREADABLE = re.compile(r"[\x00-\x1f\x7f]")
#: A model token: letters, digits, an optional E2 suffix (``T21P_E2``, ``T21P E2``).
_MODEL = r"[a-z]{1,3}\d{2,3}[a-z0-9]{0,4}(?:[\s_-]e2\b)?"
#: "Yealink SIP-T54W 96.86.0.70 <mac>", "yealink SIP-T28P ...", "Yealink SIP VP-T49G ...",
#: "Yealink-T46G 28.71.0.81 28.1.0.128.0.0.0", "Yealink W70B 146.85.0.20 <mac>" (vendor word,
#: optional "SIP" / "SIP VP" prefix, any separators).
_UA = re.compile(
    rf"\byealink[\s/_-]+(?:sip[\s_-]+)?(?:vp[\s_-]+(?=t\d))?(?P<model>{_MODEL})(?P<rest>.*)",
    re.IGNORECASE,
)
#: "W52P 25.30.0.2 <mac>", "VP530P 23.70.0.40 <mac>": no vendor word (old DECT and video
#: firmware); accepted only for a model of the table, followed by a firmware version.
_UA_BARE = re.compile(rf"(?P<model>{_MODEL})\s+\d+(?:\.\d+){{3}}(?P<rest>.*)", re.IGNORECASE)
#: What an admin or a User-Agent may put before the model: the vendor and "SIP-" / "SIP VP-".
_NAME_PREFIX = re.compile(
    r"^(?:yealink[\s/_-]*)?(?:sip[\s_-]+)?(?:vp[\s_-]+(?=t\d))?", re.IGNORECASE
)
_NOT_ALNUM = re.compile(r"[^A-Z0-9]")
#: What a model name may consist of, however written: letters, digits, blanks, ``-``, ``_``, ``/``.
_NAME = re.compile(r"[A-Za-z0-9 _/-]{1,64}")
#: Shapes of the names of Yealink SIP desk phones and DECT bases (compact, upper case).
_GENERIC_DESK = re.compile(r"T\d{2}[A-Z]{0,2}(?:E2)?|CP9\d{2}|VP\d{2,3}[A-Z]?")
_GENERIC_DECT = re.compile(r"W\d{2}(?:B|DM|P)")
_E2 = re.compile(r"(?<=\d)([A-Z]?)E2$")


def _compact(name: str) -> str:
    """``name`` without vendor or ``SIP-`` prefix and separators, in upper case: ``T21PE2``;
    "" when ``name`` holds anything else than a model name can (control characters, ...)."""
    name = name.strip()
    if not _NAME.fullmatch(name):
        return ""
    return _NOT_ALNUM.sub("", _NAME_PREFIX.sub("", name).upper())


_ROWS: Mapping[str, YealinkModel] = MappingProxyType(
    {_compact(name): row for row in TABLE for name in (row.info.name, *row.aliases)}
)


class YealinkAdapter(Adapter):
    """Yealink desk phones and DECT bases."""

    vendor = "yealink"
    models = models_by_name(MODELS)
    user_fields = frozenset[UserField]({"display_name", "language", "sip_credentials"})

    def model(self, name: str) -> ModelInfo | None:
        """Look a model up by name: any case, with or without ``Yealink`` / ``SIP-`` prefix and
        separators (``sip-t21p e2`` is ``T21P_E2``), or by an alias (``W73P`` is a ``W70B``)."""
        row = _row_for(name)
        return row.info if row else None

    def generic_model(self, name: str) -> ModelInfo | None:
        """A Yealink-shaped name outside the table: desk ``T\\d\\d[A-Z]{0,2}`` (``T73U``),
        ``CP9\\d\\d``, ``VP\\d\\d``; DECT base ``W\\d\\d`` + ``B`` / ``DM`` / ``P`` (``W75DM``).

        Conservative capabilities: a desk phone gets one line, a base five handsets (the smallest
        Yealink base), no common file (``family`` ""), the current key set and no PIN.
        Handsets (``W56H``), pre-V70 models (:data:`UNSUPPORTED`) and anything else: None.
        """
        compact = _compact(name)
        if len(compact) > 8 or compact in UNSUPPORTED:
            return None
        if _GENERIC_DESK.fullmatch(compact):
            return ModelInfo(_E2.sub(r"\1_E2", compact), "desk", GENERIC_DESK_SLOTS)
        if _GENERIC_DECT.fullmatch(compact):
            return ModelInfo(compact, "dect", GENERIC_DECT_SLOTS)
        return None

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``<mac>.boot``, ``y000000000000.boot``, ``y0000000000NN.cfg``, ``<mac>.cfg``.

        Requests whose User-Agent names another vendor are never Yealink's. A User-Agent that is
        too long or carries control characters counts as none.
        """
        if "/" in path:
            return None
        if len(user_agent) > MAX_USER_AGENT or _UNREADABLE.search(user_agent):
            user_agent = ""
        if names_other_vendor(user_agent, self.vendor):
            return None
        ua_model, ua_mac = self._parse_user_agent(user_agent)

        if m := _DEVICE_BOOT.fullmatch(path):
            mac = m["mac"].lower()
            return FileRequest(f"{mac}.boot", mac, ua_mac, ua_model, shared=True)
        if path == COMMON_BOOT:
            return FileRequest(COMMON_BOOT, ua_mac, ua_mac, ua_model, shared=True)
        if m := _COMMON_CFG.fullmatch(path):
            # y000000000000.cfg is the T28P's common file, and nobody else's.
            if int(m["family"]) or self._family_of(ua_model) == "0":
                return FileRequest(path, ua_mac, ua_mac, ua_model, shared=True)
            return None
        if m := _DEVICE_CFG.fullmatch(path):
            mac = m["mac"].lower()
            if ua_model is None and not has_oui(mac, YEALINK_OUIS):
                return None
            return FileRequest(f"{mac}.cfg", mac, ua_mac, ua_model)
        return None

    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        """Render both boot files, the model's common file (when it has one) and ``<mac>.cfg``.

        A v8x desk phone of the table carries the PIN of the user on line 1 as its unlock PIN; a
        v7x or unknown desk phone and a DECT base never carry a PIN (a base: its access code).
        """
        model = ctx.device.model
        mac = ctx.device.mac
        slots = slot_table(check_slots(ctx.lines, model, f"Yealink {model.name}"), model)
        generation = self._generation(model)
        common = common_file_name(model)
        first = slots[0][1]
        dect = model.kind == "dect"
        site_values = {
            "site": ctx.site,
            "timezone": _timezone(ctx.site.timezone),
            "handset_language": _handset_language(ctx.site.language) if dect else None,
            "gui": not dect,
        }
        boot = templates.render(
            "device.boot", includes=[name for name in (common, f"{mac}.cfg") if name]
        )
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
        elif generation == "v7x":
            device_cfg = templates.render("desk_v7x.cfg", **device_values)
        else:
            phone_lock = self.pin_key(model) is not None
            device_cfg = templates.render(
                "desk.cfg",
                phone_lock=phone_lock,
                unlock_pin=first.pin if first and phone_lock else None,
                lock_timeout=LOCK_TIMEOUT,
                **device_values,
            )
        files = {f"{mac}.boot": boot, COMMON_BOOT: boot, f"{mac}.cfg": device_cfg}
        if common:
            files[common] = templates.render(
                "common.cfg", language=_language(ctx.site.language), **site_values
            )
        return files

    def sip_event(self, model: ModelInfo) -> str | None:
        """``check-sync;reboot=false`` for every model (configs set ``notify_reboot_enable``)."""
        return EVENT

    def needs_maintenance_window(self, model: ModelInfo) -> bool:
        """True for v7x models (whether V70..V72 firmware honours ``notify_reboot_enable`` is not
        documented, so a check-sync may reboot them); False for the others (see module doc)."""
        return self._generation(model) == "v7x"

    def pin_key(self, model: ModelInfo) -> PinKey | None:
        """v8x desk phones of the table: ``phone_setting.phone_lock.unlock_pin``; v7x and unknown
        desk phones and the bases have no documented user-PIN key."""
        row = table_row(model)
        known = row is not None and row.generation == "v8x"
        return DESK_PIN_KEY if known and model.kind == "desk" else None

    def access_code_key(self, model: ModelInfo) -> AccessCodeKey | None:
        """DECT bases: ``base.pin_code``, the base PIN a handset enters to register."""
        return DECT_ACCESS_CODE_KEY if model.kind == "dect" else None

    def _generation(self, model: ModelInfo) -> Generation:
        row = table_row(model)
        return row.generation if row is not None else "v8x"

    def _family_of(self, name: str | None) -> str | None:
        known = self.model(name) if name else None
        return known.family if known else None

    def _parse_user_agent(self, user_agent: str) -> tuple[str | None, str | None]:
        """The model and the MAC a Yealink User-Agent names (either may be missing).

        The model is the vendor's spelling of a table model, or the upper-case name of a model
        :meth:`generic_model` or :data:`UNSUPPORTED` knows; any other name (another vendor's
        model behind "Yealink") is no model.
        """
        m = _UA.search(user_agent)
        if m is None:
            bare = _UA_BARE.match(user_agent)
            if bare is None or _row_for(bare["model"]) is None:
                return None, None
            m = bare
        macs = (token.strip("()[];,") for token in m["rest"].split()[:8])
        return self._known_name(m["model"]), first_mac(macs)

    def _known_name(self, name: str) -> str | None:
        row = _row_for(name)
        if row is not None:
            return row.info.name
        generic = self.generic_model(name)
        if generic is not None:
            return generic.name
        compact = _compact(name)
        return compact if compact in UNSUPPORTED else None


def _row_for(name: str) -> YealinkModel | None:
    return _ROWS.get(_compact(name))


def table_row(model: ModelInfo) -> YealinkModel | None:
    """The table row ``model`` comes from; None for a generic model."""
    row = _ROWS.get(_compact(model.name))
    return row if row is not None and row.info == model else None


def common_file_name(model: ModelInfo) -> str | None:
    """``y0000000000NN.cfg``: the model's number, zero-padded to twelve digits; None without one."""
    return f"y{int(model.family):012d}.cfg" if model.family else None


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

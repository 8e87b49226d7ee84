"""Grandstream desk phones (GXP, GRP, WP820) and DP75x DECT bases.

Sources for every key, per firmware line, and what is still unverified:
``docs/vendors/grandstream.md``.

Boot sequence (GXP21xx Administration Guide, "Configuration File Download"; the same order is
spelled out in Grandstream's DP75x template, P8467, and the WP820 template, P8501): the device
asks for ``cfg<mac>``, then ``cfg<mac>.xml``; when that fails, ``cfg<model>.xml`` (lower case,
e.g. ``cfggxp2170.xml``), then ``cfg.xml``.

* ``cfg<mac>`` (and ``cfg<mac>.bin`` on newer firmware) is Grandstream's proprietary binary
  format; provisioner does not produce it, so :meth:`GrandstreamAdapter.identify` declines it
  (404) and the device goes on to ``cfg<mac>.xml``. Phones whose firmware reads *only* that
  binary file (GXP2000/2010/2020, firmware 1.2.x) cannot be served and are refused
  (:data:`BINARY_ONLY`).
* ``cfg<mac>.xml``: XML ``<gs_provision version="1">`` with P-values: the SIP accounts, the
  provisioning credential and, where the firmware line documents one, the PIN lock.
* ``cfg<model>.xml`` and ``cfg.xml``: site settings only, no secret (``shared``).

Firmware lines differ in which P-values exist and what they take (:class:`Series`): desk
phones share the account P-values (account 1 ``P271``/``P47``/``P35``..., account 2 ``P401``...,
accounts 5 and 6 ``P1701``/``P1801``...), but the language codes (GXP16xx ``cs``, others ``cz``,
WP820 ``de_DE``...), the time zone keys (WP820 takes no self-defined rule), the PIN lock switch
(``P1382`` keypad lock, WP820 ``P22235`` screen lock) and "Allow SIP Reset" differ; the DP75x
DECT bases use other account keys altogether (``P4060``... per SIP account, a handset-to-account
table). Each line writes only the keys its own Grandstream template documents.

The PIN: ``P1383``, the keypad lock's (WP820: the screen lock's) password, for the user on
account 1 (see :data:`SERIES`); the DP75x has no user-PIN key and no documented access code.

Every desk file keeps "SIP NOTIFY Authentication" on (``P4428`` = 0 in every desk template read,
including WP820's inverted label) and, where documented, turns "Allow SIP Reset" (``P26015``
and its per-account siblings) off: it lets a SIP NOTIFY *factory-reset* the phone.

Pushes send ``Event: resync``: FusionPBX switched Grandstream phones from
``check-sync;reboot=false`` to ``resync`` to provision "without requiring a reboot" (pull request
3014, per Grandstream support, tested on GXP2130/GXP2160). No Grandstream document on the event
was found; see the doc for the reasoning.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from provisioner.devices.base import (
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
    models_by_name,
    names_other_vendor,
    normalise_mac,
    posix_tz_rule,
    slot_table,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccountKeys:
    """The P-value numbers of one SIP account of a desk phone."""

    active: int
    name: int
    server: int
    user: int
    auth: int
    password: int
    display_name: int
    transport: int
    sip_reset: int
    """The account's "Allow SIP Reset": 1 lets a SIP NOTIFY factory-reset the phone; written 0
    on the firmware lines that document it (:attr:`Series.sip_reset`)."""


#: P-values of accounts 1..6, as Grandstream's configuration template for GXP2130/2135/2140/2160/
#: 2170 (firmware 1.0.11.16) lists them under "Account N/General Settings" and "Account N/SIP
#: Settings/Basic Settings"; account 1 is the same in the GRP261x (1.0.5.15), GXP16xx (1.0.5.3),
#: GXP140x (1.0.8.9) and WP820 (1.0.7.7) templates, accounts 4-6 in the GXP2100/2110/2120 template
#: (1.0.8.6; 5 and 6 "For GXP2120 ONLY"). Accounts 7 and 8 (GRP2624/GRP2634) are in no template
#: read: a line there is refused by :func:`_slots`.
ACCOUNT_KEYS: tuple[AccountKeys, ...] = (
    AccountKeys(271, 270, 47, 35, 36, 34, 3, 130, 26015),
    AccountKeys(401, 417, 402, 404, 405, 406, 407, 448, 26115),
    AccountKeys(501, 517, 502, 504, 505, 506, 507, 548, 26215),
    AccountKeys(601, 617, 602, 604, 605, 606, 607, 648, 26315),
    AccountKeys(1701, 1717, 1702, 1704, 1705, 1706, 1707, 1748, 26415),
    AccountKeys(1801, 1817, 1802, 1804, 1805, 1806, 1807, 1848, 26515),
)


@dataclass(frozen=True)
class DectAccountKeys:
    """The P-values of one of a DP75x base's ten SIP accounts ("DECT/SIP Account Settings")."""

    user: int
    auth: int
    password: int
    name: int
    profile: int
    """Which profile (SIP server) the account uses: 0 = profile 1, the only one written."""
    handset_mode: int
    """"HS Mode": 1-5 rings only that handset; 101-104 are hunting groups (not used)."""
    active: int


#: DP75x template 1.0.13.8, "DECT/SIP Account Settings": ten consecutive runs of P-values.
DECT_ACCOUNT_KEYS: tuple[DectAccountKeys, ...] = tuple(
    DectAccountKeys(4060 + i, 4090 + i, 4120 + i, 4180 + i, 4150 + i, 27080 + i, 4595 + i)
    for i in range(10)
)
#: "DECT/Handset Line Settings": the ten line slots of handsets 1..5, each taking 0 (none) or a
#: SIP account 1..10. Handsets 4 and 5 do not follow the pattern of 1..3 (the template's own
#: numbers).
DECT_HANDSET_LINE_KEYS: tuple[tuple[int, ...], ...] = (
    tuple(range(4300, 4310)),
    tuple(range(4310, 4320)),
    tuple(range(4320, 4330)),
    (4250, 4251, *range(21320, 21328)),
    tuple(range(21328, 21338)),
)
#: "Handset name. Displaying in handset screen. Strings: maximum 10 characters."
DECT_HANDSET_NAME_KEYS: tuple[int, ...] = (27020, 27021, 27022, 27023, 27024)
DECT_HANDSET_NAME_MAX = 10

#: "SIP Transport": 0 UDP, 1 TCP, 2 TLS/TCP (every template read).
TRANSPORTS = {"udp": 0, "tcp": 1, "tls": 2}
#: "Config Upgrade Via" / "Provisioning via" (P212): 0 TFTP, 1 HTTP, 2 HTTPS in every template
#: read (GXP16xx also 3 FTP, 4 FTPS, not used). On firmware 1.0.8.x the same P212 is labelled
#: "Firmware Upgrade Via" and governs both downloads (docs/vendors/grandstream.md).
UPGRADE_VIA = {"tftp": 0, "http": 1, "https": 2}

#: ISO 639-1 code to the display language code P1362 takes on the GXP21xx/GXP17xx/GRP26xx
#: templates (note ``cz`` for Czech and ``se`` for Swedish). Others fall back to English.
LANGUAGES: Mapping[str, str] = MappingProxyType(
    {
        "ar": "ar",
        "cs": "cz",
        "de": "de",
        "en": "en",
        "es": "es",
        "fr": "fr",
        "he": "he",
        "hr": "hr",
        "hu": "hu",
        "it": "it",
        "ja": "ja",
        "ko": "ko",
        "lv": "lv",
        "nl": "nl",
        "pl": "pl",
        "pt": "pt",
        "ru": "ru",
        "sl": "sl",
        "sv": "se",
        "tr": "tr",
        "zh": "zh",
    }
)
#: GXP16xx template 1.0.5.3, "Maintenance/Language": the same list, but Czech is ``cs``.
LANGUAGES_GXP16XX: Mapping[str, str] = MappingProxyType({**LANGUAGES, "cs": "cs"})
#: GXP140x 1.0.8.9 and GXP2100/2110/2120 1.0.8.6 templates: the same list without Latvian.
LANGUAGES_1_0_8: Mapping[str, str] = MappingProxyType(
    {code: value for code, value in LANGUAGES.items() if code != "lv"}
)
#: WP820 template 1.0.7.7, "System Settings/Time and Language/Language": Android locale codes.
LANGUAGES_WP820: Mapping[str, str] = MappingProxyType(
    {
        "ar": "ar_EG",
        "de": "de_DE",
        "en": "en_US",
        "es": "es_ES",
        "fr": "fr_FR",
        "he": "iw_IL",
        "it": "it_IT",
        "ja": "ja_JP",
        "nl": "nl_NL",
        "pl": "pl_PL",
        "pt": "pt_PT",
        "ru": "ru_RU",
        "sl": "sl_SI",
        "tr": "tr_TR",
        "uk": "uk_UA",
        "zh": "zh_CN",
    }
)

#: P64's value for "Self-Defined Time Zone": the rule is then taken from P246.
CUSTOM_TIMEZONE = "customize"
#: P246 "Self Defined Time Zone. Max length allowed is 64 characters" (desk templates); the
#: DP75x template allows 32.
TIMEZONE_MAX_LENGTH = 64
DECT_TIMEZONE_MAX_LENGTH = 32
#: Used for a zone the time zone database does not know (or whose rule P246 cannot hold): the
#: rule of the product's default site zone (Europe/Berlin). A wrong clock is better than refusing
#: to provision SIP credentials.
FALLBACK_TIMEZONE = "CET-1CEST,M3.5.0,M10.5.0/3"
#: A quoted zone abbreviation (``<+04>``); Grandstream's examples only show alphabetic names.
_QUOTED_TZ_NAME = re.compile(r"<[^>]*>")

#: The longest PIN the PIN policy admits; the lock passwords have no documented length limit.
#: Unverified on hardware: docs/vendors/grandstream.md.
KEYPAD_LOCK_PASSWORD_MAX_DIGITS = 12
PIN_KEY = PinKey(
    name="P1383",
    max_digits=KEYPAD_LOCK_PASSWORD_MAX_DIGITS,
    source=(
        "Grandstream configuration templates GXP2130/2135/2140/2160/2170 1.0.11.16 and GRP261x "
        '1.0.5.15, "Maintenance/Security Settings/Keypad Lock": "Password to Lock/Unlock" '
        "(a string, no length limit documented)"
    ),
)
PIN_KEY_GXP17XX = PinKey(
    name="P1383",
    max_digits=KEYPAD_LOCK_PASSWORD_MAX_DIGITS,
    source=(
        'Grandstream configuration template GXP17xx 1.0.1.106, "Maintenance/Security Settings/'
        'Security" (Keypad Lock): "Password to Lock/Unlock (0-9 only)", a number, no length limit'
    ),
)
PIN_KEY_GXP16XX = PinKey(
    name="P1383",
    max_digits=KEYPAD_LOCK_PASSWORD_MAX_DIGITS,
    source=(
        'Grandstream configuration template GXP1610/1620/1625/1628/1630 1.0.5.3, "Maintenance/'
        'Security Settings/Security" (Keypad Lock): "Password to lock/unlock (0-9 only)", a '
        "number, no length limit"
    ),
)
PIN_KEY_1_0_8 = PinKey(
    name="P1383",
    max_digits=KEYPAD_LOCK_PASSWORD_MAX_DIGITS,
    source=(
        "Grandstream configuration templates GXP140x 1.0.8.9 and GXP2100/2110/2120 1.0.8.6, "
        '"Maintenance/Security" (Keypad Lock): "Password to lock/unlock (0-9 only)", a number, '
        "no length limit"
    ),
)
PIN_KEY_WP820 = PinKey(
    name="P1383",
    max_digits=KEYPAD_LOCK_PASSWORD_MAX_DIGITS,
    source=(
        'Grandstream configuration template WP820 1.0.7.7, "System Settings/Security Settings/'
        'Lock Screen Settings": "Screen Lock Password" (a string, no length limit documented)'
    ),
)


@dataclass(frozen=True, eq=False)
class Series:
    """One firmware line: its template variant and which documented keys its files carry.

    Declared as data so that adding a model is a table row, and a key a line does not document
    is never written to it. Compared by identity: each line is one module-level constant.
    """

    name: str
    source: str
    """The Grandstream configuration template (and version) the keys are checked against."""
    template: str
    """``device.xml`` (desk phones) or ``dect.xml`` (DP75x bases)."""
    accounts: int
    """Accounts (desk) or handsets (DECT) whose keys are known; lines beyond are refused."""
    sip_reset: bool = False
    """Whether "Allow SIP Reset" (P26x15) is documented, and so written 0."""
    notify_auth: bool = False
    """Whether "Disable SIP NOTIFY Authentication" (P4428) is documented, and so written 0."""
    lock_enable: str | None = None
    """The key that turns the PIN lock on (``P1382`` keypad lock, ``P22235`` screen lock)."""
    pin_key: PinKey | None = None
    languages: Mapping[str, str] | None = None
    """ISO 639-1 code to P1362's code; None: the language is not written."""
    fallback_language: str = "en"
    timezone_max: int | None = TIMEZONE_MAX_LENGTH
    """P246's longest rule (with P64 = ``customize``); None: no time zone is written."""


GXP21XX = Series(
    "gxp21xx",
    "GXP2130/2135/2140/2160/2170 1.0.11.16",
    "device.xml",
    accounts=6,
    sip_reset=True,
    notify_auth=True,
    lock_enable="P1382",
    pin_key=PIN_KEY,
    languages=LANGUAGES,
)
GRP26XX = Series(
    "grp26xx",
    "GRP261x 1.0.5.15 (GRP260x, GRP2624 and GRP2634 assumed from it)",
    "device.xml",
    accounts=6,
    sip_reset=True,
    notify_auth=True,
    lock_enable="P1382",
    pin_key=PIN_KEY,
    languages=LANGUAGES,
)
GXP17XX = Series(
    "gxp17xx",
    "GXP17xx 1.0.1.106",
    "device.xml",
    accounts=4,
    notify_auth=True,
    lock_enable="P1382",
    pin_key=PIN_KEY_GXP17XX,
    languages=LANGUAGES,
)
GXP16XX = Series(
    "gxp16xx",
    "GXP1610/1620/1625/1628/1630 1.0.5.3",
    "device.xml",
    accounts=3,
    notify_auth=True,
    lock_enable="P1382",
    pin_key=PIN_KEY_GXP16XX,
    languages=LANGUAGES_GXP16XX,
)
GXP_1_0_8 = Series(
    "gxp-1.0.8",
    "GXP140x 1.0.8.9 and GXP2100/2110/2120 1.0.8.6",
    "device.xml",
    accounts=6,
    notify_auth=True,
    lock_enable="P1382",
    pin_key=PIN_KEY_1_0_8,
    languages=LANGUAGES_1_0_8,
)
WP820 = Series(
    "wp820",
    "WP820 1.0.7.7",
    "device.xml",
    accounts=2,
    notify_auth=True,
    lock_enable="P22235",
    pin_key=PIN_KEY_WP820,
    languages=LANGUAGES_WP820,
    fallback_language="en_US",
    timezone_max=None,
)
DP75X = Series(
    "dp75x",
    "DP75x 1.0.13.8",
    "dect.xml",
    accounts=len(DECT_HANDSET_LINE_KEYS),
    timezone_max=DECT_TIMEZONE_MAX_LENGTH,
)
#: Desk models the table does not list (:meth:`GrandstreamAdapter.generic_model`): account 1 and
#: the keys every desk template read documents alike (P271/P47/P35/P36/P34/P3/P270/P130,
#: P212/P237/P1360/P1361, P30, P4428). No language, time zone or PIN lock: those differ between
#: firmware lines.
GENERIC_DESK = Series(
    "generic",
    "keys common to every desk template read",
    "device.xml",
    accounts=1,
    notify_auth=True,
    timezone_max=None,
)

#: SIP accounts per model (Grandstream datasheets and templates, docs/vendors/grandstream.md);
#: ``family`` is the model as it appears in the model file name ``cfg<family>.xml``.
SERIES_MODELS: tuple[tuple[Series, tuple[tuple[str, int], ...]], ...] = (
    (GXP21XX, (("GXP2130", 3), ("GXP2135", 4), ("GXP2140", 4), ("GXP2160", 6), ("GXP2170", 6))),
    (GRP26XX, (("GRP2601", 2), ("GRP2601W", 2), ("GRP2602", 4), ("GRP2603", 6), ("GRP2604", 6),
               ("GRP2612", 2), ("GRP2612P", 2), ("GRP2612W", 2), ("GRP2613", 3), ("GRP2614", 4),
               ("GRP2615", 5), ("GRP2616", 6), ("GRP2624", 8), ("GRP2634", 8))),
    (GXP17XX, (("GXP1760", 3), ("GXP1760W", 3), ("GXP1780", 4), ("GXP1782", 4))),
    (GXP16XX, (("GXP1610", 1), ("GXP1615", 1), ("GXP1620", 2), ("GXP1625", 2), ("GXP1628", 2),
               ("GXP1630", 3))),
    (GXP_1_0_8, (("GXP1100", 1), ("GXP1105", 1), ("GXP1160", 1), ("GXP1165", 1), ("GXP1400", 2),
                 ("GXP1405", 2), ("GXP1450", 2), ("GXP2100", 4), ("GXP2110", 4), ("GXP2120", 6),
                 ("GXP2124", 4))),
    (WP820, (("WP820", 2),)),
    (DP75X, (("DP750", 5), ("DP752", 5))),
)  # fmt: skip
MODELS: tuple[ModelInfo, ...] = tuple(
    ModelInfo(name, "dect" if series is DP75X else "desk", slots, name.lower())
    for series, models in SERIES_MODELS
    for name, slots in models
)
_SERIES_OF: Mapping[str, Series] = MappingProxyType(
    {name: series for series, models in SERIES_MODELS for name, _ in models}
)

#: Phones whose firmware (1.2.x) reads only the binary ``cfg<mac>``: the wazo-provd plugin for
#: GXP2000 firmware 1.2.5.3 builds that binary file and nothing else. Refused, not generic.
BINARY_ONLY = frozenset({"GXP2000", "GXP2010", "GXP2020"})
#: Names an unknown *desk* model of this vendor may have: GXP, GRP, GXV (video), GHP (hotel) and
#: WP (Wi-Fi) followed by three or four digits and at most two letters. ATAs (HT), gateways
#: (GXW), door systems (GDS), conference phones (GAC, GVC) and speakers (GSC) are not phones of
#: this family and are refused.
_GENERIC_DESK_NAME = re.compile(r"(?:GXP|GRP|GXV|GHP|WP)[0-9]{3,4}[A-Z]{0,2}")
#: An unknown DP75x-line DECT base (DP720/DP722/DP730 are handsets and DP760 a repeater: refused).
_GENERIC_DECT_NAME = re.compile(r"DP75[0-9][A-Z]?")
#: Hardware variants Grandstream marks with a letter after the model number (P PoE, W Wi-Fi,
#: G gigabit) run their base model's firmware: GXP1760W in the GXP17xx template, GRP2612W and
#: GRP2601W with their GRP siblings.
_VARIANT_SUFFIXES = "PWG"
#: Unknown models get one account (desk) or one handset (DECT): what every model surely has.
GENERIC_SLOTS = 1
_MAX_MODEL_NAME = 32
_SEPARATORS = re.compile(r"[\s_\-.]")

#: Re-provision without a reboot. ``check-sync`` (even with ``reboot=false``) is reported to
#: restart these phones; see the module docstring and docs/vendors/grandstream.md.
EVENT = "resync"

_DEVICE_XML = re.compile(r"cfg(?P<mac>[0-9A-Fa-f]{12})\.xml")
_MODEL_XML = re.compile(r"cfg(?P<model>[A-Za-z0-9]{2,16})\.xml")
_GENERIC_XML = "cfg.xml"

#: The longest User-Agent read; longer ones (and any with control characters) are unknown.
MAX_USER_AGENT = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: The model a Grandstream User-Agent names, in any of the recorded forms:
#: ``Grandstream Model HW GXP2170 SW 1.0.11.3 DevId ...`` (current firmware, optionally with a
#: hardware revision ``V2.2A`` after the model), ``Grandstream GXP2000 (gxp2000e.bin:...) DevId``
#: (firmware 1.2.x) and ``Grandstream GXP1400 1.0.4.13`` (no MAC). Only Grandstream's product
#: prefixes count: a name of another vendor's model is no model of this family.
_UA_MODEL = re.compile(
    r"\b(?:HW|Grandstream)\s{1,8}"
    r"(?P<model>(?:GXP|GRP|GXV|GHP|GAC|GVC|GSC|GDS|GXW|HT|DP|WP|BT)[-_]?[0-9]{3,4}[A-Z]{0,2})\b",
    re.IGNORECASE,
)
_UA_MAC = re.compile(
    r"\bDevId\s{1,8}(?P<mac>[0-9A-Fa-f]{2}(?:[:\-]?[0-9A-Fa-f]{2}){5})(?![0-9A-Fa-f:\-])",
    re.IGNORECASE,
)


def canonical_model(name: str) -> str:
    """``name`` in the table's form: upper case, no separators, no ``Grandstream`` prefix
    (``Grandstream GXP-2170`` → ``GXP2170``). Pure; an over-long name gives ``""``."""
    if len(name) > _MAX_MODEL_NAME:
        return ""
    text = _SEPARATORS.sub("", name.upper())
    return text.removeprefix("GRANDSTREAM")


class GrandstreamAdapter(Adapter):
    """Grandstream GXP/GRP/WP820 desk phones and DP75x DECT bases (:data:`SERIES_MODELS`).

    The PIN goes into ``P1383`` (keypad or screen lock password) on every desk line whose
    template documents it, enabled by the line's lock switch while the user on account 1 has a
    PIN. The DP75x documents no user-PIN key and no handset access code.
    """

    vendor = "grandstream"
    models = models_by_name(MODELS)
    user_fields = frozenset[UserField]({"display_name", "language", "sip_credentials"})

    def model(self, name: str) -> ModelInfo | None:
        """Look a model up in any spelling :func:`canonical_model` accepts."""
        return self.models.get(canonical_model(name))

    def generic_model(self, name: str) -> ModelInfo | None:
        """A Grandstream phone or DP75x base the table does not list.

        * A table model with a hardware-variant letter (``GRP2612G``, ``GXP1782P``): the base
          model's kind and accounts, since the variant runs the base model's firmware.
        * Another ``GXP``/``GRP``/``GXV``/``GHP``/``WP`` name: a desk phone with one account,
          served the keys every desk template read has in common (:data:`GENERIC_DESK`).
        * ``DP75x``: a DECT base with one handset, served the DP75x keys.

        None for firmware that reads only the binary file (:data:`BINARY_ONLY`), for
        Grandstream products that are no phones of this family (ATAs, gateways, handsets,
        repeaters) and for anything else. The model file is ``cfg<name in lower case>.xml``.
        """
        canonical = canonical_model(name)
        if not canonical.isascii() or BINARY_ONLY & {canonical, _variant_base_name(canonical)}:
            return None
        base = self._variant_base(canonical)
        if base is not None:
            return ModelInfo(canonical, base.kind, base.slots, canonical.lower())
        if _GENERIC_DECT_NAME.fullmatch(canonical):
            return ModelInfo(canonical, "dect", GENERIC_SLOTS, canonical.lower())
        if _GENERIC_DESK_NAME.fullmatch(canonical):
            return ModelInfo(canonical, "desk", GENERIC_SLOTS, canonical.lower())
        return None

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``cfg<mac>.xml``, ``cfg<model>.xml`` and ``cfg.xml``.

        ``cfg<mac>`` / ``cfg<mac>.bin`` (binary format) and model files of names that are no
        model of this family are declined, so the phone moves on to the next file of its
        sequence. A User-Agent naming another vendor declines the request; one that is too
        long or carries control characters is read as if absent.
        """
        if "/" in path or names_other_vendor(user_agent, self.vendor):
            return None
        ua_model, ua_mac = self._parse_user_agent(user_agent)

        if m := _DEVICE_XML.fullmatch(path):
            mac = m["mac"].lower()
            return FileRequest(f"cfg{mac}.xml", mac, ua_mac, ua_model)
        if path == _GENERIC_XML:
            return FileRequest(_GENERIC_XML, ua_mac, ua_mac, ua_model, shared=True)
        if (m := _MODEL_XML.fullmatch(path)) and (model := self.served_model(m["model"])):
            return FileRequest(f"cfg{model.family}.xml", ua_mac, ua_mac, model.name, shared=True)
        return None

    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        """Render ``cfg<mac>.xml`` and the two shared files ``cfg<model>.xml`` and ``cfg.xml``."""
        model = ctx.device.model
        series = _series(model)
        scheme, config_path = _config_server(ctx.provisioning_url)
        site_values: dict[str, Any] = {
            "site": ctx.site,
            "custom_timezone": CUSTOM_TIMEZONE,
            "timezone": (
                None
                if series.timezone_max is None
                else _posix_timezone(ctx.site.timezone, series.timezone_max)
            ),
            "upgrade_via": UPGRADE_VIA[scheme],
            "config_path": config_path,
            "notify_auth": series.notify_auth,
            "sip_reset_keys": [k.sip_reset for k in ACCOUNT_KEYS] if series.sip_reset else [],
        }
        shared = templates.render(
            "shared.xml", language=_language(series, ctx.site.language), **site_values
        )
        device_values = {
            "mac": ctx.device.mac,
            "server": f"{ctx.site.registrar_host}:{ctx.site.registrar_port}",
            "transport": TRANSPORTS[ctx.site.transport],
            "provisioning_user": ctx.provisioning_user,
            "provisioning_password": ctx.provisioning_password,
            **site_values,
        }
        if series.template == "dect.xml":
            device = templates.render(
                "dect.xml",
                language=_language(series, ctx.site.language),
                **_dect_values(ctx.lines, model, series),
                **device_values,
            )
        else:
            accounts = _slots(ctx.lines, model, series)
            first = accounts[0][1]
            device = templates.render(
                "device.xml",
                language=_language(series, first.language if first else ctx.site.language),
                accounts=accounts,
                lock_enable=series.lock_enable,
                pin_key=series.pin_key.name if series.pin_key else None,
                unlock_pin=first.pin if first and series.pin_key else None,
                **device_values,
            )
        return {
            f"cfg{ctx.device.mac}.xml": device,
            f"cfg{model.family}.xml": shared,
            _GENERIC_XML: shared,
        }

    def sip_event(self, model: ModelInfo) -> str | None:
        """``resync``: re-provision without a reboot (docs/vendors/grandstream.md)."""
        return EVENT

    def pin_key(self, model: ModelInfo) -> PinKey | None:
        """``P1383`` on every desk line documenting a lock password; None on the DP75x and on
        models the table does not list."""
        return _series(model).pin_key

    def _variant_base(self, canonical: str) -> ModelInfo | None:
        """The table model ``canonical`` is a hardware variant of (a suffix letter), or None."""
        base = _variant_base_name(canonical)
        return None if base is None else self.models.get(base)

    def _parse_user_agent(self, user_agent: str) -> tuple[str | None, str | None]:
        """The model and the MAC (``DevId``) a Grandstream User-Agent names."""
        if len(user_agent) > MAX_USER_AGENT or _CONTROL.search(user_agent):
            return None, None
        model_match = _UA_MODEL.search(user_agent)
        mac_match = _UA_MAC.search(user_agent)
        model = self.model_name(canonical_model(model_match["model"])) if model_match else None
        return model, normalise_mac(mac_match["mac"]) if mac_match else None


ADAPTER = GrandstreamAdapter()


def _series(model: ModelInfo) -> Series:
    """The firmware line ``model`` is served as: the table's, its base model's for a hardware
    variant, else the generic desk keys or (DECT) the DP75x keys."""
    name = model.name.upper()
    series = _SERIES_OF.get(name) or _SERIES_OF.get(_variant_base_name(name) or "")
    if series is not None:
        return series
    return DP75X if model.kind == "dect" else GENERIC_DESK


def _variant_base_name(name: str) -> str | None:
    """``name`` without its hardware-variant letter (``GRP2612G`` → ``GRP2612``), or None."""
    if len(name) > 1 and name[-1] in _VARIANT_SUFFIXES:
        return name[:-1]
    return None


def _slots(
    lines: Sequence[Line], model: ModelInfo, series: Series
) -> list[tuple[AccountKeys, Line | None]]:
    """Each account of the model that has known P-values, with its line or None when free.

    Free accounts are written too (inactive, credentials emptied): the phone keeps provisioned
    values, so an account left out would stay registered with its old credentials.
    """
    check_slots(lines, model, f"Grandstream {model.name}", noun="accounts")
    known = min(model.slots, series.accounts, len(ACCOUNT_KEYS))
    if any(line.slot > known for line in lines):
        raise RenderError(
            f"Grandstream {model.name}: the configuration keys of accounts above {known} are "
            f"unknown; assign lines to accounts 1..{known} only"
        )
    return [(ACCOUNT_KEYS[slot - 1], line) for slot, line in slot_table(lines, model)[:known]]


def _dect_values(lines: Sequence[Line], model: ModelInfo, series: Series) -> dict[str, Any]:
    """The DP75x tables: handset N uses SIP account N (profile 1, ringing only that handset).

    All ten SIP accounts are written: those of free or absent handsets inactive and emptied, so
    no old credential stays registered. Each handset's first line is its account (0 when the
    handset is free), its other nine lines none.
    """
    check_slots(lines, model, f"Grandstream {model.name}", noun="handsets")
    known = min(model.slots, series.accounts)
    if any(line.slot > known for line in lines):
        raise RenderError(
            f"Grandstream {model.name}: the configuration keys of handsets above {known} are "
            f"unknown; assign lines to handsets 1..{known} only"
        )
    by_slot = {line.slot: line for line in lines}
    accounts = [(keys, by_slot.get(n)) for n, keys in enumerate(DECT_ACCOUNT_KEYS, start=1)]
    handsets = [
        (
            n,
            DECT_HANDSET_LINE_KEYS[n - 1],
            DECT_HANDSET_NAME_KEYS[n - 1],
            by_slot.get(n),
        )
        for n in range(1, known + 1)
    ]
    return {
        "dect_accounts": accounts,
        "handsets": handsets,
        "handset_name_max": DECT_HANDSET_NAME_MAX,
    }


def _config_server(url: str) -> tuple[str, str]:
    """Split the provisioning URL into P212's protocol and P237's path (no scheme, no ``/``)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in UPGRADE_VIA:
        raise RenderError(f"Grandstream phones cannot fetch their files over {scheme or url!r}")
    host = parts.netloc.rpartition("@")[2]
    return scheme, f"{host}{parts.path}".rstrip("/")


def _language(series: Series, code: str) -> str | None:
    """P1362's value for ISO 639-1 ``code`` on ``series``, or None when it is not written."""
    if series.languages is None:
        return None
    return series.languages.get(code.lower(), series.fallback_language)


@functools.lru_cache(maxsize=64)
def _posix_timezone(zone: str, max_length: int = TIMEZONE_MAX_LENGTH) -> str:
    """The POSIX TZ rule of ``zone`` (e.g. ``CET-1CEST,M3.5.0,M10.5.0/3``) for P246.

    Quoted abbreviations (``<+04>-4``) become alphabetic ones (``STD-4``): Grandstream's time zone
    list only shows those, and the abbreviation does not change the clock.
    """
    rule = posix_tz_rule(zone)
    if rule is not None:
        names = iter(("STD", "DST"))
        rule = _QUOTED_TZ_NAME.sub(lambda _: next(names, "DST"), rule)
    if rule is None or len(rule) > max_length:
        log.warning("time zone %s has no rule P246 can hold, using %s", zone, FALLBACK_TIMEZONE)
        return FALLBACK_TIMEZONE
    return rule

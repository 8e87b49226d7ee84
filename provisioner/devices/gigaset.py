"""Gigaset Nx70 IP PRO DECT systems (N610, N670, N870, N870E) and unlisted models of that line.

One provisioning file describes the whole DECT system: the SIP provider profile, the provisioning
server and one handset entry (``add_hs``) with its SIP account per occupied slot. The base asks for
``provisioning.xml`` when its provisioning URL names a folder and for ``<MAC>.xml`` otherwise; both
get the same content, and the file tells the base to use the direct ``<MAC>.xml`` URL from then on
(Gigaset's preferred form, and one that carries the MAC in the path).

The user's PIN goes nowhere in this file: Gigaset documents no per-handset *user* PIN for the
Nx70 (the handset's "Authentication Code (PIN)" is the DECT access code, OpenScape Cordless IP V2
Administrator Documentation, section 8.2 "Registering/de-registering handsets"), so
:meth:`GigasetAdapter.pin_key` is None and hot-desk logins go through the PBX. The DECT access
code (``hs.<handset>.DECT_AC``, at most 4 digits in the same document) is the base's own random
code from :attr:`RenderContext.access_code`.

The bases of the generation before (N300 IP, N510 IP PRO, N720 DM/IP PRO) are recognised in
requests but not provisioned: they take another format (``ProviderFrame`` with ``SYMB_ITEM`` keys)
that they reach only through Gigaset's binary redirect files, so they get no model
(:data:`LEGACY_MODELS`). Maxwell desk phones are recognised too and not provisioned either.

Sources, the reasoning behind each key and what is still unverified: ``docs/vendors/gigaset.md``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from provisioner.devices.base import (
    AccessCodeKey,
    Adapter,
    FileRequest,
    Line,
    ModelInfo,
    RenderContext,
    RenderError,
    Templates,
    UserField,
    check_slots,
    first_mac,
    has_oui,
    models_by_name,
    names_other_vendor,
    names_vendor,
    posix_tz_rule,
    standard_utc_offset,
    with_credentials,
)

#: Gigaset's MAC prefixes. A request without a Gigaset User-Agent is only accepted for these.
GIGASET_OUIS = frozenset({"7c2f80", "002104", "589ec6"})

#: The product part of a User-Agent: everything before the ``/`` that starts the firmware version
#: (``Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605``,
#: ``N720-DM-PRO/70.040.00.000.000``), optionally in double quotes as older Nx70 firmware sends
#: it. Bounded, so it cannot backtrack.
_UA_PRODUCT = re.compile(r'\s{0,4}"?\s{0,4}(?P<product>[^/;"\s][^/;"]{0,48})/\s{0,4}[0-9]')
#: A DECT base of the N series as Gigaset names it, with or without the vendor word, the product
#: line suffix (``IP PRO``, ``DM PRO``) and separators: ``N870E``, ``Gigaset N870 IP PRO``,
#: ``N720-DM-PRO``. ``suffix`` tells a product name (which needs no vendor word) from a bare token.
_N_SERIES = re.compile(
    r"(?P<vendor>gigaset[\s_-]{1,4})?N[\s_-]?(?P<number>\d{3})(?P<e>E?)"
    r"(?P<suffix>[\s_-]{1,4}(?:IP|DM)[\s_-]{1,4}PRO)?",
    re.IGNORECASE,
)
#: A Maxwell desk phone (``Maxwell 3 PRO``, ``Gigaset Maxwell Basic``): recognised, not provisioned.
_MAXWELL = re.compile(
    r"(?:gigaset[\s_-]{1,4})?maxwell[\s_-]{0,4}(?P<number>basic|\d{1,2})(?:[\s_-]{1,4}PRO)?",
    re.IGNORECASE,
)
#: Real Gigaset User-Agents are well under 100 characters; a longer one, or one with control
#: characters, is nobody's: it is treated as absent rather than parsed.
_UA_MAX = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAC_FILE = re.compile(r"(?P<mac>[0-9a-fA-F]{12})\.xml")
_FOLDER_FILE = "provisioning.xml"

#: A DECT IPUI as Gigaset writes it (e.g. ``02b6ec8aa5``).
_IPUI = re.compile(r"[0-9a-f]{10}")

#: The handset's access code: "Authentication Code (PIN) ... min. 1, max. 4 digits"; the web UI's
#: "Generate random PIN" makes four. Random per base, never the user's PIN.
ACCESS_CODE_KEY = AccessCodeKey(
    name="hs.<handset>.DECT_AC",
    source=(
        "OpenScape Cordless IP V2 Administrator Documentation (P31003C1020M1000276A9, 01/2018),"
        " 8.2 Registering/de-registering handsets, p. 51: Authentication Code (PIN), 1-4 digits"
    ),
    digits=4,
)

#: ``SipProvider.N.TransportProtocol`` values (open templates; not in a Gigaset document).
_TRANSPORT = {"udp": "1", "tcp": "2", "tls": "3"}

#: The zone names ``DmGlobal.0.TimeZone`` accepts (the base's own list, as open provisioning
#: templates for the Nx70 carry it; see docs/vendors/gigaset.md). Any other IANA zone is mapped
#: onto one of these by :func:`gigaset_time_zone`.
GIGASET_TIME_ZONES = frozenset(
    {
        # Americas and the Pacific
        "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/Denver",
        "America/Chicago", "America/New_York", "America/Caracas", "America/Sao_Paulo",
        # UTC+0
        "Greenwich", "Europe/Belfast", "Europe/Dublin", "Europe/Guernsey", "Europe/Isle_of_Man",
        "Europe/Jersey", "Europe/Lisbon", "Europe/London",
        # UTC+1
        "Europe/Amsterdam", "Europe/Andorra", "Europe/Belgrade", "Europe/Berlin",
        "Europe/Bratislava", "Europe/Brussels", "Europe/Budapest", "Europe/Busingen",
        "Europe/Copenhagen", "Europe/Gibraltar", "Europe/Ljubljana", "Europe/Luxembourg",
        "Europe/Madrid", "Europe/Malta", "Europe/Monaco", "Europe/Oslo", "Europe/Paris",
        "Europe/Podgorica", "Europe/Prague", "Europe/Rome", "Europe/San_Marino",
        "Europe/Sarajevo", "Europe/Skopje", "Europe/Stockholm", "Europe/Tirane", "Europe/Vaduz",
        "Europe/Vatican", "Europe/Vienna", "Europe/Warsaw", "Europe/Zagreb", "Europe/Zurich",
        # UTC+2
        "Africa/Cairo", "Europe/Athens", "Europe/Bucharest", "Europe/Chisinau", "Europe/Helsinki",
        "Europe/Kaliningrad", "Europe/Kiev", "Europe/Mariehamn", "Europe/Nicosia", "Europe/Riga",
        "Europe/Sofia", "Europe/Tallinn", "Europe/Tiraspol", "Europe/Uzhgorod", "Europe/Vilnius",
        "Europe/Zaporozhye",
        # UTC+3 and east
        "Europe/Istanbul", "Europe/Kirov", "Europe/Minsk", "Europe/Moscow", "Europe/Simferopol",
        "Europe/Volgograd", "Asia/Dubai", "Europe/Astrakhan", "Europe/Samara", "Europe/Ulyanovsk",
        "Asia/Karachi", "Asia/Dhaka", "Asia/Hong_Kong", "Asia/Tokyo", "Australia/Adelaide",
        "Australia/Darwin", "Australia/Brisbane", "Australia/Sydney", "Pacific/Noumea",
    }
)  # fmt: skip

#: Time zone abbreviations in a POSIX TZ rule (``CET``, ``<+0530>``): names, not behaviour.
_TZ_ABBREVIATION = re.compile(r"<[^>]*>|[A-Za-z]{3,}")

#: The provisioning file's ``productID`` for every Nx70 system (Gigaset wiki examples valid for
#: N610/N670/N870/N870E); it is the ``family`` of every model served by this adapter.
NX70_FAMILY = "e2"

_MODELS = (
    # The Nx70 line, software 83.V2.x: one file format for all of them (docs/vendors/gigaset.md).
    ModelInfo("N610", "dect", 8, family=NX70_FAMILY),
    ModelInfo("N670", "dect", 20, family=NX70_FAMILY),
    ModelInfo("N870", "dect", 250, family=NX70_FAMILY),
    ModelInfo("N870E", "dect", 250, family=NX70_FAMILY),
)

#: N-series bases of the generations before the Nx70 (N300 IP, N510 IP PRO software 42.x, N720
#: DM/IP PRO software 70.x). They read ``ProviderFrame`` files with ``SYMB_ITEM`` keys, which they
#: find through Gigaset's binary ``master.bin``/``siu`` redirect files: the Nx70 file means nothing
#: to them, so they have no generic model (docs/vendors/gigaset.md, "Older bases").
LEGACY_MODELS = frozenset({"N300", "N510", "N720"})

#: Handsets an unlisted model of the Nx70 line is served with: the smallest system's (N610), so a
#: configuration that fits it fits any system of the line.
GENERIC_HANDSETS = 8


@dataclass(frozen=True)
class _Handset:
    """One ``add_hs`` entry: the index the base files it under and the account it carries."""

    key: str
    """The IPUI when known, else the slot as five digits (``00001``)."""
    line: Line


class GigasetAdapter(Adapter):
    """Gigaset Nx70 IP PRO single-cell and multicell DECT systems.

    PIN: none of the Nx70's documented keys is a user PIN (:meth:`pin_key` is None). Access code:
    ``hs.<handset>.DECT_AC``, 4 digits (:data:`ACCESS_CODE_KEY`).
    """

    vendor = "gigaset"
    models = models_by_name(_MODELS)
    user_fields = frozenset[UserField]({"display_name", "extension", "sip_credentials"})

    def model(self, name: str) -> ModelInfo | None:
        """Look a model up by name, also as Gigaset writes it: ``N870``, ``n870e``,
        ``Gigaset N870 IP PRO``, ``N870-IP-PRO``."""
        return self.models.get(n_series_model(name) or name.strip().upper())

    def generic_model(self, name: str) -> ModelInfo | None:
        """An unlisted N-series name (``N770``, ``Gigaset N530 IP PRO``) is a system of the Nx70
        line: served with its file (productID ``e2``) and the smallest system's 8 handsets.

        None for the older bases (:data:`LEGACY_MODELS`), whose format is another, and for any
        name that is no N-series base (desk phones included).
        """
        model = n_series_model(name)
        if model is None or model in self.models or model.rstrip("E") in LEGACY_MODELS:
            return None
        return ModelInfo(model, "dect", GENERIC_HANDSETS, family=NX70_FAMILY)

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``<MAC>.xml`` (either case) and ``provisioning.xml``.

        The Nx70 User-Agent reads ``Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605``,
        sometimes in double quotes or with a ``;Handset=N`` suffix, and without a MAC on old
        firmware; the older bases send ``N510 IP PRO/42.245.00.000.000;7C2F804DF9A9`` or
        ``N720-DM-PRO/70.040.00.000.000`` (no vendor word). ``model`` is the base's model, also
        for bases this adapter does not provision (``N720``). A User-Agent that is too long or
        carries control characters counts as absent.
        """
        user_agent = _usable(user_agent)
        model = user_agent_model(user_agent)
        is_gigaset = names_vendor(user_agent, self.vendor) or model is not None
        if names_other_vendor(user_agent, self.vendor) and not is_gigaset:
            return None
        ua_mac = _user_agent_mac(user_agent) if is_gigaset else None
        name = path.strip().lstrip("/")

        match = _MAC_FILE.fullmatch(name)
        if match is not None:
            mac = match.group("mac").lower()
            if not is_gigaset and not has_oui(mac, GIGASET_OUIS):
                return None
            return FileRequest(
                file=f"{mac.upper()}.xml", mac=mac, user_agent_mac=ua_mac, model=model
            )
        if name.lower() == _FOLDER_FILE and is_gigaset:
            return FileRequest(file=_FOLDER_FILE, mac=ua_mac, user_agent_mac=ua_mac, model=model)
        return None

    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        """Render the system's file once and serve it under both names the base may request.

        Raises :class:`RenderError` when the context carries no valid access code (the service
        always provides one for these models) or an IPUI that is not 10 hex digits.
        """
        model = ctx.device.model
        lines = check_slots(ctx.lines, model, f"Gigaset {model.name}", noun="handsets")
        access_code = ctx.access_code
        if access_code is None or not (
            access_code.isascii()
            and access_code.isdigit()
            and len(access_code) == ACCESS_CODE_KEY.digits
        ):
            # Never name the code itself: this message ends up in logs and on admin pages.
            raise RenderError(
                f"Gigaset {model.name}: the DECT access code must be"
                f" {ACCESS_CODE_KEY.digits} digits"
            )
        mac_file = f"{ctx.device.mac.upper()}.xml"
        body = templates.render(
            "provisioning.xml",
            product_id=model.family,
            provisioning_server=_provisioning_server(ctx, mac_file),
            site=ctx.site,
            time_zone=gigaset_time_zone(ctx.site.timezone),
            transport=_TRANSPORT[ctx.site.transport],
            access_code=access_code,
            handsets=[_handset(line) for line in lines],
        )
        return {mac_file: body, _FOLDER_FILE: body}

    def sip_event(self, model: ModelInfo) -> str | None:
        # The Nx70 applies provisioned settings without a reboot; reboot=false says so explicitly
        # (Gigaset wiki "SIP: Check-sync message", valid for N610/N670/N870/N870E).
        return "check-sync;reboot=false"

    def needs_maintenance_window(self, model: ModelInfo) -> bool:
        # "A reboot is not needed to activate provisioning parameter changes" (same page).
        return False

    def access_code_key(self, model: ModelInfo) -> AccessCodeKey | None:
        return ACCESS_CODE_KEY


def gigaset_time_zone(zone: str) -> str | None:
    """The value of ``DmGlobal.0.TimeZone`` for IANA ``zone``, or None to leave the base's own.

    A zone on the base's list is written as it is. Any other zone is mapped onto a listed zone
    that keeps the same clock now and in the future (same UTC offset and daylight-saving rule,
    e.g. ``Europe/Kyiv`` onto ``Europe/Athens``), else onto one with the same standard offset
    (preferring one that agrees on having daylight saving time, whose dates may then differ).
    None when no listed zone has that offset (``Asia/Kolkata``) or the zone is unknown: a wrong
    zone would be worse than the one an admin set on the base.
    """
    if zone in GIGASET_TIME_ZONES:
        return zone
    return _mapped_time_zone(zone)


@functools.lru_cache(maxsize=256)
def _mapped_time_zone(zone: str) -> str | None:
    offset = standard_utc_offset(zone)
    if offset is None:
        return None
    rule = _clock_rule(zone)
    same_offset = [z for z in sorted(GIGASET_TIME_ZONES) if _standard_offset(z) == offset]
    same_clock = [z for z in same_offset if rule is not None and _clock_rule(z) == rule]
    if same_clock or not same_offset:
        return same_clock[0] if same_clock else None
    # A POSIX rule with a comma has daylight saving time: prefer a zone that agrees on having it.
    has_dst = rule is not None and "," in rule
    return min(same_offset, key=lambda z: ("," in (_clock_rule(z) or "")) != has_dst)


@functools.cache
def _standard_offset(zone: str) -> timedelta | None:
    return standard_utc_offset(zone)


@functools.cache
def _clock_rule(zone: str) -> str | None:
    """``zone``'s POSIX TZ rule without its abbreviations: equal rules mean equal clocks."""
    rule = posix_tz_rule(zone)
    return None if rule is None else _TZ_ABBREVIATION.sub("*", rule)


def n_series_model(name: str) -> str | None:
    """``name`` as an N-series model (``N870``, ``N870E``), or None when it names none.

    Accepts the vendor's spellings: any case, with or without ``Gigaset``, separators and the
    ``IP PRO``/``DM PRO`` suffix.
    """
    match = _N_SERIES.fullmatch(name.strip())
    return None if match is None else f"N{match['number']}{match['e'].upper()}"


def user_agent_model(user_agent: str) -> str | None:
    """The Gigaset model a User-Agent's product part names, or None.

    An N-series base (``N870``, ``N720``) counts when the product names Gigaset or carries the
    ``IP PRO``/``DM PRO`` suffix, as every base's User-Agent does; a Maxwell desk phone is named
    as Gigaset writes it (``Maxwell 3``). Anything else (another vendor's model behind the word
    ``Gigaset``) gives None.
    """
    match = _UA_PRODUCT.match(user_agent)
    if match is None:
        return None
    product = match["product"].strip()
    if (n_series := _N_SERIES.fullmatch(product)) is not None:
        if n_series["vendor"] or n_series["suffix"]:
            return f"N{n_series['number']}{n_series['e'].upper()}"
        return None
    if (maxwell := _MAXWELL.fullmatch(product)) is not None:
        return f"Maxwell {maxwell['number'].capitalize()}"
    return None


def _usable(user_agent: str) -> str:
    """``user_agent``, or "" when no Gigaset could have sent it (too long, control characters)."""
    if len(user_agent) > _UA_MAX or _CONTROL.search(user_agent):
        return ""
    return user_agent


def _user_agent_mac(user_agent: str) -> str | None:
    """The MAC among the UA's ``;``-separated fields, in whatever form the firmware wrote it."""
    return first_mac(user_agent.strip().strip('"').split(";")[1:])


def _handset(line: Line) -> _Handset:
    """The handset entry for ``line``: bound to its IPUI when known, else a slot placeholder.

    Every entry is written, with or without an IPUI: subscribing needs the base's access code,
    which is random, known only to the service and its admins, and so keeps strangers in range
    out. An IPUI additionally ties the slot (and its SIP account) to one physical handset.
    """
    if line.ipui is None:
        return _Handset(key=f"{line.slot:05d}", line=line)
    ipui = line.ipui.strip().lower()
    if not _IPUI.fullmatch(ipui):
        raise RenderError(f"handset slot {line.slot}: IPUI is not 10 hex digits")
    return _Handset(key=ipui, line=line)


def _provisioning_server(ctx: RenderContext, mac_file: str) -> str:
    """The direct URL of this base's file, with its next provisioning credential as userinfo.

    Gigaset documents ``http(s)://<user>:<password>@host/...`` as the form in which the redirect
    service hands a base its HTTP digest credential (software 2.53+); the base keeps them.
    """
    parts = urlsplit(ctx.provisioning_url)
    folder = parts.path if parts.path.endswith("/") else f"{parts.path}/"
    url = urlunsplit((parts.scheme, parts.netloc, f"{folder}{mac_file}", "", ""))
    return with_credentials(url, ctx.provisioning_user, ctx.provisioning_password)


ADAPTER = GigasetAdapter()

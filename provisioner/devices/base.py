"""The device adapter interface and the helpers every adapter shares.

An adapter teaches provisioner one vendor family: which models exist, which files a device asks
for and how to recognise such a request, how to render those files, and how to make the device
fetch them now. Adding a vendor means one module in this package, one template folder under
``provisioner/templates/<vendor>/``, an entry in the explicit registry in
:mod:`provisioner.devices` and the words that name the vendor in :data:`USER_AGENT_VENDORS`.

Adapters are pure: they never touch the database or the network during ``identify`` or
``render``. Everything they need arrives in a :class:`RenderContext`.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import zoneinfo
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import jinja2
import markupsafe

log = logging.getLogger(__name__)

DeviceKind = Literal["desk", "dect"]
SipTransport = Literal["udp", "tcp", "tls"]

#: User fields an adapter's configs may depend on. A change to a user re-renders a device only
#: when its adapter declares one of the changed fields. The PIN is not among them: where it goes
#: is declared per model by :meth:`Adapter.pin_key`.
UserField = Literal["display_name", "extension", "language", "sip_credentials"]

_MAC_SEPARATORS = re.compile(r"[:\-.]")
_MAC_HEX = re.compile(r"[0-9a-f]{12}")
#: A MAC written into running text: 12 hex digits, or six pairs joined by ``:`` or ``-``, not
#: part of a longer run of hex digits.
_MAC_IN_TEXT = re.compile(
    r"(?<![0-9A-Fa-f])((?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}|[0-9A-Fa-f]{12})(?![0-9A-Fa-f])"
)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: Text that :func:`xml_text` leaves as it is: no control character (:data:`_CONTROL_CHARS`) and
#: nothing XML escapes.
_XML_PLAIN = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029&<>'\"]*")
#: An IANA zone name as it may be looked up on disk: no ``..``, no leading ``/``.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")


def normalise_mac(text: str) -> str | None:
    """Return ``text`` as 12 lower-case hex digits, or None when it is not a MAC address.

    Accepts ``aa:bb:cc:dd:ee:ff``, ``aa-bb-cc-dd-ee-ff``, ``aabb.ccdd.eeff`` and ``aabbccddeeff`` in
    any case; separators must split the address into equal groups.
    """
    lowered = text.strip().lower()
    groups = _MAC_SEPARATORS.split(lowered)
    if len(groups) > 1 and len({len(g) for g in groups}) != 1:
        return None
    compact = "".join(groups)
    return compact if _MAC_HEX.fullmatch(compact) else None


def first_mac(candidates: Iterable[str]) -> str | None:
    """The first of ``candidates`` that :func:`normalise_mac` accepts, normalised."""
    for candidate in candidates:
        if (mac := normalise_mac(candidate)) is not None:
            return mac
    return None


def last_mac_in(text: str) -> str | None:
    """The last MAC address written into ``text``, normalised, or None when there is none.

    The last, because User-Agents put the MAC after versions and build ids that may look alike.
    """
    found = _MAC_IN_TEXT.findall(text)
    return normalise_mac(found[-1]) if found else None


def has_oui(mac: str, ouis: Collection[str]) -> bool:
    """Whether the normalised ``mac`` starts with one of ``ouis`` (6 lower-case hex digits each)."""
    return mac[:6] in ouis


#: The words that name each vendor in a User-Agent (case-insensitive regular expressions made of
#: lower-case words, ``|`` and ``\b`` only: see :func:`_words`), vendors without an adapter
#: included. Vendors share file names (``<mac>.cfg``, ``<MAC>.xml``), so
#: an adapter declines a request whose User-Agent names another vendor; this is the one list of all.
USER_AGENT_VENDORS: Mapping[str, str] = MappingProxyType(
    {
        "yealink": r"yealink",
        "snom": r"snom",
        "gigaset": r"gigaset",
        "poly": r"polycom|\bpoly",
        "grandstream": r"grandstream",
        "mitel": r"mitel|aastra|\bomm\b",
        "fanvil": r"fanvil",
        "panasonic": r"panasonic",
        "cisco": r"cisco",
        "htek": r"htek",
    }
)
_VENDOR_PATTERNS = {
    vendor: re.compile(words, re.IGNORECASE) for vendor, words in USER_AGENT_VENDORS.items()
}
_OTHER_VENDOR_PATTERNS = {
    vendor: re.compile(
        "|".join(words for other, words in USER_AGENT_VENDORS.items() if other != vendor),
        re.IGNORECASE,
    )
    for vendor in USER_AGENT_VENDORS
}


#: The same words as plain lower-case substrings, each with the pattern that confirms it when it
#: has a word boundary (``\bpoly``): an ASCII User-Agent is checked by ``in`` on its lower-cased
#: copy, several times faster than the case-insensitive alternation (7.5 µs a check, paid on
#: every identification a cache misses); any other goes through the patterns.
_Words = tuple[tuple[str, re.Pattern[str] | None], ...]


def _words(pattern: str) -> _Words:
    found = []
    for word in pattern.split("|"):
        literal = word.replace(r"\b", "")
        if not (literal.isascii() and literal.isalpha() and literal.islower()):
            raise ValueError(f"USER_AGENT_VENDORS: {word!r} is no lower-case word")
        found.append((literal, re.compile(word, re.IGNORECASE) if literal != word else None))
    return tuple(found)


_VENDOR_WORDS = {vendor: _words(words) for vendor, words in USER_AGENT_VENDORS.items()}
_OTHER_VENDOR_WORDS = {
    vendor: tuple(
        word for other, words in _VENDOR_WORDS.items() if other != vendor for word in words
    )
    for vendor in USER_AGENT_VENDORS
}


def _names(user_agent: str, words: _Words, pattern: re.Pattern[str]) -> bool:
    if not user_agent.isascii():
        return pattern.search(user_agent) is not None
    lowered = user_agent.lower()
    for literal, confirm in words:
        if literal in lowered and (confirm is None or confirm.search(user_agent) is not None):
            return True
    return False


def names_vendor(user_agent: str, vendor: str) -> bool:
    """Whether ``user_agent`` names ``vendor`` (a key of :data:`USER_AGENT_VENDORS`)."""
    return _names(user_agent, _VENDOR_WORDS[vendor], _VENDOR_PATTERNS[vendor])


def names_other_vendor(user_agent: str, vendor: str) -> bool:
    """Whether ``user_agent`` names a vendor other than ``vendor`` (see :func:`names_vendor`)."""
    return _names(user_agent, _OTHER_VENDOR_WORDS[vendor], _OTHER_VENDOR_PATTERNS[vendor])


def clean_text(value: str) -> str:
    """Drop control characters (CR, LF, NUL, ...) from text that goes into a config file.

    A display name with a line break would otherwise start a new key in ``key = value`` formats,
    and most control characters are not allowed in XML 1.0 at all.
    """
    return _CONTROL_CHARS.sub("", value)


def xml_text(value: str) -> str:
    """``value`` exactly as a built-in template writes ``{{ value|clean }}`` into XML: control
    characters dropped (:func:`clean_text`) and ``& < > ' "`` escaped by markupsafe, the escaping
    of Jinja's autoescape.

    For keys an adapter writes per slot itself (see :func:`xml_block`): each Jinja expression
    costs an escape into a new ``Markup`` object, which made a 1,000-handset base miss the render
    target (a 500-handset DECT config in 20 ms; README, "Performance").
    """
    if _XML_PLAIN.fullmatch(value):
        return value  # most values: nothing to drop or escape, the same bytes without the cost
    return str(markupsafe.escape(clean_text(value)))


def xml_block(parts: Iterable[str]) -> markupsafe.Markup:
    """``parts``, already escaped with :func:`xml_text`, joined for a template to insert as is."""
    return markupsafe.Markup("".join(parts))  # noqa: S704 - the callers escaped every value


@dataclass(frozen=True)
class ModelInfo:
    """What provisioner must know about one model, declared as data."""

    name: str
    """The vendor's spelling, e.g. ``T54W``; matched case-insensitively on input."""
    kind: DeviceKind
    slots: int
    """Lines of a desk phone, or handsets a DECT system (base or OMM) can carry."""
    family: str = ""
    """Vendor-specific grouping, e.g. the model number a vendor's common file name carries."""


def models_by_name(models: Iterable[ModelInfo]) -> Mapping[str, ModelInfo]:
    """A vendor's models as :attr:`Adapter.models` holds them: read-only, by upper-case name."""
    return MappingProxyType({model.name.upper(): model for model in models})


@dataclass(frozen=True)
class PinKey:
    """The configuration key through which a model carries its user's PIN, and what it accepts.

    Only a key whose documented meaning is a *user* PIN qualifies (a desk phone's keypad-lock
    PIN, a DECT system's user login PIN); a DECT access code never does. The service refuses to
    start when the PIN policy admits a PIN this key cannot hold, so no valid PIN can make a
    device unrenderable.
    """

    name: str
    """The vendor's key name, e.g. ``phone_setting.phone_lock.unlock_pin``."""
    max_digits: int
    """The longest PIN the key holds, as the vendor documents it."""
    source: str
    """The document (title and section) or the open project and path the key is checked against."""
    min_digits: int = 1
    """The shortest PIN the key holds."""


@dataclass(frozen=True)
class AccessCodeKey:
    """How a DECT model keys the access code (AC) a handset must enter to subscribe to the base.

    The access code is a secret of its own, random per base and never the user's PIN (which is
    what a user logs in with, not what subscribes a handset).
    """

    name: str
    """The vendor's key name, e.g. ``hs.<n>.DECT_AC``."""
    source: str
    """Where the key and its length are documented."""
    digits: int = 4
    """The code's length: codes of exactly this many decimal digits are generated and accepted."""


@dataclass(frozen=True)
class Line:
    """One occupied slot: a line on a desk phone or a handset on a DECT system."""

    slot: int
    username: str
    display_name: str
    extension: str
    sip_user: str
    sip_auth_user: str
    sip_password: str
    pin: str | None
    """The user's phone PIN in clear text, or None when the user has none yet."""
    language: str
    ipui: str | None = None
    """The DECT handset's IPUI/IPEI when known."""


@dataclass(frozen=True)
class Site:
    """Site-wide settings every config carries."""

    registrar_host: str
    registrar_port: int = 5060
    transport: SipTransport = "udp"
    timezone: str = "Europe/Berlin"
    language: str = "de"
    ntp_server: str = "pool.ntp.org"
    sip_realm: str = ""
    """The digest realm (and domain) of the line accounts on the registrar."""


@dataclass(frozen=True)
class DeviceInfo:
    mac: str
    """12 lower-case hex digits."""
    model: ModelInfo
    label: str = ""


@dataclass(frozen=True)
class RenderContext:
    """Everything an adapter may put into a device's files."""

    device: DeviceInfo
    lines: tuple[Line, ...]
    site: Site
    provisioning_url: str
    """Base URL the device fetches its files from, ending in ``/``."""
    provisioning_user: str
    provisioning_password: str
    """The per-device credential the device must use on its next fetch."""
    access_code: str | None = None
    """The DECT system's access code for subscribing handsets (see :meth:`Adapter.access_code_key`):
    exactly ``access_code_key(model).digits`` digits; None for models without one."""


@dataclass(frozen=True, slots=True)
class FileRequest:
    """What a phone's request asks for, as far as path and User-Agent tell."""

    file: str
    """The file name in the form the adapter renders it (a key of ``render``'s result)."""
    mac: str | None
    """The device the request is for: from the path, else from the User-Agent."""
    user_agent_mac: str | None = None
    """The MAC the User-Agent carries, when it carries one; it must agree with ``mac``."""
    model: str | None = None
    """The model the request names, when it names one."""
    shared: bool = False
    """True when the file carries no secret and may go to any authenticated device."""


@dataclass
class Templates:
    """Loads one vendor's templates; a site's override folder wins over the built-in folder.

    A broken override (syntax error, undefined variable) must not take phones down: the built-in
    template is rendered instead and the problem is collected in :attr:`problems` for the caller
    to report on the device and in the log.
    """

    vendor: str
    override_root: Path | None = None
    problems: list[str] = field(default_factory=list)

    def render(self, name: str, **context: Any) -> bytes:
        """Render template ``name`` of this vendor to UTF-8 bytes."""
        override = _override_environment(self.override_root, self.vendor)
        if override is not None:
            try:
                return _render(override, name, context)
            except jinja2.TemplateNotFound:
                pass
            except jinja2.TemplateError as exc:
                problem = f"override template {self.vendor}/{name} failed: {exc}; built-in used"
                log.warning("%s", problem)
                self.problems.append(problem)
        return _render(_builtin_environment(self.vendor), name, context)


def _render(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> bytes:
    return env.get_template(name).render(context).encode("utf-8")


def _make_environment(loader: jinja2.BaseLoader, *, auto_reload: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("xml", "htm", "html"), default_for_string=False
        ),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=auto_reload,
    )
    env.filters["clean"] = clean_text
    return env


_builtin_envs: dict[str, jinja2.Environment] = {}
_override_envs: dict[tuple[Path, str], jinja2.Environment] = {}


def _builtin_environment(vendor: str) -> jinja2.Environment:
    env = _builtin_envs.get(vendor)
    if env is None:
        # Built-in templates change with a deployment, never while running: no stat() per
        # render. A site's overrides are edited in place, so those are checked.
        env = _make_environment(
            jinja2.PackageLoader("provisioner", f"templates/{vendor}"), auto_reload=False
        )
        _builtin_envs[vendor] = env
    return env


def _override_environment(root: Path | None, vendor: str) -> jinja2.Environment | None:
    if root is None or not (root / vendor).is_dir():
        return None
    key = (root, vendor)
    env = _override_envs.get(key)
    if env is None:
        env = _make_environment(jinja2.FileSystemLoader(root / vendor), auto_reload=True)
        _override_envs[key] = env
    return env


class Adapter(ABC):
    """One vendor family. Subclasses are stateless; one instance serves every device."""

    vendor: ClassVar[str]
    """Registry key and template folder name: the vendor's name in lower case."""
    models: ClassVar[Mapping[str, ModelInfo]]
    """Model name (upper case) to its capabilities."""
    user_fields: ClassVar[frozenset[UserField]]
    """User fields this vendor's configs carry; a change to any other field skips re-rendering."""

    def model(self, name: str) -> ModelInfo | None:
        """Look a model up by name, case-insensitively."""
        return self.models.get(name.strip().upper())

    def generic_model(self, name: str) -> ModelInfo | None:
        """The capabilities to serve model ``name`` with when it is not in :attr:`models` but
        still names a model of this family (e.g. a newer or older model the table does not list
        yet), so the device gets the family's generic configuration instead of being refused.

        None when ``name`` cannot be one of this vendor's models (then adding the device is
        refused). The result's ``name`` is ``name`` as the vendor writes it (upper case when
        unsure). Pure; the default is None.
        """
        return None

    def served_model(self, name: str) -> ModelInfo | None:
        """What a stored device of model ``name`` is served as: the table's model, else the
        family's generic one (:meth:`generic_model`), else None."""
        resolved = self.resolve_model(name)
        return None if resolved is None else resolved[0]

    def resolve_model(self, name: str) -> tuple[ModelInfo, bool] | None:
        """``name``'s capabilities and whether the model is in the table (False: generic)."""
        known = self.model(name)
        if known is not None:
            return known, True
        generic = self.generic_model(name.strip())
        return None if generic is None else (generic, False)

    def model_name(self, name: str) -> str:
        """The vendor's spelling of model ``name`` when it is known, else ``name`` in upper case."""
        known = self.model(name)
        return known.name if known else name.upper()

    @abstractmethod
    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Say whether a phone's request is for this vendor, and for which device and file.

        Called for every phone request before any database access, with ``path`` relative to
        the provisioning base (no leading slash, not URL-decoded further) and the raw
        User-Agent (may be empty). Must be fast, pure and never raise: return None when the
        request is not this vendor's.
        """

    @abstractmethod
    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        """Render every file the device fetches, keyed by the file name ``identify`` returns.

        Called on change (never per request), possibly in a worker thread. Pure and
        idempotent: the same context gives byte-identical output, so unchanged devices are not
        pushed. Raises :class:`jinja2.TemplateError` or :class:`RenderError` when the device
        cannot be rendered; the caller keeps the previous revision in service.
        """

    @abstractmethod
    def sip_event(self, model: ModelInfo) -> str | None:
        """The ``Event:`` header of the SIP NOTIFY that makes this model re-fetch now.

        The event must make the device apply its new configuration *without* a reboot wherever
        the vendor offers that (a push must never restart a phone in use); a model that can only
        apply a change by restarting says so in :meth:`needs_maintenance_window`. None when the
        vendor is not resynced over SIP (its adapter pushes through a vendor API).
        """

    def needs_maintenance_window(self, model: ModelInfo) -> bool:
        """Whether ``model`` restarts to apply a new configuration, dropping calls in progress.

        True makes the push worker hold the device's notifications (state ``scheduled``) until
        the site's maintenance window. Pure; the default is False.
        """
        return False

    def pin_key(self, model: ModelInfo) -> PinKey | None:
        """The key through which ``model``'s configs carry a user's PIN, or None.

        None when the vendor documents no user-PIN key for this model: the PIN then stays on
        the server and is used through the PBX's hot-desk login. Only models with a key get a
        push when a user's PIN changes. Pure; the default is None.
        """
        return None

    def access_code_key(self, model: ModelInfo) -> AccessCodeKey | None:
        """Where ``model``'s configs carry the DECT access code, or None (desk phones).

        A model with a key gets a random access code of ``digits`` digits when it is first
        rendered, kept until an admin replaces it; it arrives as
        :attr:`RenderContext.access_code`. Pure; the default is None.
        """
        return None


class RenderError(Exception):
    """The device's data cannot be expressed in its vendor's format (e.g. too many lines)."""


# --- helpers for render ---------------------------------------------------------------------


def check_slots(
    lines: Sequence[Line], model: ModelInfo, device: str, *, noun: str = "slots"
) -> list[Line]:
    """``lines`` in slot order, once they are known to fit ``model``.

    Raises :class:`RenderError` when there are more lines than the model has slots, or when a
    slot is taken twice or lies outside ``1..model.slots``. ``device`` (vendor and model) and
    ``noun`` (the vendor's word for a slot, plural) name them in the message.
    """
    if len(lines) > model.slots:
        raise RenderError(f"{device} has {model.slots} {noun}, {len(lines)} lines were assigned")
    slots = [line.slot for line in lines]
    if len(set(slots)) != len(slots) or any(not 1 <= s <= model.slots for s in slots):
        raise RenderError(f"{device}: {noun} must be distinct and within 1..{model.slots}")
    return sorted(lines, key=lambda line: line.slot)


def slot_table(lines: Iterable[Line], model: ModelInfo) -> list[tuple[int, Line | None]]:
    """Every slot of ``model`` in order, with its line or None where the slot is free.

    Configs write free slots too (emptied): phones keep provisioned values, so an account left out
    of the file would stay registered with its old credentials.
    """
    by_slot = {line.slot: line for line in lines}
    return [(slot, by_slot.get(slot)) for slot in range(1, model.slots + 1)]


def free_slots(lines: Iterable[Line], model: ModelInfo) -> list[int]:
    """The slots of ``model`` no line occupies, which configs empty (see :func:`slot_table`)."""
    occupied = {line.slot for line in lines}
    return [slot for slot in range(1, model.slots + 1) if slot not in occupied]


def standard_utc_offset(zone: str) -> timedelta | None:
    """The UTC offset of IANA ``zone`` outside daylight saving time; None for an unknown zone.

    Standard time is whichever of two fixed dates (mid-January, mid-July) has no DST, so southern
    zones work too and the result does not depend on today's date.
    """
    try:
        info = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    winter, summer = datetime(2024, 1, 15, tzinfo=info), datetime(2024, 7, 15, tzinfo=info)
    standard = winter if not winter.dst() else summer
    return standard.utcoffset() or timedelta(0)


def posix_tz_rule(zone: str) -> str | None:
    """The POSIX TZ rule of IANA ``zone`` (e.g. ``CET-1CEST,M3.5.0,M10.5.0/3``), or None.

    Taken from the footer of the zone's TZif (version 2+) file, which holds exactly that rule.
    None when the zone is unknown or its file carries no rule. Reads a file: cache the result
    where it is called per render.
    """
    data = _tzif(zone) if _ZONE_NAME.fullmatch(zone) else None
    # Version 2+ files end with "\n<rule>\n"; an empty rule means "no rule known".
    if data and data.startswith(b"TZif") and data[4:5] >= b"2" and data.endswith(b"\n"):
        rule = data[data.rfind(b"\n", 0, -1) + 1 : -1]
        if rule and rule.isascii():
            return rule.decode("ascii")
    return None


def _tzif(zone: str) -> bytes | None:
    """The TZif file of ``zone`` from the system time zone database or the ``tzdata`` package."""
    for root in zoneinfo.TZPATH:
        path = Path(root, zone)
        if path.is_file():
            return path.read_bytes()
    try:
        resource = importlib.resources.files("tzdata.zoneinfo").joinpath(zone)
        return resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, IsADirectoryError, OSError):
        return None


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` (percent-encoded) in place of any userinfo it had.

    RFC 3986 userinfo is how phones that take one provisioning URL learn their credential.
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))

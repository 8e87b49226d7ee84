"""The device adapter interface and the helpers every adapter shares.

An adapter teaches provisioner one vendor family: which models exist, which files a device asks
for and how to recognise such a request, how to render those files, and how to make the device
fetch them now. Adding a vendor means one module in this package, one template folder under
``provisioner/templates/<vendor>/`` and an entry in the explicit registry in
:mod:`provisioner.devices`.

Adapters are pure: they never touch the database or the network during ``identify`` or
``render``. Everything they need arrives in a :class:`RenderContext`.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import jinja2

log = logging.getLogger(__name__)

DeviceKind = Literal["desk", "dect"]
SipTransport = Literal["udp", "tcp", "tls"]

#: User fields an adapter's configs may depend on. A change to a user re-renders a device only
#: when its adapter declares one of the changed fields.
UserField = Literal["pin", "display_name", "extension", "language", "sip_credentials"]

_MAC_SEPARATORS = re.compile(r"[:\-.]")
_MAC_HEX = re.compile(r"[0-9a-f]{12}")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


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


def clean_text(value: str) -> str:
    """Drop control characters (CR, LF, NUL, ...) from text that goes into a config file.

    A display name with a line break would otherwise start a new key in ``key = value`` formats,
    and most control characters are not allowed in XML 1.0 at all.
    """
    return _CONTROL_CHARS.sub("", value)


@dataclass(frozen=True)
class ModelInfo:
    """What provisioner must know about one model, declared as data."""

    name: str
    """The vendor's spelling, e.g. ``T54W``; matched case-insensitively on input."""
    kind: DeviceKind
    slots: int
    """Lines of a desk phone, or handsets a DECT system (base or OMM) can carry."""
    family: str = ""
    """Vendor-specific grouping used in file names (Yealink firmware family ``96``...)."""


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


@dataclass(frozen=True)
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


def _make_environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("xml", "htm", "html"), default_for_string=False
        ),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["clean"] = clean_text
    return env


_builtin_envs: dict[str, jinja2.Environment] = {}
_override_envs: dict[tuple[Path, str], jinja2.Environment] = {}


def _builtin_environment(vendor: str) -> jinja2.Environment:
    env = _builtin_envs.get(vendor)
    if env is None:
        env = _make_environment(jinja2.PackageLoader("provisioner", f"templates/{vendor}"))
        _builtin_envs[vendor] = env
    return env


def _override_environment(root: Path | None, vendor: str) -> jinja2.Environment | None:
    if root is None or not (root / vendor).is_dir():
        return None
    key = (root, vendor)
    env = _override_envs.get(key)
    if env is None:
        env = _make_environment(jinja2.FileSystemLoader(root / vendor))
        _override_envs[key] = env
    return env


class Adapter(ABC):
    """One vendor family. Subclasses are stateless; one instance serves every device."""

    vendor: ClassVar[str]
    """Registry key and template folder name, e.g. ``yealink``."""
    models: ClassVar[Mapping[str, ModelInfo]]
    """Model name (upper case) to its capabilities."""
    user_fields: ClassVar[frozenset[UserField]]
    """User fields this vendor's configs carry; a change to any other field skips re-rendering."""

    def model(self, name: str) -> ModelInfo | None:
        """Look a model up by name, case-insensitively."""
        return self.models.get(name.strip().upper())

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

        None when the vendor is not resynced over SIP (its adapter pushes through a vendor API).
        """


class RenderError(Exception):
    """The device's data cannot be expressed in its vendor's format (e.g. too many lines)."""

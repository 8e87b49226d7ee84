"""Making a device fetch now: the notifier interface the push worker uses.

A notifier translates its protocol's failures (no answer, a SIP 4xx/5xx/6xx, an AMI error, a
refused connection) into :class:`NotifyError` with a message an admin can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from provisioner.devices.base import RenderContext


class NotifyError(Exception):
    """One notification attempt failed; ``str(exc)`` is readable and carries no secret."""


@dataclass(frozen=True)
class NotifyTarget:
    """Who to notify and how."""

    mac: str
    event: str
    """The SIP ``Event:`` header value, e.g. ``check-sync;reboot=false``."""
    contact: str | None
    """The registered SIP contact URI, e.g. ``sip:201-aabbcc-1@10.0.0.5:5060;transport=tcp``."""
    sip_user: str | None
    """The SIP account of the device's first line: the AMI endpoint, the digest user."""
    sip_password: str | None
    """That line's SIP password, to answer a digest challenge from the phone."""


class Notifier(Protocol):
    async def notify(self, target: NotifyTarget) -> str:
        """Send one notification; return a short result (``200 OK``) or raise NotifyError.

        May be called concurrently for different devices; must give up within its own timeout.
        """
        ...

    async def close(self) -> None:
        """Release connections and sockets."""
        ...


@dataclass(frozen=True)
class ApiAccess:
    """How to reach a device's own management API (stored per device, password decrypted)."""

    host: str
    port: int
    username: str
    password: str
    fingerprint: str | None
    """SHA-256 of the device's TLS certificate to pin, lower-case hex; None: CA verification."""


@runtime_checkable
class ApiPusher(Protocol):
    """An adapter whose devices take changes through their management API (a Mitel OMM's OM
    AXI) instead of being told to fetch."""

    async def push(self, ctx: RenderContext, access: ApiAccess) -> str:
        """Apply ``ctx`` to the device; return a short result or raise :class:`NotifyError`.

        Called by the push worker after the device's files were rendered; may block on the
        network up to its own timeout; idempotent (pushing the same context twice is harmless).
        """
        ...

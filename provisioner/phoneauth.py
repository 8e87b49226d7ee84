"""How phones prove who they are: HTTP Basic and Digest, and throttling of failing sources.

Digest (RFC 7616, MD5 with ``qop=auth``: what phones implement) uses stateless nonces, a
timestamp signed with a key derived from the installation's secret key, valid for
:data:`NONCE_LIFETIME` seconds. Every process derives the same key, so a phone may answer a
challenge of one process to another (processes sharing a port, instances behind a balancer).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit

from provisioner.devices import IdentifyCache
from provisioner.discovery import Discovery
from provisioner.phonecache import (
    REALM,
    Credential,
    CredentialHasher,
    DeviceCache,
    FetchRecorder,
    VerifiedFetches,
)

log = logging.getLogger("provisioner.phones")

NONCE_LIFETIME = 300
_DIGEST_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class Presented(NamedTuple):
    """What the client sent in ``Authorization``. (A named tuple: made on every phone's fetch,
    at less than half the cost of a frozen dataclass.)"""

    scheme: str  # "basic" | "digest"
    username: str
    password: str = ""
    params: dict[str, str] | None = None


def parse_authorization(header: str) -> Presented | None:
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = binascii.a2b_base64(rest.strip()).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        return Presented("basic", username, password) if sep else None
    if scheme == "digest":
        params = {
            m[0].lower(): m[1] if m[1] or not m[2] else m[2] for m in _DIGEST_PARAM.findall(rest)
        }
        digest_user = params.get("username")
        return Presented("digest", digest_user, params=params) if digest_user else None
    return None


class NonceSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, now: float | None = None) -> str:
        stamp = f"{int(now if now is not None else time.time()):x}"
        return f"{stamp}.{self._sign(stamp)}"

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def check(self, nonce: str, now: float | None = None) -> str:
        """``ok``, ``stale`` (ours but expired) or ``bad``."""
        stamp, _, signature = nonce.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(stamp).encode()):
            return "bad"
        try:
            issued = int(stamp, 16)
        except ValueError:
            return "bad"
        age = (now if now is not None else time.time()) - issued
        return "ok" if -5 <= age <= NONCE_LIFETIME else "stale"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def verify(
    presented: Presented,
    credential: Credential,
    hasher: CredentialHasher,
    nonces: NonceSigner,
    method: str,
    path: str,
) -> str:
    """``ok``, ``stale`` (Digest nonce expired: challenge again) or ``bad``.

    A Digest answer is bound to its ``uri`` (RFC 7616 §3.4.6): it must name the requested
    ``path`` (some phones send the absolute URL), or an answer captured for a shared file would
    open the device's personal one.
    """
    if not hmac.compare_digest(presented.username.encode(), credential.username.encode()):
        return "bad"
    if presented.scheme == "basic":
        return "ok" if hasher.matches(credential, presented.password) else "bad"
    params = presented.params or {}
    nonce, uri, response = (
        params.get("nonce", ""),
        params.get("uri", ""),
        params.get("response", ""),
    )
    if params.get("realm") != REALM or params.get("algorithm", "MD5").upper() != "MD5":
        return "bad"
    if urlsplit(uri)._replace(scheme="", netloc="").geturl() != path:
        return "bad"
    ha2 = _md5(f"{method}:{uri}")
    qop = params.get("qop")
    if qop == "auth":
        expected = _md5(
            f"{credential.ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}"
        )
    elif qop is None:
        expected = _md5(f"{credential.ha1}:{nonce}:{ha2}")
    else:
        return "bad"
    if not hmac.compare_digest(expected.encode(), response.lower().encode()):
        return "bad"
    return nonces.check(nonce)


def challenges(nonces: NonceSigner, *, stale: bool = False) -> list[tuple[str, str]]:
    """``WWW-Authenticate`` headers: Digest first (Gigaset needs it), then Basic."""
    digest = f'Digest realm="{REALM}", qop="auth", algorithm=MD5, nonce="{nonces.issue()}"'
    if stale:
        digest += ", stale=true"
    return [("WWW-Authenticate", digest), ("WWW-Authenticate", f'Basic realm="{REALM}"')]


class FailureLimiter:
    """Counts failures per source address; past ``threshold`` within ``window`` seconds the
    source is refused for ``cooldown`` seconds.

    Log lines have a fixed shape for fail2ban:
    ``provisioning auth failure from <HOST>: <reason>`` and
    ``provisioning source <HOST> blocked for <N>s``.

    Sources are what clients choose (an IPv6 host has 2^64 addresses at hand), so the state is
    bounded in bytes (``max_bytes``, each source costing its length plus a fixed estimate): past
    the bound the oldest sources still counting are forgotten first, then the oldest blocks.
    Expired blocks go as soon as they are the oldest, not only when their source comes back.
    """

    SOURCE_BYTES = 200
    """One source beside its address's characters: dict slot, key header, list or float."""
    FAILURE_BYTES = 32
    """One failure's timestamp in a counting source's list."""

    def __init__(
        self,
        *,
        threshold: int = 10,
        window: float = 60.0,
        cooldown: float = 300.0,
        max_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self.max_bytes = max_bytes
        self.bytes = 0
        # Both in insertion order, oldest first (a counting source moves to the end on a failure).
        # Ordered dicts, not dicts: a dict keeps a removed entry as a hole its iteration scans
        # until the next resize, so taking the oldest entry after removing the one before cost a
        # scan of every hole (~50 µs a failure at the bound under a flood from many sources).
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._blocked: OrderedDict[str, float] = OrderedDict()

    def retry_after(self, source: str, now: float | None = None) -> int | None:
        until = self._blocked.get(source)
        if until is None:
            return None
        now = time.monotonic() if now is None else now
        if until <= now:
            self._unblock(source)
            return None
        return max(1, int(until - now + 0.999))

    def fail(self, source: str, reason: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        log.warning("provisioning auth failure from %s: %s", source, reason)
        self._expire_blocks(now)
        if source in self._blocked:
            return  # a caller that skipped retry_after: the block stands as it is
        earlier = self._failures.pop(source, None)
        if earlier is not None:
            self.bytes -= self._counting_cost(source, earlier)
        recent = [t for t in earlier or () if now - t < self.window]
        recent.append(now)
        if len(recent) >= self.threshold:
            self._blocked[source] = now + self.cooldown
            self.bytes += self._blocked_cost(source)
            log.warning("provisioning source %s blocked for %ds", source, int(self.cooldown))
        else:
            self._failures[source] = recent
            self.bytes += self._counting_cost(source, recent)
        self._shrink()

    def _expire_blocks(self, now: float) -> None:
        # Every block lasts ``cooldown``, so insertion order is expiry order.
        while self._blocked:
            source, until = next(iter(self._blocked.items()))
            if until > now:
                return
            self._unblock(source)

    def _unblock(self, source: str) -> None:
        del self._blocked[source]
        self.bytes -= self._blocked_cost(source)

    def _shrink(self) -> None:
        while self.bytes > self.max_bytes and self._failures:
            source = next(iter(self._failures))
            self.bytes -= self._counting_cost(source, self._failures.pop(source))
        while self.bytes > self.max_bytes and self._blocked:
            self._unblock(next(iter(self._blocked)))

    def _counting_cost(self, source: str, failures: list[float]) -> int:
        return self.SOURCE_BYTES + len(source) + self.FAILURE_BYTES * len(failures)

    def _blocked_cost(self, source: str) -> int:
        return self.SOURCE_BYTES + len(source)


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> str:
    """The phone's address: the peer, or, behind trusted proxies, the last untrusted hop.

    A hop that is not an address is text a client wrote, not an address a proxy saw: the source
    is then the last address a trusted party did see (the hop that handed it on). So the source
    is always an address (or the peer as given), never client text, which could otherwise fill
    the limiter with long keys or put another host's address into the fail2ban lines.
    """
    address = peer or "unknown"
    if not forwarded_for or not trusted:
        return address
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    seen = address
    for hop in [address, *reversed(hops)]:
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return seen
        if not any(ip in network for network in trusted):
            return hop
        seen = hop
    return seen


@dataclass
class Phones:
    """Per-process state of the phones' endpoint."""

    cache: DeviceCache
    recorder: FetchRecorder
    limiter: FailureLimiter
    nonces: NonceSigner
    identified: IdentifyCache = field(default_factory=IdentifyCache)
    verified: VerifiedFetches = field(default_factory=VerifiedFetches)
    discovery: Discovery | None = None
    """Unknown phones that fetch with the bootstrap credential; None: ``PROVISIONER_DISCOVERY``
    is off."""

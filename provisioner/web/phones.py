"""``GET|HEAD /provisioning/<file>``: phones fetch their configs.

The hot path touches no database: check the source is not blocked → identify the request
(adapter, from path and User-Agent) → verify the credential against the in-memory digest →
serve the cached bytes with a strong ETag → queue a fetch record. Failures that hint at guessing
or flooding (wrong credential, unknown MAC, MAC mismatch, a path or User-Agent no phone sends)
count against the source address. A phone repeats its request byte for byte: once a Basic
request with the device's own credential is served again (its identification already kept),
the same request skips identification and verification from then on, while the device, its
retired bootstrap right and the bootstrap credential are what they were
(:class:`provisioner.phonecache.VerifiedFetches`); the source checks and the fetch record stay.

Nothing a client without a credential sends is kept: identification and repeated requests are
cached only for requests that authenticated (:class:`provisioner.devices.IdentifyCache`,
:class:`~provisioner.phonecache.VerifiedFetches`, both bounded in bytes), and the per-source
failure counts are bounded in bytes (:class:`provisioner.phoneauth.FailureLimiter`).

A phone with the bootstrap credential for a MAC no device has is discovery's
(:mod:`provisioner.discovery`): served from memory too, except its first request in each
process, which waits for one database transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, NamedTuple

from aiohttp import web
from yarl import URL

from provisioner import provisioning
from provisioner.core import Core
from provisioner.devices import Miss, identify
from provisioner.devices.base import Adapter, FileRequest
from provisioner.discovery import WINDOW, Admission, Discovery, Known, Sighting, sighting_of
from provisioner.metrics import METRICS
from provisioner.outage import database_unavailable
from provisioner.phoneauth import (
    FailureLimiter,
    NonceSigner,
    Phones,
    challenges,
    client_address,
    parse_authorization,
    verify,
)
from provisioner.phonecache import (
    CachedDevice,
    Credential,
    DeviceCache,
    DeviceListener,
    FetchRecorder,
    ServedFile,
    Verified,
)
from provisioner.settings import IPNetwork, Settings
from provisioner.web.errors import DATABASE_UNAVAILABLE, error_document
from provisioner.web.keys import CORE, PHONES, SETTINGS

log = logging.getLogger("provisioner.phones")


class Asked(NamedTuple):
    """What :func:`answer` reads of a phone's request, whichever server parsed it: the main
    application's aiohttp request (:func:`asked_of`) or the lean phones' server's parser
    (:mod:`provisioner.web.phoneserver`), so both listeners answer alike."""

    method: str
    url: URL
    """The request target relative to the host (an absolute-form target made relative)."""
    headers: Mapping[str, str]
    """Case-insensitive names (aiohttp's ``CIMultiDictProxy`` from either parser)."""
    peer: str | None
    """The connection's peer address (before any ``X-Forwarded-For``)."""


def asked_of(request: web.BaseRequest) -> Asked:
    return Asked(request.method, request.rel_url, request.headers, request.remote)


class Reply(NamedTuple):
    """An answer, for either server to send: the main app converts it (:meth:`response`), the
    lean phones' server writes it as bytes. ``Content-Length`` is the sender's to add (the
    length of ``body``, also for HEAD; none for a 304). (Named tuples, as :class:`Asked`:
    immutable and the cheapest record to make per request.)"""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes = b""

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=self.headers)


_JSON = "application/json; charset=utf-8"


def error_reply(
    status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = ()
) -> Reply:
    """The API's error shape (:func:`provisioner.web.errors.error_response`) as a Reply."""
    return Reply(status, (*headers, ("Content-Type", _JSON)), error_document(code, message))


_NOT_FOUND = error_reply(404, "not_found", "There is nothing at this address.")
_UNAUTHENTICATED = error_document("unauthenticated", "Authentication is required.")


def _not_found() -> Reply:
    return _NOT_FOUND


def _unauthorized(phones: Phones, *, stale: bool = False) -> Reply:
    return Reply(
        401, (*challenges(phones.nonces, stale=stale), ("Content-Type", _JSON)), _UNAUTHENTICATED
    )


def _served(file: ServedFile, headers: Mapping[str, str]) -> Reply:
    if _etag_matches(headers.get("If-None-Match"), file.etag):
        return Reply(304, file.headers())
    return Reply(200, file.headers(), file.body)


PREFIX = "/provisioning/"


async def fetch(request: web.Request) -> web.StreamResponse:
    """The route on the main application."""
    phones, settings = request.config_dict[PHONES], request.config_dict[SETTINGS]
    answered = answer(phones, settings, asked_of(request))
    reply = answered if isinstance(answered, Reply) else await answered
    return reply.response()


#: What :func:`answer` gives: the reply, or (only for a phone discovery has to ask the
#: database about) the coroutine that makes it.
Answer = Reply | Coroutine[Any, Any, Reply]


def answer(phones: Phones, settings: Settings, request: Asked) -> Answer:
    """Answer one phone request; shared by the main app and the lean phones' server.

    Synchronous on purpose: everything it needs is in memory, so the event loop never yields
    in the middle of a fetch. The one exception is the first request of a phone nobody has
    added (:mod:`provisioner.discovery`), answered once the database has recorded it.
    """
    headers = request.headers
    source = client_address(request.peer, headers.get("X-Forwarded-For"), settings.trusted_proxies)
    if settings.phones_allow and not _allowed(source, settings.phones_allow):
        return _refused("source_not_allowed", 403, "This address may not fetch configs.")
    retry_after = phones.limiter.retry_after(source)
    if retry_after is not None:
        METRICS.fetch_refusals.inc(reason="blocked")
        return error_reply(
            429,
            "too_many_failures",
            "Too many failed requests from this address.",
            [("Retry-After", str(retry_after))],
        )
    path = request.url.path
    user_agent = headers.get("User-Agent", "")
    authorization = headers.get("Authorization", "")
    cache = phones.cache
    # A phone repeats its request byte for byte: once it authenticated and was served, the
    # same request is answered from what was decided then while that still holds.
    known = phones.verified.get(path, user_agent, authorization)
    if known is not None and (device := known.current(cache)) is not None:
        served = device.file(known.file)
        if served is not None:
            phones.recorder.record(
                device.mac, known.file, device.revision, source, personal=known.personal
            )
            METRICS.fetches.inc()
            return _served(served, headers)
    name = path[len(PREFIX) :]
    if not path.startswith(PREFIX) or not _plausible_name(name):
        return _fail(phones, source, "unknown_path", _not_found())
    if len(user_agent) > MAX_USER_AGENT:
        return _fail(phones, source, "oversized_user_agent", _not_found())
    cached = phones.identified.get(name, user_agent)
    claimed = identify(name, user_agent) if isinstance(cached, Miss) else cached
    wanted = None if claimed is None else claimed[1]
    if wanted and wanted.user_agent_mac and wanted.mac and wanted.user_agent_mac != wanted.mac:
        return _fail(phones, source, "mac_mismatch", _not_found())

    # Unrecognised names too are answered only to an authenticated phone (after the challenge
    # a phone's first, bare request gets): the names phones ask for and nobody serves cost them
    # nothing, and a client without a credential learns nothing about which names exist.
    presented = parse_authorization(authorization)
    if presented is None:
        return _unauthorized(phones)
    own: CachedDevice | None = None
    credential: Credential | None
    if cache.bootstrap is not None and presented.username == cache.bootstrap.username:
        credential = cache.bootstrap
    else:
        own = cache.devices.get(presented.username.lower())
        credential = own.credential if own else None
    if credential is None:
        return _fail(phones, source, "unknown_user", _unauthorized(phones))
    verdict = verify(
        presented, credential, cache.hasher, phones.nonces, request.method, str(request.url)
    )
    if verdict == "stale":
        return _unauthorized(phones, stale=True)
    if verdict != "ok":
        return _fail(phones, source, "bad_credentials", _unauthorized(phones))
    if isinstance(cached, Miss):
        phones.identified.put(name, user_agent, claimed)
    if wanted is None:
        return _not_found()  # e.g. Poly's firmware, Grandstream's binary config: not served

    mac = wanted.mac or (own.mac if own else None)
    device = cache.devices.get(mac) if mac else None
    if device is None:
        if mac is None:
            return _not_found()
        if own is None and phones.discovery is not None:
            assert claimed is not None  # wanted came from it
            return _discovered(phones, claimed[0], wanted, mac, source, user_agent, request)
        return _fail(phones, source, "unknown_device", _not_found())
    if not wanted.shared:
        if own is not None and own.mac != device.mac:
            return _fail(phones, source, "other_device", _not_found())
        if own is None and not device.bootstrap_allowed:
            return _fail(phones, source, "bootstrap_retired", _unauthorized(phones))
    served = device.file(wanted.file)
    if served is None:
        return _not_found()
    if own is not None and own.mac == device.mac and device.bootstrap_allowed:
        device.bootstrap_allowed = False
        phones.recorder.retire_bootstrap(device.mac)
    if own is device and presented.scheme == "basic" and not isinstance(cached, Miss):
        # Kept once it repeats (its identification was kept the time before): where more
        # devices fetch than the caches hold, a request asked once is not worth the churn.
        verified = Verified(device, wanted.file, not wanted.shared, cache.bootstrap)
        phones.verified.put(path, user_agent, authorization, verified)
    phones.recorder.record(
        device.mac, wanted.file, device.revision, source, personal=not wanted.shared
    )
    METRICS.fetches.inc()
    return _served(served, headers)


#: What a phone's request can look like. A vendor's file name is short, of these characters, a
#: few folders deep at most (Mitel's ``<mac>/``), after any doubled slash of a base URL that
#: ends in one; a User-Agent is a product token and a version or two (the longest recorded is
#: under 100 characters). Anything else is refused before any work and counted as a failure.
#: (Names phones do ask for and nobody serves are short and plain: they pass, and get their 404
#: only once authenticated, so a booting phone never counts against its site's address.)
MAX_NAME = 128
MAX_USER_AGENT = 512
_NAME = re.compile(r"/*[A-Za-z0-9._~+@-]+(?:/[A-Za-z0-9._~+@-]+){0,3}")


def _plausible_name(name: str) -> bool:
    return len(name) <= MAX_NAME and _NAME.fullmatch(name) is not None


def _discovered(
    phones: Phones,
    adapter: Adapter,
    wanted: FileRequest,
    mac: str,
    source: str,
    user_agent: str,
    request: Asked,
) -> Answer:
    """A phone of a known vendor, with the bootstrap credential, for a MAC no device has.

    Only a refusal counts as a failure of the source (see :mod:`provisioner.discovery`).
    """
    discovery = phones.discovery
    assert discovery is not None
    seen = sighting_of(adapter.vendor, wanted, mac, source, user_agent)
    if seen is None:
        return _fail(phones, source, "unknown_device", _not_found())
    known = discovery.known(seen)
    if known is not None:
        return _serve_discovered(known, wanted.file, request)
    if discovery.busy(seen):
        METRICS.fetch_refusals.inc(reason="discovery_busy")
        return error_reply(
            429,
            "discovery_busy",
            "Too many new phones at once; try again shortly.",
            [("Retry-After", "1")],
        )
    return _admit(phones, discovery, seen, wanted.file, request)


async def _admit(
    phones: Phones, discovery: Discovery, seen: Sighting, file: str, request: Asked
) -> Reply:
    try:
        outcome, known = await discovery.admit(seen)
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        METRICS.fetch_refusals.inc(reason="database_unavailable")
        return error_reply(*DATABASE_UNAVAILABLE)
    if known is not None:
        return _serve_discovered(known, file, request)
    if outcome is Admission.LIMITED:
        limited = error_reply(
            429,
            "discovery_limited",
            "A new phone from this address was recorded within the last minute; try again later.",
            [("Retry-After", str(int(WINDOW)))],
        )
        return _fail(phones, seen.source, "discovery_limited", limited)
    return _not_found()  # added as a device meanwhile: its next fetch finds it


def _serve_discovered(known: Known, file: str, request: Asked) -> Reply:
    served = known.files.get(file)
    if served is None:
        return _not_found()  # recorded only (module doc of provisioner.discovery)
    METRICS.fetches.inc()
    return _served(served, request.headers)


def _fail(phones: Phones, source: str, reason: str, reply: Reply) -> Reply:
    phones.limiter.fail(source, reason)
    METRICS.fetch_refusals.inc(reason=reason)
    return reply


def _refused(code: str, status: int, message: str) -> Reply:
    METRICS.fetch_refusals.inc(reason=code)
    return error_reply(status, code, message)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return "*" in candidates or etag in candidates


def _allowed(source: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return False
    return any(ip in network for network in networks)


@contextlib.asynccontextmanager
async def open_phones(core: Core) -> AsyncIterator[Phones]:
    """The phones' endpoint state of one process: cache, listener, fetch recorder."""
    cache = DeviceCache(core.vault)
    bootstrap = await provisioning.bootstrap_credential(core)
    cache.set_bootstrap(*bootstrap)
    assert core.settings.database_url is not None
    listener = DeviceListener(core.settings.database_url, cache, provisioning.DEVICE_CHANNEL)
    recorder = FetchRecorder(core.pool)
    discovery = Discovery(core, *bootstrap) if core.settings.discovery else None
    tasks = [asyncio.create_task(listener.run()), asyncio.create_task(recorder.run())]
    if discovery is not None:
        tasks.append(asyncio.create_task(discovery.run()))
    try:
        # The listener loads the cache once it listens: serve only after that.
        await asyncio.wait_for(listener.ready.wait(), timeout=60)
        yield Phones(
            cache=cache,
            recorder=recorder,
            limiter=FailureLimiter(),
            nonces=NonceSigner(core.vault.derive_key("digest-nonce")),
            discovery=discovery,
        )
    finally:
        if discovery is not None:
            await discovery.close()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await recorder.flush(everything=True)


async def _phones_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_phones(app[CORE]) as phones:
        app[PHONES] = phones
        yield


def install(app: web.Application) -> None:
    """Serve ``/provisioning/`` on ``app`` (the main app or a phones-only one)."""
    app.cleanup_ctx.append(_phones_ctx)
    app.router.add_get("/provisioning/{path:.+}", fetch)

"""``GET|HEAD /provisioning/<file>``: phones fetch their configs.

The hot path touches no database: identify the request (adapter, from path and User-Agent) →
check the source is not blocked → verify the credential against the in-memory digest → serve the
cached bytes with a strong ETag → queue a fetch record. Failures that hint at guessing (wrong
credential, unknown MAC, MAC mismatch) count against the source address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from provisioner import provisioning
from provisioner.core import Core
from provisioner.devices import identify
from provisioner.metrics import METRICS
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
)
from provisioner.settings import IPNetwork, Settings
from provisioner.web.errors import error_response
from provisioner.web.keys import CORE, PHONES, SETTINGS

log = logging.getLogger("provisioner.phones")


def _not_found() -> web.Response:
    return error_response(404, "not_found", "There is nothing at this address.")


def _unauthorized(phones: Phones, *, stale: bool = False) -> web.Response:
    response = error_response(401, "unauthenticated", "Authentication is required.")
    for name, value in challenges(phones.nonces, stale=stale):
        response.headers.add(name, value)
    return response


PREFIX = "/provisioning/"


async def fetch(request: web.Request) -> web.StreamResponse:
    """The route on the main application."""
    return answer(request.config_dict[PHONES], request.config_dict[SETTINGS], request)


def answer(phones: Phones, settings: Settings, request: web.BaseRequest) -> web.Response:
    """Answer one phone request; shared by the main app and the lean phones' server.

    Synchronous on purpose: everything it needs is in memory, so the event loop never yields
    in the middle of a fetch.
    """
    source = client_address(
        request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxies
    )
    if settings.phones_allow and not _allowed(source, settings.phones_allow):
        return _refused("source_not_allowed", 403, "This address may not fetch configs.")
    retry_after = phones.limiter.retry_after(source)
    if retry_after is not None:
        METRICS.fetch_refusals.inc(reason="blocked")
        return error_response(
            429,
            "too_many_failures",
            "Too many failed requests from this address.",
            headers={"Retry-After": str(retry_after)},
        )
    path = request.path
    if not path.startswith(PREFIX):
        return _not_found()
    claimed = identify(path[len(PREFIX) :], request.headers.get("User-Agent", ""))
    if claimed is None:
        return _not_found()
    _, wanted = claimed
    if wanted.user_agent_mac and wanted.mac and wanted.user_agent_mac != wanted.mac:
        return _fail(phones, source, "mac_mismatch", _not_found())

    presented = parse_authorization(request.headers.get("Authorization", ""))
    if presented is None:
        return _unauthorized(phones)
    cache = phones.cache
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
        presented, credential, cache.hasher, phones.nonces, request.method, request.path_qs
    )
    if verdict == "stale":
        return _unauthorized(phones, stale=True)
    if verdict != "ok":
        return _fail(phones, source, "bad_credentials", _unauthorized(phones))

    mac = wanted.mac or (own.mac if own else None)
    device = cache.devices.get(mac) if mac else None
    if device is None:
        return _fail(phones, source, "unknown_device", _not_found()) if mac else _not_found()
    if not wanted.shared:
        if own is not None and own.mac != device.mac:
            return _fail(phones, source, "other_device", _not_found())
        if own is None and not device.bootstrap_allowed:
            return _fail(phones, source, "bootstrap_retired", _unauthorized(phones))
    served = device.files.get(wanted.file)
    if served is None:
        return _not_found()
    if own is not None and own.mac == device.mac and device.bootstrap_allowed:
        device.bootstrap_allowed = False
        phones.recorder.retire_bootstrap(device.mac)
    phones.recorder.record(
        device.mac, wanted.file, device.revision, source, personal=not wanted.shared
    )
    METRICS.fetches.inc()
    if _etag_matches(request.headers.get("If-None-Match"), served.etag):
        return web.Response(status=304, headers=served.headers)
    return web.Response(body=served.body, headers=served.headers)


def _fail(phones: Phones, source: str, reason: str, response: web.Response) -> web.Response:
    phones.limiter.fail(source, reason)
    METRICS.fetch_refusals.inc(reason=reason)
    return response


def _refused(code: str, status: int, message: str) -> web.Response:
    METRICS.fetch_refusals.inc(reason=code)
    return error_response(status, code, message)


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
    cache.set_bootstrap(*await provisioning.bootstrap_credential(core))
    assert core.settings.database_url is not None
    listener = DeviceListener(core.settings.database_url, cache, provisioning.DEVICE_CHANNEL)
    recorder = FetchRecorder(core.pool)
    tasks = [asyncio.create_task(listener.run()), asyncio.create_task(recorder.run())]
    try:
        # The listener loads the cache once it listens: serve only after that.
        await asyncio.wait_for(listener.ready.wait(), timeout=60)
        yield Phones(
            cache=cache,
            recorder=recorder,
            limiter=FailureLimiter(),
            nonces=NonceSigner(core.vault.derive_key("digest-nonce")),
        )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await recorder.flush()


async def _phones_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_phones(app[CORE]) as phones:
        app[PHONES] = phones
        yield


def install(app: web.Application) -> None:
    """Serve ``/provisioning/`` on ``app`` (the main app or a phones-only one)."""
    app.cleanup_ctx.append(_phones_ctx)
    app.router.add_get("/provisioning/{path:.+}", fetch)

"""The aiohttp application factory: one root app, one sub-application per audience."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web

from provisioner import contacts, provisioning, store
from provisioner.core import Core, open_core
from provisioner.directory_sync import IntervalSync
from provisioner.metrics import METRICS
from provisioner.outage import Outage, database_unavailable
from provisioner.push import running_worker
from provisioner.settings import Settings
from provisioner.signals import notify_service_manager, stop_requested
from provisioner.web import admin, phones
from provisioner.web.api import create_api_app
from provisioner.web.errors import json_errors, quiet_malformed_requests
from provisioner.web.hooks import create_hooks_app
from provisioner.web.keys import (
    CORE,
    DIRECTORY_SYNC,
    PHONES,
    PUSH_WORKER,
    SAML,
    SETTINGS,
    WORKER_PROCESS,
)
from provisioner.web.pbx import create_pbx_app
from provisioner.web.phoneserver import Children, PhonesServer, start_phones_site
from provisioner.web.saml import create_saml_app
from provisioner.workerprocess import running_worker_process

log = logging.getLogger(__name__)

# JSON bodies are small; phones never upload. Caps what an unauthenticated client can make us read.
MAX_BODY_BYTES = 64 * 1024


#: Database connections of the process serving the API (and the web pages, the hooks). A burst
#: of API requests (100 at once in ``bench/fanout.py``) waited for 10 connections twice per
#: request (the session, then the use case): with 20, 2,000 PIN changes took 10-15 % less CPU
#: in the service and PostgreSQL and the last NOTIFY came 0.2-0.35 s earlier (issue 14). With
#: ``serve``'s push worker (10) and phones' processes (2 each) that is ~35 of PostgreSQL's
#: default 100 connections per instance.
API_POOL_SIZE = 20


async def _core_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_core(app[SETTINGS], pool_size=(2, API_POOL_SIZE)) as core:
        app[CORE] = core
        yield


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    async with _startup_renders(app[CORE]), running_worker(app[CORE]) as worker:
        app[PUSH_WORKER] = worker
        yield


async def _worker_process_ctx(app: web.Application) -> AsyncIterator[None]:
    database_url = app[SETTINGS].database_url
    assert database_url is not None
    async with _startup_renders(app[CORE]), running_worker_process(database_url) as child:
        app[WORKER_PROCESS] = child
        yield


@contextlib.asynccontextmanager
async def _startup_renders(core: Core) -> AsyncIterator[None]:
    renders = asyncio.create_task(_render_lines_without_digests(core), name="start-up renders")
    try:
        yield
    finally:
        renders.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renders


async def _render_lines_without_digests(core: Core) -> None:
    """Render, in the background, the devices with lines whose registrar digests are missing
    (added by an upgrade, or a render that failed): the PBX views show them from then on.

    No push job, no NOTIFY: the configs are as they were. While the database is away this
    waits with back-off and carries on with the devices still missing digests.
    """
    outage = Outage(log, "start-up renders")
    while True:
        try:
            async with core.pool.acquire() as conn:
                macs = await store.list_device_macs_without_digests(conn)
            await provisioning.render_devices(core, macs)
        except Exception as exc:
            if not database_unavailable(exc):
                log.exception("start-up renders failed; the devices get digests when rendered")
                return
            await asyncio.sleep(outage.lost(exc))
            continue
        outage.reached()
        return


async def _directory_sync_ctx(app: web.Application) -> AsyncIterator[None]:
    core = app[CORE]
    assert core.settings.ldap is not None
    syncing = IntervalSync(core, core.settings.ldap.sync_interval)
    app[DIRECTORY_SYNC] = syncing
    task = asyncio.create_task(syncing.run(), name="directory-sync")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _contacts_ctx(app: web.Application) -> AsyncIterator[None]:
    async with contacts.following(app[CORE]):
        yield


async def metrics(request: web.Request) -> web.Response:
    async with request.config_dict[CORE].pool.acquire() as conn:
        jobs = await store.count_push_jobs_by_state(conn)
    return web.Response(
        text=METRICS.render(jobs), content_type="text/plain", headers={"X-Content-Version": "0.0.4"}
    )


async def healthz(request: web.Request) -> web.Response:
    """Each part of this process, ``up`` or ``down``; 503 when one is down (which, in order:
    the database, or a background task that has not got it back yet)."""
    app = request.config_dict
    core = app[CORE]
    try:
        async with core.pool.acquire(timeout=5) as conn:
            await conn.fetchval("SELECT 1")
        database = "up"
    except Exception as exc:
        if not database_unavailable(exc) and not isinstance(exc, asyncpg.PostgresError):
            raise
        log.debug("health check: database unavailable (%s)", type(exc).__name__)
        database = "down"
    parts = {"database": database}
    worker = app.get(PUSH_WORKER)
    if worker is not None:
        parts["push_worker"] = worker.outage.state if worker.running else "stopped"
    child = app.get(WORKER_PROCESS)
    if child is not None:
        parts["push_worker"] = child.state
    phones = app.get(PHONES)
    if phones is not None:
        parts["device_cache"] = phones.cache.sync.state
        parts["fetch_recorder"] = phones.recorder.outage.state
    down = [name for name, state in parts.items() if state != "up"]
    if not down:
        return web.json_response({"status": "ok", "parts": parts})
    if database != "up":
        code, message = "database_unavailable", "The database cannot be reached."
    else:
        code, message = "part_unavailable", f"Not working: {', '.join(down)}."
    body = {"status": "unavailable", "parts": parts, "error": {"code": code, "message": message}}
    return web.json_response(body, status=503, headers={"Retry-After": "5"})


def create_app(
    settings: Settings, *, worker: bool = False, worker_process: bool = False
) -> web.Application:
    """Build the whole service; ``settings.database_url`` must already be resolved.

    ``worker`` also runs a push worker in this process, and with ``PROVISIONER_AMI_URL`` the
    follower of Asterisk's contacts; ``worker_process`` runs both in a child process
    (``provisioner worker``, :mod:`provisioner.workerprocess`) with this process's environment,
    as ``provisioner serve`` does unless ``--no-worker``.
    """
    quiet_malformed_requests()
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_core_ctx)
    if worker:
        app.cleanup_ctx.append(_worker_ctx)
    elif worker_process:
        app.cleanup_ctx.append(_worker_process_ctx)
    if settings.ldap is not None and settings.ldap.sync_interval > 0:
        app.cleanup_ctx.append(_directory_sync_ctx)
    if worker and settings.ami_url:
        app.cleanup_ctx.append(_contacts_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    # Before /api/v1, whose bearer-token middleware the PBX's signed reads must not meet.
    app.add_subapp("/api/v1/pbx", create_pbx_app())
    app.add_subapp("/api/v1", create_api_app())
    app.add_subapp("/hooks/pbx", create_hooks_app())
    if settings.saml is not None:
        # Imported here: pysaml2 takes seconds to import, for nothing where SSO is not used.
        from provisioner.saml_sp import ServiceProvider

        app[SAML] = ServiceProvider(settings, settings.saml)
    app.add_subapp("/saml", create_saml_app())
    admin.install(app)
    phones.install(app)
    return app


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def _phones_children(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The extra phones' processes, for as long as the application runs."""

    async def children_ctx(_app: web.Application) -> AsyncIterator[None]:
        assert settings.database_url is not None
        children = Children(settings.phones_processes - 1, settings.database_url)
        children.start()
        try:
            yield
        finally:
            await children.stop()

    return children_ctx


async def serve(app: web.Application, settings: Settings) -> None:
    """Run ``app`` on the main listener, and the lean phones' server on its own listener in
    ``settings.phones_processes`` processes, until SIGINT or SIGTERM."""
    if settings.phones_listen is not None:
        # The extra phones' processes start once the database is migrated (the core is open)
        # and load their device caches while this process loads its own, not after: with
        # 100,000 devices each load takes seconds.
        app.cleanup_ctx.insert(app.cleanup_ctx.index(_core_ctx) + 1, _phones_children(settings))
    runner = web.AppRunner(app, access_log_format='%a "%r" %s %b %Tfs', handle_signals=False)
    runners: list[web.BaseRunner | PhonesServer] = [runner]
    try:
        # Inside: a start-up that fails half-way still stops what it started (the children).
        await runner.setup()
        context = ssl_context(settings)
        scheme = "https" if context else "http"
        await web.TCPSite(
            runner, settings.listen.host, settings.listen.port, ssl_context=context
        ).start()
        log.info("listening on %s://%s", scheme, settings.listen)
        if settings.phones_listen is not None:
            runners.append(await start_phones_site(app[PHONES], settings, context))
            log.info(
                "phones' listener on %s://%s (%d processes)",
                scheme,
                settings.phones_listen,
                settings.phones_processes,
            )
        # What start-up built stays alive; spare the collector rescanning it on every pass.
        gc.collect()
        gc.freeze()
        stop = stop_requested()
        notify_service_manager("READY=1", f"STATUS=listening on {scheme}://{settings.listen}")
        await stop.wait()
        log.info("shutting down")
        notify_service_manager("STOPPING=1")
    finally:
        # The phones' listener first, then the application (its cleanup stops the children).
        for each in reversed(runners):
            await each.cleanup()

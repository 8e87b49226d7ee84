"""The lean phones' server: ``/provisioning/`` only, on ``PROVISIONER_PHONES_LISTEN``.

A boot storm must not need a bigger box, so this listener skips the application router and its
middlewares (aiohttp's low-level :class:`web.Server` calls :func:`answer` directly), writes no
access log line per fetch, and runs in several processes sharing the port (``SO_REUSEPORT``):
``provisioner serve`` serves it in its own process and starts
``PROVISIONER_PHONES_PROCESSES - 1`` more ``provisioner phones-server`` processes, restarting
any that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import ssl
import sys

from aiohttp import web

from provisioner.core import open_core
from provisioner.phoneauth import Phones
from provisioner.settings import Settings
from provisioner.signals import stop_requested
from provisioner.web.errors import error_response, quiet_malformed_requests
from provisioner.web.phones import open_phones, respond

log = logging.getLogger(__name__)


def phones_server(phones: Phones, settings: Settings) -> web.Server:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return error_response(
                405, "method_not_allowed", "Phones only GET.", headers={"Allow": "GET, HEAD"}
            )
        return await respond(phones, settings, request)

    return web.Server(handle, access_log=None)


async def start_phones_site(
    phones: Phones, settings: Settings, ssl_context: ssl.SSLContext | None
) -> web.BaseRunner:
    assert settings.phones_listen is not None
    runner = web.ServerRunner(phones_server(phones, settings), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.phones_listen.host,
        settings.phones_listen.port,
        ssl_context=ssl_context,
        reuse_port=True,
    )
    await site.start()
    return runner


async def run_standalone(settings: Settings, ssl_context: ssl.SSLContext | None) -> None:
    """One extra phones' process: its own small pool, cache, listener and recorder."""
    quiet_malformed_requests()
    async with (
        open_core(settings, run_migrations=False, pool_size=(1, 2)) as core,
        open_phones(core) as phones,
    ):
        runner = await start_phones_site(phones, settings, ssl_context)
        # Objects alive after start-up stay; keep the collector from rescanning them.
        gc.collect()
        gc.freeze()
        stop = stop_requested()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


class Children:
    """Keeps ``count`` ``provisioner phones-server`` processes running until stopped."""

    def __init__(self, count: int, database_url: str) -> None:
        self._count = count
        self._env = {**os.environ, "PROVISIONER_DATABASE_URL": database_url}
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._processes: dict[int, asyncio.subprocess.Process] = {}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(i)) for i in range(self._count)]

    async def _keep(self, index: int) -> None:
        while True:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "provisioner", "phones-server", env=self._env
            )
            self._processes[index] = process
            code = await process.wait()
            if self.stopping:
                return
            log.warning("phones' process %d exited with %s; restarting", process.pid, code)
            await asyncio.sleep(1.0)

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def stop(self) -> None:
        self._stopping = True
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self._processes.values():
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

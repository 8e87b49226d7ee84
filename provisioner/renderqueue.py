"""Renders devices in the background after a change commits, coalescing bursts.

A burst of PIN changes of the 100 handset users of one DECT base asks for that base 100 times;
the queue holds each device once, so the base is rendered once or twice rather than 100 times,
and the API answers without waiting for renders. The push worker renders each device again
before notifying it (renders are idempotent), so a render lost with this process is only
delayed, never skipped.

While the database is away the queue keeps what it holds, waits with back-off (logging the loss
and the return once each), and goes on when the database answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from provisioner.outage import Outage, database_unavailable

log = logging.getLogger(__name__)

Render = Callable[[str], Awaitable[object]]


class RenderQueue:
    def __init__(self) -> None:
        self._pending: dict[str, Render] = {}
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.outage = Outage(log, "render queue")

    def schedule(self, render: Render, macs: Iterable[str]) -> None:
        for mac in macs:
            self._pending[mac] = render
        if self._pending and (self._task is None or self._task.done()):
            self._idle.clear()
            self._task = asyncio.create_task(self._run(), name="render-queue")

    async def _run(self) -> None:
        try:
            while self._pending:
                mac = next(iter(self._pending))
                render = self._pending.pop(mac)
                try:
                    await render(mac)
                except Exception as exc:
                    if not database_unavailable(exc):
                        # A render records its own errors on the device; this is a bug. The
                        # push worker renders the device again before notifying it.
                        log.exception("background render of %s failed", mac)
                        continue
                    self._pending.setdefault(mac, render)  # unless scheduled again meanwhile
                    await asyncio.sleep(self.outage.lost(exc))
                    continue
                self.outage.reached()
        finally:
            self._idle.set()

    async def settle(self) -> None:
        """Wait until every scheduled render is done."""
        await self._idle.wait()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

"""Renders devices in the background after a change commits, coalescing bursts.

A burst of PIN changes of the 100 handset users of one DECT base asks for that base 100 times;
the queue holds each device once, so the base is rendered once or twice rather than 100 times,
and the API answers without waiting for renders. The push worker renders each device again
before notifying it (renders are idempotent), so a render lost with this process is only
delayed, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

Render = Callable[[str], Awaitable[object]]


class RenderQueue:
    def __init__(self) -> None:
        self._pending: dict[str, Render] = {}
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

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
                await self._pending.pop(mac)(mac)
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

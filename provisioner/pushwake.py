"""Waking the push workers once a change that queued push jobs has committed.

A use case sends no NOTIFY inside its transaction: PostgreSQL serialises the commits of all
transactions that sent one (measured 195-275 commits/s with it, 375-495 without, on 10
connections), which capped a burst of PIN changes. Instead the use case calls
:meth:`PushWaker.wake` after its commit. That wakes a worker of this process directly, and the
workers of other processes with ``pg_notify`` on a pooled connection outside any transaction,
coalesced: the first wake after a quiet spell is sent at once, the wakes that come within
:attr:`PushWaker.window` after it as one more at its end. No wake is lost, and a burst of 2,000
changes sends a few dozen notifications rather than 2,000.

A wake is a hint, never a condition of the change: the change has committed, and every worker
also polls. While the database is away sending fails without the use case hearing of it; the
loss and the return are logged once each (:class:`~provisioner.outage.Outage`), and the wake is
sent again, with back-off, until the database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import asyncpg

from provisioner.outage import Outage, database_unavailable

log = logging.getLogger(__name__)

PUSH_CHANNEL = "provisioner_push"
"""The channel push workers ``LISTEN`` on."""

#: Seconds a process waits after a notification before it sends the next one.
WINDOW = 0.05

#: Seconds :meth:`PushWaker.close` gives the last notification before cancelling it.
CLOSE_TIMEOUT = 2.0


class PushWaker:
    """One per process (held by :class:`~provisioner.core.Core`); see the module docstring.

    :param pool: the notifications' connections, each taken for one statement.
    :param window: at most one notification per this many seconds.
    """

    def __init__(self, pool: asyncpg.Pool, *, window: float = WINDOW) -> None:
        self._pool = pool
        self.window = window
        self._local: set[asyncio.Event] = set()
        self._wanted = False
        self._closed = False
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.outage = Outage(log, "push wake-ups")

    @contextlib.contextmanager
    def local_worker(self, wake: asyncio.Event) -> Iterator[None]:
        """While the block runs, :meth:`wake` sets ``wake``: the event a worker of this process
        sleeps on, woken without a round trip through PostgreSQL."""
        self._local.add(wake)
        try:
            yield
        finally:
            self._local.discard(wake)

    def wake(self) -> None:
        """Tell the push workers that jobs were queued or re-timed: call it after the commit.

        Returns at once and never raises; the notification is sent by a task of its own.
        After :meth:`close` only the workers of this process are woken.
        """
        for event in self._local:
            event.set()
        if self._closed:
            return
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._notify_while_wanted(), name="push-wake")

    async def _notify_while_wanted(self) -> None:
        while self._wanted:
            self._wanted = False
            pause = self.window
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute("SELECT pg_notify($1, '')", PUSH_CHANNEL)
            except Exception as exc:
                if database_unavailable(exc) or isinstance(exc, asyncpg.PostgresError):
                    # Also a database that refuses (a full notification queue): sent again.
                    pause = max(pause, self.outage.lost(exc))
                    self._wanted = not self._closed
                else:
                    log.exception("push wake-up failed; the workers find the jobs when they poll")
            else:
                self.outage.reached()
            if not self._closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), pause)

    async def close(self) -> None:
        """Send the notification still due (giving it :data:`CLOSE_TIMEOUT`), then stop."""
        self._closed = True
        self._closing.set()
        task, self._task = self._task, None
        if task is None:
            return
        _, pending = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
        if pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

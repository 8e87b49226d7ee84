"""Riding out the database going away: which errors mean that, back-off, and logging it once.

Every background task (push worker, device listener, fetch recorder, start-up renders) keeps one
:class:`Outage`: when the database cannot be reached it waits with back-off and jitter, logs
one line when it loses the database and one when it has it back, and carries on by itself. The
API turns the same errors into ``503 database_unavailable``.

What counts as the database being unavailable (:func:`database_unavailable`), from asyncpg
0.32 against a PostgreSQL stopped, restarting or unreachable:

- ``OSError``: connecting to a port nobody listens on (``ConnectionRefusedError``), to a unix
  socket the stopped server removed (``FileNotFoundError``), a reset, a connect timeout.
- ``PostgresConnectionError`` (SQLSTATE class 08, e.g. ``ConnectionDoesNotExistError`` for a
  connection lost in the middle of a query), ``CannotConnectNowError`` (57P03, starting up or
  shutting down), ``AdminShutdownError`` and ``CrashShutdownError`` (57P01, 57P02: the server
  ended our session), ``TooManyConnectionsError`` (53300).
- ``InterfaceError`` saying the connection is gone: "connection is closed", or, for a pooled
  connection the pool dropped when its server went away, "... released back to the pool".
  Other interface errors (a value that cannot be encoded, a misuse) are not outages.
- ``InvalidAuthorizationSpecificationError`` (class 28: a rotated password, a changed
  ``pg_hba.conf``) and ``InvalidCatalogNameError`` (3D000: no such database): the database is
  there but not for us, until someone fixes it; nothing the service does changes that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Literal

import asyncpg

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)
_CONNECTION_GONE = ("connection is closed", "released back to the pool")

State = Literal["up", "down"]


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached now (rather than a bad query)."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, asyncpg.DataError):
        text = str(exc)
        return any(gone in text for gone in _CONNECTION_GONE)
    return False


@dataclass(frozen=True)
class Backoff:
    base: float = 2.0
    cap: float = 300.0

    def delay(self, attempt: int) -> float:
        """Exponential with full jitter (attempt 1 → up to ``base`` seconds)."""
        return random.uniform(0.5, 1.0) * min(self.cap, self.base * 2.0 ** (attempt - 1))


#: Retrying a database that is away: cheap (one connection attempt), so soon and often enough
#: that a restart of a few seconds costs the tasks only a few seconds more.
DATABASE_BACKOFF = Backoff(base=0.25, cap=5.0)


class Outage:
    """One background task's view of the database: ``up`` until it fails the task, then
    ``down`` until it answers the task again.

    :param log: the task's logger; the two state changes are logged there, each once.
    :param task: how the lines name the task ("push worker").
    """

    LOST = "%s: %s unavailable (%s); retrying with back-off"
    BACK = "%s: %s reachable again; resumed"

    def __init__(
        self,
        log: logging.Logger,
        task: str,
        backoff: Backoff = DATABASE_BACKOFF,
        *,
        peer: str = "database",
    ):
        self.log = log
        self.task = task
        self.backoff = backoff
        self.peer = peer
        """What the task lost: ``database``, or another peer (the directory)."""
        self.state: State = "up"
        self._failures = 0

    @property
    def down(self) -> bool:
        return self.state == "down"

    def lost(self, exc: BaseException) -> float:
        """The database failed the task: log it if it was up; the seconds to wait before the
        next attempt (growing with each failure in a row)."""
        if self.state == "up":
            self.log.warning(self.LOST, self.task, self.peer, type(exc).__name__)
            self.state = "down"
        self._failures += 1
        return self.backoff.delay(self._failures)

    def reached(self) -> None:
        """The database answered the task: log it if it had been lost."""
        if self.state == "down":
            self.log.info(self.BACK, self.task, self.peer)
        self.state = "up"
        self._failures = 0


class StartOutage(Outage):
    """A process waiting at its start for a database that is not there yet."""

    LOST = "%s: %s unavailable (%s), waiting for it"
    BACK = "%s: %s reachable; starting"


async def wait_for_database(dsn: str, stop: asyncio.Event, log: logging.Logger, task: str) -> bool:
    """Until a connection to ``dsn`` succeeds (True) or ``stop`` is set first (False), with
    back-off; one line when it is not there, one when it is back."""
    outage = StartOutage(log, task)
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
        except Exception as exc:
            if not database_unavailable(exc) and not isinstance(exc, TimeoutError):
                raise
            delay = outage.lost(exc)
        else:
            await conn.close()
            outage.reached()
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return False

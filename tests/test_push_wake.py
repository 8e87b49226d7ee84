"""Push workers are woken after the commit, coalesced: directly in the same process, through
PostgreSQL from another, never inside the change's transaction (issue 14).

Workers here poll only once a minute (:data:`LONG_POLL`): a job they notify within seconds was
delivered by a wake-up. Notifications are counted by a connection of the test's own that
listens on the channel; a marker it sends itself after the waker closed arrives after every
notification the waker sent (PostgreSQL delivers them in commit order), so the count is exact
without waiting for silence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from provisioner import pins
from provisioner.audit import Actor
from provisioner.core import open_core
from provisioner.pushwake import CLOSE_TIMEOUT, PUSH_CHANNEL, PushWaker
from provisioner.settings import Settings
from provisioner.web.keys import CORE
from tests.conftest import Api, bootstrap_admin, free_port
from tests.test_push import (  # noqa: F401 -- fixtures used by name
    NEW_PIN,
    YEALINK,
    Client,
    Pbx,
    Sipp,
    StartService,
    StartSipp,
    Workers,
    call,
    eventually,
    jobs_of,
    notifies_received,
    provision,
    push_env,
    start_service,
    start_sipp,
    workers,
)

LONG_POLL = 60.0
"""The workers' poll: far beyond every deadline here."""
PROMPTLY = 10.0
"""Seconds within which a woken worker notifies (the debounce is 0.3 s)."""


class Heard:
    """Counts the notifications on the push channel that a connection of its own receives."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.wakes = 0
        self.reached = asyncio.Event()
        self._at_least = 0
        self._marker = f"marker-{secrets.token_hex(4)}"
        self._marked = asyncio.Event()

    def _heard(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self._marker:
            self._marked.set()
            return
        self.wakes += 1
        if self.wakes >= self._at_least:
            self.reached.set()

    async def at_least(self, count: int) -> None:
        self._at_least = count
        if self.wakes >= count:
            return
        self.reached.clear()
        async with asyncio.timeout(PROMPTLY):
            await self.reached.wait()

    async def total(self) -> int:
        """Every notification sent before this call, counted once each has arrived."""
        await self.conn.execute("SELECT pg_notify($1, $2)", PUSH_CHANNEL, self._marker)
        async with asyncio.timeout(PROMPTLY):
            await self._marked.wait()
        return self.wakes


@pytest.fixture
async def heard(database_url: str) -> AsyncIterator[Heard]:
    conn = await asyncpg.connect(database_url)
    counter = Heard(conn)
    await conn.add_listener(PUSH_CHANNEL, counter._heard)
    try:
        yield counter
    finally:
        await conn.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as opened:
        yield opened


# --- the waker on its own -----------------------------------------------------------------------


async def test_a_burst_of_wakes_sends_one_notification_at_once_and_one_after_the_window(
    pool: asyncpg.Pool, heard: Heard
) -> None:
    waker = PushWaker(pool)
    for _ in range(1000):
        waker.wake()  # all before the first notification is sent: it covers them
    await heard.at_least(1)
    for _ in range(1000):
        waker.wake()  # after it: covered by one more, at the end of the window
    await heard.at_least(2)  # by itself, without close()
    await waker.close()
    assert await heard.total() == 2


async def test_wakes_after_each_commit_of_a_burst_send_at_most_one_notification_per_window(
    pool: asyncpg.Pool, heard: Heard
) -> None:
    waker = PushWaker(pool)
    started = time.monotonic()
    async with pool.acquire() as conn:
        for _ in range(300):
            async with conn.transaction():
                await conn.execute("SELECT 1")
            waker.wake()
    elapsed = time.monotonic() - started
    await waker.close()
    assert 1 <= await heard.total() <= 2 + elapsed / waker.window


async def test_close_sends_the_wake_still_due_at_once_and_leaves_no_task(
    pool: asyncpg.Pool, heard: Heard
) -> None:
    waker = PushWaker(pool, window=LONG_POLL)
    waker.wake()
    await heard.at_least(1)
    waker.wake()  # due after the window: a minute away
    async with asyncio.timeout(CLOSE_TIMEOUT):
        await waker.close()
    assert await heard.total() == 2
    waker.wake()  # after close: nobody is sent anything, and no task starts
    assert await heard.total() == 2
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "push-wake"]


async def test_wake_sets_the_event_of_a_worker_of_this_process_before_it_returns(
    pool: asyncpg.Pool,
) -> None:
    waker = PushWaker(pool)
    event = asyncio.Event()
    with waker.local_worker(event):
        waker.wake()
        assert event.is_set()  # no await in between: no round trip through PostgreSQL
    event.clear()
    waker.wake()
    assert not event.is_set()
    await waker.close()


async def test_a_database_outage_during_wake_raises_nothing_and_is_logged_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provisioner.pushwake")
    # Nothing listens on the port: every connection the waker asks for is refused.
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with asyncpg.create_pool(dead, min_size=0, max_size=1) as unreachable:
        waker = PushWaker(unreachable, window=0.01)
        event = asyncio.Event()
        with waker.local_worker(event):
            for _ in range(50):
                waker.wake()
            assert event.is_set()  # the worker of this process is woken all the same

            async def down() -> bool:
                return waker.outage.down

            await eventually(down, "the waker finds the database unavailable", within=PROMPTLY)
            waker.wake()
        async with asyncio.timeout(CLOSE_TIMEOUT + 1):
            await waker.close()
    lost = [r for r in caplog.records if r.name == "provisioner.pushwake"]
    assert [(r.levelno, r.getMessage()) for r in lost] == [
        (
            logging.WARNING,
            "push wake-ups: database unavailable (ConnectionRefusedError); retrying with back-off",
        )
    ]


# --- through the use cases ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Provisioned:
    service: Client
    api: Api
    phone: Sipp


@pytest.fixture
async def provisioned(
    start_service: StartService,  # noqa: F811 -- the imported fixture
    start_sipp: StartSipp,  # noqa: F811 -- the imported fixture
) -> Provisioned:
    """The service (no worker of its own), an admin, and a Yealink played by sipp whose
    setup job is queued; sipp answers two NOTIFYs."""
    service = await start_service()
    api = await bootstrap_admin(service)
    phone = await start_sipp(YEALINK.scenario, calls=2)
    await provision(api, Pbx(service), YEALINK, phone.port)
    return Provisioned(service, api, phone)


async def idle_after_setup(provisioned: Provisioned) -> None:
    """The setup job notified: the worker has nothing due and sleeps for its poll."""
    await notifies_received(provisioned.phone, 1)

    async def notified() -> bool:
        jobs = await jobs_of(provisioned.api, YEALINK.mac)
        return all(j["state"] == "notified" for j in jobs)

    await eventually(notified, "the setup job notified")


async def test_a_pin_change_wakes_a_worker_of_the_same_process(
    provisioned: Provisioned,
    workers: Workers,  # noqa: F811 -- the imported fixture
    heard: Heard,
) -> None:
    workers.start(provisioned.service.app[CORE], "same-process", poll_seconds=LONG_POLL)
    await idle_after_setup(provisioned)

    await call(provisioned.api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    assert await notifies_received(provisioned.phone, 2, within=PROMPTLY)
    workers.alive()
    assert await heard.total() >= 1  # the workers of other processes are woken too


async def test_a_pin_change_wakes_a_worker_of_another_process_through_postgresql(
    provisioned: Provisioned,
    workers: Workers,  # noqa: F811 -- the imported fixture
    push_env: dict[str, str],  # noqa: F811 -- the imported fixture
) -> None:
    # Another process's core: its own pool and waker; it shares only the database.
    async with open_core(Settings.from_env(push_env), run_migrations=False) as other:
        workers.start(other, "other-process", poll_seconds=LONG_POLL)
        try:
            await idle_after_setup(provisioned)
            await call(provisioned.api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
            assert await notifies_received(provisioned.phone, 2, within=PROMPTLY)
            workers.alive()
        finally:
            await workers.stop()


async def test_a_pin_change_whose_wake_meets_a_database_outage_succeeds(
    provisioned: Provisioned, db: asyncpg.Connection
) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    async with asyncpg.create_pool(dead, min_size=0, max_size=1) as unreachable:
        # The service's core, but the waker's database is gone after the commit.
        service_core = provisioned.service.app[CORE]
        core = dataclasses.replace(service_core, push_wake=PushWaker(unreachable))
        change = await pins.change_pin(core, Actor.cli(), "alice", NEW_PIN)
        await core.push_wake.close()
    [job] = change.push_jobs
    row = await db.fetchrow("SELECT state, reason FROM push_jobs WHERE id = $1", job)
    assert dict(row) == {"state": "pending", "reason": "pin.change"}

"""The push worker renders: the devices of the jobs it claims, in one transaction per batch.

The changes here are made through the API without the test client's stand-in for the worker
(:meth:`tests.conftest.Api.settled`): nothing renders them but a :class:`PushWorker` started by
the test, with a notifier that records what it is asked to notify. A render transaction is
recognised by the devices' ``rendered_at``: ``now()``, the start of the transaction that
stored the revision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from provisioner import provisioning, push, store
from provisioner.metrics import METRICS
from provisioner.notify import NotifyError, NotifyTarget
from provisioner.push import Backoff, PushWorker
from provisioner.pushwake import PUSH_CHANNEL
from provisioner.web.keys import CORE
from tests.conftest import Api, stored_files
from tests.test_push import eventually

DEVICES = 12
WITHIN = 15.0
"""Seconds a test waits for what the worker does (a deadline, not a delay)."""


def mac_of(i: int) -> str:
    return f"001565f0{i:04x}"


class RecordingNotifier:
    """Answers every notification with 200 OK; tells when ``expected`` devices have one."""

    def __init__(self) -> None:
        self.targets: list[NotifyTarget] = []
        self._expected: set[str] = set()
        self._all = asyncio.Event()

    def expect(self, macs: set[str]) -> None:
        self._expected = set(macs)

    async def notify(self, target: NotifyTarget) -> str:
        self.targets.append(target)
        if self._expected <= {t.mac for t in self.targets}:
            self._all.set()
        return "200 OK"

    async def close(self) -> None:
        pass

    async def notified(self, macs: set[str]) -> list[str]:
        """Wait until each of ``macs`` was notified (at most :data:`WITHIN`); the MACs notified
        in order."""
        self.expect(macs)
        if macs <= {t.mac for t in self.targets}:
            self._all.set()
        else:
            self._all.clear()  # set by a notification before anything was expected
        async with asyncio.timeout(WITHIN):
            await self._all.wait()
        return [t.mac for t in self.targets]


@pytest.fixture
async def notifier() -> RecordingNotifier:
    return RecordingNotifier()


class Worker:
    """A push worker for the test's app, started by the test when its changes are made."""

    def __init__(self, worker: PushWorker) -> None:
        self.worker = worker
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.worker.run())


@pytest.fixture
async def worker(admin: Api, notifier: RecordingNotifier) -> AsyncIterator[Worker]:
    core = admin.client.app[CORE]
    started = Worker(PushWorker(core, notifier, backoff=Backoff(base=0.2, cap=1.0)))
    yield started
    if started.task is not None:
        started.task.cancel()
        await asyncio.gather(started.task, return_exceptions=True)


@pytest.fixture
async def desks(admin: Api, make_user: Any, db: asyncpg.Connection) -> list[str]:
    """:data:`DEVICES` Yealink desk phones, user ``u<i>`` on line 1 of each, rendered; no open
    push job left."""
    status, _ = await admin.call("PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
    assert status == 200
    macs = []
    for i in range(DEVICES):
        await make_user(f"u{i}", extension=str(300 + i))
        status, body = await admin.call("PUT", f"/users/u{i}/pin", {"pin": "480913"})
        assert status == 200, body
        mac = mac_of(i)
        device = {"mac": mac, "vendor": "yealink", "model": "T54W"}
        status, body = await admin.call("POST", "/devices", device)
        assert status == 201, body
        status, body = await admin.call(
            "PUT", f"/devices/{mac}/assignments", [{"slot": 1, "username": f"u{i}"}]
        )
        assert status == 200, body
        macs.append(mac)
    await db.execute("DELETE FROM push_jobs")
    return macs


async def change_pin(admin: Api, username: str, pin: str) -> list[int]:
    """``PUT /users/{username}/pin`` as a client sends it: nothing rendered on the test's side."""
    headers = {"Authorization": f"Bearer {admin.token}"}
    async with admin.client.put(
        f"/api/v1/users/{username}/pin", json={"pin": pin}, headers=headers
    ) as response:
        body = await response.json()
        assert response.status == 200, body
    return list(body["push_jobs"])


async def changed_and_due(admin: Api, db: asyncpg.Connection, users: int = 1) -> list[int]:
    """The PINs of ``u0``, ``u1``, ... changed at once and their jobs due now (past the
    debounce, for a worker the test starts); the jobs."""
    changed = await asyncio.gather(*(change_pin(admin, f"u{i}", "739251") for i in range(users)))
    await db.execute("UPDATE push_jobs SET not_before = now()")
    return [job for jobs in changed for job in jobs]


async def revisions(db: asyncpg.Connection, macs: list[str]) -> dict[str, int]:
    rows = await db.fetch("SELECT mac, revision FROM devices WHERE mac = ANY($1)", macs)
    return {r["mac"]: r["revision"] for r in rows}


async def test_a_burst_of_pin_changes_is_rendered_by_the_worker_in_one_transaction(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    worker: Worker,
    notifier: RecordingNotifier,
) -> None:
    before = await revisions(db, desks)
    await asyncio.gather(*(change_pin(admin, f"u{i}", "739251") for i in range(DEVICES)))
    # Nothing is rendered until the worker takes the jobs up.
    assert await revisions(db, desks) == before
    # The burst's debounce is over: every job is due, as the last of a burst's are.
    await db.execute("UPDATE push_jobs SET not_before = now()")
    worker.start()
    assert sorted(await notifier.notified(set(desks))) == sorted(desks)  # each once
    after = await revisions(db, desks)
    assert after == {mac: revision + 1 for mac, revision in before.items()}
    transactions = await db.fetchval(
        "SELECT count(DISTINCT rendered_at) FROM devices WHERE mac = ANY($1)", desks
    )
    assert transactions == 1
    vault = admin.client.app[CORE].vault
    for mac in desks:
        assert b"739251" in (await stored_files(db, vault, mac))[f"{mac}.cfg"]


async def test_a_device_that_cannot_be_rendered_leaves_the_rest_of_its_batch_notified(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    worker: Worker,
    notifier: RecordingNotifier,
) -> None:
    broken, *good = desks
    before = await revisions(db, desks)
    await asyncio.gather(*(change_pin(admin, f"u{i}", "739251") for i in range(DEVICES)))
    # The broken device's credential no longer decrypts: it cannot be rendered.
    await db.execute(
        "UPDATE devices SET credential_encrypted = '\\x00'::bytea WHERE mac = $1", broken
    )
    await db.execute("UPDATE push_jobs SET not_before = now()")
    worker.start()
    # The broken one too: its previous revision stays in service, its job is not failed.
    await notifier.notified(set(desks))
    after = await revisions(db, desks)
    assert {mac: after[mac] for mac in good} == {mac: before[mac] + 1 for mac in good}
    assert after[broken] == before[broken]  # its previous revision stays in service
    error = await db.fetchval("SELECT render_error FROM devices WHERE mac = $1", broken)
    assert error.startswith("VaultError"), error
    transactions = await db.fetchval(
        "SELECT count(DISTINCT rendered_at) FROM devices WHERE mac = ANY($1)", good
    )
    assert transactions == 1


async def test_a_device_changed_twice_before_its_job_is_due_is_rendered_once(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    worker: Worker,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A job waits 1.5 s for more changes (instead of 0.3 s): the second change comes within it
    # however busy the machine is.
    monkeypatch.setattr(store, "PUSH_DEBOUNCE", 1.5)
    mac = desks[0]
    [before] = (await revisions(db, [mac])).values()
    worker.start()  # running all along: it renders when the job is due, after the second change
    [job] = await change_pin(admin, "u0", "739251")
    assert await change_pin(admin, "u0", "602714") == [job]  # folded into the open job
    await notifier.notified({mac})
    assert await revisions(db, [mac]) == {mac: before + 1}
    files = await stored_files(db, admin.client.app[CORE].vault, mac)
    assert b"602714" in files[f"{mac}.cfg"]
    assert [t.mac for t in notifier.targets] == [mac]


# --- the loop: batch after batch, outcomes counted, a job changed meanwhile, a failure ----------


class ScriptedNotifier(RecordingNotifier):
    """Fails the devices in ``refuse``; runs ``meanwhile`` during the first notification."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: set[str] = set()
        self.meanwhile: Callable[[], Awaitable[None]] | None = None

    async def notify(self, target: NotifyTarget) -> str:
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        if target.mac in self.refuse:
            self.targets.append(target)
            raise NotifyError("408 Request Timeout")
        return await super().notify(target)


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, failure: Exception) -> None:
    """Make the coroutine function ``owner.name`` raise ``failure`` on its first call only."""
    real, failures = getattr(owner, name), [failure]

    async def once(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    monkeypatch.setattr(owner, name, once)


@asynccontextmanager
async def running(worker: PushWorker) -> AsyncIterator[PushWorker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_backlog_beyond_a_batch_is_claimed_batch_after_batch_without_a_poll(
    admin: Api, desks: list[str], db: asyncpg.Connection, notifier: RecordingNotifier
) -> None:
    """Claims follow one another while jobs are due; the worker sleeps only when a claim found
    none (its poll here is ten minutes: nothing may wait for it)."""
    worker = PushWorker(admin.client.app[CORE], notifier, batch=5, poll_seconds=600)
    await changed_and_due(admin, db, DEVICES)
    states = [worker.running]
    async with running(worker):
        assert sorted(await notifier.notified(set(desks))) == sorted(desks)
        states.append(worker.running)
    states.append(worker.running)
    assert states == [False, True, False], "/healthz reports the worker as running while it is"


async def test_each_outcome_is_counted_under_its_state(
    admin: Api, desks: list[str], db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="provisioner.push")
    timed = METRICS.notify_seconds
    timed_before = (timed.count, timed.total)
    notifier = ScriptedNotifier()
    refused, *rest = desks
    notifier.refuse = {refused}
    counted = METRICS.jobs_finished.values

    def count(state: str) -> float:
        return counted.get((("state", state),), 0.0)

    def counted_above(state: str, floor: float) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return count(state) > floor

        return probe

    before = {state: count(state) for state in ("notified", "fetched", "failed")}
    worker = PushWorker(admin.client.app[CORE], notifier, max_attempts=1)
    await changed_and_due(admin, db, DEVICES)
    async with running(worker):
        await notifier.notified(set(rest))
        # Stored as notified (a fetch recorded before that would store them fetched).
        await eventually(
            counted_above("notified", before["notified"] + len(rest) - 1), "the jobs notified"
        )
        await eventually(counted_above("failed", before["failed"]), "the refused job failed")
        # Each device fetched what it was notified of; a job then finds nothing to push.
        await db.execute("UPDATE devices SET fetched_revision = revision")
        async with db.transaction():
            await store.enqueue_push_jobs(db, rest, "pin.change")
        await db.execute("UPDATE push_jobs SET not_before = now() WHERE state = 'pending'")
        worker._wake.set()
        await eventually(
            counted_above("fetched", before["fetched"] + len(rest) - 1), "the jobs were fetched"
        )
    assert {state: count(state) - before[state] for state in before} == {
        "notified": len(rest),
        "fetched": len(rest),
        "failed": 1,
    }
    assert len(notifier.targets) == DEVICES, "a fetched device is not notified again"
    # What each device answered, on the device (the admin pages show it): the refusal too.
    answered = await db.fetch(
        "SELECT mac, last_notify_result FROM devices WHERE mac = ANY($1)", desks
    )
    assert {r["mac"]: r["last_notify_result"] for r in answered} == {
        refused: "failed: 408 Request Timeout",
        **{mac: "200 OK" for mac in rest},
    }
    # Each answered notification is timed (the refused one is not): a few ms each here.
    assert timed.count - timed_before[0] == len(rest)
    assert 0 < timed.total - timed_before[1] < len(rest) * WITHIN
    revision = await db.fetchval("SELECT revision FROM devices WHERE mac = $1", rest[0])
    said = [r.getMessage() for r in caplog.records if r.name == "provisioner.push"]
    assert f"device {rest[0]}: 200 OK (revision {revision})" in said
    # How each was notified: the notifier's kind (SipNotifier in service), the API's vendor.
    transports = await db.fetch(
        "SELECT DISTINCT transport FROM push_jobs WHERE mac = ANY($1) AND notified_at IS NOT NULL",
        rest,
    )
    assert [r["transport"] for r in transports] == ["ScriptedNotifier"]
    # The jobs found nothing to push: completed at the revision the devices hold.
    completed = await db.fetch(
        "SELECT j.revision, d.revision AS current FROM push_jobs j JOIN devices d USING (mac) "
        "WHERE j.state = 'fetched' AND j.reason = 'pin.change' AND j.mac = ANY($1)",
        rest,
    )
    assert [r["revision"] for r in completed] == [r["current"] for r in completed]
    assert len(completed) >= len(rest)


async def test_a_job_changed_while_its_device_was_notified_runs_again(
    admin: Api, desks: list[str], db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="provisioner.push")
    notifier = ScriptedNotifier()
    mac = desks[0]
    [job] = await changed_and_due(admin, db)

    async def change_again() -> None:
        assert await change_pin(admin, "u0", "602714") == [job]  # folded into the leased job

    notifier.meanwhile = change_again
    async with running(PushWorker(admin.client.app[CORE], notifier)):

        async def notified_twice() -> bool:
            return len(notifier.targets) >= 2

        await eventually(notified_twice, "the job ran again")
    assert [t.mac for t in notifier.targets] == [mac, mac]
    said = [r.getMessage() for r in caplog.records if r.name == "provisioner.push"]
    assert f"push job {job} changed while we worked on it; it runs again" in said
    files = await stored_files(db, admin.client.app[CORE].vault, mac)
    assert b"602714" in files[f"{mac}.cfg"], "the second run pushed the second change"


async def test_an_unforeseen_failure_is_logged_with_its_traceback_and_the_loop_carries_on(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fail_once(monkeypatch, store, "claim_push_jobs", RuntimeError("a bug nobody foresaw"))
    monkeypatch.setattr(push, "DATABASE_BACKOFF", Backoff(base=0.1, cap=0.1))
    await changed_and_due(admin, db)
    async with running(PushWorker(admin.client.app[CORE], notifier)):
        assert await notifier.notified({desks[0]}) == [desks[0]]
    [logged] = [r for r in caplog.records if r.name == "provisioner.push" and r.exc_info]
    assert logged.getMessage() == "push worker: unexpected failure; carrying on"
    assert logged.levelno == logging.ERROR
    assert logged.exc_info is not None
    assert "a bug nobody foresaw" in str(logged.exc_info[1])


async def test_an_idle_worker_sleeps_after_a_claim_that_found_nothing(
    admin: Api, notifier: RecordingNotifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It looks when the next job is due and sleeps until then (or a wake-up), rather than
    claiming again at once: an idle worker must not hammer the database."""
    calls: list[str] = []
    slept = asyncio.Event()
    real_claim, real_due = store.claim_push_jobs, store.next_push_due

    async def claim(*args: Any, **kwargs: Any) -> Any:
        calls.append("claim")
        return await real_claim(*args, **kwargs)

    async def next_due(*args: Any, **kwargs: Any) -> Any:
        calls.append("next_due")
        slept.set()
        return await real_due(*args, **kwargs)

    monkeypatch.setattr(store, "claim_push_jobs", claim)
    monkeypatch.setattr(store, "next_push_due", next_due)
    async with running(PushWorker(admin.client.app[CORE], notifier, poll_seconds=600)):
        async with asyncio.timeout(WITHIN):
            await slept.wait()
    assert calls[:2] == ["claim", "next_due"], calls[:10]


async def test_with_no_job_open_nothing_is_due(db: asyncpg.Connection) -> None:
    """The worker sleeps until its poll then, not a moment (GREATEST ignores a NULL)."""
    await db.execute("DELETE FROM push_jobs")
    assert await store.next_push_due(db) is None


# --- LISTEN: another process's change wakes the worker; without LISTEN it polls ----------------


async def listen_backends(db: asyncpg.Connection) -> list[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = $1",
        f'LISTEN "{PUSH_CHANNEL}"',  # as asyncpg sends it: the backend's last statement
    )
    return [r["pid"] for r in rows]


async def change_from_elsewhere(db: asyncpg.Connection, mac: str) -> None:
    """A job opened (due at once) and announced by another process, as its commit would."""
    async with db.transaction():
        await store.enqueue_push_jobs(db, [mac], "reprovision")
        await db.execute("UPDATE push_jobs SET not_before = now() WHERE mac = $1", mac)
    await db.execute("SELECT pg_notify($1, '')", PUSH_CHANNEL)


def listen_fails(monkeypatch: pytest.MonkeyPatch, failure: Exception, *, always: bool) -> None:
    """The worker's ``LISTEN`` raises ``failure``: every time, or only the first time."""
    real, left = asyncpg.Connection.add_listener, [failure]

    async def add_listener(self: asyncpg.Connection, channel: str, callback: Any) -> None:
        if channel == PUSH_CHANNEL and left:
            raise left[0] if always else left.pop()
        await real(self, channel, callback)

    monkeypatch.setattr(asyncpg.Connection, "add_listener", add_listener)


async def test_a_lost_listen_connection_is_opened_again_at_once(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lost connection wakes the sleeping worker, which listens again: a change from another
    process is not left to the next poll (ten minutes here)."""
    real_due, looked = store.next_push_due, []
    asleep = asyncio.Event()

    async def next_due(*args: Any, **kwargs: Any) -> Any:
        looked.append(1)
        if len(looked) == 2:  # the first sleep ends at once: listening began with a wake-up
            asleep.set()
        return await real_due(*args, **kwargs)

    monkeypatch.setattr(store, "next_push_due", next_due)
    async with running(PushWorker(admin.client.app[CORE], notifier, poll_seconds=600)):
        async with asyncio.timeout(WITHIN):
            await asleep.wait()
        [first] = await listen_backends(db)
        await db.execute("SELECT pg_terminate_backend($1)", first)

        async def listening_again() -> list[int]:
            return [pid for pid in await listen_backends(db) if pid != first]

        await eventually(listening_again, "the worker listens again")
        await change_from_elsewhere(db, desks[0])
        assert await notifier.notified({desks[0]}) == [desks[0]]


async def test_a_listen_that_fails_unexpectedly_is_tried_again(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listen_fails(monkeypatch, RuntimeError("not foreseen"), always=False)
    monkeypatch.setattr(push, "DATABASE_BACKOFF", Backoff(base=0.1, cap=0.1))
    async with running(PushWorker(admin.client.app[CORE], notifier, poll_seconds=600)):
        await eventually(lambda: listen_backends(db), "the worker listens after all")
        await change_from_elsewhere(db, desks[0])
        assert await notifier.notified({desks[0]}) == [desks[0]]


async def test_a_worker_refused_listen_polls_and_says_so_once(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """E.g. behind a pooler in transaction mode: LISTEN is refused, the worker polls."""
    listen_fails(monkeypatch, asyncpg.FeatureNotSupportedError("not here"), always=True)
    async with running(PushWorker(admin.client.app[CORE], notifier, poll_seconds=0.2)):
        for mac in desks[:3]:  # each found by a poll, many steps apart
            await change_from_elsewhere(db, mac)
            await notifier.notified({mac})
    warned = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "provisioner.push"]
    assert warned == [
        (logging.WARNING, "push worker polls only: LISTEN failed (FeatureNotSupportedError)")
    ]


class HoldingNotifier(RecordingNotifier):
    """Holds every notification until the test lets it go; counts those held."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[asyncio.Future[None]] = []
        self.arrived = asyncio.Condition()

    async def notify(self, target: NotifyTarget) -> str:
        release = asyncio.get_running_loop().create_future()
        async with self.arrived:
            self.held.append(release)
            self.arrived.notify_all()
        await release
        return await super().notify(target)

    async def holding(self, count: int) -> None:
        async with asyncio.timeout(WITHIN), self.arrived:
            await self.arrived.wait_for(lambda: self.waiting() == count)

    def waiting(self) -> int:
        return sum(not release.done() for release in self.held)


class ClaimLimits:
    """Records the ``limit`` of every claim (wraps ``store.claim_push_jobs``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.limits: list[int] = []
        real = store.claim_push_jobs

        async def claim(*args: Any, limit: int, **kwargs: Any) -> Any:
            self.limits.append(limit)
            return await real(*args, limit=limit, **kwargs)

        monkeypatch.setattr(store, "claim_push_jobs", claim)


async def leased(db: asyncpg.Connection) -> int:
    return await db.fetchval(  # type: ignore[no-any-return]
        """SELECT count(*) FROM push_jobs
           WHERE state IN ('pending', 'scheduled') AND lease_until IS NOT NULL"""
    )


async def test_batches_are_claimed_ahead_and_no_claimed_job_waits_for_a_notification(
    admin: Api, desks: list[str], db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batch`` jobs a claim, ``concurrency`` jobs under way: three batches are claimed and
    notified at once; a batch is claimed as soon as a whole one fits again, none waits for a
    poll. Every leased job is being notified: none waits behind another's notification, where
    phones that do not answer could keep it past its lease."""
    notifier = HoldingNotifier()
    claims = ClaimLimits(monkeypatch)
    await changed_and_due(admin, db, DEVICES)
    worker = PushWorker(admin.client.app[CORE], notifier, batch=2, concurrency=6, poll_seconds=600)
    async with running(worker):
        await notifier.holding(6)
        assert await leased(db) == 6
        for done in range(2, DEVICES + 1, 2):
            for release in [r for r in notifier.held if not r.done()][:2]:
                release.set_result(None)
            await notifier.holding(min(6, DEVICES - done))

            async def settled(done: int = done) -> bool:
                return await leased(db) == min(6, DEVICES - done)

            await eventually(settled, "every leased job is being notified")
        assert sorted(await notifier.notified(set(desks))) == sorted(desks)
    assert claims.limits
    assert set(claims.limits) == {2}, claims.limits


async def test_a_batch_larger_than_the_jobs_under_way_is_claimed_in_parts(
    admin: Api, desks: list[str], db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = HoldingNotifier()
    claims = ClaimLimits(monkeypatch)
    await changed_and_due(admin, db, DEVICES)
    worker = PushWorker(admin.client.app[CORE], notifier, batch=5, concurrency=2, poll_seconds=600)
    async with running(worker):
        await notifier.holding(2)
        assert await leased(db) == 2
        for release in notifier.held[:2]:
            release.set_result(None)
        await notifier.holding(2)
    assert claims.limits[:2] == [2, 2], claims.limits


async def test_a_batch_that_fails_to_render_is_logged_and_retried(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="provisioner.push")
    fail_once(monkeypatch, provisioning, "render_devices_in", TypeError("a bug in a filter"))
    [job] = await changed_and_due(admin, db)
    worker = PushWorker(admin.client.app[CORE], notifier, backoff=Backoff(base=0.2, cap=0.2))
    async with running(worker):
        assert await notifier.notified({desks[0]}) == [desks[0]]
    [logged] = [r for r in caplog.records if r.name == "provisioner.push" and r.exc_info]
    assert logged.getMessage() == "push worker: rendering 1 device(s) failed"
    attempts = await db.fetchval("SELECT attempts FROM push_jobs WHERE id = $1", job)
    assert attempts == 2, "the failed render counted as an attempt"
    said = [r.getMessage() for r in caplog.records if r.name == "provisioner.push"]
    assert any("internal error (TypeError)" in line for line in said), said


async def test_a_notification_that_fails_unforeseen_is_logged_and_the_job_retried(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="provisioner.push")
    mac = desks[0]

    class BuggyOnce(RecordingNotifier):
        failed = False

        async def notify(self, target: NotifyTarget) -> str:
            if not self.failed:
                self.failed = True
                raise KeyError("a bug in a notifier")
            return await super().notify(target)

    notifier = BuggyOnce()
    [job] = await changed_and_due(admin, db)
    worker = PushWorker(admin.client.app[CORE], notifier, backoff=Backoff(base=0.2, cap=0.2))
    async with running(worker):
        assert await notifier.notified({mac}) == [mac]
    [logged] = [r for r in caplog.records if r.name == "provisioner.push" and r.exc_info]
    assert logged.getMessage() == f"push job {job} for {mac}: unexpected failure"
    said = [r.getMessage() for r in caplog.records if r.name == "provisioner.push"]
    assert any(f"push job {job} for {mac}: internal error (KeyError)" in s for s in said), said
    attempts = await db.fetchval("SELECT attempts FROM push_jobs WHERE id = $1", job)
    assert attempts == 2


async def test_a_device_never_rendered_that_cannot_be_fails_its_job_with_the_reason(
    admin: Api, db: asyncpg.Connection, notifier: RecordingNotifier
) -> None:
    """No registrar on its site: nothing can be rendered, and there is no earlier revision to
    notify the phone of. (One rendered before keeps that revision and is notified: see
    test_a_device_that_cannot_be_rendered_leaves_the_rest_of_its_batch_notified.)"""
    mac = mac_of(99)
    device = {"mac": mac, "vendor": "yealink", "model": "T54W"}
    assert (await admin.call("POST", "/devices", device))[0] == 201
    assert await db.fetchval("SELECT revision FROM devices WHERE mac = $1", mac) == 0
    async with db.transaction():
        [job] = await store.enqueue_push_jobs(db, [mac], "reprovision")
    await db.execute("UPDATE push_jobs SET not_before = now()")
    worker = PushWorker(admin.client.app[CORE], notifier, max_attempts=1)
    async with running(worker):

        async def failed() -> Any:
            return await db.fetchrow(
                "SELECT state, last_error FROM push_jobs WHERE id = $1 AND state = 'failed'", job
            )

        row = await eventually(failed, "the job failed")
    assert row["last_error"].startswith("cannot render: "), row["last_error"]
    assert notifier.targets == []


# --- the outcomes of a batch, written together ----------------------------------------------


async def test_outcomes_that_end_while_a_write_is_under_way_go_together_in_the_next(
    admin: Api, desks: list[str], db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first device answers alone and its outcome is written at once; that write is held
    until every other device has answered, and their outcomes all go in the next one: two
    transactions for twelve jobs, each job stored as notified, each device's answer on its
    row."""
    notifier = HoldingNotifier()
    writes: list[list[int]] = []
    first_write = asyncio.Event()
    others_answered = asyncio.Event()
    real = store.finish_push_jobs

    async def finish(conn: Any, worker: str, outcomes: list[store.PushOutcome]) -> Any:
        writes.append([outcome.job_id for outcome in outcomes])
        if len(writes) == 1:
            first_write.set()
            async with asyncio.timeout(WITHIN):
                await others_answered.wait()
        return await real(conn, worker, outcomes)

    def answered() -> float:
        return METRICS.notify_attempts.values.get((("result", "ok"),), 0.0)

    monkeypatch.setattr(store, "finish_push_jobs", finish)
    jobs = await changed_and_due(admin, db, DEVICES)
    before = answered()
    async with running(PushWorker(admin.client.app[CORE], notifier, poll_seconds=600)):
        await notifier.holding(DEVICES)
        notifier.held[0].set_result(None)
        async with asyncio.timeout(WITHIN):
            await first_write.wait()
        for release in notifier.held[1:]:
            release.set_result(None)

        async def all_answered() -> bool:  # counted just before each outcome is handed over
            return answered() == before + DEVICES

        await eventually(all_answered, "every device answered")
        others_answered.set()

        async def all_stored() -> bool:
            states = await db.fetch("SELECT state FROM push_jobs WHERE id = ANY($1)", jobs)
            return [row["state"] for row in states] == ["notified"] * DEVICES

        await eventually(all_stored, "every job stored as notified")
    assert [len(write) for write in writes] == [1, DEVICES - 1], writes
    assert sorted(job for write in writes for job in write) == sorted(jobs)
    answers = await db.fetch("SELECT last_notify_result FROM devices WHERE mac = ANY($1)", desks)
    assert [row["last_notify_result"] for row in answers] == ["200 OK"] * DEVICES


async def test_a_devices_second_outcome_waits_for_the_next_write(
    admin: Api, desks: list[str], db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write holds one outcome a device (its row is updated once a statement): two
    outcomes of one job, ended together, are two writes; the second finds the job no longer
    leased and leaves it as the first stored it."""
    [job_id] = await changed_and_due(admin, db)
    worker = PushWorker(admin.client.app[CORE], RecordingNotifier(), poll_seconds=600)
    async with admin.client.app[CORE].pool.acquire() as conn:
        [job] = await store.claim_push_jobs(conn, worker=worker.name, limit=1, lease_seconds=60)
    assert job["id"] == job_id
    writes: list[list[str]] = []
    real = store.finish_push_jobs

    async def finish(conn: Any, name: str, outcomes: list[store.PushOutcome]) -> Any:
        writes.append([outcome.state for outcome in outcomes])
        return await real(conn, name, outcomes)

    monkeypatch.setattr(store, "finish_push_jobs", finish)
    await asyncio.gather(
        worker._finish(job, "notified", 1, "test", None, notify_result="200 OK"),
        worker._finish(job, "failed", None, None, "late", notify_result="failed: late"),
    )
    assert writes == [["notified"], ["failed"]]
    row = await db.fetchrow("SELECT state, last_error FROM push_jobs WHERE id = $1", job_id)
    assert (row["state"], row["last_error"]) == ("notified", None)
    outcome = store.PushOutcome(job_id, desks[0], job["lease_until"], "pending", None, None, None)
    async with admin.client.app[CORE].pool.acquire() as conn:
        with pytest.raises(ValueError, match="one outcome a device"):
            await real(conn, worker.name, [outcome, outcome])


async def test_a_write_of_outcomes_aborted_by_a_deadlock_is_tried_again(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="provisioner.push")
    fail_once(
        monkeypatch, store, "finish_push_jobs", asyncpg.DeadlockDetectedError("deadlock detected")
    )
    [job] = await changed_and_due(admin, db)
    async with running(PushWorker(admin.client.app[CORE], notifier, poll_seconds=600)):
        await notifier.notified({desks[0]})

        async def stored() -> Any:
            return await db.fetchrow("SELECT state, attempts FROM push_jobs WHERE id = $1", job)

        async def notified() -> bool:
            return (await stored())["state"] == "notified"

        await eventually(notified, "the job stored as notified")
    assert (await stored())["attempts"] == 1, "stored by the retry, not by a second attempt"
    said = [r.getMessage() for r in caplog.records if r.name == "provisioner.push"]
    assert said == ["push worker: writing 1 outcome(s) met a deadlock"], said


async def test_a_write_of_outcomes_deadlocked_every_time_fails_its_jobs_attempt(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After :data:`push.DEADLOCK_TRIES` the failure goes to the job as any unforeseen one:
    logged with its traceback, the attempt stored as failed, the job retried."""
    caplog.set_level(logging.INFO, logger="provisioner.push")
    real, tries = store.finish_push_jobs, []

    async def deadlocked(conn: Any, worker: str, outcomes: list[store.PushOutcome]) -> Any:
        tries.append([outcome.state for outcome in outcomes])
        if len(tries) <= push.DEADLOCK_TRIES:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return await real(conn, worker, outcomes)

    monkeypatch.setattr(store, "finish_push_jobs", deadlocked)
    [job] = await changed_and_due(admin, db)
    worker = PushWorker(admin.client.app[CORE], notifier, backoff=Backoff(base=60, cap=60))
    async with running(worker):

        async def retried() -> Any:
            return await db.fetchrow(
                "SELECT state, last_error FROM push_jobs WHERE id = $1 AND last_error IS NOT NULL",
                job,
            )

        row = await eventually(retried, "the attempt stored as failed")
    error = "internal error (DeadlockDetectedError)"
    assert (row["state"], row["last_error"]) == ("pending", error)
    assert tries == [["notified"]] * push.DEADLOCK_TRIES + [["pending"]]
    [logged] = [r for r in caplog.records if r.name == "provisioner.push" and r.exc_info]
    assert logged.getMessage() == f"push job {job} for {desks[0]}: unexpected failure"


# --- lock order ------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["fetch records", "push outcomes"])
async def test_statements_locking_many_devices_lock_them_in_mac_order(
    writer: str, admin: Api, desks: list[str], db: asyncpg.Connection
) -> None:
    """The fetch recorder's write and the push worker's write of outcomes each lock many device
    rows in one statement; given the devices in descending order they still lock them in
    ascending MAC order, as every use case does, so they cannot deadlock with each other or a
    render. Seen for real: with the highest MAC held by another transaction, the write waits
    for it holding every other one already."""
    core = admin.client.app[CORE]
    descending = sorted(desks, reverse=True)
    highest, lower = descending[0], descending[1:]
    jobs = {}
    for i, mac in enumerate(desks):
        [jobs[mac]] = await change_pin(admin, f"u{i}", "739251")
    await db.execute("UPDATE push_jobs SET not_before = now()")
    async with core.pool.acquire() as conn:
        claimed = await store.claim_push_jobs(conn, worker="w", limit=DEVICES, lease_seconds=60)
    lease = {row["mac"]: row["lease_until"] for row in claimed}
    # Row versions in the table in descending MAC order: a scan in storage order meets the
    # highest first.
    for mac in descending:
        await db.execute("UPDATE devices SET model = model WHERE mac = $1", mac)

    async def write() -> None:
        async with core.pool.acquire() as conn, conn.transaction():
            if writer == "fetch records":
                now = datetime.now(UTC)
                fetches = [(mac, f"{mac}.cfg", 1, now, "10.0.0.1", True) for mac in descending]
                await store.record_fetches(conn, fetches)
            else:
                outcomes = [
                    store.PushOutcome(
                        jobs[mac], mac, lease[mac], "notified", 1, "test", None, None, "200 OK"
                    )
                    for mac in descending
                ]
                await store.finish_push_jobs(conn, "w", outcomes)

    async def waiting_for_a_lock() -> bool:
        return bool(
            await db.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'"""
            )
        )

    async with core.pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM devices WHERE mac = $1 FOR UPDATE", highest)
        written = asyncio.create_task(write())
        await eventually(waiting_for_a_lock, "the write waits for the highest MAC")
        async with core.pool.acquire() as probe:
            free = []
            for mac in lower:
                try:
                    await probe.execute(
                        "SELECT 1 FROM devices WHERE mac = $1 FOR UPDATE NOWAIT", mac
                    )
                except asyncpg.LockNotAvailableError:
                    continue
                free.append(mac)
        assert free == [], "locked after the highest, or not at all"
    async with asyncio.timeout(WITHIN):
        await written


async def test_a_changed_device_is_notified_once_its_batch_had_the_cache_grace(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The phones' processes load a new revision when its commit's notification reaches them:
    the NOTIFY waits :data:`push.CACHE_GRACE` after the render's commit."""
    monkeypatch.setattr(push, "CACHE_GRACE", 0.5)
    committed: list[float] = []
    notified: list[float] = []
    render = provisioning.render_devices_in

    async def timed_render(*args: Any, **kwargs: Any) -> Any:
        outcomes = await render(*args, **kwargs)
        committed.append(asyncio.get_running_loop().time())
        return outcomes

    async def timed_notify(target: NotifyTarget) -> str:
        notified.append(asyncio.get_running_loop().time())
        return await RecordingNotifier.notify(notifier, target)

    monkeypatch.setattr(provisioning, "render_devices_in", timed_render)
    monkeypatch.setattr(notifier, "notify", timed_notify)
    await changed_and_due(admin, db, DEVICES)
    async with running(PushWorker(admin.client.app[CORE], notifier, poll_seconds=600)):
        await notifier.notified(set(desks))
    [rendered] = committed
    assert len(notified) == DEVICES
    assert min(notified) - rendered >= 0.5


async def test_a_worker_whose_last_write_hangs_still_stops_and_hands_its_job_back(
    admin: Api,
    desks: list[str],
    db: asyncpg.Connection,
    notifier: RecordingNotifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database stops answering the write of an outcome (a hung server): the stop waits 5 s
    for the jobs under way and 5 s more for that write, then hands the job back."""
    hung = asyncio.Event()

    async def hang(*_args: Any, **_kwargs: Any) -> Any:
        hung.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(store, "finish_push_jobs", hang)
    [job] = await changed_and_due(admin, db)
    worker = PushWorker(admin.client.app[CORE], notifier, name="worker-hung", poll_seconds=600)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(WITHIN):
            await hung.wait()
        started = asyncio.get_running_loop().time()
        task.cancel()
        async with asyncio.timeout(WITHIN + 5):
            await asyncio.gather(task, return_exceptions=True)
        took = asyncio.get_running_loop().time() - started
    finally:
        if worker._writer is not None:  # still hung: let go of its connection
            worker._writer.cancel()
            await asyncio.gather(worker._writer, return_exceptions=True)
    assert 9.5 <= took < 14.0, took
    row = await db.fetchrow("SELECT state, worker, lease_until FROM push_jobs WHERE id = $1", job)
    assert (row["state"], row["worker"], row["lease_until"]) == ("pending", None, None)

"""The push worker renders: the devices of the jobs it claims, in one transaction per batch.

The changes here are made through the API without the test client's stand-in for the worker
(:meth:`tests.conftest.Api.settled`): nothing renders them but a :class:`PushWorker` started by
the test, with a notifier that records what it is asked to notify. A render transaction is
recognised by the devices' ``rendered_at``: ``now()``, the start of the transaction that
stored the revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from provisioner import store
from provisioner.notify import NotifyTarget
from provisioner.push import Backoff, PushWorker
from provisioner.web.keys import CORE
from tests.conftest import Api, stored_files

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
    await notifier.notified(set(good))
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

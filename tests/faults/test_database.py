"""PostgreSQL stopped and started again under a running service and a standalone worker.

The cluster is the tests' own (see ``conftest.py``); sipp plays the phone as in
``tests/test_push.py``. What must hold: while the database is away the API and the pages answer
503 without a traceback, the phones' endpoint serves what it has, ``/healthz`` names what is
down; every background task logs the loss and the return once each and resumes by itself; a
change acknowledged before the outage is pushed after it, once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from provisioner import provisioning, store
from provisioner.app import create_app
from provisioner.db import load_migrations
from provisioner.metrics import METRICS
from provisioner.phonecache import LAST_SEEN_INTERVAL
from provisioner.settings import Settings
from provisioner.web.keys import CORE, PHONES
from tests.conftest import ADMIN_PASSWORD, Api, ManualClock, bootstrap_admin
from tests.faults.conftest import Cluster
from tests.test_cli import StartServer
from tests.test_push import (
    DEADLINE,
    NEW_PIN,
    PIN,
    YEALINK,
    Client,
    Pbx,
    StartSipp,
    Workers,
    call,
    clean_environ,
    eventually,
    fetch_config,
    job_reaches,
    jobs_of,
    notifies_received,
    provision,
)
from tests.web.conftest import Forms, base_url

TASKS = ("push worker", "device cache", "fetch recorder")
LOST = "{}: database unavailable ("
BACK = "{}: database reachable again; resumed"


async def health(client: Client) -> tuple[int, dict[str, Any]]:
    async with client.get("/healthz") as response:
        return response.status, await response.json()


async def parts_are(client: Client, state: str, names: tuple[str, ...]) -> dict[str, Any]:
    """Wait until ``/healthz`` shows every part in ``names`` in ``state``; its body."""

    async def probe() -> dict[str, Any] | None:
        _, body = await health(client)
        return body if all(body["parts"][name] == state for name in names) else None

    return await eventually(probe, f"/healthz: {', '.join(names)} {state}")


def state_changes(caplog: pytest.LogCaptureFixture, task: str) -> list[tuple[int, str]]:
    prefixes = (LOST.format(task), BACK.format(task))
    return [
        (r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith(prefixes)
    ]


def assert_logged_once_each(caplog: pytest.LogCaptureFixture, task: str) -> None:
    changes = state_changes(caplog, task)
    assert [level for level, _ in changes] == [logging.WARNING, logging.INFO], changes
    assert changes[0][1].startswith(LOST.format(task)), changes
    assert changes[0][1].endswith("); retrying with back-off"), changes


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert noisy == [], [f"{r.name}: {r.getMessage()}" for r in noisy]


async def test_service_rides_out_database_restarts(
    cluster: Cluster,
    fault_env: dict[str, str],
    aiohttp_client: Any,
    start_sipp: StartSipp,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    service: Client = await aiohttp_client(create_app(Settings.from_env(fault_env), worker=True))
    core = service.app[CORE]
    clock = service.app[PHONES].recorder.clock = ManualClock()
    api = await bootstrap_admin(service)
    pbx = Pbx(service)
    phone = await start_sipp(YEALINK.scenario, calls=2)
    await provision(api, pbx, YEALINK, phone.port)
    [setup_job] = await jobs_of(api, YEALINK.mac)
    await notifies_received(phone, 1)
    assert PIN in await fetch_config(service, YEALINK)
    await job_reaches(api, YEALINK.mac, setup_job["id"], "fetched")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        pages = Forms(browser, base_url(service))
        await pages.login("admin", ADMIN_PASSWORD)
        assert (await pages.get("/admin/users")).status == 200
        async with core.pool.acquire() as conn:
            seen_before = await conn.fetchval(
                "SELECT last_fetch_at FROM devices WHERE mac = $1", YEALINK.mac
            )

        # --- 1. the database goes away ---------------------------------------------------------
        caplog.clear()
        await cluster.stop()

        status, body = await api.call("GET", "/users")
        assert (status, body["error"]["code"]) == (503, "database_unavailable")
        # A change is refused, not half made: nothing is acknowledged that could be lost.
        status, body = await api.call("PUT", "/users/alice/pin", {"pin": NEW_PIN})
        assert (status, body["error"]["code"]) == (503, "database_unavailable")
        async with service.get(
            "/api/v1/devices", headers={"Authorization": f"Bearer {api.token}"}
        ) as response:
            assert response.headers["Retry-After"] == "5"
        status, body = await pbx.call("verify-pin", {"extension": "201", "pin": PIN})
        assert (status, body["error"]["code"]) == (503, "database_unavailable")
        page = await pages.get("/admin/users")
        assert page.status == 503
        assert "Temporarily unavailable" in page.text
        status, body = await health(service)
        assert status == 503
        assert body["parts"]["database"] == "down"
        assert body["error"]["code"] == "database_unavailable"
        # The phones are served from memory. The fetch repeats the last written one: folded,
        # and written once its minute is over, which the test says is now.
        assert PIN in await fetch_config(service, YEALINK)
        clock.advance(LAST_SEEN_INTERVAL)
        await parts_are(service, "down", ("database", *(t.replace(" ", "_") for t in TASKS)))

        # --- 2. and comes back -----------------------------------------------------------------
        await cluster.start()
        body = await parts_are(service, "up", tuple(body["parts"]))
        assert body["status"] == "ok"
        assert (await pages.get("/admin/users")).status == 200  # the session survived
    for task in TASKS:
        assert_logged_once_each(caplog, task)
    assert_no_traceback(caplog)
    async with core.pool.acquire() as conn:
        # The fetch served during the outage was recorded afterwards.
        seen_after = await conn.fetchval(
            "SELECT last_fetch_at FROM devices WHERE mac = $1", YEALINK.mac
        )
        assert seen_after > seen_before
        # The push worker listens again (its LISTEN connection runs nothing else).
        listening = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query ILIKE 'LISTEN %provisioner_push%'"
        )
        assert listening == 1

    # --- 3. a change acknowledged just before an outage is pushed after it, once --------------
    # The job waits 3 s for more changes (instead of 0.3 s): long enough to stop the database
    # before the worker takes it up.
    monkeypatch.setattr(store, "PUSH_DEBOUNCE", 3.0)
    monkeypatch.setattr(store, "PUSH_MAX_WAIT", 3.0)
    caplog.clear()
    changed = await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    [job_id] = changed["push_jobs"]
    await cluster.stop()
    await parts_are(service, "down", ("push_worker", "device_cache"))
    await cluster.start()
    await parts_are(service, "up", ("database", "push_worker", "device_cache"))
    await notifies_received(phone, 2)
    # The device cache follows changes again: the phone gets the new PIN.
    config = await fetch_config(service, YEALINK)
    assert NEW_PIN in config
    assert PIN not in config
    job = await job_reaches(api, YEALINK.mac, job_id, "fetched")
    assert job["attempts"] == 1
    assert await phone.exit_code() == 0, phone.errors()
    assert len(phone.transactions()) == 2  # the setup and the PIN change: no duplicate
    for task in ("push worker", "device cache"):
        assert_logged_once_each(caplog, task)
    assert_no_traceback(caplog)


async def test_interrupted_job_is_handed_back_when_the_database_returns(
    cluster: Cluster,
    fault_env: dict[str, str],
    aiohttp_client: Any,
    start_sipp: StartSipp,
    workers: Workers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A phone that never answers, and the database gone while the worker waits for it: the
    attempt's outcome cannot be written, so the job is handed back when the database returns
    (not after its 60 s lease), and retried until it fails for good."""
    caplog.set_level(logging.DEBUG, logger="provisioner.push")
    service: Client = await aiohttp_client(create_app(Settings.from_env(fault_env)))
    api = await bootstrap_admin(service)
    silent = await start_sipp("notify_silent.xml", calls=2, pause_ms=60_000)  # never answers
    await provision(api, Pbx(service), YEALINK, silent.port)
    [job] = await jobs_of(api, YEALINK.mac)
    worker = workers.start(service.app[CORE], "worker-a", max_attempts=2)  # NOTIFY timeout 2 s
    await notifies_received(silent, 1)  # attempt 1 waits for an answer

    await cluster.stop()

    async def interrupted() -> bool:
        workers.alive()
        return any(f"push job {job['id']} interrupted" in r.getMessage() for r in caplog.records)

    await eventually(interrupted, "the attempt ends while the database is away")
    assert worker.outage.state == "down"
    await cluster.start()

    # Attempt 2 starts once the database is back: the phone stays silent, so it fails for good.
    await notifies_received(silent, 2)
    final = await job_reaches(api, YEALINK.mac, job["id"], "failed")
    assert final["attempts"] == 2
    assert final["last_error"] == f"no answer from 127.0.0.1:{silent.port} within 2 s"
    assert len(silent.transactions()) == 2  # one NOTIFY per attempt, none repeated
    assert worker.outage.state == "up"
    assert_logged_once_each(caplog, "push worker")


async def test_worker_command_waits_for_the_database_and_rides_out_a_restart(
    cluster: Cluster,
    fault_env: dict[str, str],
    aiohttp_client: Any,
    start_sipp: StartSipp,
    tmp_path: Path,
) -> None:
    service: Client = await aiohttp_client(create_app(Settings.from_env(fault_env)))
    api = await bootstrap_admin(service)
    phone = await start_sipp(YEALINK.scenario, calls=2)
    await provision(api, Pbx(service), YEALINK, phone.port)
    [setup_job] = await jobs_of(api, YEALINK.mac)

    # `provisioner worker` starts while the database is down.
    await cluster.stop()
    key_file = service.app[CORE].settings.secret_key_file
    env = {
        **clean_environ(),
        **fault_env,
        "PROVISIONER_DATA_DIR": str(tmp_path / "worker"),
        "PROVISIONER_SECRET_KEY_FILE": str(key_file),
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "provisioner", "worker"),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )

    def logged(text: str, count: int = 1) -> Any:
        async def probe() -> bool:
            if process.returncode is not None:
                pytest.fail(f"worker exited with {process.returncode}: {log_path.read_text()}")
            return log_path.read_text().count(text) >= count

        return eventually(probe, f"{count} x {text!r} in the worker's log")

    try:
        await logged(LOST.format("push worker"))
        await cluster.start()
        # It starts, takes up the job and the phone is told.
        await notifies_received(phone, 1)
        await fetch_config(service, YEALINK)
        await job_reaches(api, YEALINK.mac, setup_job["id"], "fetched")

        # The database restarts under the running worker.
        await cluster.stop()
        await logged(LOST.format("push worker"), 2)
        await cluster.start()
        await logged(BACK.format("push worker"), 2)
        # The phone fetches from this service: once its cache follows changes again.
        await parts_are(service, "up", ("database", "device_cache"))
        changed = await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
        [job_id] = changed["push_jobs"]
        await notifies_received(phone, 2)
        assert NEW_PIN in await fetch_config(service, YEALINK)
        await job_reaches(api, YEALINK.mac, job_id, "fetched")

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            assert await process.wait() == 0, log_path.read_text()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert await phone.exit_code() == 0, phone.errors()
    assert len(phone.transactions()) == 2
    text = log_path.read_text()
    assert "Traceback" not in text, text
    changes = [line for line in text.splitlines() if " push worker: database " in line]
    assert len(changes) == 4, text  # lost and back at start, lost and back under it
    assert [" WARNING " in line for line in changes] == [True, False, True, False], text


async def test_api_answers_503_not_500_for_every_request_during_an_outage(
    cluster: Cluster,
    fault_env: dict[str, str],
    aiohttp_client: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many requests at once while the database is away: each gets a 503, none a 500, and the
    log does not grow by a warning per request."""
    service: Client = await aiohttp_client(create_app(Settings.from_env(fault_env)))
    api = await bootstrap_admin(service)
    boot_user, boot_password = await provisioning.bootstrap_credential(service.app[CORE])
    await cluster.stop()
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="provisioner.web.errors")
    requests = [("GET", "/users"), ("GET", "/devices"), ("GET", "/audit"), ("GET", "/me")]
    results = await asyncio.gather(
        *(api.call(method, path) for _ in range(25) for method, path in requests),
        Api(service).login("admin", ADMIN_PASSWORD),
    )
    assert {(status, body["error"]["code"]) for status, body in results} == {
        (503, "database_unavailable")
    }
    # A new phone (plug-and-play discovery asks the database about it) is told the same.
    new_phone = {
        "User-Agent": "Yealink SIP-T54W 96.86.0.70",
        "Authorization": "Basic "
        + base64.b64encode(f"{boot_user}:{boot_password}".encode()).decode(),
    }
    refusals = METRICS.fetch_refusals.values
    key = (("reason", "database_unavailable"),)
    before = refusals.get(key, 0.0)
    async with service.get("/provisioning/001565cc0001.cfg", headers=new_phone) as response:
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "database_unavailable"
    # Counted under its reason (read in-process: /metrics itself needs the database).
    assert refusals.get(key, 0.0) - before == 1
    refusals = [r for r in caplog.records if "refused: database unavailable" in r.getMessage()]
    assert len(refusals) == len(results)  # one line each, at DEBUG but for one a minute
    assert len([r for r in refusals if r.levelno == logging.WARNING]) <= 1
    assert_no_traceback(caplog)
    await cluster.start()
    status, _ = await api.call("GET", "/users")
    assert status == 200


async def test_serve_waits_for_a_database_that_is_down_at_its_start(
    cluster: Cluster, fault_env: dict[str, str], start_server: StartServer
) -> None:
    """`provisioner serve` on an external database that is not up yet (both starting at boot):
    it waits, logging that once, and once the database is there migrates it and serves."""
    empty = f"empty_{secrets.token_hex(4)}"  # not migrated: serve must do it after the wait
    admin = await asyncpg.connect(cluster.url("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{empty}"')
    finally:
        await admin.close()
    await cluster.stop()
    server = start_server(
        {**clean_environ(), **fault_env, "PROVISIONER_DATABASE_URL": cluster.url(empty)}
    )

    async def logged(text: str) -> bool:
        if server.process.poll() is not None:
            pytest.fail(f"serve exited with {server.process.returncode}\n{server.describe()}")
        return text in server.stderr

    await eventually(lambda: logged("serve: database unavailable ("), "serve logs the wait")
    await cluster.start()
    await server.wait_healthy()
    status, session = await server.login("admin", ADMIN_PASSWORD)
    assert status == 200, session
    assert await server.terminate() == 0, server.describe()

    waits = [line for line in server.stderr.splitlines() if " serve: database " in line]
    assert len(waits) == 2, server.describe()
    assert " WARNING " in waits[0]
    assert waits[0].endswith("), waiting for it"), waits
    assert " INFO " in waits[1]
    assert waits[1].endswith("serve: database reachable; starting"), waits
    assert "Traceback" not in server.stderr, server.describe()
    conn = await asyncpg.connect(cluster.url(empty))
    try:
        applied = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await conn.close()
    assert applied == len(load_migrations())

"""``provisioner serve``'s push worker in a child process (:mod:`provisioner.workerprocess`).

The real child (``python -m provisioner worker``) against the test database and a sipp phone:
it pushes, ``/healthz`` and ``/metrics`` of the parent show it, it is started again when it
dies and stopped with the application.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from provisioner.app import create_app
from provisioner.metrics import Metrics
from provisioner.settings import Settings
from provisioner.web.keys import WORKER_PROCESS
from provisioner.workerprocess import WorkerProcess
from tests.conftest import bootstrap_admin, free_port
from tests.test_cli import StartServer, start_server  # noqa: F401 -- fixture used by name
from tests.test_push import (  # noqa: F401 -- fixtures used by name
    YEALINK,
    Pbx,
    StartSipp,
    clean_environ,
    eventually,
    jobs_of,
    notifies_received,
    provision,
    push_env,
    start_sipp,
)

pytestmark = pytest.mark.usefixtures("db")


@pytest.fixture
def child_env(push_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:  # noqa: F811
    """The child inherits this process's environment: the test's settings go there."""
    for name, value in push_env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env(push_env)


async def health(client: Any) -> dict[str, Any]:
    async with client.get("/healthz") as response:
        body: dict[str, Any] = await response.json()
        return body


async def worker_state(client: Any, state: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await health(client)
        return body if body["parts"].get("push_worker") == state else None

    return await eventually(probe, f"/healthz says the push worker is {state}")


def notified_ok(metrics: str) -> float:
    found = re.search(r'^provisioner_notify_attempts_total\{result="ok"\} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_the_worker_process_pushes_and_the_parent_shows_its_health_and_metrics(
    child_env: Settings,
    aiohttp_client: Any,
    start_sipp: StartSipp,  # noqa: F811
) -> None:
    client = await aiohttp_client(create_app(child_env, worker_process=True))
    child = client.app[WORKER_PROCESS]
    await worker_state(client, "up")
    assert child.process is not None
    assert child.process.returncode is None
    assert child.process.pid != os.getpid()

    async with client.get("/metrics") as response:
        before = notified_ok(await response.text())
    api = await bootstrap_admin(client)
    phone = await start_sipp(YEALINK.scenario)
    await provision(api, Pbx(client), YEALINK, phone.port)
    await notifies_received(phone, 1)  # from the child: this process runs no worker

    async def counted() -> bool:
        async with client.get("/metrics") as response:
            return notified_ok(await response.text()) == before + 1

    await eventually(counted, "the child's notification in the parent's /metrics")
    [job] = await jobs_of(api, YEALINK.mac)
    assert job["state"] in ("notified", "fetched")

    process = child.process
    await client.close()  # the application's cleanup stops the child, gracefully
    assert process.returncode == 0
    assert child.state == "stopped"


async def test_a_worker_process_that_dies_is_started_again(
    child_env: Settings, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="provisioner.workerprocess")
    client = await aiohttp_client(create_app(child_env, worker_process=True))
    child = client.app[WORKER_PROCESS]
    await worker_state(client, "up")
    assert child.process is not None
    first = child.process
    first.send_signal(signal.SIGKILL)

    body = await worker_state(client, "stopped")
    assert body["status"] == "unavailable"
    assert body["error"]["code"] == "part_unavailable"
    await worker_state(client, "up")
    assert child.process is not first
    said = [r.getMessage() for r in caplog.records if r.name == "provisioner.workerprocess"]
    assert said == [f"push worker process {first.pid} exited with -9; restarting"]


async def test_a_worker_process_without_its_database_reports_it_down(
    child_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child waits for the database at its start, as ``provisioner worker`` does, and
    says so: ``/healthz`` shows the worker down, not merely starting."""
    child = WorkerProcess(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    child.start()
    try:

        async def down() -> bool:
            return child.state == "down"

        await eventually(down, "the child reports its database down")
        assert child.process is not None
        assert child.process.returncode is None
    finally:
        await child.stop()
    assert child.state == "stopped"


async def test_reports_not_understood_are_logged_and_the_rest_taken_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="provisioner.workerprocess")
    child = WorkerProcess("postgresql://unused")
    reports = asyncio.StreamReader()
    for line in (b"not json\n", b'{"state": "down"}\n', b'{"metrics": {"notify_seconds": 1}}\n'):
        reports.feed_data(line)
    reports.feed_eof()
    await child.follow(reports)
    assert child.state == "down"
    said = [r.getMessage() for r in caplog.records if r.name == "provisioner.workerprocess"]
    assert said == [
        "push worker process: a report not understood: b'not json\\n'",
        'push worker process: a report not understood: b\'{"metrics": {"notify_seconds": 1}}\\n\'',
    ]


def test_push_metrics_gained_in_one_process_are_added_in_another() -> None:
    child, parent = Metrics(), Metrics()
    parent.notify_attempts.inc(result="ok")  # the parent's own count stays
    sent = child.push_snapshot()
    assert child.push_increments(sent, child.push_snapshot()) == {}

    child.notify_attempts.inc(result="ok")
    child.notify_attempts.inc(result="failed")
    child.jobs_finished.inc(state="notified")
    child.notify_seconds.observe(0.02)
    now = child.push_snapshot()
    parent.add_push_increments(child.push_increments(sent, now))
    child.notify_attempts.inc(result="ok")
    child.notify_seconds.observe(3.0)
    parent.add_push_increments(child.push_increments(now, child.push_snapshot()))

    assert parent.notify_attempts.values == {(("result", "ok"),): 3.0, (("result", "failed"),): 1.0}
    assert parent.jobs_finished.values == {(("state", "notified"),): 1.0}
    assert parent.notify_seconds.count == 2
    assert parent.notify_seconds.total == pytest.approx(3.02)
    assert parent.notify_seconds.counts == child.notify_seconds.counts


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def command_of(pid: int) -> str:
    """The provisioner command a child runs (``python -m provisioner <command>``)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode()


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's reaper may be slow or absent in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_the_processes_serve_started_die_with_it(
    push_env: dict[str, str],  # noqa: F811
    start_server: StartServer,  # noqa: F811 -- the imported fixture
) -> None:
    """``serve`` killed with SIGKILL cannot stop its children: the kernel does (a worker left
    running would go on taking jobs beside the successor's; phones' processes would serve on)."""
    env = {
        **clean_environ(),
        **push_env,
        "PROVISIONER_PHONES_LISTEN": f"127.0.0.1:{free_port()}",
        "PROVISIONER_PHONES_PROCESSES": "2",
    }
    server = start_server(env)
    await server.wait_healthy()
    started = children_of(server.process.pid)
    commands = sorted(command_of(pid) for pid in started)
    assert commands == ["phones-server", "worker"]

    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)

    async def all_gone() -> bool:
        return not any(running(pid) for pid in started)

    await eventually(all_gone, "the children of the killed serve gone")

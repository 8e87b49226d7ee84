"""Push jobs end to end: real service, real PostgreSQL, sipp playing the phone.

A phone is set up through the JSON API, registers through the PBX's ``registered`` hook (its
contact points at a sipp UAS on loopback), and a change makes the push worker send it a SIP
NOTIFY. When sipp has received the NOTIFY, the test fetches the config as the phone would; the
fetch record completes the job (``notified`` → ``fetched``).

Timings: in-process workers get a 2 s NOTIFY timeout and a 0.2 s backoff base, so retries take
seconds, not minutes. Everything asynchronous (job states, sipp's message log, process exits) is
awaited by polling the real condition with a deadline, never by sleeping a fixed time. sipp must
be installed (Debian package ``sip-tester``); without it these tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner import store
from provisioner.app import create_app
from provisioner.core import Core, open_core
from provisioner.devices_service import sip_account_name
from provisioner.push import Backoff, PushWorker
from provisioner.settings import Settings
from provisioner.sip import SipNotifier
from provisioner.vault import device_credential_purpose, sip_password_purpose
from provisioner.web.hooks import SIGNATURE_HEADER, sign
from provisioner.web.keys import CORE, PHONES
from tests.conftest import Api, ManualClock, bootstrap_admin

T = TypeVar("T")
Client = TestClient[Any, Any]

SCENARIOS = Path(__file__).parent / "sipp"
HOOK_SECRET = "pbx-shared-secret-for-push-tests"
BOOT_USER = "boot"
BOOT_PASSWORD = "Bootstrap-Secret-7f3a"
REGISTRAR = "pbx.example.net"
PIN = "480913"
NEW_PIN = "739251"
DEADLINE = 15.0
NOTIFY_TIMEOUT = 2.0
"""In-process workers' SipNotifier timeout (the product's default is Timer F, 32 s)."""


@dataclass(frozen=True)
class Model:
    """A phone as the service sees it and the sipp scenario that plays it."""

    vendor: str
    model: str
    mac: str
    user_agent: str
    line_file: str
    """Its personal file: the line, the PIN; fetching it completes a push."""
    event: str
    scenario: str
    """Answers 200 only to a NOTIFY with exactly ``event``."""


YEALINK = Model(
    vendor="yealink",
    model="T54W",
    mac="001565a1b2c3",
    user_agent="Yealink SIP-T54W 96.86.0.70 00:15:65:a1:b2:c3",
    line_file="001565a1b2c3.cfg",
    event="check-sync;reboot=false",
    scenario="notify_ok.xml",
)
SNOM = Model(
    vendor="snom",
    model="D785",
    mac="000413a1b2c5",
    user_agent="Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IFX-05.01.12 000413A1B2C5)",
    line_file="000413A1B2C5.xml",
    event="check-sync;reboot=false",
    scenario="notify_ok.xml",
)


# --- polling -----------------------------------------------------------------------------------


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    what: str,
    *,
    within: float = DEADLINE,
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what} (last: {result!r})")
        await asyncio.sleep(interval)  # the polling interval, not a synchronisation


# --- sipp as the phone -------------------------------------------------------------------------


@dataclass(frozen=True)
class Traced:
    """One message from sipp's ``-trace_msg`` log."""

    received: bool
    start_line: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) == 1, f"{name}: {values} in {self.start_line}"
        return values[0]

    @property
    def request_user(self) -> str:
        """The user part of a request's Request-URI."""
        match = re.fullmatch(r"\w+ sips?:([^@]+)@\S+ SIP/2\.0", self.start_line)
        assert match, self.start_line
        return match[1]


#: A SIP message's first line: a request line or a status line.
_START_LINE = re.compile(r"(?:[A-Z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3} .*)")


def parse_trace(text: str) -> list[Traced]:
    """Complete entries only: sipp may be writing the last one while we read.

    Under load one entry can hold two messages (a retransmission read with the datagram before
    it, seen once in a run of 1,000 NOTIFYs): each start line begins a message of its own."""
    messages = []
    for entry in re.split(r"^-{20,} (?=\d{4}-)", text, flags=re.MULTILINE)[1:]:
        lines = [line for line in entry.split("\n")[2:] if line.strip()]
        if not lines or not entry.endswith("\n\n"):
            continue
        received = "received" in entry.split("\n", 2)[1]
        starts = [i for i, line in enumerate(lines) if _START_LINE.fullmatch(line)] or [0]
        for begin, end in zip(starts, [*starts[1:], len(lines)], strict=True):
            messages.append(
                Traced(
                    received=received,
                    start_line=lines[begin],
                    headers=tuple(
                        (name.strip(), value.strip())
                        for name, _, value in (
                            line.partition(":") for line in lines[begin + 1 : end]
                        )
                    ),
                )
            )
    return messages


def test_a_trace_entry_holding_two_messages_is_read_as_two() -> None:
    """The trace parser itself: an entry with a NOTIFY and its retransmission gives both
    (counted once as a transaction), a reply entry its own message, a torn last entry none."""
    notify = (
        "NOTIFY sip:201@127.0.0.1:5070 SIP/2.0\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\nCall-ID: c1\nContent-Length: 0\n"
    )
    rule = "-" * 47
    text = (
        f"{rule} 2026-12-08 00:00:00.000000\nUDP message received [300] bytes :\n\n"
        f"{notify}\n{notify}\n\n"
        f"{rule} 2026-12-08 00:00:00.100000\nUDP message sent [90] bytes :\n\n"
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc\n\n\n"
        f"{rule} 2026-12-08 00:00:00.200000\nUDP message received [300] bytes :\n\n{notify}"
    )
    messages = parse_trace(text)
    assert [(m.received, m.start_line) for m in messages] == [
        (True, "NOTIFY sip:201@127.0.0.1:5070 SIP/2.0"),
        (True, "NOTIFY sip:201@127.0.0.1:5070 SIP/2.0"),
        (False, "SIP/2.0 200 OK"),
    ]
    assert {m.header("Via") for m in messages} == {"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc"}
    assert messages[0].header("Call-ID") == "c1"


@dataclass
class Sipp:
    """A running sipp UAS and the files it writes."""

    process: asyncio.subprocess.Process
    port: int
    directory: Path

    def messages(self) -> list[Traced]:
        log = self.directory / "messages.log"
        return parse_trace(log.read_text(errors="replace")) if log.exists() else []

    def notifies(self) -> list[Traced]:
        """Every NOTIFY received, retransmissions included."""
        return [m for m in self.messages() if m.received and m.start_line.startswith("NOTIFY ")]

    def transactions(self) -> list[Traced]:
        """The NOTIFYs received without retransmissions (one per top Via branch)."""
        seen: dict[str, Traced] = {}
        for message in self.notifies():
            seen.setdefault(message.header("Via"), message)
        return list(seen.values())

    async def exit_code(self, within: float = DEADLINE) -> int:
        """Wait for sipp to finish its calls (``-m``): 0 when every call succeeded."""
        try:
            async with asyncio.timeout(within):
                return await self.process.wait()
        except TimeoutError:
            pytest.fail(f"sipp still running after {within} s; errors: {self.errors()}")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def errors(self) -> str:
        parts = [self.directory / "errors.log", self.directory / "stderr.log"]
        return " | ".join(path.read_text().strip() for path in parts if path.exists())


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def udp_bound(port: int) -> bool:
    """Whether a UDP socket is bound to ``port`` (from /proc/net/udp)."""
    table = Path("/proc/net/udp").read_text()
    return any(
        line.split()[1].endswith(f":{port:04X}") for line in table.splitlines()[1:] if line.strip()
    )


StartSipp = Callable[..., Awaitable[Sipp]]


@pytest.fixture
async def start_sipp(tmp_path: Path) -> AsyncIterator[StartSipp]:
    """Start sipp with a scenario (on ``port`` or a free one); wait until its socket is bound."""
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp is not installed: install the Debian package sip-tester")
    started: list[Sipp] = []

    async def start(
        scenario: str,
        keys: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        calls: int = 1,
        pause_ms: int = 0,
    ) -> Sipp:
        """``keys``: values for the scenario's ``[key]`` fields (sipp's ``-key``)."""
        directory = tmp_path / f"sipp{len(started)}"
        directory.mkdir()
        port = port or free_udp_port()
        command = [
            *(sipp, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port)),
            *("-t", "u1", "-m", str(calls), "-nostdin", "-timeout", "90s", "-d", str(pause_ms)),
            *(arg for key, value in (keys or {}).items() for arg in ("-key", key, value)),
            *("-trace_msg", "-message_file", str(directory / "messages.log")),
            *("-trace_err", "-error_file", str(directory / "errors.log")),
        ]
        with (directory / "stderr.log").open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        phone = Sipp(process, port, directory)
        started.append(phone)

        async def bound() -> bool:
            if process.returncode is not None:
                pytest.fail(f"sipp exited with {process.returncode}: {phone.errors()}")
            return udp_bound(port)

        await eventually(bound, f"sipp listens on UDP {port}", within=5, interval=0.01)
        return phone

    yield start
    for phone in started:
        await phone.stop()


# --- the service, the PBX, workers -------------------------------------------------------------


@pytest.fixture
def push_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {
        **settings_env,
        "PROVISIONER_HOOK_SECRET": HOOK_SECRET,
        "PROVISIONER_PROVISIONING_USER": BOOT_USER,
        "PROVISIONER_PROVISIONING_PASSWORD": BOOT_PASSWORD,
    }


StartService = Callable[..., Awaitable[Client]]


@pytest.fixture
async def start_service(
    db: asyncpg.Connection, push_env: dict[str, str], aiohttp_client: Any
) -> StartService:
    """The real application; ``worker=True`` runs the push worker ``provisioner serve`` runs."""

    async def start(*, worker: bool = False) -> Client:
        client: Client = await aiohttp_client(
            create_app(Settings.from_env(push_env), worker=worker)
        )
        return client

    return start


@dataclass
class Workers:
    """In-process push workers with test-sized timings (see the module docstring)."""

    running: list[tuple[PushWorker, asyncio.Task[None], SipNotifier]] = field(default_factory=list)

    def start(self, core: Core, name: str, **options: Any) -> PushWorker:
        notifier = SipNotifier(timeout=NOTIFY_TIMEOUT)
        settings: dict[str, Any] = {"backoff": Backoff(base=0.2, cap=1.0), "max_attempts": 3}
        worker = PushWorker(core, notifier, name=name, **{**settings, **options})
        self.running.append((worker, asyncio.create_task(worker.run()), notifier))
        return worker

    def alive(self) -> None:
        for worker, task, _ in self.running:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"worker {worker.name} died") from task.exception()

    async def stop(self) -> None:
        """Cancel the workers (they release what they hold) and close their sockets."""
        running, self.running = self.running, []
        for _, task, _ in running:
            task.cancel()
        for _, task, notifier in running:
            await asyncio.gather(task, return_exceptions=True)
            await notifier.close()


@pytest.fixture
async def workers(aiohttp_client: Any) -> AsyncIterator[Workers]:
    """Set up after the test client fixture, so workers stop before the app's pool closes."""
    started = Workers()
    yield started
    await started.stop()


class Pbx:
    """Signs hook calls as the PBX does, each a distinct second in the past (no replays)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.calls = 0
        self.started = int(time.time())

    async def call(self, hook: str, body: Any) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        self.calls += 1
        headers = {SIGNATURE_HEADER: sign(HOOK_SECRET, self.started - self.calls, raw)}
        async with self.client.post(f"/hooks/pbx/{hook}", data=raw, headers=headers) as response:
            return response.status, await response.json()


# --- helpers -----------------------------------------------------------------------------------


async def call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, data = await api.call(method, path, body)
    assert status == expect, (method, path, data)
    return data


async def provision(
    api: Api, pbx: Pbx, model: Model, port: int, *, username: str = "alice", extension: str = "201"
) -> str:
    """Set the phone up with ``username`` on line 1 and register it at ``port``; its contact."""
    await call(api, "PUT", "/sites/default", {"registrar_host": REGISTRAR})
    user = {"username": username, "display_name": username.title(), "extension": extension}
    await call(api, "POST", "/users", user, expect=201)
    await call(api, "PUT", f"/users/{username}/pin", {"pin": PIN})
    device = {"mac": model.mac, "vendor": model.vendor, "model": model.model}
    created = await call(api, "POST", "/devices", device, expect=201)
    assert created["render_error"] is None, created
    assignments = await call(
        api, "PUT", f"/devices/{model.mac}/assignments", [{"slot": 1, "username": username}]
    )
    sip_user = assignments[0]["sip_user"]
    assert sip_user == sip_account_name(extension, model.mac, 1)
    # The phone registers with its line's account; the PBX tells us where it is. No "mac": the
    # service finds the device by the MAC in the User-Agent.
    contact = f"sip:{sip_user}@127.0.0.1:{port}"
    registered = {"extension": extension, "contact": contact, "user_agent": model.user_agent}
    assert await pbx.call("registered", registered) == (200, {"device": model.mac})
    return contact


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def fetch_config(client: Client, model: Model) -> str:
    """Fetch the phone's personal file as the phone does after a NOTIFY (bootstrap credential)."""
    headers = {"User-Agent": model.user_agent, "Authorization": basic(BOOT_USER, BOOT_PASSWORD)}
    async with client.get(f"/provisioning/{model.line_file}", headers=headers) as response:
        body = await response.text()
        assert response.status == 200, body
        return body


async def jobs_of(api: Api, mac: str) -> list[dict[str, Any]]:
    data = await call(api, "GET", f"/push-jobs?device={mac}")
    return list(data["jobs"])


async def job_reaches(
    api: Api, mac: str, job_id: int, state: str, *, within: float = DEADLINE
) -> dict[str, Any]:
    """Poll GET /api/v1/push-jobs until job ``job_id`` is in ``state``; the job."""
    last: dict[str, Any] = {}

    async def probe() -> dict[str, Any] | None:
        nonlocal last
        [last] = [j for j in await jobs_of(api, mac) if j["id"] == job_id]
        return last if last["state"] == state else None

    try:
        return await eventually(probe, f"job {job_id} {state}", within=within)
    except AssertionError:
        raise AssertionError(f"job {job_id} not {state} within {within} s: {last}") from None


async def notifies_received(phone: Sipp, count: int, *, within: float = DEADLINE) -> list[Traced]:
    """Wait until sipp has received ``count`` NOTIFY transactions; them."""

    async def probe() -> list[Traced] | None:
        got = phone.transactions()
        return got if len(got) >= count else None

    return await eventually(probe, f"{count} NOTIFY(s) at sipp; {phone.errors()}", within=within)


async def read_metrics(client: Client) -> dict[str, float]:
    async with client.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def increase(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


NOTIFY_OK = 'provisioner_notify_attempts_total{result="ok"}'
NOTIFY_FAILED = 'provisioner_notify_attempts_total{result="failed"}'


def clean_environ() -> dict[str, str]:
    """The test process's environment without any PROVISIONER_* setting of the developer's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}


def subprocess_env(push_env: dict[str, str], client: Client, tmp_path: Path) -> dict[str, str]:
    """Another process of the same installation: same database and secret key, own data dir."""
    key_file = client.app[CORE].settings.secret_key_file
    assert key_file.exists()
    return {
        **clean_environ(),
        **push_env,
        "PROVISIONER_DATA_DIR": str(tmp_path / "other-process"),
        "PROVISIONER_SECRET_KEY_FILE": str(key_file),
    }


# --- 1. a PIN change reaches the phone ---------------------------------------------------------


@pytest.mark.parametrize("model", [YEALINK, SNOM], ids=lambda m: f"{m.vendor}-{m.model}")
async def test_pin_change_is_pushed_and_fetched(
    start_service: StartService, start_sipp: StartSipp, model: Model
) -> None:
    service = await start_service(worker=True)  # the worker `serve` runs: default notifier
    api = await bootstrap_admin(service)
    before = await read_metrics(service)
    phone = await start_sipp(model.scenario, calls=2)

    contact = await provision(api, Pbx(service), model, phone.port)

    # The assignment made a push job: the phone is told, fetches, and the job is done.
    [setup_job] = await jobs_of(api, model.mac)
    assert setup_job["reason"] == "device.assign"
    await notifies_received(phone, 1)
    assert PIN in await fetch_config(service, model)
    await job_reaches(api, model.mac, setup_job["id"], "fetched")

    # The PIN change: one job, one NOTIFY with the vendor's event, the new PIN once fetched.
    changed = await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    [job_id] = changed["push_jobs"]
    assert job_id != setup_job["id"]
    _, notify = await notifies_received(phone, 2)
    assert notify.start_line == f"NOTIFY {contact} SIP/2.0"
    assert notify.header("Event") == model.event
    assert notify.header("Subscription-State") == "terminated"
    config = await fetch_config(service, model)
    assert NEW_PIN in config
    assert PIN not in config
    job = await job_reaches(api, model.mac, job_id, "fetched")
    assert (job["reason"], job["attempts"], job["last_error"]) == ("pin.change", 1, None)

    # sipp answered both with 200 (it fails a call whose Event is not the vendor's).
    assert await phone.exit_code() == 0, phone.errors()
    assert len(phone.transactions()) == 2

    # 6. /metrics: jobs by state in the database, this process's notification attempts.
    after = await read_metrics(service)
    assert after['provisioner_push_jobs{state="fetched"}'] == 2
    assert after['provisioner_push_jobs{state="pending"}'] == 0
    assert after['provisioner_push_jobs{state="notified"}'] == 0
    assert increase(before, after, NOTIFY_OK) == 2
    assert increase(before, after, "provisioner_notify_seconds_count") == 2


# --- 2. the phone is down, then back -----------------------------------------------------------


async def test_unreachable_phone_is_retried_then_fails_and_recovers(
    start_service: StartService,
    start_sipp: StartSipp,
    workers: Workers,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="provisioner.push")
    service = await start_service()
    api = await bootstrap_admin(service)
    port = free_udp_port()  # nothing listens here (yet)
    await provision(api, Pbx(service), YEALINK, port)
    [job] = await jobs_of(api, YEALINK.mac)
    before = await read_metrics(service)

    workers.start(service.app[CORE], "worker-a")
    history: list[asyncpg.Record] = []

    async def failed() -> asyncpg.Record | None:
        workers.alive()
        row = await db.fetchrow(
            """SELECT state, attempts, not_before, lease_until, last_error, updated_at
               FROM push_jobs WHERE id = $1""",
            job["id"],
        )
        assert row is not None
        history.append(row)
        return row if row["state"] == "failed" else None

    # Three attempts of 2 s each, with 0.1-0.2 s and 0.2-0.4 s of backoff in between.
    final = await eventually(failed, "the job fails for good", within=20, interval=0.02)

    error = f"no answer from 127.0.0.1:{port} within 2 s"
    assert final["attempts"] == 3
    assert final["last_error"] == error
    assert final["lease_until"] is None
    assert {row["attempts"] for row in history} >= {1, 2, 3}
    # Between attempts the job waits, pending, with the error of the last attempt.
    waiting = [r for r in history if r["state"] == "pending" and r["lease_until"] is None]
    assert {r["attempts"] for r in waiting if r["last_error"] == error} >= {1, 2}
    # Every retry pushed not_before further out (the first value is the enqueue's debounce).
    moves = list(dict.fromkeys(row["not_before"] for row in history))
    assert len(moves) == 3, moves
    assert moves == sorted(moves)
    # A retry starts when its backoff is over, not at the worker's next poll (5 s).
    claims = {r["attempts"]: r for r in history if r["lease_until"] is not None}
    for attempt in (2, 3):
        late = claims[attempt]["updated_at"] - claims[attempt]["not_before"]
        assert late < timedelta(seconds=1), (attempt, late)
    shown = await job_reaches(api, YEALINK.mac, job["id"], "failed")
    assert (shown["attempts"], shown["last_error"]) == (3, error)
    # The operator's log: each retry with its delay, then the failure for good, at WARNING.
    retries = [
        r.getMessage()
        for r in caplog.records
        if r.name == "provisioner.push" and "; retry in " in r.getMessage()
    ]
    assert len(retries) == 2, retries
    for line in retries:
        assert re.fullmatch(
            rf"push job {job['id']} for {YEALINK.mac}: {re.escape(error)}; retry in 0\.[1-4] s",
            line,
        ), line
    [gave_up] = [r for r in caplog.records if "failed for good" in r.getMessage()]
    assert gave_up.levelno == logging.WARNING
    assert (
        gave_up.getMessage() == f"push job {job['id']} for {YEALINK.mac} failed for good: {error}"
    )

    # The phone is back (sipp on that port); an admin re-provisions it.
    phone = await start_sipp(YEALINK.scenario, port=port)
    again = await call(api, "POST", f"/devices/{YEALINK.mac}/reprovision", expect=202)
    [job_id] = again["jobs"]
    assert job_id != job["id"]  # a failed job is closed: a new one is opened
    await notifies_received(phone, 1)
    await job_reaches(api, YEALINK.mac, job_id, "notified")
    await fetch_config(service, YEALINK)
    fetched = await job_reaches(api, YEALINK.mac, job_id, "fetched")
    assert (fetched["attempts"], fetched["last_error"]) == (1, None)
    assert await phone.exit_code() == 0, phone.errors()

    after = await read_metrics(service)
    assert after['provisioner_push_jobs{state="failed"}'] == 1
    assert after['provisioner_push_jobs{state="fetched"}'] == 1
    assert increase(before, after, NOTIFY_FAILED) == 3
    assert increase(before, after, NOTIFY_OK) == 1


# --- 3. a worker dies holding a job ------------------------------------------------------------


async def test_job_of_a_killed_worker_is_taken_over_after_its_lease(
    start_service: StartService,
    start_sipp: StartSipp,
    workers: Workers,
    db: asyncpg.Connection,
    push_env: dict[str, str],
    tmp_path: Path,
) -> None:
    service = await start_service()
    api = await bootstrap_admin(service)
    silent = await start_sipp("notify_silent.xml", pause_ms=60_000)  # receives, never answers
    await provision(api, Pbx(service), YEALINK, silent.port)
    [job] = await jobs_of(api, YEALINK.mac)

    # `provisioner worker` claims the job and waits for the phone's answer (up to 32 s).
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "provisioner", "worker"),
            env=subprocess_env(push_env, service, tmp_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:

        async def held() -> asyncpg.Record | None:
            if process.returncode is not None:
                pytest.fail(f"worker exited with {process.returncode}: {log_path.read_text()}")
            row = await db.fetchrow(
                "SELECT state, worker, lease_until, attempts, now() AS now "
                "FROM push_jobs WHERE id = $1",
                job["id"],
            )
            return row if row and row["worker"] and silent.notifies() else None

        claim = await eventually(held, "the worker holds the job and has sent the NOTIFY")
        assert f":{process.pid}:" in claim["worker"]
        assert (claim["state"], claim["attempts"]) == ("pending", 1)
        assert claim["lease_until"] > claim["now"]
        process.kill()  # SIGKILL: no chance to release the job
        assert await process.wait() == -signal.SIGKILL
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    # The dead worker's lease still holds: nobody else may take the job yet.
    orphan = await db.fetchrow("SELECT * FROM push_jobs WHERE id = $1", job["id"])
    assert orphan is not None
    assert (orphan["state"], orphan["worker"]) == ("pending", claim["worker"])
    async with service.app[CORE].pool.acquire() as conn:
        taken = await store.claim_push_jobs(conn, worker="thief", limit=10, lease_seconds=60)
    assert taken == []

    # The lease (60 s, the default) runs out. Waiting for that would make this test a minute
    # long; moving lease_until into the past is the same state of the table the clock would
    # produce, and the takeover below goes through the normal claim query.
    await db.execute(
        "UPDATE push_jobs SET lease_until = now() - interval '1 second' "
        "WHERE id = $1 AND worker = $2",
        job["id"],
        claim["worker"],
    )
    # The phone answers this time.
    await silent.stop()
    phone = await start_sipp(YEALINK.scenario, port=silent.port)
    workers.start(service.app[CORE], "rescuer")

    notified = await job_reaches(api, YEALINK.mac, job["id"], "notified")
    assert notified["attempts"] == 2  # the killed worker's attempt counts
    row = await db.fetchrow("SELECT worker, lease_until FROM push_jobs WHERE id = $1", job["id"])
    assert row is not None
    assert (row["worker"], row["lease_until"]) == ("rescuer", None)
    assert len(await notifies_received(phone, 1)) == 1
    await fetch_config(service, YEALINK)
    await job_reaches(api, YEALINK.mac, job["id"], "fetched")
    assert await phone.exit_code() == 0, phone.errors()


# --- 4. two workers share 1,000 jobs -----------------------------------------------------------

BULK = 1000


async def seed_devices(conn: asyncpg.Connection, core: Core, port: int) -> list[str]:
    """BULK Yealink phones with one user each, registered at ``port``: rows written in bulk.

    Rows go straight into the tables (what the API would write, minus rendering and auditing),
    so setting up 1,000 phones takes a fraction of a second; the workers render them.
    """
    await conn.execute("UPDATE sites SET registrar_host = $1 WHERE name = 'default'", REGISTRAR)
    macs = [f"001565{i:06x}" for i in range(BULK)]
    extensions = [str(3000 + i) for i in range(BULK)]
    await conn.copy_records_to_table(
        "users",
        records=[(f"user{e}", f"User {e}", e) for e in extensions],
        columns=["username", "display_name", "extension"],
    )
    rows = await conn.fetch("SELECT extension, id FROM users WHERE username LIKE 'user%'")
    ids: dict[str, int] = {row["extension"]: row["id"] for row in rows}
    vault = core.vault
    accounts = [sip_account_name(e, mac, 1) for e, mac in zip(extensions, macs, strict=True)]
    await conn.copy_records_to_table(
        "devices",
        records=[
            (
                *(mac, "yealink", "T54W", "desk"),
                vault.encrypt(f"device-secret-{mac}", device_credential_purpose(mac)),
                f"sip:{account}@127.0.0.1:{port}",
                account,
            )
            for mac, account in zip(macs, accounts, strict=True)
        ],
        columns=[
            *("mac", "vendor", "model", "kind"),
            *("credential_encrypted", "sip_contact", "sip_contact_user"),
        ],
    )
    await conn.copy_records_to_table(
        "device_assignments",
        records=[
            (
                *(mac, 1, ids[e], account, account),
                vault.encrypt(f"line-secret-{mac}", sip_password_purpose(mac, 1)),
            )
            for mac, e, account in zip(macs, extensions, accounts, strict=True)
        ],
        columns=["mac", "slot", "user_id", "sip_user", "sip_auth_user", "sip_password_encrypted"],
    )
    return macs


async def test_two_workers_notify_each_of_1000_devices_once(
    start_sipp: StartSipp, workers: Workers, db: asyncpg.Connection, push_env: dict[str, str]
) -> None:
    phone = await start_sipp(YEALINK.scenario, calls=BULK)
    settings = Settings.from_env(push_env)
    # Two workers as two `provisioner worker` processes run them: each with its own pool. No
    # HTTP service is needed here; fetches are covered by the tests above.
    async with open_core(settings) as core_a, open_core(settings) as core_b:
        started = time.monotonic()
        macs = await seed_devices(db, core_a, phone.port)
        async with db.transaction():
            jobs = await store.enqueue_push_jobs(db, macs, "reprovision")
        assert len(jobs) == BULK
        seeded = time.monotonic()
        workers.start(core_a, "worker-a")
        workers.start(core_b, "worker-b")
        try:

            async def all_notified() -> dict[str, int] | None:
                workers.alive()
                states = await store.count_push_jobs_by_state(db, jobs)
                return states if states == {"notified": BULK} else None

            await eventually(all_notified, f"{BULK} jobs notified", within=60, interval=0.2)
        finally:
            await workers.stop()
    done = time.monotonic()
    print(f"seeding {seeded - started:.1f} s, render + notify {done - seeded:.1f} s")

    assert await phone.exit_code() == 0, phone.errors()
    # sipp's log: one NOTIFY transaction per device (a UDP retransmission of the same
    # transaction, same Via branch, is not a second notification), 1,000 in all.
    transactions = phone.transactions()
    per_user = Counter(m.request_user for m in transactions)
    accounts = {sip_account_name(str(3000 + i), mac, 1) for i, mac in enumerate(macs)}
    assert set(per_user) == accounts
    assert set(per_user.values()) == {1}
    assert len(transactions) == BULK
    assert len({m.header("Call-ID") for m in transactions}) == BULK

    rows = await db.fetch("SELECT worker, attempts, revision FROM push_jobs")
    assert {r["attempts"] for r in rows} == {1}  # each claimed exactly once
    assert {r["revision"] for r in rows} == {1}  # rendered by the worker, then notified
    by_worker = Counter(r["worker"] for r in rows)
    assert set(by_worker) == {"worker-a", "worker-b"}, by_worker


# --- 5. `provisioner reprovision --wait` follows the push ---------------------------------------


async def test_reprovision_command_follows_the_push_until_fetched(
    start_service: StartService,
    start_sipp: StartSipp,
    workers: Workers,
    push_env: dict[str, str],
    tmp_path: Path,
) -> None:
    service = await start_service()
    api = await bootstrap_admin(service)
    phone = await start_sipp(YEALINK.scenario, calls=2)
    await provision(api, Pbx(service), YEALINK, phone.port)
    [setup_job] = await jobs_of(api, YEALINK.mac)
    workers.start(service.app[CORE], "worker-a")
    await notifies_received(phone, 1)
    await fetch_config(service, YEALINK)
    await job_reaches(api, YEALINK.mac, setup_job["id"], "fetched")

    out_path, err_path = tmp_path / "reprovision.out", tmp_path / "reprovision.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "provisioner", "reprovision"),
            *("--device", YEALINK.mac.upper(), "--wait", "20"),
            env=subprocess_env(push_env, service, tmp_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        await notifies_received(phone, 2, within=20)  # the phone is told ...
        await fetch_config(service, YEALINK)  # ... and fetches
        async with asyncio.timeout(25):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    stdout, stderr = out_path.read_text(), err_path.read_text()
    assert code == 0, f"--- stdout\n{stdout}--- stderr\n{stderr}"
    assert stdout.splitlines()[-1] == "notified 0, fetched 1, failed 0, still pending 0"
    assert "queued 1 push job(s)" in stderr
    # stderr is no terminal: plain lines, one per change, with counts and rate.
    line = (
        r"^(\d+)/1 devices notified, held for a window or done \([\d.]+/s\) "
        r"\(fetched (\d), failed 0\)$"
    )
    progress = re.findall(line, stderr, re.M)
    assert progress, stderr
    assert progress[-1] == ("1", "1")
    assert len(progress) == len(set(progress)), "a line per change, not per poll"
    assert await phone.exit_code() == 0, phone.errors()
    [job, _] = await jobs_of(api, YEALINK.mac)  # newest first
    assert (job["reason"], job["state"]) == ("reprovision", "fetched")


# --- a fetch that lands while the worker records the notification -----------------------------


async def test_fetch_recorded_while_the_worker_finishes_still_completes_the_job(
    start_service: StartService,
    start_sipp: StartSipp,
    workers: Workers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The phone answers 200 and fetches at once; its fetch record is written after the worker
    read the device (no fetch yet) but before it stored ``notified``. The record then finds
    no notified job to complete, so the job itself must see the fetch when it is stored."""
    service = await start_service()
    api = await bootstrap_admin(service)
    phone = await start_sipp(YEALINK.scenario)
    await provision(api, Pbx(service), YEALINK, phone.port)
    [job] = await jobs_of(api, YEALINK.mac)
    finish = store.finish_push_jobs

    async def fetch_first(
        conn: Any, worker: str, outcomes: list[store.PushOutcome]
    ) -> dict[int, str]:
        if any(outcome.state == "notified" for outcome in outcomes):
            await fetch_config(service, YEALINK)
            await service.app[PHONES].recorder.flush()
        return await finish(conn, worker, outcomes)

    monkeypatch.setattr(store, "finish_push_jobs", fetch_first)
    workers.start(service.app[CORE], "worker-a")

    await job_reaches(api, YEALINK.mac, job["id"], "fetched", within=10)
    assert await phone.exit_code() == 0, phone.errors()


# --- a fetch folded into the device's last written one ------------------------------------------


async def test_a_push_of_a_revision_fetched_before_is_confirmed_though_the_refetch_is_folded(
    start_service: StartService, start_sipp: StartSipp
) -> None:
    """The device fetched revision R (written); then the worker notifies a job for R, and the
    device fetches R again within the minute: that fetch is folded, not written now. The job
    must still end ``fetched``, and at once (the recorder's clock never moves here, so a folded
    fetch would never be written): the worker stores it so, seeing the earlier fetch of R."""
    service = await start_service(worker=True)
    api = await bootstrap_admin(service)
    recorder = service.app[PHONES].recorder
    recorder.clock = ManualClock()
    phone = await start_sipp(YEALINK.scenario, calls=2)
    await provision(api, Pbx(service), YEALINK, phone.port)
    [setup_job] = await jobs_of(api, YEALINK.mac)
    await notifies_received(phone, 1)
    await fetch_config(service, YEALINK)
    await job_reaches(api, YEALINK.mac, setup_job["id"], "fetched")
    revision = (await call(api, "GET", f"/devices/{YEALINK.mac}"))["fetched_revision"]

    queued = await call(api, "POST", f"/devices/{YEALINK.mac}/reprovision", expect=202)
    [job_id] = queued["jobs"]
    await notifies_received(phone, 2)
    await fetch_config(service, YEALINK)
    written = recorder.written[YEALINK.mac]
    assert (written.revision, written.folded is not None) == (revision, True)
    assert recorder.fetches == []

    job = await job_reaches(api, YEALINK.mac, job_id, "fetched")
    assert job["reason"] == "reprovision"
    assert await phone.exit_code() == 0, phone.errors()


async def test_the_notify_answers_a_challenge_with_the_line_the_pbx_reported_registered(
    start_service: StartService, start_sipp: StartSipp, workers: Workers, db: asyncpg.Connection
) -> None:
    """Two lines; the PBX's ``registered`` hook names line 2's extension. The NOTIFY goes to that
    contact and answers the phone's digest challenge with line 2's account, not line 1's."""
    service = await start_service()
    api = await bootstrap_admin(service)
    pbx = Pbx(service)
    await provision(api, pbx, YEALINK, free_udp_port())
    bob = {"username": "bob", "display_name": "Bob", "extension": "202"}
    await call(api, "POST", "/users", bob, expect=201)
    lines = [{"slot": 1, "username": "alice"}, {"slot": 2, "username": "bob"}]
    await call(api, "PUT", f"/devices/{YEALINK.mac}/assignments", lines)
    row = await db.fetchrow(
        "SELECT sip_auth_user, sip_password_encrypted FROM device_assignments"
        " WHERE mac = $1 AND slot = 2",
        YEALINK.mac,
    )
    assert row is not None
    bob_password = service.app[CORE].vault.decrypt(
        row["sip_password_encrypted"], sip_password_purpose(YEALINK.mac, 2)
    )
    phone = await start_sipp(
        "notify_challenge_line.xml",
        {"line_user": row["sip_auth_user"], "line_password": bob_password},
    )
    contact = f"sip:{row['sip_auth_user']}@127.0.0.1:{phone.port}"
    registered = {"extension": "202", "contact": contact, "user_agent": YEALINK.user_agent}
    assert await pbx.call("registered", registered) == (200, {"device": YEALINK.mac})
    await db.execute("DELETE FROM push_jobs")  # the set-up's jobs went to line 1's old contact

    changed = await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    [job_id] = changed["push_jobs"]
    workers.start(service.app[CORE], "worker-lines")
    job = await job_reaches(api, YEALINK.mac, job_id, "notified")
    assert (job["attempts"], job["last_error"]) == (1, None)
    assert await phone.exit_code() == 0, phone.errors()  # a 200 only for line 2's credentials
    challenged, answered = phone.transactions()
    assert challenged.start_line == answered.start_line == f"NOTIFY {contact} SIP/2.0"
    assert f'username="{row["sip_auth_user"]}"' in answered.header("Authorization")


async def test_a_worker_stopped_while_a_phone_is_silent_hands_its_job_back_at_once(
    start_service: StartService, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A graceful stop waits up to 5 s for the NOTIFYs under way, then gives up on them, hands
    their jobs back (due at once for another worker, the attempt not counted) and closes its
    LISTEN connection."""
    caplog.set_level(logging.INFO, logger="provisioner.push")
    service = await start_service()
    api = await bootstrap_admin(service)
    await provision(api, Pbx(service), YEALINK, free_udp_port())  # nobody answers there
    [job] = await jobs_of(api, YEALINK.mac)
    listening = """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND query = 'LISTEN "provisioner_push"'"""
    assert await db.fetchval(listening) == 0
    notifier = SipNotifier(timeout=60.0)  # the NOTIFY waits for the silent phone
    worker = PushWorker(service.app[CORE], notifier, name="worker-stopping")
    task = asyncio.create_task(worker.run())
    try:

        async def notifying() -> bool:
            row = await db.fetchrow(
                "SELECT worker, lease_until, attempts FROM push_jobs WHERE id = $1", job["id"]
            )
            assert row is not None
            # Claimed, rendered, and its NOTIFY under way in a task of the worker's.
            return row["worker"] == "worker-stopping" and bool(worker._inflight)

        await eventually(notifying, "the worker notifies the silent phone")
        assert await db.fetchval(listening) == 1
        started = time.monotonic()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        took = time.monotonic() - started
    finally:
        await notifier.close()
    assert 4.5 <= took < 8.0, took
    row = await db.fetchrow(
        "SELECT state, worker, lease_until, attempts FROM push_jobs WHERE id = $1", job["id"]
    )
    assert row is not None
    assert (row["state"], row["worker"], row["lease_until"], row["attempts"]) == (
        "pending",
        None,
        None,
        0,
    )
    assert "push worker released 1 unfinished job(s)" in caplog.messages
    assert await db.fetchval(listening) == 0


async def test_a_device_without_lines_or_contact_fails_with_the_reason(
    start_service: StartService, workers: Workers
) -> None:
    """Nobody assigned, never registered: re-provisioning it ends in a failed job that says
    why (no contact), not in an internal error of picking a line's credentials."""
    service = await start_service()
    api = await bootstrap_admin(service)
    await call(api, "PUT", "/sites/default", {"registrar_host": REGISTRAR})
    device = {"mac": YEALINK.mac, "vendor": YEALINK.vendor, "model": YEALINK.model}
    await call(api, "POST", "/devices", device, expect=201)
    [job_id] = (await call(api, "POST", f"/devices/{YEALINK.mac}/reprovision", expect=202))["jobs"]
    workers.start(service.app[CORE], "worker-lineless", max_attempts=1)
    job = await job_reaches(api, YEALINK.mac, job_id, "failed")
    assert job["last_error"] == "the device has no registered SIP contact"

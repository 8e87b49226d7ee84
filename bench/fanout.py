"""PIN change fan-out: every user's PIN changed through the API at once; sipp counts NOTIFYs.

    python bench/fanout.py [--users 2000] [--bases 20] [--concurrency 100]

DESIGN.md target: 2,000 users, each with a desk phone and a DECT handset (20 bases): the last
NOTIFY leaves within 3 s of the first API request; each base is notified once per burst. Since
the PIN goes only where a vendor documents a user-PIN key (DESIGN, "PIN on devices"), bases that
carry none (Gigaset, Snom M, Yealink DECT) are not touched by a PIN change at all: the benchmark
then expects no NOTIFY for them (``bases_carry_pin`` in the results).

1. A throwaway database ``provisioner_bench_fanout_<random>`` and data dir (both removed at the
   end, also on Ctrl-C or failure).
2. Seeding: the ``admin`` user (``passwords.bootstrap_admin``, as ``provisioner serve`` does on
   an empty database), one site, N users (extension, PIN) bulk-inserted with COPY, N desk phones
   (Yealink T54W, the user on line 1) and B DECT bases (Gigaset N870 by default) carrying N/B
   handsets each, every device "registered" (``sip_contact`` as the ``registered`` hook stores
   it) at ``sip:<mac>@127.0.0.1:<sipp port>``; then each device is rendered once by the real
   pipeline (``provisioning.render_devices_in``, 100 devices to a transaction).
3. sipp plays every phone: one UAS on a UDP loopback port answering 200 to every NOTIFY, its
   message log on (``-trace_msg``).
4. ``provisioner serve`` runs as a subprocess (its push worker in a child process of its own,
   as ``serve`` runs it; ``service`` CPU counts both). The benchmark logs in as
   admin and sends every ``PUT /api/v1/users/{u}/pin`` at once (in a shuffled order, at most
   ``--concurrency`` in flight), then waits until sipp has seen every device, no push job is
   pending and no NOTIFY arrived for ``--quiet`` seconds, or ``--deadline`` seconds passed.
5. From sipp's message log: time from the first API request to the first and the last NOTIFY,
   NOTIFYs per second, NOTIFYs per desk phone and per base (retransmissions counted apart),
   devices never notified. From the database: push-job states, attempts, how many revisions
   each base went through, PIN-change transaction times. CPU time of the service, of its
   PostgreSQL backends, of sipp, of this script and of everything else on the machine.
6. ``bench/results/fanout-<UTC date>.json`` and ``bench/results/latest-fanout.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import benchlib
from benchlib import BenchError, log

from provisioner import devices_service, passwords, pins, provisioning, sites
from provisioner.audit import Actor
from provisioner.core import Core, open_core
from provisioner.devices import ADAPTERS
from provisioner.devices.base import ModelInfo
from provisioner.errors import ProvisionerError
from provisioner.settings import Settings
from provisioner.vault import device_credential_purpose, pin_purpose, sip_password_purpose

TARGET_SECONDS = 3.0  # DESIGN.md "Performance targets"
PUBLIC_URL = "http://provisioner.bench.invalid"
REGISTRAR = "pbx.bench.invalid"
OUIS = {"yealink": "805ec0", "gigaset": "7c2f80", "snom": "000413"}
DISTINCT_INITIAL_PINS = 64  # the seeded PINs, shared round-robin
NAMES = ["Jürgen Müller", "Anna <Ops> & Co", 'Zoë "Z" O\'Neil', "Björn Straße", "Li Wei"]

TOOLS = {
    "sipp": "apt-get update && apt-get install -y sip-tester",
}

# One call per NOTIFY: answer 200, whatever the Event header says (the tests check headers).
# The call then stays for Timer J (64*T1 = 32 s), as a phone's server transaction does, so a
# retransmitted NOTIFY (our 200 got lost) is answered again; a call that ended would not be.
UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="every phone answers every NOTIFY with 200">
  <recv request="NOTIFY"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="32000"/>
</scenario>
"""


# --- seeding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    users: int
    bases: int
    per_base: int
    desk_vendor: str
    desk_model: ModelInfo
    dect_vendor: str
    dect_model: ModelInfo

    @staticmethod
    def username(i: int) -> str:
        return f"fan{i:05d}"

    @staticmethod
    def extension(i: int) -> str:
        return str(20000 + i)  # five digits: never equal to a six-digit PIN

    @property
    def bases_carry_pin(self) -> bool:
        """Whether the DECT model's files carry its users' PINs (so a PIN change pushes it)."""
        return provisioning.carries_pin(self.dect_vendor, self.dect_model.name)

    def desk_mac(self, i: int) -> str:
        return f"{OUIS[self.desk_vendor]}{i:06x}"

    def base_mac(self, b: int) -> str:
        return f"{OUIS[self.dect_vendor]}{0x100000 + b:06x}"

    def handset(self, i: int) -> tuple[int, int]:
        """(base, slot) of user ``i``'s handset: consecutive users share a base."""
        return i // self.per_base, i % self.per_base + 1


def resolve_model(text: str, kind: str) -> tuple[str, ModelInfo]:
    vendor, _, name = text.partition(":")
    adapter = ADAPTERS.get(vendor.lower())
    model = adapter.model(name) if adapter else None
    if adapter is None or model is None or model.kind != kind:
        raise BenchError(f"{text!r} is not a {kind} model (vendor:MODEL, e.g. gigaset:N870)")
    if adapter.sip_event(model) is None:
        raise BenchError(f"{text}: this vendor is not notified over SIP")
    if vendor.lower() not in OUIS:
        raise BenchError(f"no OUI known for {vendor}; use one of {', '.join(OUIS)}")
    if not provisioning.carries_pin(adapter.vendor, model.name):
        log(f"note: {adapter.vendor} {model.name} configs do not carry the PIN")
    return adapter.vendor, model


def pick_pins(count: int, rng: random.Random, avoid: list[str] | None = None) -> list[str]:
    """``count`` six-digit PINs the policy accepts; with ``avoid``, PIN k differs from avoid[k]."""
    chosen: list[str] = []
    seen: set[str] = set()
    while len(chosen) < count:
        pin = f"{rng.randrange(1_000_000):06d}"
        if pin in seen or (avoid is not None and avoid[len(chosen)] == pin):
            continue
        try:
            pins.check_pin_policy(pin, min_length=6, extension=None)
        except ProvisionerError:
            continue
        seen.add(pin)
        chosen.append(pin)
    return chosen


async def seed(
    core: Core,
    layout: Layout,
    admin_password: str,
    sipp_port: int,
    initial_pins: list[str],
    render_workers: int = 1,
) -> dict[str, Any]:
    watch = benchlib.Stopwatch()
    started = time.perf_counter()
    actor = Actor.cli()
    with watch.stage("admin_and_site"):
        await passwords.bootstrap_admin(core, admin_password)
        await sites.set_site(core, actor, "default", {"registrar_host": REGISTRAR})
    async with core.pool.acquire() as conn:
        with watch.stage("users"):
            await conn.copy_records_to_table(
                "users",
                records=[
                    (
                        layout.username(i),
                        f"{NAMES[i % len(NAMES)]} {i}",
                        layout.extension(i),
                        "de",
                    )
                    for i in range(layout.users)
                ],
                columns=["username", "display_name", "extension", "language"],
            )
            ids = {
                r["username"]: r["id"]
                for r in await conn.fetch("SELECT id, username FROM users WHERE role = 'user'")
            }
            pin_rows = []
            for i in range(layout.users):
                user_id = ids[layout.username(i)]
                pin = initial_pins[i]
                verifier = core.pin_verifier.make(user_id, pin)
                pin_rows.append((user_id, verifier, core.vault.encrypt(pin, pin_purpose(user_id))))
            await conn.execute(
                "CREATE TEMP TABLE fan_pins (id bigint, pin_hash text, pin_encrypted bytea)"
            )
            await conn.copy_records_to_table("fan_pins", records=pin_rows)
            await conn.execute(
                """UPDATE users u SET pin_hash = p.pin_hash, pin_encrypted = p.pin_encrypted,
                          pin_changed_at = now()
                   FROM fan_pins p WHERE u.id = p.id"""
            )
        with watch.stage("devices"):
            now = datetime.now().astimezone()
            device_rows, assignment_rows = [], []

            def device(mac: str, vendor: str, model: ModelInfo, agent: str, line: str) -> None:
                credential = core.vault.encrypt(
                    provisioning.new_secret(), device_credential_purpose(mac)
                )
                contact = f"sip:{mac}@127.0.0.1:{sipp_port}"
                identity = (mac, vendor, model.name, model.kind, "", "default", credential)
                device_rows.append((*identity, contact, line, agent, now))

            def assign(mac: str, slot: int, i: int) -> None:
                account = devices_service.sip_account_name(layout.extension(i), mac, slot)
                secret = core.vault.encrypt(
                    provisioning.new_secret(), sip_password_purpose(mac, slot)
                )
                assignment_rows.append(
                    (mac, slot, ids[layout.username(i)], None, account, account, secret)
                )

            for i in range(layout.users):
                mac = layout.desk_mac(i)
                device(
                    mac, layout.desk_vendor, layout.desk_model, "bench desk", layout.extension(i)
                )
                assign(mac, 1, i)
            for b in range(layout.bases):
                mac = layout.base_mac(b)
                first = layout.extension(b * layout.per_base)  # who registered it: handset 1
                device(mac, layout.dect_vendor, layout.dect_model, "bench dect", first)
            for i in range(layout.users):
                b, slot = layout.handset(i)
                assign(layout.base_mac(b), slot, i)
            await conn.copy_records_to_table(
                "devices",
                records=device_rows,
                columns=[
                    *("mac", "vendor", "model", "kind", "label", "site", "credential_encrypted"),
                    *("sip_contact", "sip_contact_user", "sip_user_agent", "registered_at"),
                ],
            )
            await conn.copy_records_to_table(
                "device_assignments",
                records=assignment_rows,
                columns=[
                    *("mac", "slot", "user_id", "ipui", "sip_user", "sip_auth_user"),
                    "sip_password_encrypted",
                ],
            )
    macs = [layout.base_mac(b) for b in range(layout.bases)]
    macs += [layout.desk_mac(i) for i in range(layout.users)]
    with watch.stage("render"):
        render = await benchlib.render_seeded(core, macs, workers=render_workers)
    with watch.stage("vacuum"):
        async with core.pool.acquire() as conn:
            await conn.execute("DELETE FROM push_jobs")
            await conn.execute("VACUUM ANALYZE")
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "stages_s": watch.stages,
        "render": render,
    }


# --- sipp ----------------------------------------------------------------------------------------


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp): RcvbufErrors = datagrams dropped because a
    socket's receive buffer was full. Machine-wide, not only this benchmark's sockets."""
    rows = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (row[1:] for row in rows if row[0] == "Udp:")
    return dict(zip(names, map(int, values), strict=True))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def udp_bound(port: int) -> bool:
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        if line.split()[1].endswith(f":{port:04X}"):
            return True
    return False


_ENTRY = re.compile(r"^-{20,} (?=\d{4}-)", re.MULTILINE)
_NOTIFY_LINE = re.compile(r"^NOTIFY sip:([^@\s]+)@", re.MULTILINE)


@dataclass(frozen=True)
class Notify:
    at: float  # wall clock (sipp writes local time)
    user: str  # the Request-URI user: the device's MAC here
    call_id: str
    branch: str


def parse_message_log(text: str) -> list[Notify]:
    """Every NOTIFY sipp received, from its ``-trace_msg`` log."""
    found = []
    for entry in _ENTRY.split(text)[1:]:
        stamp, _, rest = entry.partition("\n")
        if "received" not in rest[:80]:
            continue
        match = _NOTIFY_LINE.search(rest)
        if match is None:
            continue
        headers = {}
        for line in rest.splitlines():
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), value.strip())
        branch = re.search(r"branch=([^;\s]+)", headers.get("via", ""))
        found.append(
            Notify(
                at=datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp(),
                user=match.group(1),
                call_id=headers.get("call-id", ""),
                branch=branch.group(1) if branch else "",
            )
        )
    return found


class LogFollower:
    """Counts NOTIFYs (and which Request-URI users) as sipp writes them; cheap to poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.tail = ""
        self.count = 0
        self.users: set[str] = set()
        self.last_growth = time.monotonic()

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("r", errors="replace") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
            self.offset = handle.tell()
        if not chunk:
            return
        self.last_growth = time.monotonic()
        text = self.tail + chunk
        cut = text.rfind("\n")
        complete, self.tail = text[: cut + 1], text[cut + 1 :]
        for match in _NOTIFY_LINE.finditer(complete):
            self.count += 1
            self.users.add(match.group(1))


# --- the burst -----------------------------------------------------------------------------------


@dataclass
class Burst:
    started_wall: float = 0.0  # time.time() just before the first request was sent
    started: float = 0.0  # perf_counter at the same moment
    results: list[tuple[float, float, int, int]] = field(default_factory=list)
    """(sent, answered) seconds after the start, status, push jobs in the answer."""
    errors: Counter[str] = field(default_factory=Counter)
    first_sent: asyncio.Event = field(default_factory=asyncio.Event)


async def login(session: aiohttp.ClientSession, base: str, password: str) -> str:
    async with session.post(
        f"{base}/api/v1/auth/login", json={"username": "admin", "password": password}
    ) as response:
        body = await response.json()
        if response.status != 200:
            raise BenchError(f"admin login answered {response.status}: {body}")
    return str(body["token"])


async def fire(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    changes: list[tuple[str, str]],
    concurrency: int,
    burst: Burst,
) -> None:
    """All PIN changes at once, at most ``concurrency`` in flight."""
    slots = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}

    async def one(username: str, pin: str) -> None:
        async with slots:
            sent = time.perf_counter()
            if not burst.started:
                burst.started_wall, burst.started = time.time(), sent
                burst.first_sent.set()
            try:
                async with session.put(
                    f"{base}/api/v1/users/{username}/pin", json={"pin": pin}, headers=headers
                ) as response:
                    body = await response.json(content_type=None)
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                burst.errors[type(exc).__name__] += 1
                return
            jobs = len(body.get("push_jobs", [])) if isinstance(body, dict) else 0
            if status != 200:
                burst.errors[f"{status} {body}"[:200]] += 1
            now = time.perf_counter()
            burst.results.append((sent - burst.started, now - burst.started, status, jobs))

    await asyncio.gather(*(one(u, p) for u, p in changes))


async def asyncpg_connect(dsn: str) -> Any:
    return await asyncpg.connect(dsn, timeout=10)


async def run_burst(
    args: argparse.Namespace,
    base: str,
    admin_password: str,
    changes: list[tuple[str, str]],
    follower: LogFollower,
    expected_users: set[str],
    dsn: str,
) -> tuple[Burst, str]:
    burst = Burst()
    timeout = aiohttp.ClientTimeout(total=args.deadline)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        token = await login(session, base, admin_password)

        # Open keep-alive connections with cheap requests before the clock starts.
        async def warm() -> None:
            async with session.get(
                f"{base}/api/v1/users/{changes[0][0]}",
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                await response.read()

        await asyncio.gather(*(warm() for _ in range(min(args.concurrency, 32))))
        sender = asyncio.create_task(fire(session, base, token, changes, args.concurrency, burst))
        pool = await asyncpg_connect(dsn)
        try:
            first = asyncio.create_task(burst.first_sent.wait())
            await asyncio.wait({first, sender}, return_when=asyncio.FIRST_COMPLETED)
            first.cancel()
            if not burst.started:
                sender.result()  # raises what stopped it
                raise BenchError("no PIN change request was sent")
            deadline = burst.started + args.deadline
            last_db_check, pending = 0.0, -1
            reason = "deadline"
            while time.perf_counter() < deadline:
                await asyncio.sleep(0.1)
                follower.poll()
                if sender.done() and not any(r[2] == 200 for r in burst.results):
                    reason = "no PIN change succeeded"
                    break
                if not sender.done() or not expected_users <= follower.users:
                    continue
                now = time.perf_counter()
                if now - last_db_check >= 0.5:
                    pending = int(
                        await pool.fetchval(
                            "SELECT count(*) FROM push_jobs WHERE state = 'pending'"
                        )
                    )
                    last_db_check = now
                if pending == 0 and time.monotonic() - follower.last_growth >= args.quiet:
                    reason = "complete"
                    break
        finally:
            await pool.close()
        if not sender.done():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            reason = "deadline (API requests still running)"
    return burst, reason


# --- analysis ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def distribution(counts: list[int]) -> dict[str, int]:
    """{"notifies per device": devices}, keys as strings for JSON."""
    return {str(k): v for k, v in sorted(Counter(counts).items())}


def analyse_notifies(
    notifies: list[Notify], burst: Burst, layout: Layout
) -> tuple[dict[str, Any], dict[str, Any]]:
    after = [n for n in notifies if n.at >= burst.started_wall - 0.5]
    transactions: dict[tuple[str, str], Notify] = {}
    for n in after:
        transactions.setdefault((n.call_id, n.branch), n)
    firsts = sorted(transactions.values(), key=lambda n: n.at)
    per_user = Counter(n.user for n in firsts)
    desk = [layout.desk_mac(i) for i in range(layout.users)]
    bases = [layout.base_mac(b) for b in range(layout.bases)]
    known = set(desk) | set(bases)
    base_times = {
        mac: [round(n.at - burst.started_wall, 3) for n in firsts if n.user == mac] for mac in bases
    }
    result: dict[str, Any] = {
        "messages_received": len(after),
        "transactions": len(firsts),
        "retransmissions": len(after) - len(firsts),
        "calls_with_challenge_round": len(firsts) - len({n.call_id for n in firsts}),
        "unknown_request_uris": sum(v for u, v in per_user.items() if u not in known),
        "per_desk_phone": distribution([per_user.get(m, 0) for m in desk]),
        "per_base": distribution([per_user.get(m, 0) for m in bases]),
        "desk_phones_not_notified": sum(1 for m in desk if per_user.get(m, 0) == 0),
        "bases_not_notified": sum(1 for m in bases if per_user.get(m, 0) == 0),
        "bases_notified": sum(1 for m in bases if per_user.get(m, 0) > 0),
        "base_notify_times_s": base_times,
    }
    if firsts:
        first = firsts[0].at - burst.started_wall
        last = firsts[-1].at - burst.started_wall
        spread = max(last - first, 1e-6)
        result.update(
            {
                "first_notify_s": round(first, 3),
                "last_notify_s": round(last, 3),
                "notifies_per_s_first_to_last": round(len(firsts) / spread, 1),
                "notifies_per_s_from_first_request": round(len(firsts) / max(last, 1e-6), 1),
                "last_desk_notify_s": round(
                    max((n.at for n in firsts if n.user in set(desk)), default=0)
                    - burst.started_wall,
                    3,
                ),
                "last_base_notify_s": round(
                    max((n.at for n in firsts if n.user in set(bases)), default=0)
                    - burst.started_wall,
                    3,
                ),
            }
        )
    timeline = timeline_of(burst, [n.at - burst.started_wall for n in firsts])
    return result, timeline


def timeline_of(burst: Burst, notify_offsets: list[float], step: float = 0.5) -> dict[str, Any]:
    """Per ``step`` seconds after the first request: API answers and NOTIFYs."""
    answered = [r[1] for r in burst.results]
    end = max([*answered, *notify_offsets, 0.0])
    buckets = int(end // step) + 1
    api, sip = [0] * buckets, [0] * buckets
    for t in answered:
        api[int(t // step)] += 1
    for t in notify_offsets:
        if t >= 0:
            sip[int(t // step)] += 1
    return {"step_s": step, "api_answers": api, "notifies": sip}


def analyse_api(burst: Burst, sent: int) -> dict[str, Any]:
    answered = [r[1] for r in burst.results]
    latency = [(r[1] - r[0]) * 1000 for r in burst.results]
    statuses = Counter(str(r[2]) for r in burst.results)
    last = max(answered, default=0.0)
    return {
        "requests": sent,
        "answered": len(burst.results),
        "unanswered_at_deadline": sent - len(burst.results) - sum(burst.errors.values()),
        "statuses": dict(statuses),
        "errors": dict(burst.errors),
        "push_jobs_per_answer": distribution([r[3] for r in burst.results]),
        "last_answer_s": round(last, 3),
        "requests_per_s": round(len(answered) / last, 1) if last else None,
        "latency_ms": {
            "p50": _round(percentile(latency, 0.5)),
            "p90": _round(percentile(latency, 0.9)),
            "p99": _round(percentile(latency, 0.99)),
            "max": _round(max(latency, default=None)),
        },
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


async def database_facts(dsn: str, layout: Layout, started_wall: float) -> dict[str, Any]:
    conn = await asyncpg_connect(dsn)
    try:
        states = {
            r["state"]: r["n"]
            for r in await conn.fetch("SELECT state, count(*) AS n FROM push_jobs GROUP BY state")
        }
        attempts = {
            str(r["attempts"]): r["n"]
            for r in await conn.fetch(
                "SELECT attempts, count(*) AS n FROM push_jobs GROUP BY attempts ORDER BY 1"
            )
        }
        errors = [
            r["last_error"]
            for r in await conn.fetch(
                "SELECT DISTINCT last_error FROM push_jobs WHERE last_error IS NOT NULL LIMIT 5"
            )
        ]
        revisions = await conn.fetch("SELECT mac, kind, revision FROM devices")
        pin_tx = await conn.fetchrow(
            """SELECT extract(epoch FROM min(at)) AS first, extract(epoch FROM max(at)) AS last,
                      count(*) AS n
               FROM audit_log WHERE action = 'pin.change'"""
        )
        jobs = await conn.fetchrow(
            """SELECT extract(epoch FROM min(created_at)) AS first_created,
                      extract(epoch FROM max(created_at)) AS last_created,
                      extract(epoch FROM max(notified_at)) AS last_notified,
                      count(*) AS n
               FROM push_jobs"""
        )
    finally:
        await conn.close()

    def offset(value: Any) -> float | None:
        return None if value is None else round(float(value) - started_wall, 3)

    base_revisions = [r["revision"] for r in revisions if r["kind"] == "dect"]
    desk_revisions = [r["revision"] for r in revisions if r["kind"] == "desk"]
    return {
        "job_states": states,
        "job_rows": jobs["n"],
        "job_attempts": attempts,
        "job_errors": errors,
        "first_job_created_s": offset(jobs["first_created"]),
        "last_job_created_s": offset(jobs["last_created"]),
        "last_job_notified_s": offset(jobs["last_notified"]),
        "pin_change_transactions": pin_tx["n"],
        "first_pin_transaction_s": offset(pin_tx["first"]),
        "last_pin_transaction_s": offset(pin_tx["last"]),
        # Revision 1 came from seeding; each later one is a render whose output changed.
        "new_revisions_per_base": distribution([r - 1 for r in base_revisions]),
        "new_revisions_per_desk_phone": distribution([r - 1 for r in desk_revisions]),
    }


# --- profiling (optional) ------------------------------------------------------------------------

BUCKETS = (
    ("argon2 password hashing", ("argon2", "hash_password")),
    ("Jinja2 rendering", ("render_files", "jinja2", "templates.py", "render (provisioner/devices")),
    ("AES-GCM decrypt/encrypt", ("vault.py",)),
    ("asyncpg / protocol", ("asyncpg",)),
    ("push worker", ("push.py",)),
    ("SIP NOTIFY", ("sip.py",)),
    ("phones cache refresh", ("phonecache.py",)),
    ("aiohttp", ("aiohttp",)),
)


def start_profiler(pid: int, out: Path, cleanup: contextlib.ExitStack) -> benchlib.Child | None:
    if shutil.which("py-spy") is None:
        log("py-spy not found (pip install py-spy): no profile")
        return None
    return benchlib.start_child(
        "py-spy",
        [
            *("py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "200"),
            *("--nonblocking", "--threads", "--subprocesses", "--output", str(out)),
        ],
        log_path=out.with_suffix(".log"),
        cleanup=cleanup,
    )


def summarise_profile(path: Path, top: int = 20) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        # py-spy --subprocesses: 'process 12:"python -P -m provisioner worker"' -> "worker"
        # (a child's samples name its parent's process first, then its own)
        process = ""
        while frames and frames[0].startswith("process "):
            process = frames.pop(0).rstrip('"').rpartition(" ")[2] + ": "
        if not frames:
            continue
        # "thread (123): uvloop_4" -> "uvloop_*" (executor threads grouped by pool)
        threads[process + re.sub(r"_\d+$", "_*", frames[0].rpartition(": ")[2])] += count
        for frame in set(frames[1:]):
            inclusive[_short(frame)] += count
        if frames:
            own[_short(frames[-1])] += count
        leaf = frames[-1] if frames else ""
        if leaf.startswith("Runner.run ("):
            buckets["event loop itself (uvloop C code: I/O, callbacks)"] += count
        elif leaf.startswith("_worker (") and "concurrent/futures" in leaf:
            buckets["executor threads between tasks (GIL, queue)"] += count
        else:
            for name, needles in BUCKETS:
                if any(needle in stack for needle in needles):
                    buckets[name] += count
                    break
            else:
                buckets["other"] += count

    def share(counter: Counter[str], n: int) -> list[list[Any]]:
        return [[k, round(v / total, 3)] for k, v in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "note": "share of non-idle samples, all threads; buckets take the first match in order",
        "buckets": share(buckets, len(BUCKETS) + 3),
        "threads": share(threads, 10),  # MainThread = the event loop; argon2_* = password hashing
        "inclusive": share(inclusive, top),
        "self": share(own, top),
    }


def _short(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:123)"
    match = re.match(r"(.*) \((.*?):?\d*\)$", frame)
    if not match:
        return frame
    name, where = match.groups()
    where = re.sub(r".*/site-packages/", "", where)
    where = re.sub(r".*/(provisioner/)", r"\1", where)
    return f"{name} ({where.rstrip(':')})"


# --- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--bases", type=int, default=20)
    parser.add_argument("--desk", default="yealink:T54W", help="vendor:MODEL of the desk phones")
    parser.add_argument("--dect", default="gigaset:N870", help="vendor:MODEL of the DECT bases")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="PIN-change requests in flight at most"
    )
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds after the start")
    parser.add_argument(
        "--quiet", type=float, default=2.0, help="seconds without a NOTIFY that end the wait"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (PINs, request order)")
    parser.add_argument(
        "--source",
        type=Path,
        help="run the service from this source tree (PYTHONPATH) to measure a change",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the service in the burst")
    benchlib.add_seeding_and_output_options(parser)
    parser.add_argument("--no-results", action="store_true", help="write no result files")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()
    if args.users < 1 or args.bases < 1 or args.concurrency < 1:
        parser.error("--users, --bases and --concurrency must be positive")
    return args


def service_env(
    dsn: str, data_dir: Path, port: int, admin_password: str, source: Path | None
) -> dict[str, str]:
    env = benchlib.child_env(source)
    env.update(
        {
            "PROVISIONER_DATABASE_URL": dsn,
            "PROVISIONER_DATA_DIR": str(data_dir),
            "PROVISIONER_LISTEN": f"127.0.0.1:{port}",
            "PROVISIONER_PUBLIC_URL": PUBLIC_URL,
            "PROVISIONER_PROVISIONING_USER": "provision",
            "PROVISIONER_PROVISIONING_PASSWORD": secrets.token_urlsafe(18),
            "PROVISIONER_ADMIN_PASSWORD": admin_password,
        }
    )
    return env


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    args = parse_args()
    benchlib.require_tools(TOOLS)
    desk_vendor, desk_model = resolve_model(args.desk, "desk")
    dect_vendor, dect_model = resolve_model(args.dect, "dect")
    per_base = math.ceil(args.users / args.bases)
    if per_base > dect_model.slots:
        raise BenchError(f"{dect_model.name} carries {dect_model.slots} handsets, not {per_base}")
    bases_used = math.ceil(args.users / per_base)
    layout = Layout(
        args.users, bases_used, per_base, desk_vendor, desk_model, dect_vendor, dect_model
    )
    rng = random.Random(args.seed)
    initial_pool = pick_pins(DISTINCT_INITIAL_PINS, rng)
    initial_pins = [initial_pool[i % len(initial_pool)] for i in range(args.users)]
    new_pins = pick_pins(args.users, rng, avoid=initial_pins)
    order = list(range(args.users))
    rng.shuffle(order)
    changes = [(layout.username(i), new_pins[i]) for i in order]

    results: dict[str, Any] = {
        "benchmark": "fanout",
        "started_at": benchlib.utc_now(),
        "machine": benchlib.machine_info(),
        "versions": {
            **benchlib.package_versions(
                ["provisioner", "aiohttp", "uvloop", "asyncpg", "Jinja2", "argon2-cffi"]
            ),
            "sipp": benchlib.tool_version(["sipp", "-v"]),
        },
        "source": benchlib.git_state(),
        "parameters": {
            "users": args.users,
            "desk_phones": args.users,
            "desk_model": f"{desk_vendor} {desk_model.name}",
            "bases": layout.bases,
            "handsets_per_base": per_base,
            "dect_model": f"{dect_vendor} {dect_model.name} ({dect_model.slots} slots)",
            "bases_carry_pin": layout.bases_carry_pin,
            "concurrency": args.concurrency,
            "request_order": f"shuffled (seed {args.seed}); consecutive users share a base",
            "deadline_s": args.deadline,
            "quiet_s": args.quiet,
            "profiled": args.profile,
        },
    }
    with contextlib.ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="provisioner-fanout-"))
        if args.keep:
            log(f"keeping {tmp}")
        else:
            cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        data_dir = tmp / "data"
        data_dir.mkdir(mode=0o700)

        db_name, dsn = asyncio.run(benchlib.create_database("provisioner_bench_fanout"))
        cleanup.callback(lambda: asyncio.run(benchlib.drop_database(db_name)))
        log(f"database {db_name}, temp dir {tmp}")

        admin_password = "Bench-" + secrets.token_urlsafe(18)
        port = benchlib.free_port()
        sipp_port = free_udp_port()
        env = service_env(dsn, data_dir, port, admin_password, args.source)
        settings = Settings.from_env(env)
        where = subprocess.run(
            [sys.executable, "-P", "-c", "import provisioner; print(provisioner.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # ``source`` (commit, dirty) describes the work tree; this is the code that ran.
        results["parameters"]["service_package"] = str(Path(where).parent)

        async def prepare() -> tuple[dict[str, Any], str]:
            async with open_core(settings) as core:
                seeded = await seed(
                    core, layout, admin_password, sipp_port, initial_pins, args.seed_workers
                )
                async with core.pool.acquire() as conn:
                    version = await conn.fetchval("SHOW server_version")
            return seeded, str(version)

        log(
            f"seeding {args.users} users, {args.users} {desk_model.name}, {layout.bases} "
            f"{dect_model.name} with {per_base} handsets ..."
        )
        seeded, pg_version = asyncio.run(prepare())
        results["versions"]["postgresql"] = pg_version
        results["seeding"] = seeded
        log(f"seeded in {seeded['seconds']:.1f}s {seeded['stages_s']}")

        scenario = tmp / "uas.xml"
        scenario.write_text(UAS_SCENARIO)
        message_log = tmp / "sipp-messages.log"
        sipp = benchlib.start_child(
            "sipp",
            [
                *("sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(sipp_port)),
                *("-t", "u1", "-nostdin", "-buff_size", str(4 * 1024 * 1024)),
                *("-trace_msg", "-message_file", str(message_log)),
                *("-trace_err", "-error_file", str(tmp / "sipp-errors.log")),
            ],
            log_path=tmp / "sipp.out",
            cleanup=cleanup,
        )
        deadline = time.monotonic() + 5
        while not udp_bound(sipp_port):
            if not sipp.alive() or time.monotonic() > deadline:
                raise BenchError(f"sipp did not start:\n{sipp.log_tail()}")
            time.sleep(0.02)

        service = benchlib.start_child(
            "provisioner",
            # -P: the cwd (the repository) does not come first, so --source takes effect
            benchlib.service_argv("serve"),
            log_path=tmp / "service.log",
            env=env,
            cleanup=cleanup,
        )
        base_url = f"http://127.0.0.1:{port}"
        startup = benchlib.wait_http(f"{base_url}/healthz", service)
        results["service"] = {"startup_s": round(startup, 2)}
        log(f"service up in {startup:.1f}s; sipp on udp/{sipp_port}")

        profiler = None
        if args.profile:
            profiler = start_profiler(service.pid, tmp / "profile.txt", cleanup)
            time.sleep(1.0)  # py-spy attaches

        follower = LogFollower(message_log)
        expected = {layout.desk_mac(i) for i in range(args.users)}
        if layout.bases_carry_pin:  # else a PIN change leaves the bases alone (DESIGN)
            expected |= {layout.base_mac(b) for b in range(layout.bases)}
        pg_before = benchlib.cpu_by_cmdline(db_name)
        service_before = benchlib.cpu_seconds(service.pid)
        sipp_before = benchlib.cpu_seconds(sipp.pid)
        self_before = cpu_self()
        busy_before = benchlib.machine_busy_seconds()
        udp_before = udp_counters()
        wall_before = time.perf_counter()
        log(f"changing {args.users} PINs, {args.concurrency} requests in flight ...")
        burst, reason = asyncio.run(
            run_burst(args, base_url, admin_password, changes, follower, expected, dsn)
        )
        wall = time.perf_counter() - wall_before
        cpu = {
            "wall_s": round(wall, 2),
            "service_s": round(benchlib.cpu_seconds(service.pid) - service_before, 2),
            "postgres_s": round(benchlib.cpu_delta(pg_before, benchlib.cpu_by_cmdline(db_name)), 2),
            "sipp_s": round(benchlib.cpu_seconds(sipp.pid) - sipp_before, 2),
            "bench_s": round(cpu_self() - self_before, 2),
        }
        busy = benchlib.machine_busy_seconds() - busy_before
        udp_after = udp_counters()
        udp = {k: udp_after[k] - udp_before[k] for k in ("InDatagrams", "InErrors", "RcvbufErrors")}
        cpu["others_s"] = round(
            busy - cpu["service_s"] - cpu["postgres_s"] - cpu["sipp_s"] - cpu["bench_s"], 2
        )
        cpu["note"] = (
            "from the login before the burst to the end of the wait (includes the quiet period)"
        )
        log(f"burst over ({reason}); reading sipp's log ...")
        if profiler is not None:
            with contextlib.suppress(ProcessLookupError):
                profiler.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                profiler.proc.wait(30)
        sipp.stop()
        notifies = parse_message_log(message_log.read_text(errors="replace"))
        notify_stats, timeline = analyse_notifies(notifies, burst, layout)
        api_stats = analyse_api(burst, len(changes))
        db_stats = asyncio.run(database_facts(dsn, layout, burst.started_wall))
        service_log = (tmp / "service.log").read_text(errors="replace")
        results["burst"] = {
            "ended_by": reason,
            "api": api_stats,
            "notify": notify_stats,
            "database": db_stats,
            "cpu": cpu,
            "udp_machine_wide": udp,
            "timeline": timeline,
            "service_log": {
                "renders_with_new_revision": service_log.count(" rendered: revision "),
                "notified_lines": len(re.findall(r"device \w+ notified", service_log)),
                "warnings": len(re.findall(r" (?:WARNING|ERROR) ", service_log)),
            },
        }
        if profiler is not None and (tmp / "profile.txt").exists():
            results["profile"] = summarise_profile(tmp / "profile.txt")
        results["summary"] = summarise(results)
        service.stop()
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    print_summary(results)
    if not args.no_results:
        dated, latest = benchlib.write_results("fanout", results)
        log(f"results: {dated.relative_to(benchlib.REPO_DIR)}, {latest.name}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return 0


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    burst = results["burst"]
    notify, api = burst["notify"], burst["api"]
    last = notify.get("last_notify_s")
    per_base = notify["per_base"]
    bases_carry_pin = results["parameters"]["bases_carry_pin"]
    return {
        "last_notify_after_first_request_s": last,
        "target_s": TARGET_SECONDS,
        "meets_time_target": last is not None
        and last <= TARGET_SECONDS
        and notify["desk_phones_not_notified"] == 0
        and (notify["bases_not_notified"] == 0 or not bases_carry_pin),
        "bases_carry_pin": bases_carry_pin,
        # Bases that carry no PIN must not be touched by a PIN change at all.
        "each_base_notified_once": set(per_base) == ({"1"} if bases_carry_pin else {"0"}),
        "each_desk_phone_notified_once": set(notify["per_desk_phone"]) == {"1"},
        "api_requests_per_s": api["requests_per_s"],
        "api_last_answer_s": api["last_answer_s"],
        "notifies_per_s": notify.get("notifies_per_s_first_to_last"),
        "notify_transactions": notify["transactions"],
        "per_base": per_base,
        "job_states": burst["database"]["job_states"],
    }


def print_summary(results: dict[str, Any]) -> None:
    s = results["summary"]
    burst = results["burst"]
    notify, api = burst["notify"], burst["api"]
    p = results["parameters"]
    print()
    print(
        f"fan-out: {p['users']} users, {p['desk_phones']} {p['desk_model']}, {p['bases']} x "
        f"{p['dect_model']} with {p['handsets_per_base']} handsets; "
        f"{p['concurrency']} requests in flight"
    )
    print(f"  seeding                {results['seeding']['seconds']:.1f} s")
    print(
        f"  API                    {api['requests']} PUT .../pin, {api['answered']} answered, "
        f"statuses {api['statuses']}, "
        f"last answer {api['last_answer_s']} s, {api['requests_per_s']} req/s, "
        f"latency p50 {api['latency_ms']['p50']} ms p99 {api['latency_ms']['p99']} ms"
    )
    print(
        f"  NOTIFY                 {notify['transactions']} (+{notify['retransmissions']} "
        f"retransmitted), first {notify.get('first_notify_s')} s, last "
        f"{notify.get('last_notify_s')} s, {s['notifies_per_s']} /s"
    )
    print(f"  per desk phone         {notify['per_desk_phone']}   per base {notify['per_base']}")
    print(f"  job states             {s['job_states']}   ended by: {burst['ended_by']}")
    if api["errors"]:
        print(f"  API errors             {dict(list(api['errors'].items())[:3])}")
    print(f"  CPU seconds            {burst['cpu']}")
    print(f"  UDP, machine-wide      {burst['udp_machine_wide']}")
    verdict = "MET" if s["meets_time_target"] else "MISSED"
    print(
        f"  target (last NOTIFY <= {s['target_s']} s after the first request): {verdict}; "
        f"each base once: {s['each_base_notified_once']}"
    )
    if "profile" in results:
        print(f"  profile buckets        {results['profile']['buckets']}")


if __name__ == "__main__":
    benchlib.run_main(main)

"""Phones' endpoint benchmark: authenticated config fetches, the service against nginx.

    python bench/fetch.py [--devices 10000] [--duration 15] [--connections 64]

1. A throwaway database ``provisioner_bench_<random>`` and data dir; both are removed at the end
   (also on Ctrl-C or failure).
2. Seeding: one site, N users (extension, PIN) and N Yealink T54W, each with its user on line 1.
   The first ``--domain-devices`` go through the domain functions (``create_user``,
   ``change_pin``, ``create_device``, ``set_assignments``); the rest are bulk-inserted with the
   same encryption purposes and account names, then rendered by the real pipeline as the push
   worker renders (``provisioning.render_devices_in``, 100 devices to a transaction).
3. Every device's ``<mac>.cfg`` (from ``device_files``, decrypted) is exported for nginx (2
   workers, ``access_log off``, ``sendfile on``) with two ``{SHA}`` htpasswd files: one line per
   device (the same per-device credentials the service checks) and one shared line.
4. ``provisioner serve`` runs as a subprocess on a free loopback port, once serving the phones on
   its main listener and once with ``PROVISIONER_PHONES_LISTEN`` (fetched through that port).
5. wrk (a generated Lua script rotating through every MAC with its own Basic credential and the
   Yealink User-Agent) runs against the service and nginx alternately, same duration,
   connections and threads; figures come from JSON that the script's ``done()`` prints.
   Sample responses are checked (200, body identical to the stored file; a wrong password
   gets 401) and every run reports its responses with status >= 400.
6. Render time of a 500-handset DECT config for every DECT model with >= 500 slots.
7. RSS of the serve process (and any children) after loading all devices, and after the runs.
8. ``bench/results/fetch-<UTC date>.json`` and ``bench/results/latest-fetch.json``.

With ``--password-load N`` each round also measures the service while N admin password changes
(argon2id) run in a loop: fetch p99 with and without that load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import benchlib
from benchlib import BenchError, Child, log

from provisioner import (
    access_codes,
    devices_service,
    passwords,
    pins,
    provisioning,
    sealing,
    sites,
    users,
)
from provisioner.audit import Actor
from provisioner.core import Core, open_core
from provisioner.devices import ADAPTERS
from provisioner.devices.base import DeviceInfo, Line, RenderContext, Site, Templates
from provisioner.errors import ProvisionerError
from provisioner.settings import Settings
from provisioner.vault import device_credential_purpose, pin_purpose, sip_password_purpose

TARGET_RATIO = 0.5  # DESIGN.md "Performance targets"
RENDER_TARGET_MS = 20.0
RSS_TARGET_MIB = 200.0
PASSWORD_LOAD_P99_TARGET = 1.5  # fetch p99 under password changes over idle p99, at most
VENDOR = "yealink"
MODEL = "T54W"
FIRMWARE = "96.86.0.70"
OUI = "805ec0"  # a Yealink OUI
PUBLIC_URL = "http://provisioner.bench.invalid"
NAMES = ["Jürgen Müller", "Anna <Ops> & Co", 'Zoë "Z" O\'Neil', "Björn Straße", "Li Wei"]
DISTINCT_PINS = 100  # users share them round-robin (see README)

TOOLS = {
    "wrk": "apt-get update && apt-get install -y wrk",
    "nginx": "apt-get update && apt-get install -y nginx   (the system service is not used)",
}

# --- wrk ---------------------------------------------------------------------------------------

# Each thread builds every request once (init), then rotates through them. ``done()`` prints the
# figures as one JSON line. With ``count-statuses`` a response() hook tallies every status code;
# otherwise wrk's own counter of responses with status >= 400 is reported (cheaper for wrk).
WRK_LUA = r"""
local requests, count, index = {}, 0, 0
local threads = {}
statuses = {}

function setup(thread)
  thread:set("thread_number", #threads)
  table.insert(threads, thread)
end

function init(args)
  local data, override = args[1], args[2]
  for line in io.lines(data) do
    local path, auth, agent = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)$")
    if override ~= nil and override ~= "" then auth = override end
    count = count + 1
    requests[count] = wrk.format("GET", path, {["Authorization"] = auth, ["User-Agent"] = agent})
  end
  index = ((thread_number or 0) * 7919) % count
  if args[3] == "count-statuses" then
    response = function(status, headers, body)
      statuses[status] = (statuses[status] or 0) + 1
    end
  end
end

function request()
  index = index + 1
  if index > count then index = 1 end
  return requests[index]
end

function done(summary, latency, requests)
  local merged, codes = {}, {}
  for _, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses") or {}) do
      merged[code] = (merged[code] or 0) + n
    end
  end
  for code, n in pairs(merged) do
    codes[#codes + 1] = string.format('"%d":%d', code, n)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"statuses":{%s},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(codes, ","),
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


@dataclass(frozen=True)
class Device:
    mac: str
    password: str
    username: str

    @property
    def user_agent(self) -> str:
        colons = ":".join(self.mac[i : i + 2] for i in range(0, 12, 2))
        return f"Yealink SIP-T{MODEL[1:]} {FIRMWARE} {colons}"

    @property
    def path(self) -> str:
        return f"/provisioning/{self.mac}.cfg"

    def authorization(self) -> str:
        return basic(self.mac, self.password)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def sha_htpasswd_line(username: str, password: str) -> str:
    digest = hashlib.sha1(password.encode(), usedforsecurity=False).digest()
    return f"{username}:{{SHA}}{base64.b64encode(digest).decode()}\n"


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    url: str
    override_auth: str = ""
    """Authorization sent instead of each device's own (nginx with a shared credential)."""
    pid: int | None = None
    """The server's (master) process, for its CPU time."""


@dataclass
class Seeded:
    devices: list[Device]
    seconds: float
    stages: dict[str, float]
    domain_devices: int
    render: dict[str, Any]


# --- seeding -----------------------------------------------------------------------------------


def mac_of(i: int) -> str:
    return f"{OUI}{i:06x}"


def pick_pins(count: int, seed: int) -> list[str]:
    """``count`` distinct 6-digit PINs the policy accepts."""
    rng = random.Random(seed)
    chosen: dict[str, None] = {}
    while len(chosen) < count:
        pin = f"{rng.randrange(1_000_000):06d}"
        try:
            pins.check_pin_policy(pin, min_length=6, extension=None)
        except ProvisionerError:  # refused by the policy: try another
            continue
        chosen[pin] = None
    return list(chosen)


async def _gather_chunks(coros: list[Any], chunk: int) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(coros), chunk):
        results.extend(await asyncio.gather(*coros[start : start + chunk]))
    return results


async def seed(
    core: Core, count: int, domain_count: int, *, admin_password: str, render_workers: int = 1
) -> Seeded:
    watch = benchlib.Stopwatch()
    actor = Actor.cli()
    started = time.perf_counter()
    with watch.stage("site"):
        # The admin first, as ``provisioner serve`` creates it on an empty database (with
        # PROVISIONER_ADMIN_PASSWORD): ``--password-load`` logs in as admin.
        await passwords.bootstrap_admin(core, admin_password)
        await sites.set_site(
            core, actor, "default", {"registrar_host": "pbx.bench.invalid", "timezone": "UTC"}
        )
    pin_list = pick_pins(DISTINCT_PINS, seed=count)

    def username(i: int) -> str:
        return f"bench{i:05d}"

    def display_name(i: int) -> str:
        return f"{NAMES[i % len(NAMES)]} {i}"

    def extension(i: int) -> str:
        return str(2_000_000 + i)  # 7 digits: never one of the 6-digit PINs

    domain_count = min(domain_count, count)
    # The domain functions, as an operator's API calls would run them (PIN change hashes afresh).
    with watch.stage("domain_path"):

        async def one(i: int) -> None:
            await users.create_user(
                core,
                actor,
                users.NewUser(
                    username=username(i), display_name=display_name(i), extension=extension(i)
                ),
            )
            await pins.change_pin(core, actor, username(i), pin_list[i % len(pin_list)])
            await devices_service.create_device(
                core, actor, devices_service.NewDevice(mac=mac_of(i), vendor=VENDOR, model=MODEL)
            )
            await devices_service.set_assignments(
                core, actor, mac_of(i), [devices_service.Assignment(1, username(i))]
            )

        await _gather_chunks([one(i) for i in range(domain_count)], 8)

    bulk = range(domain_count, count)
    device_passwords: dict[str, str] = {}
    async with core.pool.acquire() as conn:
        for row in await conn.fetch("SELECT mac, credential_encrypted FROM devices"):
            device_passwords[row["mac"]] = core.vault.decrypt(
                row["credential_encrypted"], device_credential_purpose(row["mac"])
            )
        with watch.stage("bulk_users"):
            await conn.copy_records_to_table(
                "users",
                records=[(username(i), display_name(i), extension(i), "de") for i in bulk],
                columns=["username", "display_name", "extension", "language"],
            )
            ids = {
                r["username"]: r["id"]
                for r in await conn.fetch("SELECT id, username FROM users WHERE pin_hash IS NULL")
            }
            pin_rows = []
            for i in bulk:
                user_id = ids[username(i)]
                k = i % len(pin_list)
                encrypted = core.vault.encrypt(pin_list[k], pin_purpose(user_id))
                verifier = core.pin_verifier.make(user_id, pin_list[k])
                pin_rows.append((user_id, verifier, encrypted))
            await conn.execute(
                "CREATE TEMP TABLE bench_pins (id bigint, pin_hash text, pin_encrypted bytea)"
            )
            await conn.copy_records_to_table("bench_pins", records=pin_rows)
            await conn.execute(
                """UPDATE users u SET pin_hash = p.pin_hash, pin_encrypted = p.pin_encrypted,
                          pin_changed_at = now()
                   FROM bench_pins p WHERE u.id = p.id"""
            )
        with watch.stage("bulk_devices"):
            kind = ADAPTERS[VENDOR].model(MODEL).kind  # type: ignore[union-attr]
            device_rows, assignment_rows = [], []
            for i in bulk:
                mac = mac_of(i)
                password = provisioning.new_secret()
                device_passwords[mac] = password
                credential = core.vault.encrypt(password, device_credential_purpose(mac))
                device_rows.append((mac, VENDOR, MODEL, kind, "", "default", credential))
                account = devices_service.sip_account_name(extension(i), mac, 1)
                sip_password = core.vault.encrypt(
                    provisioning.new_secret(), sip_password_purpose(mac, 1)
                )
                assignment_rows.append(
                    (mac, 1, ids[username(i)], None, account, account, sip_password)
                )
            await conn.copy_records_to_table(
                "devices",
                records=device_rows,
                columns=["mac", "vendor", "model", "kind", "label", "site", "credential_encrypted"],
            )
            await conn.copy_records_to_table(
                "device_assignments",
                records=assignment_rows,
                columns=[
                    "mac",
                    "slot",
                    "user_id",
                    "ipui",
                    "sip_user",
                    "sip_auth_user",
                    "sip_password_encrypted",
                ],
            )
    with watch.stage("render"):
        render = await benchlib.render_seeded(
            core, [mac_of(i) for i in bulk], workers=render_workers
        )
    async with core.pool.acquire() as conn:
        # The service runs without its push worker; nothing should be waiting for it.
        await conn.execute("DELETE FROM push_jobs")
        await conn.execute("VACUUM ANALYZE")
    seconds = time.perf_counter() - started
    devices = [Device(mac_of(i), device_passwords[mac_of(i)], username(i)) for i in range(count)]
    return Seeded(devices, round(seconds, 2), watch.stages, domain_count, render)


async def export_files(core: Core, directory: Path) -> dict[str, bytes]:
    """Write every ``<mac>.cfg`` to ``directory``; return them."""
    async with core.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT mac, name, body, sealed FROM device_files WHERE name = mac || '.cfg' "
            "ORDER BY mac"
        )
    exported = {}
    for row in rows:
        body = sealing.unseal(
            core.vault, row["mac"], row["name"], bytes(row["body"]), sealed=row["sealed"]
        )
        (directory / row["name"]).write_bytes(body)
        exported[row["mac"]] = body
    return exported


# --- render time -------------------------------------------------------------------------------


def render_times(handsets: int = 500, runs: int = 20) -> dict[str, Any]:
    """Render a ``handsets``-handset config of every DECT model that carries that many."""
    site = Site(registrar_host="pbx.example.net", registrar_port=5060, timezone="Europe/Berlin")
    found: dict[str, Any] = {}
    for vendor, adapter in ADAPTERS.items():
        for model in adapter.models.values():
            if model.kind != "dect" or model.slots < handsets:
                continue
            lines = tuple(
                Line(
                    slot=slot,
                    username=f"user{slot}",
                    display_name=f"{NAMES[slot % len(NAMES)]} {slot}",
                    extension=str(2000 + slot),
                    sip_user=f"{2000 + slot}-aabbcc-{slot}",
                    sip_auth_user=f"{2000 + slot}-aabbcc-{slot}",
                    sip_password=secrets.token_urlsafe(18),
                    pin=f"{(slot * 7919) % 1_000_000:06d}",
                    language="de",
                    ipui=f"{0x10000 + slot:05X}{slot:05d}",
                )
                for slot in range(1, handsets + 1)
            )
            ctx = RenderContext(
                device=DeviceInfo(mac="000413aabbcc", model=model, label="Bench DECT"),
                lines=lines,
                site=site,
                provisioning_url="https://prov.example.net/provisioning/",
                provisioning_user="000413aabbcc",
                provisioning_password=secrets.token_urlsafe(18),
                access_code=access_codes.generate(key.digits)
                if (key := adapter.access_code_key(model))
                else None,
            )
            timings, cpu = [], []
            size = 0
            for _ in range(runs + 1):  # the first run also compiles the templates
                started, started_cpu = time.perf_counter(), time.thread_time()
                files = adapter.render(ctx, Templates(vendor))
                timings.append((time.perf_counter() - started) * 1000)
                cpu.append((time.thread_time() - started_cpu) * 1000)
                size = sum(len(body) for body in files.values())
            warm = timings[1:]
            found[f"{vendor} {model.name}"] = {
                "slots": model.slots,
                "handsets": handsets,
                "runs": runs,
                "first_ms": round(timings[0], 2),
                "median_ms": round(statistics.median(warm), 2),
                "max_ms": round(max(warm), 2),
                # CPU time of the rendering thread: what the render costs when the machine is
                # shared (wall time then includes waiting for a core).
                "cpu_median_ms": round(statistics.median(cpu[1:]), 2),
                "cpu_max_ms": round(max(cpu[1:]), 2),
                "files": len(files),
                "bytes": size,
                "within_target": max(warm) <= RENDER_TARGET_MS,
            }
    return found


# --- nginx -------------------------------------------------------------------------------------


def nginx_config(prefix: Path, files: Path, per_device_port: int, shared_port: int) -> str:
    def server(port: int, htpasswd: Path) -> str:
        return f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /provisioning/ {{
            alias {files}/;
            auth_basic "provisioner";
            auth_basic_user_file {htpasswd};
        }}
    }}"""

    return f"""# generated by bench/fetch.py
daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    types {{ }}
    default_type "text/plain; charset=utf-8";
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{server(per_device_port, prefix / "htpasswd-per-device")}
{server(shared_port, prefix / "htpasswd-shared")}
}}
"""


# --- service -----------------------------------------------------------------------------------


def service_env(
    dsn: str,
    data_dir: Path,
    port: int,
    phones_port: int | None,
    bootstrap: tuple[str, str],
    admin_password: str,
    phones_processes: int | None = None,
) -> dict[str, str]:
    env = benchlib.child_env()
    env.update(
        {
            "PROVISIONER_DATABASE_URL": dsn,
            "PROVISIONER_DATA_DIR": str(data_dir),
            "PROVISIONER_LISTEN": f"127.0.0.1:{port}",
            "PROVISIONER_PUBLIC_URL": PUBLIC_URL,
            "PROVISIONER_PROVISIONING_USER": bootstrap[0],
            "PROVISIONER_PROVISIONING_PASSWORD": bootstrap[1],
            "PROVISIONER_ADMIN_PASSWORD": admin_password,
        }
    )
    if phones_port is not None:
        env["PROVISIONER_PHONES_LISTEN"] = f"127.0.0.1:{phones_port}"
    if phones_processes:
        env["PROVISIONER_PHONES_PROCESSES"] = str(phones_processes)
    return env


def http_get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback only)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_target(
    target: Target, devices: list[Device], files: dict[str, bytes], *, auth: bool = True
) -> dict[str, Any]:
    """Sample fetches: right credential → 200 and the stored bytes; a wrong one → 401."""
    sample = random.Random(1).sample(devices, min(50, len(devices)))
    for device in sample:
        header = target.override_auth or device.authorization()
        status, body = http_get(
            target.url + device.path, {"Authorization": header, "User-Agent": device.user_agent}
        )
        if status != 200 or body != files[device.mac]:
            raise BenchError(
                f"{target.label}: {device.path} answered {status} "
                f"({'same' if body == files[device.mac] else 'different'} body)"
            )
    if not auth:
        return {"sampled": len(sample), "ok": True}
    # One wrong password only: the service blocks a source after 10 failures a minute.
    device = sample[0]
    status, _ = http_get(
        target.url + device.path,
        {"Authorization": basic(device.mac, "wrong-password"), "User-Agent": device.user_agent},
    )
    if status != 401:
        raise BenchError(f"{target.label}: a wrong password answered {status}, not 401")
    return {"sampled": len(sample), "ok": True, "wrong_password_status": status}


# --- wrk runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkSettings:
    script: Path
    data: Path
    threads: int
    connections: int
    count_statuses: bool
    database: str = ""
    """The benchmark database: CPU of its PostgreSQL backends is reported apart."""


def run_wrk(
    target: Target, settings: WrkSettings, duration: float, *, raw_dir: Path | None = None
) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t",
        str(settings.threads),
        "-c",
        str(settings.connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(settings.script),
        target.url + "/",
        "--",
        str(settings.data),
        target.override_auth,
        "count-statuses" if settings.count_statuses else "",
    ]
    server_cpu = benchlib.cpu_seconds(target.pid) if target.pid else 0.0
    wrk_cpu = benchlib.children_cpu_seconds()
    busy = benchlib.machine_busy_seconds()
    db_before = benchlib.cpu_by_cmdline(settings.database) if settings.database else {}
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, check=False)
    elapsed = time.monotonic() - started
    busy = benchlib.machine_busy_seconds() - busy
    wrk_cpu = benchlib.children_cpu_seconds() - wrk_cpu
    server_cpu = (benchlib.cpu_seconds(target.pid) if target.pid else 0.0) - server_cpu
    db_cpu = (
        benchlib.cpu_delta(db_before, benchlib.cpu_by_cmdline(settings.database))
        if settings.database
        else 0.0
    )
    if raw_dir is not None:
        (raw_dir / f"wrk-{target.key}-{time.time_ns()}.txt").write_text(done.stdout + done.stderr)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk against {target.label} failed:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    statuses = {str(k): v for k, v in raw["statuses"].items()}
    errors = raw["errors"]
    return {
        "target": target.key,
        "label": target.label,
        "duration_s": round(seconds, 2),
        "requests": raw["requests"],
        "requests_per_s": round(raw["requests"] / seconds, 1),
        "transfer_mib_per_s": round(raw["bytes"] / seconds / 2**20, 2),
        "latency_ms": {k: round(v / 1000, 3) for k, v in lat.items()},
        "status_400_or_more": errors["status"],
        "statuses": statuses or None,
        "socket_errors": {k: v for k, v in errors.items() if k != "status"},
        # CPU over the whole wrk run (cores = CPU seconds / wall seconds). "database": the
        # PostgreSQL backends of the benchmark database (fetch records); "others": every other
        # process on the machine.
        "cpu": {
            "server_cores": round(server_cpu / elapsed, 2),
            "server_us_per_request": round(server_cpu * 1e6 / raw["requests"], 1)
            if raw["requests"]
            else None,
            "wrk_cores": round(wrk_cpu / elapsed, 2),
            "machine_busy_cores": round(busy / elapsed, 2),
            "database_cores": round(db_cpu / elapsed, 2),
            "database_us_per_request": round(db_cpu * 1e6 / raw["requests"], 1)
            if raw["requests"]
            else None,
            "others_cores": round(max(0.0, busy - server_cpu - wrk_cpu - db_cpu) / elapsed, 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
        },
    }


# --- password hashing under load (optional) ---------------------------------------------------


class PasswordLoad:
    """``len(usernames)`` admin password changes in flight at once, each user's in a loop, from a
    thread of this process until stopped: ``POST /api/v1/users/{u}/password`` (mode ``set``)
    through the main listener with an admin token. Each change hashes with argon2id.

    One user per loop: an admin's change revokes the user's tokens and refuses a change that
    raced another one (``password_changed_meanwhile``), so loops never share a user.
    """

    def __init__(self, base_url: str, admin_password: str, usernames: list[str]) -> None:
        self.base_url = base_url
        self.admin_password = admin_password
        self.usernames = usernames
        self.completed = 0
        self.statuses: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="password-load", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            self._stop.set()
            raise BenchError(f"password load did not start: {self._failure!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or in the results
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=len(self.usernames) + 1)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.post(
                f"{self.base_url}/api/v1/auth/login",
                json={"username": "admin", "password": self.admin_password},
            ) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    raise BenchError(f"admin login answered {response.status}: {body}")
            headers = {"Authorization": f"Bearer {body['token']}"}
            self._ready.set()
            await asyncio.gather(*(self._loop(session, headers, u) for u in self.usernames))

    async def _loop(self, session: Any, headers: dict[str, str], username: str) -> None:
        url = f"{self.base_url}/api/v1/users/{username}/password"
        while not self._stop.is_set():
            body = {"mode": "set", "password": "Load-" + secrets.token_urlsafe(12)}
            started = time.perf_counter()
            async with session.post(url, json={**body, "temporary": False}, headers=headers) as r:
                await r.read()
                status = r.status
            self.statuses[str(status)] += 1
            if status == 200:
                self.completed += 1
                self.latencies_ms.append((time.perf_counter() - started) * 1000)

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return round(ordered[int(q * (len(ordered) - 1))], 1) if ordered else None

        return {
            "in_flight": len(self.usernames),
            "completed": self.completed,
            "statuses": dict(self.statuses),
            "failure": repr(self._failure) if self._failure else None,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        }


# --- profiling (optional) ------------------------------------------------------------------------


def profile_service(pid: int, seconds: float, run: Any, out_dir: Path) -> dict[str, Any] | None:
    """Sample the service with py-spy while ``run()`` loads it; return the hottest frames."""
    if shutil.which("py-spy") is None:
        return None
    raw = out_dir / "py-spy.txt"
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--gil",  # only the thread holding the GIL: where Python spends CPU
            "--subprocesses",  # the extra phones' processes too
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        load = run()
    finally:
        try:
            _, err = spy.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
    if spy.returncode != 0 or not raw.exists():
        return {"error": (err or b"").decode(errors="replace")[-500:]}
    return {"load": load, **summarise_stacks(raw.read_text())}


# Frames every sample of the serve process passes through: left out of the inclusive list.
_ROOT_FRAMES = frozenset(
    {
        "main (provisioner/cli.py)",
        "cmd_serve (provisioner/cli.py)",
        "cmd_phones_server (provisioner/cli.py)",
        "_run_code (<frozen runpy>)",
        "_run_module_as_main (<frozen runpy>)",
        "run (asyncio/runners.py)",
        "Runner.run (asyncio/runners.py)",
    }
)


def summarise_stacks(collapsed: str, top: int = 25) -> dict[str, Any]:
    """Self and inclusive time per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_short_frame(f) for f in stack.split(";")]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames) - _ROOT_FRAMES:
            if not frame.startswith(("<module> ", "process ")):
                inclusive[frame] += count
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}


def _short_frame(frame: str) -> str:
    # "function (path/to/module.py:123)" → "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if parts else file
    return f"{name} ({short})"


# --- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per service mode")
    parser.add_argument(
        "--modes",
        default="main,phones",
        help="service modes: main (phones on the main listener), phones "
        "(PROVISIONER_PHONES_LISTEN); comma-separated",
    )
    parser.add_argument(
        "--phones-processes",
        type=int,
        default=None,
        help="PROVISIONER_PHONES_PROCESSES for the phones mode (default: the service's own, "
        "one per core)",
    )
    parser.add_argument("--domain-devices", type=int, default=100)
    parser.add_argument(
        "--count-statuses",
        action="store_true",
        help="tally every status code in a wrk response() hook (costs wrk some CPU)",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="after the measured runs, sample the service with py-spy under load",
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the calibration run against a bare aiohttp app (floor_server.py)",
    )
    parser.add_argument(
        "--password-load",
        type=int,
        default=0,
        metavar="N",
        help="per round, one more run of the service while N admin password changes (argon2id) "
        "run at once in a loop: fetch p99 with and without that load",
    )
    parser.add_argument(
        "--no-nginx-per-device",
        action="store_true",
        help="skip the run against nginx with one htpasswd line per device",
    )
    benchlib.add_seeding_and_output_options(parser)
    parser.add_argument("--no-results", action="store_true", help="do not write bench/results")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (not the DB)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"main", "phones"}:
        parser.error("--modes is a comma-separated list of main, phones")
    args.modes = modes
    if args.devices < 1:
        parser.error("--devices must be at least 1")
    if args.password_load < 0 or args.password_load > args.devices:
        parser.error("--password-load is at most --devices (one user per change in flight)")
    return args


def main() -> int:
    args = parse_args()
    benchlib.require_tools(TOOLS)
    results: dict[str, Any] = {
        "benchmark": "fetch",
        "started_at": benchlib.utc_now(),
        "machine": benchlib.machine_info(),
        "versions": {
            **benchlib.package_versions(
                ["provisioner", "aiohttp", "uvloop", "asyncpg", "Jinja2", "cryptography"]
            ),
            "nginx": benchlib.tool_version(["nginx", "-v"]),
            "wrk": benchlib.tool_version(["wrk", "-v"]),
        },
        "source": benchlib.git_state(),
        "parameters": {
            "devices": args.devices,
            "vendor_model": f"{VENDOR} {MODEL}",
            "file": "<mac>.cfg",
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk_threads": args.threads,
            "rounds": args.rounds,
            "modes": args.modes,
            "password_load": args.password_load,
            "service_code": str(benchlib.code_root()),
            "status_counting": "lua response() hook"
            if args.count_statuses
            else "wrk's count of responses with status >= 400",
        },
    }
    with contextlib.ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="provisioner-bench-"))
        if args.keep:
            log(f"keeping {tmp}")
        else:
            cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        tmp.chmod(0o755)  # nginx workers run as an unprivileged user
        data_dir = tmp / "data"
        www = tmp / "www"
        nginx_prefix = tmp / "nginx"
        for d in (data_dir, www, nginx_prefix):
            d.mkdir()
            d.chmod(0o755)
        data_dir.chmod(0o700)

        db_name, dsn = asyncio.run(benchlib.create_database("provisioner_bench"))
        cleanup.callback(lambda: asyncio.run(benchlib.drop_database(db_name)))
        log(f"database {db_name}, temp dir {tmp}")
        bootstrap = ("provision", secrets.token_urlsafe(18))
        admin_password = "Bench-" + secrets.token_urlsafe(18)
        settings = Settings.from_env(
            service_env(dsn, data_dir, 8080, None, bootstrap, admin_password),
        )
        settings = replace(settings, public_url=PUBLIC_URL)

        async def prepare() -> tuple[Seeded, dict[str, bytes], str]:
            async with open_core(settings) as core:
                log(f"seeding {args.devices} devices ...")
                seeded = await seed(
                    core,
                    args.devices,
                    args.domain_devices,
                    admin_password=admin_password,
                    render_workers=args.seed_workers,
                )
                exported = await export_files(core, www)
                async with core.pool.acquire() as conn:
                    pg_version = await conn.fetchval("SHOW server_version")
            return seeded, exported, str(pg_version)

        seeded, files, pg_version = asyncio.run(prepare())
        results["versions"]["postgresql"] = pg_version
        if len(files) != args.devices:
            raise BenchError(f"exported {len(files)} files for {args.devices} devices")
        results["seeding"] = {
            "seconds": seeded.seconds,
            "stages_s": seeded.stages,
            "domain_path_devices": seeded.domain_devices,
            "render": seeded.render,
            "bulk_devices": args.devices - seeded.domain_devices,
            "distinct_pin_verifiers": DISTINCT_PINS,
            "file_bytes_mean": round(statistics.mean(len(b) for b in files.values())),
        }
        log(f"seeded in {seeded.seconds:.1f}s {seeded.stages}")
        devices = seeded.devices

        log("render time of 500-handset DECT configs ...")
        results["render_500_handsets"] = render_times()

        # nginx: per-device {SHA} credentials (the service's own) and one shared credential.
        shared_user, shared_password = "provision", secrets.token_urlsafe(18)
        (nginx_prefix / "htpasswd-per-device").write_text(
            "".join(sha_htpasswd_line(d.mac, d.password) for d in devices)
        )
        (nginx_prefix / "htpasswd-shared").write_text(
            sha_htpasswd_line(shared_user, shared_password)
        )
        for f in nginx_prefix.iterdir():
            f.chmod(0o644)
        nginx_per_device_port, nginx_shared_port = benchlib.free_port(), benchlib.free_port()
        conf = nginx_prefix / "nginx.conf"
        conf.write_text(nginx_config(nginx_prefix, www, nginx_per_device_port, nginx_shared_port))
        nginx = benchlib.start_child(
            "nginx",
            ["nginx", "-c", str(conf), "-p", str(nginx_prefix), "-e", str(nginx_prefix / "e.log")],
            log_path=tmp / "nginx.out",
            cleanup=cleanup,
        )
        time.sleep(0.3)
        nginx_shared = Target(
            "nginx_shared",
            "nginx, {SHA} basic auth, one shared credential",
            f"http://127.0.0.1:{nginx_shared_port}",
            override_auth=basic(shared_user, shared_password),
            pid=nginx.pid,
        )
        nginx_per_device = Target(
            "nginx_per_device",
            f"nginx, {{SHA}} basic auth, {len(devices)}-line htpasswd (per-device credentials)",
            f"http://127.0.0.1:{nginx_per_device_port}",
            pid=nginx.pid,
        )
        for target in (nginx_shared, nginx_per_device):
            _wait_nginx(nginx, target.url)
            check_target(target, devices, files)

        wrk_data = tmp / "requests.tsv"
        wrk_data.write_text(
            "".join(f"{d.path}\t{d.authorization()}\t{d.user_agent}\n" for d in devices)
        )
        wrk_script = tmp / "fetch.lua"
        wrk_script.write_text(WRK_LUA)
        wrk = WrkSettings(
            wrk_script, wrk_data, args.threads, args.connections, args.count_statuses, db_name
        )
        raw_dir = tmp / "wrk"
        raw_dir.mkdir()

        runs: list[dict[str, Any]] = []
        services: dict[str, Any] = {}

        def measure(
            target: Target, mode: str | None, round_no: int, load: PasswordLoad | None = None
        ) -> dict[str, Any]:
            warmup = run_wrk(target, wrk, args.warmup) if args.warmup > 0 else None
            completed = load.completed if load else 0
            result = run_wrk(target, wrk, args.duration, raw_dir=raw_dir)
            result["warmup_requests"] = warmup["requests"] if warmup else 0
            result["service_mode"] = mode
            result["round"] = round_no
            if load is not None:
                done = load.completed - completed
                result["password_changes"] = {
                    "in_flight": len(load.usernames),
                    "completed_during_run": done,
                    "per_s": round(done / result["duration_s"], 1),
                }
            runs.append(result)
            cpu = result["cpu"]
            log(
                f"  {target.key:<18} {result['requests_per_s']:>8.0f} req/s  "
                f"p99 {result['latency_ms']['p99']:7.2f} ms  "
                f">=400: {result['status_400_or_more']}  "
                f"sock err: {sum(result['socket_errors'].values())}  "
                f"cpu: server {cpu['server_cores']:.2f} ({cpu['server_us_per_request']} us/req) "
                f"wrk {cpu['wrk_cores']:.2f} db {cpu['database_cores']:.2f} "
                f"others {cpu['others_cores']:.2f}"
                + (f"  statuses {result['statuses']}" if result["statuses"] else "")
                + (
                    f"  password changes: {result['password_changes']['completed_during_run']}"
                    if load
                    else ""
                )
            )
            return result

        profile: dict[str, Any] | None = None
        for mode in args.modes:
            port = benchlib.free_port()
            phones_port = benchlib.free_port() if mode == "phones" else None
            env = service_env(
                dsn, data_dir, port, phones_port, bootstrap, admin_password, args.phones_processes
            )
            log(f"starting provisioner serve ({mode}) from {benchlib.code_root()} ...")
            service = benchlib.start_child(
                f"provisioner serve ({mode})",
                benchlib.service_argv("serve", "--no-worker"),
                log_path=tmp / f"serve-{mode}.log",
                env=env,
                cwd=benchlib.code_root(),  # its phones' processes run `python -m provisioner`
                cleanup=cleanup,
            )
            startup = benchlib.wait_http(f"http://127.0.0.1:{port}/healthz", service)
            processes = 1
            if phones_port is not None:
                # Extra phones' processes load their own cache and then listen on the same
                # port (SO_REUSEPORT); wrk's connections must be spread over all of them.
                processes = args.phones_processes or os.cpu_count() or 1
                startup += benchlib.wait_listeners(phones_port, processes, service)
            target = Target(
                f"service_{mode}",
                "provisioner serve, phones on "
                + ("PROVISIONER_PHONES_LISTEN" if mode == "phones" else "the main listener"),
                f"http://127.0.0.1:{phones_port or port}",
                pid=service.pid,
            )
            seen_since = asyncio.run(_database_now(dsn))
            check_target(target, devices, files)
            memory_loaded = benchlib.memory_of(service.pid)
            service_runs = []
            loaded = Target(
                f"password_load_{mode}",
                f"{target.label}, {args.password_load} admin password changes in flight",
                target.url,
                pid=service.pid,
            )
            for round_no in range(1, args.rounds + 1):
                service_runs.append(measure(target, mode, round_no))
                measure(nginx_shared, mode, round_no)
                if args.password_load:
                    usernames = [d.username for d in devices[: args.password_load]]
                    load = PasswordLoad(f"http://127.0.0.1:{port}", admin_password, usernames)
                    load.start()
                    try:
                        result = measure(loaded, mode, round_no, load=load)
                    finally:
                        load.stop()
                    result["password_changes"]["whole_run"] = load.figures()
                    service_runs.append(result)
            # The recorders write every second; with 100,000 devices their first fetches take
            # a while to write: wait for them (at most 60 s), then count.
            deadline = time.monotonic() + 60
            seen = asyncio.run(_count_seen(dsn, seen_since))
            while seen < args.devices and time.monotonic() < deadline:
                time.sleep(1.0)
                seen = asyncio.run(_count_seen(dsn, seen_since))
            log_lines = _count_lines(tmp / f"serve-{mode}.log")
            memory_after = benchlib.memory_of(service.pid)
            if args.profile > 0 and mode == args.modes[-1]:
                log(f"profiling the service with py-spy for {args.profile:g}s ...")
                profile = profile_service(
                    service.pid,
                    args.profile,
                    lambda target=target: run_wrk(target, wrk, args.profile + 1),
                    tmp,
                )
            services[mode] = {
                "phones_processes": processes,
                "startup_to_healthy_s": round(startup, 2),
                "memory_after_load": memory_loaded,
                "memory_after_runs": memory_after,
                # wrk's script rotates through every device: each shows a last fetch since the
                # start (its first fetch is written at once, the repeats folded into one write a
                # minute), so this should be the number of devices.
                "devices_seen": seen,
                "wrk_responses_counted": sum(
                    r["requests"] + r["warmup_requests"] for r in service_runs
                ),
                "log_lines": log_lines,
            }
            service.stop()
            if not service.alive() and service.proc.returncode not in (0, -15):
                log(f"serve exited with {service.proc.returncode}:\n{service.log_tail()}")

        if not args.no_floor:

            def calibrate(key: str, description: str, extra: list[str]) -> None:
                """Measure ``floor_server.py`` (with ``extra`` arguments) as target ``key``."""
                port = benchlib.free_port()
                floor = benchlib.start_child(
                    key,
                    [
                        sys.executable,
                        str(benchlib.BENCH_DIR / "floor_server.py"),
                        str(port),
                        str(www),
                        *extra,
                    ],
                    log_path=tmp / f"{key}.log",
                    cleanup=cleanup,
                )
                target = Target(key, description, f"http://127.0.0.1:{port}", pid=floor.pid)
                benchlib.wait_http(target.url + devices[0].path, floor, timeout=60)
                check_target(target, devices, files, auth=False)
                log(f"{key} (calibration) ...")
                measure(target, None, 1)
                floor.stop()

            calibrate(
                "aiohttp_floor",
                "aiohttp floor: 1 process, uvloop, one route, bytes from a dict, no auth/log",
                [],
            )
            # The lean design's floor: the phones' server's protocol answering from a dict, in
            # as many processes as the service's phones' processes.
            processes = args.phones_processes or os.cpu_count() or 1
            calibrate(
                "protocol_floor",
                f"protocol floor: {processes} processes, uvloop, aiohttp's C parser, "
                "bytes from a dict, no auth/identify/record",
                ["--protocol", str(processes)],
            )

        if not args.no_nginx_per_device:
            log("nginx with the per-device htpasswd ...")
            measure(nginx_per_device, None, 1)
        nginx.stop()

    results["nginx"] = {
        "workers": 2,
        "config": "access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000; "
        "auth_basic_user_file with {SHA} lines",
        "baseline": nginx_shared.key,
        "why": (
            "nginx reads and scans its auth_basic_user_file on every request, so with one line "
            "per device its throughput falls with the number of devices; the ratio uses the "
            "shared-credential run (the stricter, fast baseline), and the per-device run is "
            "reported beside it. Requests to nginx carry the same paths and User-Agents; with "
            "the shared credential the Authorization header is the shared one."
        ),
    }
    results["runs"] = runs
    results["service"] = services
    results["summary"] = summarise(runs, results, services)
    if profile is not None:
        results["profile"] = profile
    results["finished_at"] = benchlib.utc_now()
    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.no_results:
        dated, latest = benchlib.write_results("fetch", results)
        log(f"wrote {dated.relative_to(benchlib.REPO_DIR)} and {latest.name}")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print_summary(results)
    return 0


def _wait_nginx(nginx: Child, url: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not nginx.alive():
            raise BenchError(f"nginx exited:\n{nginx.log_tail()}")
        with contextlib.suppress(OSError):
            status, _ = http_get(url + "/", {})
            if status in (401, 403, 404):
                return
        time.sleep(0.1)
    raise BenchError(f"nginx does not answer on {url}")


async def _database_now(dsn: str) -> datetime:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        now: datetime = await conn.fetchval("SELECT now()")
        return now
    finally:
        await conn.close()


async def _count_seen(dsn: str, since: datetime) -> int:
    """Devices whose last fetch was recorded at or after ``since``."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM devices WHERE last_fetch_at >= $1", since)
        )
    finally:
        await conn.close()


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


def summarise(
    runs: list[dict[str, Any]], results: dict[str, Any], services: dict[str, Any]
) -> dict[str, Any]:
    def of(key: str) -> list[dict[str, Any]]:
        return [r for r in runs if r["target"] == key]

    def rps(items: list[dict[str, Any]]) -> float:
        return round(statistics.mean(r["requests_per_s"] for r in items), 1) if items else 0.0

    def p99(items: list[dict[str, Any]]) -> float | None:
        return max(r["latency_ms"]["p99"] for r in items) if items else None

    def cpu_per_request(items: list[dict[str, Any]]) -> float | None:
        values = [r["cpu"]["server_us_per_request"] for r in items]
        return round(statistics.mean(values), 1) if items and None not in values else None

    nginx_rps = rps(of("nginx_shared"))
    modes = {}
    for key in sorted({r["target"] for r in runs if r["target"].startswith("service_")}):
        mode = key.removeprefix("service_")
        # The nginx runs that alternated with this mode's runs.
        beside = [r for r in of("nginx_shared") if r["service_mode"] == mode]
        service_rps = rps(of(key))
        modes[mode] = {
            "requests_per_s": service_rps,
            "p99_ms": p99(of(key)),
            "nginx_requests_per_s": rps(beside),
            "nginx_p99_ms": p99(beside),
            "ratio_to_nginx": round(service_rps / rps(beside), 3) if rps(beside) else None,
            "status_400_or_more": sum(r["status_400_or_more"] for r in of(key)),
            "cpu_us_per_request": cpu_per_request(of(key)),
            "database_cpu_us_per_request": round(
                statistics.mean(r["cpu"]["database_us_per_request"] or 0 for r in of(key)), 1
            ),
            "nginx_cpu_us_per_request": cpu_per_request(beside),
            "others_cores_during_runs": round(
                statistics.mean(r["cpu"]["others_cores"] for r in of(key) + beside), 2
            ),
        }
        service_cpu, nginx_cpu = (
            modes[mode]["cpu_us_per_request"],
            modes[mode]["nginx_cpu_us_per_request"],
        )
        # Requests per CPU-second, service over nginx: what the throughput ratio would be if
        # both got the same CPU. Robust when other work shares the machine; not the target.
        modes[mode]["cpu_efficiency_ratio"] = (
            round(nginx_cpu / service_cpu, 3) if service_cpu and nginx_cpu else None
        )
    floor = of("aiohttp_floor")
    floor_cpu = cpu_per_request(floor)
    protocol_floor = of("protocol_floor")
    for m in modes.values():
        # How much CPU per request the service spends over a bare aiohttp app.
        m["cpu_over_aiohttp_floor"] = (
            round(m["cpu_us_per_request"] / floor_cpu, 2)
            if floor_cpu and m["cpu_us_per_request"]
            else None
        )
    password_load = {}
    for key in sorted({r["target"] for r in runs if r["target"].startswith("password_load_")}):
        mode = key.removeprefix("password_load_")
        loaded = of(key)
        # The idle runs of the same rounds (each round: idle, nginx, then under load).
        idle = [r for r in of(f"service_{mode}") if r["round"] in {x["round"] for x in loaded}]
        idle_p99, loaded_p99 = p99(idle), p99(loaded)
        ratio = round(loaded_p99 / idle_p99, 2) if idle_p99 and loaded_p99 is not None else None
        statuses: Counter[str] = Counter()
        for r in loaded:
            statuses.update(r["password_changes"]["whole_run"]["statuses"])
        password_load[mode] = {
            "in_flight": loaded[0]["password_changes"]["in_flight"],
            "idle_p99_ms": idle_p99,
            "loaded_p99_ms": loaded_p99,
            "p99_ratio": ratio,
            "p99_ratio_target": PASSWORD_LOAD_P99_TARGET,
            "p99_ratio_met": ratio is not None and ratio <= PASSWORD_LOAD_P99_TARGET,
            "idle_requests_per_s": rps(idle),
            "loaded_requests_per_s": rps(loaded),
            "password_changes_during_runs": sum(
                r["password_changes"]["completed_during_run"] for r in loaded
            ),
            "password_changes_per_s": round(
                statistics.mean(r["password_changes"]["per_s"] for r in loaded), 1
            ),
            "password_change_statuses": dict(statuses),
            "password_changes_ok": set(statuses) == {"200"}
            and not any(r["password_changes"]["whole_run"]["failure"] for r in loaded),
            "others_cores_during_runs": round(
                statistics.mean(r["cpu"]["others_cores"] for r in loaded + idle), 2
            ),
        }
    best = max(modes, key=lambda m: modes[m]["ratio_to_nginx"] or 0) if modes else None
    per_device = of("nginx_per_device")
    renders = results.get("render_500_handsets", {})
    rss = [s["memory_after_load"]["rss_mib"] for s in services.values()]
    rss_each = [
        max(s["memory_after_load"]["rss_mib_per_process"], default=0) for s in services.values()
    ]
    return {
        "service_modes": modes,
        "password_load": password_load or None,
        "best_mode": best,
        "ratio_to_nginx": modes[best]["ratio_to_nginx"] if best else None,
        "ratio_target": TARGET_RATIO,
        "ratio_met": bool(best and (modes[best]["ratio_to_nginx"] or 0) >= TARGET_RATIO),
        "nginx_shared_requests_per_s": nginx_rps,
        "nginx_per_device_requests_per_s": rps(per_device),
        "nginx_per_device_p99_ms": p99(per_device),
        "ratio_to_nginx_per_device": (
            round(modes[best]["requests_per_s"] / rps(per_device), 3)
            if best and per_device
            else None
        ),
        "aiohttp_floor_requests_per_s": rps(floor) if floor else None,
        "aiohttp_floor_cpu_us_per_request": floor_cpu,
        "protocol_floor_requests_per_s": rps(protocol_floor) if protocol_floor else None,
        "protocol_floor_cpu_us_per_request": cpu_per_request(protocol_floor),
        "protocol_floor_ratio_to_nginx": (
            round(rps(protocol_floor) / nginx_rps, 3) if protocol_floor and nginx_rps else None
        ),
        "render_500_max_ms": max((r["max_ms"] for r in renders.values()), default=None),
        "render_target_ms": RENDER_TARGET_MS,
        "rss_after_load_mib": max(rss) if rss else None,
        "rss_after_load_mib_largest_process": max(rss_each) if rss_each else None,
        "rss_target_mib": RSS_TARGET_MIB,
        "seeding_s": results["seeding"]["seconds"],
        "all_responses_ok": all(
            r["status_400_or_more"] == 0 and not any(r["socket_errors"].values()) for r in runs
        ),
    }


def print_summary(results: dict[str, Any]) -> None:
    s = results["summary"]
    p = results["parameters"]
    out = [
        "",
        f"fetch benchmark: {p['devices']} devices, {p['connections']} connections, "
        f"{p['duration_s']:g}s runs, {results['machine']['nproc']} cores "
        f"({results['machine']['cpu_model']})",
    ]
    for mode, m in s["service_modes"].items():
        out.append(
            f"  service ({mode:<6}) {m['requests_per_s']:>9.0f} req/s  p99 {m['p99_ms']:.2f} ms  "
            f"| nginx beside it {m['nginx_requests_per_s']:>9.0f} req/s  "
            f"p99 {m['nginx_p99_ms']:.2f} ms  | ratio {m['ratio_to_nginx']:.2f}"
        )
        out.append(
            f"    CPU per request: service {m['cpu_us_per_request']} us, nginx "
            f"{m['nginx_cpu_us_per_request']} us (per-CPU ratio {m['cpu_efficiency_ratio']}); "
            f"PostgreSQL {m['database_cpu_us_per_request']} us; "
            f"other processes used {m['others_cores_during_runs']} cores meanwhile"
            + (
                f"; {m['cpu_over_aiohttp_floor']}x the aiohttp floor's CPU"
                if m["cpu_over_aiohttp_floor"]
                else ""
            )
        )
    if s["nginx_per_device_p99_ms"] is not None:
        out.append(
            f"  nginx, {p['devices']}-line htpasswd: "
            f"{s['nginx_per_device_requests_per_s']:.0f} req/s"
            f"  p99 {s['nginx_per_device_p99_ms']:.2f} ms"
        )
    if s["aiohttp_floor_requests_per_s"]:
        out.append(
            f"  aiohttp floor (1 process, no auth/log): {s['aiohttp_floor_requests_per_s']:.0f} "
            f"req/s, {s['aiohttp_floor_cpu_us_per_request']} us CPU per request"
        )
    if s["protocol_floor_requests_per_s"]:
        out.append(
            f"  protocol floor (the lean server answering from a dict, no auth/identify/record): "
            f"{s['protocol_floor_requests_per_s']:.0f} req/s, "
            f"{s['protocol_floor_cpu_us_per_request']} us CPU per request, "
            f"{s['protocol_floor_ratio_to_nginx']}x nginx"
        )
    for mode, m in (s["password_load"] or {}).items():
        verdict = "met" if m["p99_ratio_met"] else "NOT met"
        out.append(
            f"  password load ({mode:<6}) {m['in_flight']} changes in flight: p99 "
            f"{m['loaded_p99_ms']:.2f} ms against {m['idle_p99_ms']:.2f} ms idle, "
            f"ratio {m['p99_ratio']} (target <= {m['p99_ratio_target']:g}: {verdict}); "
            f"{m['loaded_requests_per_s']:.0f} req/s against {m['idle_requests_per_s']:.0f}; "
            f"{m['password_changes_during_runs']} changes ({m['password_changes_per_s']}/s), "
            f"statuses {m['password_change_statuses']}"
        )
    verdict = "met" if s["ratio_met"] else "NOT met"
    out.append(
        f"  ratio to nginx: {s['ratio_to_nginx']} (target >= {s['ratio_target']}: {verdict})"
    )
    for name, r in results["render_500_handsets"].items():
        out.append(
            f"  render {name}, 500 handsets: median {r['median_ms']:.1f} ms, max "
            f"{r['max_ms']:.1f} ms (CPU: median {r['cpu_median_ms']:.1f}, max "
            f"{r['cpu_max_ms']:.1f}; target <= {RENDER_TARGET_MS:g})"
        )
    out.append(
        f"  service RSS after load: {s['rss_after_load_mib']} MiB, all processes; largest "
        f"process {s['rss_after_load_mib_largest_process']} MiB (target < {RSS_TARGET_MIB:g})"
    )
    out.append(f"  seeding: {s['seeding_s']:.1f}s  all responses OK: {s['all_responses_ok']}")
    profile = results.get("profile")
    if profile and profile.get("samples"):
        out.append(f"  py-spy, {profile['samples']} samples; inclusive % of the hottest frames:")
        out.extend(f"    {pct:5.1f}  {name}" for name, pct in profile["inclusive_pct"][:15])
        out.append("  self %:")
        out.extend(f"    {pct:5.1f}  {name}" for name, pct in profile["self_pct"][:15])
    print("\n".join(out))


if __name__ == "__main__":
    benchlib.run_main(main)

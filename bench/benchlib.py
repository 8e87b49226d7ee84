"""Helpers shared by the benchmarks in this folder: throwaway databases, child processes that
are always cleaned up, the service as a subprocess, memory and machine facts, result files.

Nothing here is imported by the service or its tests; benchmarks import it as ``benchlib``
(``python bench/<name>.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
# The service's code: the checkout this folder belongs to, unless PYTHONPATH names another (e.g.
# a copy with a change to measure). Without this an installed ``provisioner`` (``pip install
# -e`` of another checkout) would be seeded and run instead of this one.
if not os.environ.get("PYTHONPATH") and str(REPO_DIR) not in sys.path:
    sys.path.insert(1, str(REPO_DIR))
ADMIN_DSN = os.environ.get(
    "PROVISIONER_BENCH_ADMIN_DSN",
    os.environ.get("PROVISIONER_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
)


class BenchError(RuntimeError):
    """A benchmark cannot go on; the message says why (no traceback needed)."""


# --- signals and cleanup ---------------------------------------------------------------------


def raise_on_sigterm() -> None:
    """Turn SIGTERM (and SIGHUP) into KeyboardInterrupt so ``finally`` blocks clean up."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when this benchmark dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """A child process that is stopped (TERM, then KILL) when the benchmark ends."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def start_child(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cleanup: contextlib.ExitStack,
) -> Child:
    """Start ``argv`` with output to ``log_path``; ``cleanup`` stops it."""
    log = log_path.open("wb")
    cleanup.callback(log.close)
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,  # Ctrl-C reaches us only; we stop the child in order
        preexec_fn=_die_with_parent,  # no threads run here: fork+exec is safe
    )
    child = Child(name, proc, log_path)
    cleanup.callback(child.stop)
    return child


def code_root() -> Path:
    """The directory holding the ``provisioner`` package this benchmark imported."""
    import provisioner

    return Path(provisioner.__file__).resolve().parent.parent


def child_env(first: Path | None = None) -> dict[str, str]:
    """This process's environment without ``PROVISIONER_*``, with ``first`` (default: the code
    this benchmark imported, see :func:`code_root`) first on ``PYTHONPATH``: run the service as
    ``python -P -m provisioner`` with it, and it runs the code that seeded its database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    path = [str((first or code_root()).resolve()), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


def service_argv(*args: str) -> list[str]:
    """``provisioner <args>`` as run with :func:`child_env`: ``-P`` keeps the working directory
    off ``sys.path``, so ``PYTHONPATH`` alone says which code runs."""
    return [sys.executable, "-P", "-m", "provisioner", *args]


def require_tools(tools: Mapping[str, str]) -> None:
    """``tools``: executable → how to install it. Stops with every missing one listed."""
    missing = [f"  {tool}: {how}" for tool, how in tools.items() if shutil.which(tool) is None]
    if missing:
        raise BenchError("missing tools:\n" + "\n".join(missing))


def add_seeding_and_output_options(parser: argparse.ArgumentParser) -> None:
    """The options ``fetch.py`` and ``fanout.py`` share: seeding parallelism and a JSON copy."""
    parser.add_argument(
        "--seed-workers",
        type=int,
        default=1,
        help="connections rendering the seeded devices at once (batches of 100)",
    )
    parser.add_argument(
        "--json-out",
        type=Path,
        metavar="PATH",
        help="also write the results to PATH (e.g. for bench/curves.py, with --no-results)",
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, child: Child | None = None, *, timeout: float = 180.0) -> float:
    """Poll ``url`` until it answers 200; return the seconds waited."""
    started = time.monotonic()
    while True:
        if child is not None and not child.alive():
            raise BenchError(
                f"{child.name} exited with {child.proc.returncode} while starting:\n"
                + child.log_tail()
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - started > timeout:
            raise BenchError(f"{url} did not answer 200 within {timeout:.0f}s")
        time.sleep(0.1)


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` (several with SO_REUSEPORT: one per process)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def wait_listeners(port: int, count: int, child: Child | None, *, timeout: float = 120.0) -> float:
    """Wait until ``count`` sockets listen on ``port``; return the seconds waited."""
    started = time.monotonic()
    while listening_sockets(port) < count:
        if child is not None and not child.alive():
            raise BenchError(f"{child.name} exited while starting:\n" + child.log_tail())
        if time.monotonic() - started > timeout:
            raise BenchError(
                f"only {listening_sockets(port)} of {count} processes listen on {port} "
                f"after {timeout:.0f}s"
            )
        time.sleep(0.1)
    return time.monotonic() - started


# --- throwaway database ----------------------------------------------------------------------


def dsn_for(database: str, admin_dsn: str = ADMIN_DSN) -> str:
    return urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{database}"))


async def create_database(prefix: str, admin_dsn: str = ADMIN_DSN) -> tuple[str, str]:
    """Create ``<prefix>_<random>``; return (name, dsn)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot reach PostgreSQL at {admin_dsn}: {exc}") from None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, dsn_for(name, admin_dsn)


async def drop_database(name: str, admin_dsn: str = ADMIN_DSN) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --- rendering the seeded devices --------------------------------------------------------------


async def render_seeded(
    core: Any, macs: Sequence[str], *, workers: int = 1, check: int = 20
) -> dict[str, Any]:
    """Render ``macs`` once through the real pipeline, as the push worker does: batches of
    ``provisioning.BATCH`` devices, each in one transaction by ``provisioning.render_devices_in``
    (the function whose output the service stores and serves), on ``workers`` connections at
    once. Then ``check`` sampled devices are rendered again alone (``provisioning.preview``) and
    must give the stored bytes. Raises :class:`BenchError` for any device that did not render.
    """
    from provisioner import provisioning, sealing

    batches = [
        list(macs[start : start + provisioning.BATCH])
        for start in range(0, len(macs), provisioning.BATCH)
    ]
    queue = list(reversed(batches))
    failed: list[Any] = []

    async def worker() -> None:
        async with core.pool.acquire() as conn:
            while queue:
                batch = queue.pop()
                async with conn.transaction():
                    outcomes = await provisioning.render_devices_in(core, conn, batch)
                failed.extend(o for o in outcomes.values() if o.error or not o.changed)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, workers))))
    seconds = time.perf_counter() - started
    if failed:
        raise BenchError(f"{len(failed)} devices did not render, e.g. {failed[0]}")
    sample = random.Random(len(macs)).sample(list(macs), min(check, len(macs)))
    async with core.pool.acquire() as conn:
        for mac in sample:
            stored = {
                row["name"]: sealing.unseal(
                    core.vault, mac, row["name"], bytes(row["body"]), sealed=row["sealed"]
                )
                for row in await conn.fetch(
                    "SELECT name, body, sealed FROM device_files WHERE mac = $1", mac
                )
            }
            if stored != await provisioning.preview(core, mac):
                raise BenchError(f"{mac}: the stored files differ from a render of it alone")
    return {
        "devices": len(macs),
        "workers": workers,
        "batch": provisioning.BATCH,
        "seconds": round(seconds, 2),
        "ms_per_device": round(seconds * 1000 / len(macs), 3) if macs else None,
        "checked_against_single_render": len(sample),
    }


# --- memory ----------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                    found.extend(int(c) for c in children if int(c) not in found)
    return found


def _status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def memory_of(pid: int) -> dict[str, Any]:
    """VmRSS (now) and VmHWM (peak) of ``pid`` and its descendants, in MiB."""
    pids = process_tree(pid)
    per_process = {p: _status_kib(p, "VmRSS") for p in pids}
    return {
        "processes": len(pids),
        "rss_mib": round(sum(per_process.values()) / 1024, 1),
        "rss_mib_per_process": [round(v / 1024, 1) for v in per_process.values()],
        "peak_rss_mib": round(sum(_status_kib(p, "VmHWM") for p in pids) / 1024, 1),
    }


# --- CPU time ----------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def cpu_by_cmdline(needle: str) -> dict[int, float]:
    """CPU seconds of every process whose command line contains ``needle`` (e.g. the PostgreSQL
    backends serving one database: their title names it)."""
    found: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            if needle.encode() in cmdline:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                found[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    return found


def cpu_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds spent between two :func:`cpu_by_cmdline` snapshots (new processes count
    whole; processes that ended in between are missed)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / _TICK


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (e.g. a finished wrk)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- machine and versions --------------------------------------------------------------------


def _first_line(argv: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else None


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_total = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": mem_total,
        "kernel": platform.release(),
        "hostname": platform.node(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def tool_version(argv: Sequence[str]) -> str | None:
    return _first_line(argv)


def git_state() -> dict[str, Any]:
    """Read-only: the commit benchmarked and whether the tree had local changes."""
    commit = _first_line(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"])
    try:
        status = subprocess.run(
            ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        status = ""
    return {"commit": commit, "dirty": bool(status.strip())}


# --- results ---------------------------------------------------------------------------------


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_results(name: str, results: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``results/<name>-<UTC date>.json`` and ``results/latest-<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    text = json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    dated = RESULTS_DIR / f"{name}-{stamp}.json"
    latest = RESULTS_DIR / f"latest-{name}.json"
    dated.write_text(text)
    latest.write_text(text)
    return dated, latest


@dataclass
class Stopwatch:
    """Named stages, in seconds."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round(time.perf_counter() - started, 3)


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_main(main: Callable[[], int]) -> None:
    """Run ``main`` with SIGTERM as Ctrl-C and one-line errors for :class:`BenchError`."""
    raise_on_sigterm()
    try:
        code = main()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("bench: interrupted; cleaned up", file=sys.stderr)
        code = 130
    sys.exit(code)

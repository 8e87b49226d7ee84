"""A PostgreSQL cluster of the fault tests' own, which they stop and start under the service.

It is the embedded cluster the product runs without a database URL (``provisioner.embedded``):
``initdb``/``pg_ctl`` from ``/usr/lib/postgresql/*/bin``, as the ``postgres`` OS user when the
tests run as root, reachable on a unix socket only (a stopped server removes it: clients get
``FileNotFoundError``, as they get ``ConnectionRefusedError`` from a TCP port). One cluster per
session (``initdb`` takes seconds); every test gets a fresh, migrated database in it.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from provisioner.db import migrate
from provisioner.embedded import PORT, SUPERUSER, EmbeddedPostgres
from tests.conftest import ADMIN_PASSWORD, MailSink
from tests.test_cli import start_server  # noqa: F401 (fixtures of the fault tests)
from tests.test_push import push_env, start_sipp, workers  # noqa: F401


@dataclass
class Cluster:
    pg: EmbeddedPostgres

    def url(self, database: str) -> str:
        host = quote(str(self.pg.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}&port={PORT}"

    async def stop(self) -> None:
        """Shut the server down (``pg_ctl stop -m fast``: sessions are ended, as on a restart)."""
        await asyncio.to_thread(self.pg.stop)

    async def start(self) -> None:
        await asyncio.to_thread(self.pg.start)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    # Not pytest's tmp_path: as root it is 0700, which the postgres OS user cannot search.
    base = Path(tempfile.mkdtemp(prefix="provisioner-faults-", dir="/var/tmp"))
    base.chmod(0o711)
    pg = EmbeddedPostgres(base / "data")
    try:
        pg.start()
        yield Cluster(pg)
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def fault_db(cluster: Cluster) -> AsyncIterator[str]:
    """The URL of a new migrated database in the cluster, which is running when the test starts
    (whatever the test before left it in)."""
    await cluster.start()
    name = f"faults_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(cluster.url("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = cluster.url(name)
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield url
    await cluster.start()
    admin = await asyncpg.connect(cluster.url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def fault_env(fault_db: str, tmp_path: Path, mail_sink: MailSink) -> dict[str, str]:
    """The settings of a service on the private cluster (the push tests' phones and PBX)."""
    from tests.test_push import BOOT_PASSWORD, BOOT_USER, HOOK_SECRET

    return {
        "PROVISIONER_DATABASE_URL": fault_db,
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_SMTP_URL": f"smtp://127.0.0.1:{mail_sink.port}",
        "PROVISIONER_MAIL_FROM": "provisioner@example.net",
        "PROVISIONER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "PROVISIONER_HOOK_SECRET": HOOK_SECRET,
        "PROVISIONER_PROVISIONING_USER": BOOT_USER,
        "PROVISIONER_PROVISIONING_PASSWORD": BOOT_PASSWORD,
    }

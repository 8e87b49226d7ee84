"""The asyncpg pool and the schema migrations.

Migrations are the numbered files in ``sql/``, applied in order, each once, each in its own
transaction, and recorded in ``schema_migrations``. A session-level advisory lock serialises
processes that start at the same time, so two of them never apply the same file.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import asyncpg.pool

#: What data access functions accept: a plain connection or one borrowed from the pool.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "sql"
_MIGRATION_NAME = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")
# Any fixed 64-bit number; it only has to differ from other applications' advisory locks.
_MIGRATION_LOCK = 0x70726F76  # "prov"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.fullmatch(path.name)
        if match is None:
            raise RuntimeError(f"migration file name {path.name} is not NNN_description.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migration files share a number")
    return migrations


async def migrate(conn: Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations; return the names applied now."""
    pending = load_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in pending:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("applied migration %s", migration.name)
            applied_now.append(migration.name)
    finally:
        await release_session_lock(conn, "SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def release_session_lock(conn: Connection, unlock: str, *args: object) -> None:
    """Run ``unlock``, the statement that releases a session-level advisory lock; when it fails
    or is cancelled, end the session, and the lock with it. Pooled connections go back to the
    pool without a reset (:func:`create_pool`): a lock left held would stay with the next
    borrower."""
    try:
        await conn.execute(unlock, *args)
    except BaseException:
        conn.terminate()
        raise


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_session_reset(_conn: asyncpg.Connection) -> None:
    """asyncpg still rolls back a transaction left open and drops listeners (``_reset``)."""


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """The pool. A connection goes back to it without asyncpg's session reset (``RESET ALL``,
    ``UNLISTEN *``, ``CLOSE ALL``, ``pg_advisory_unlock_all()``: a round trip on every release,
    two for each API request, ~5 % of a PIN change's CPU; issue 14). So nothing may leave
    session state on a pooled connection: settings only ``SET LOCAL`` / ``set_config(..., true)``,
    cursors only inside transactions, ``LISTEN`` on connections of their own, and a
    session-level advisory lock released with :func:`release_session_lock`."""
    pool = await asyncpg.create_pool(
        dsn,
        # ``min_size`` connections at start, but no floor kept afterwards: asyncpg would log a
        # traceback for each attempt to restore it while the database is down. Connections
        # are opened again on demand (provisioner.outage: the tasks report the outage).
        init_size=min_size,
        min_size=0,
        max_size=max_size,
        init=_init_connection,
        reset=_no_session_reset,
        command_timeout=30,
    )
    assert pool is not None
    return pool

"""The pool returns connections without asyncpg's session reset; session locks end cleanly."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from provisioner.db import create_pool, release_session_lock
from tests.test_push import eventually

LOCK = 0x74657374  # any key of this test's own


async def last_query(db: asyncpg.Connection, pid: int) -> str:
    return await db.fetchval(  # type: ignore[no-any-return]
        "SELECT query FROM pg_stat_activity WHERE pid = $1", pid
    )


async def test_a_released_connection_gets_no_reset_round_trip(
    database_url: str, db: asyncpg.Connection
) -> None:
    """asyncpg's default sends ``RESET ALL`` and three more statements on every release (two
    releases an API request). The connection's last statement stays the borrower's own; an
    open transaction is still rolled back."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
            await conn.execute("SELECT 42")
        assert await last_query(db, pid) == "SELECT 42"
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMPORARY TABLE left_open (x int)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            missing = "SELECT to_regclass('pg_temp.left_open') IS NULL"
            assert await conn.fetchval(missing), "the transaction left open was rolled back"
    finally:
        await pool.close()


async def test_a_session_lock_whose_release_is_cancelled_ends_with_its_session(
    database_url: str, db: asyncpg.Connection
) -> None:
    """Without a reset on release, a lock left held would stay with the pool's next borrower:
    the session is ended instead, and another can take the lock."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK)
            pid = conn.get_server_pid()
            # An unlock cancelled before it let go of anything: here a statement that keeps
            # the lock held (taken once more) after a second.
            stuck = "SELECT pg_sleep(1), pg_advisory_lock($1)"
            releasing = asyncio.create_task(release_session_lock(conn, stuck, LOCK))

            async def sleeping() -> bool:
                return await last_query(db, pid) == stuck

            await eventually(sleeping, "the unlock is under way")
            releasing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await releasing

        async def taken() -> bool:
            return bool(await db.fetchval("SELECT pg_try_advisory_lock($1)", LOCK))

        await eventually(taken, "the lock free once its session ended")
        await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
        async with pool.acquire() as conn:
            assert conn.get_server_pid() != pid, "the session was ended, not given back"
    finally:
        await pool.close()


async def test_a_session_lock_released_normally_keeps_its_connection(
    database_url: str, db: asyncpg.Connection
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK)
            await release_session_lock(conn, "SELECT pg_advisory_unlock($1)", LOCK)
            assert not conn.is_closed()
        assert await db.fetchval("SELECT pg_try_advisory_lock($1)", LOCK)
        await db.execute("SELECT pg_advisory_unlock($1)", LOCK)
    finally:
        await pool.close()

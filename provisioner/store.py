"""Every SQL statement the domain uses, one function per query.

Functions take the connection first and never open a transaction: the use case that calls them
owns it. Parameters are always bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from provisioner.db import Connection

Record = asyncpg.Record

# Columns a caller may change through update_user; the names are formatted into SQL, so only
# these literals ever reach it.
USER_EDITABLE_COLUMNS = frozenset(
    {"display_name", "extension", "email", "auth_backend", "language", "role"}
)


# --- users -------------------------------------------------------------------------------------


async def get_user_by_username(
    conn: Connection, username: str, *, for_update: bool = False
) -> Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM users WHERE username = $1{lock}", username)  # noqa: S608


async def get_user_by_id(conn: Connection, user_id: int) -> Record | None:
    return await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id)


async def any_user_exists(conn: Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"))


async def lock_user_bootstrap(conn: Connection) -> None:
    """Serialise first-start admin creation across processes (until the transaction ends)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('provisioner.bootstrap'))")


async def count_users(conn: Connection, search: str | None = None) -> int:
    value = await conn.fetchval(
        """SELECT count(*) FROM users
           WHERE $1::text IS NULL OR username ILIKE $1 OR display_name ILIKE $1
              OR extension ILIKE $1 OR email ILIKE $1""",
        _like(search),
    )
    return int(value)


async def list_users(
    conn: Connection, *, search: str | None, limit: int, offset: int
) -> list[Record]:
    return await conn.fetch(
        """SELECT * FROM users
           WHERE $1::text IS NULL OR username ILIKE $1 OR display_name ILIKE $1
              OR extension ILIKE $1 OR email ILIKE $1
           ORDER BY username LIMIT $2 OFFSET $3""",
        _like(search),
        limit,
        offset,
    )


def _like(search: str | None) -> str | None:
    if not search:
        return None
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def insert_user(
    conn: Connection,
    *,
    username: str,
    display_name: str,
    extension: str | None,
    email: str | None,
    auth_backend: str,
    language: str,
    role: str,
) -> Record:
    row = await conn.fetchrow(
        """INSERT INTO users (username, display_name, extension, email, auth_backend,
                              language, role)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
        username,
        display_name,
        extension,
        email,
        auth_backend,
        language,
        role,
    )
    assert row is not None
    return row


async def update_user(conn: Connection, user_id: int, changes: Mapping[str, Any]) -> Record:
    columns = list(changes)
    unknown = set(columns) - USER_EDITABLE_COLUMNS
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(columns, start=2))
    row = await conn.fetchrow(
        f"UPDATE users SET {assignments}, updated_at = now() WHERE id = $1 RETURNING *",  # noqa: S608
        user_id,
        *changes.values(),
    )
    assert row is not None
    return row


async def delete_user(conn: Connection, user_id: int) -> None:
    await conn.execute("DELETE FROM users WHERE id = $1", user_id)


async def set_user_pin(conn: Connection, user_id: int, pin_hash: str, pin_encrypted: bytes) -> None:
    await conn.execute(
        """UPDATE users SET pin_hash = $2, pin_encrypted = $3, pin_changed_at = now(),
                  pin_failures = 0, pin_lockouts = 0, pin_locked_until = NULL, updated_at = now()
           WHERE id = $1""",
        user_id,
        pin_hash,
        pin_encrypted,
    )


async def set_user_password(
    conn: Connection, user_id: int, password_hash: str, *, must_change: bool
) -> int:
    """Store a new password hash and bump the credential version; return the new version."""
    version = await conn.fetchval(
        """UPDATE users SET password_hash = $2, must_change_password = $3,
                  password_changed_at = now(), credential_version = credential_version + 1,
                  login_failures = 0, login_locked_until = NULL, updated_at = now()
           WHERE id = $1 RETURNING credential_version""",
        user_id,
        password_hash,
        must_change,
    )
    return int(version)


async def record_login_failure(
    conn: Connection,
    user_id: int,
    *,
    free_attempts: int,
    base_seconds: int,
    max_seconds: int,
) -> Record:
    """Count a failed login; past ``free_attempts`` lock the account, doubling each time."""
    row = await conn.fetchrow(
        """UPDATE users SET login_failures = login_failures + 1,
                  login_locked_until = CASE WHEN login_failures + 1 > $2
                      THEN now() + make_interval(secs => least($4::float8,
                               $3::float8 * power(2, login_failures + 1 - $2 - 1)))
                      ELSE login_locked_until END
           WHERE id = $1 RETURNING login_failures, login_locked_until""",
        user_id,
        free_attempts,
        base_seconds,
        max_seconds,
    )
    assert row is not None
    return row


async def reset_login_failures(conn: Connection, user_id: int) -> None:
    await conn.execute(
        """UPDATE users SET login_failures = 0, login_locked_until = NULL
           WHERE id = $1 AND (login_failures <> 0 OR login_locked_until IS NOT NULL)""",
        user_id,
    )


# --- sessions ----------------------------------------------------------------------------------


async def insert_session(
    conn: Connection,
    *,
    token_hash: bytes,
    user_id: int,
    credential_version: int,
    impersonator_id: int | None,
    impersonator_version: int | None,
    password_change_only: bool,
    expires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO sessions (token_hash, user_id, credential_version, impersonator_id,
                                 impersonator_version, password_change_only, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        token_hash,
        user_id,
        credential_version,
        impersonator_id,
        impersonator_version,
        password_change_only,
        expires_at,
    )


async def get_live_session(conn: Connection, token_hash: bytes) -> Record | None:
    """The session and its user, when the token is unexpired and no credential changed since."""
    return await conn.fetchrow(
        """SELECT s.password_change_only, s.expires_at,
                  u.id AS user_id, u.username, u.role, u.auth_backend,
                  i.id AS impersonator_id, i.username AS impersonator_username
           FROM sessions s
           JOIN users u ON u.id = s.user_id AND u.credential_version = s.credential_version
           LEFT JOIN users i ON i.id = s.impersonator_id
           WHERE s.token_hash = $1 AND s.expires_at > now()
             AND (s.impersonator_id IS NULL
                  OR (i.credential_version = s.impersonator_version AND i.role = 'admin'))""",
        token_hash,
    )


async def delete_session(conn: Connection, token_hash: bytes) -> None:
    await conn.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)


async def delete_dead_sessions(conn: Connection, user_id: int) -> None:
    """Drop sessions of ``user_id`` that its current credential version no longer honours."""
    await conn.execute(
        """DELETE FROM sessions s USING users u
           WHERE s.user_id = $1 AND u.id = s.user_id
             AND (s.credential_version <> u.credential_version OR s.expires_at <= now())""",
        user_id,
    )


async def delete_expired_sessions(conn: Connection) -> int:
    status = await conn.execute("DELETE FROM sessions WHERE expires_at <= now()")
    return int(status.split()[-1])


# --- audit -------------------------------------------------------------------------------------


async def insert_audit(
    conn: Connection,
    *,
    actor: str | None,
    impersonator: str | None,
    target_user: str | None,
    action: str,
    source: str | None,
    details: Mapping[str, Any],
) -> None:
    await conn.execute(
        """INSERT INTO audit_log (actor, impersonator, target_user, action, source, details)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        actor,
        impersonator,
        target_user,
        action,
        source,
        dict(details),
    )


async def list_audit(
    conn: Connection,
    *,
    user: str | None,
    action: str | None,
    since: datetime | None,
    limit: int,
    before_id: int | None,
) -> list[Record]:
    """Newest first. ``user`` matches the target, the actor or the impersonating admin."""
    return await conn.fetch(
        """SELECT * FROM audit_log
           WHERE ($1::text IS NULL OR target_user = $1 OR actor = $1 OR impersonator = $1)
             AND ($2::text IS NULL OR action = $2 OR action LIKE $2 || '.%')
             AND ($3::timestamptz IS NULL OR at >= $3)
             AND ($5::bigint IS NULL OR id < $5)
           ORDER BY id DESC LIMIT $4""",
        user,
        action,
        since,
        limit,
        before_id,
    )


# --- devices and push jobs ---------------------------------------------------------------------


async def list_device_macs_for_user(conn: Connection, user_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT mac FROM device_assignments WHERE user_id = $1 ORDER BY mac", user_id
    )
    return [r["mac"] for r in rows]


async def enqueue_push_jobs(conn: Connection, macs: Sequence[str], reason: str) -> list[int]:
    """Open a push job per device, folding into the device's open job when it has one."""
    if not macs:
        return []
    rows = await conn.fetch(
        """INSERT INTO push_jobs (mac, reason)
           SELECT unnest($1::text[]), $2
           ON CONFLICT (mac) WHERE state IN ('pending', 'notified')
           DO UPDATE SET state = 'pending', reason = EXCLUDED.reason, attempts = 0,
                         last_error = NULL, not_before = now(), updated_at = now()
           RETURNING id""",
        list(macs),
        reason,
    )
    return [r["id"] for r in rows]

"""Logins, bearer tokens and impersonation.

A token is 32 random bytes; only its SHA-256 is stored. It is honoured while it is unexpired and
its user's credential version is the one it was issued under, so bumping the version (every
password change does) revokes every older token at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from provisioner import audit, store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.errors import Kind, ProvisionerError, conflict, forbidden, unauthenticated
from provisioner.users import get_user, is_valid_username, require_admin

SESSION_LIFETIME = timedelta(hours=12)
IMPERSONATION_LIFETIME = timedelta(hours=1)
PASSWORD_CHANGE_LIFETIME = timedelta(minutes=15)

# Per-account login throttling: a few free attempts, then a lock that doubles per failure.
LOGIN_FREE_ATTEMPTS = 5
LOGIN_LOCK_BASE_SECONDS = 30
LOGIN_LOCK_MAX_SECONDS = 900


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: datetime
    password_change_required: bool


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


async def issue_token(
    conn: Connection,
    user: asyncpg.Record,
    *,
    impersonator: asyncpg.Record | None = None,
    lifetime: timedelta = SESSION_LIFETIME,
    password_change_only: bool = False,
) -> Session:
    """Create a session for ``user`` under its current credential version."""
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + lifetime
    await store.insert_session(
        conn,
        token_hash=hash_token(token),
        user_id=user["id"],
        credential_version=user["credential_version"],
        impersonator_id=impersonator["id"] if impersonator else None,
        impersonator_version=impersonator["credential_version"] if impersonator else None,
        password_change_only=password_change_only,
        expires_at=expires_at,
    )
    return Session(token, expires_at, password_change_only)


def _invalid_credentials() -> ProvisionerError:
    return unauthenticated("invalid_credentials", "Username or password is wrong.")


async def login(core: Core, username: str, password: str, source: str) -> Session:
    """Check a user's password and open a session: a local user's against the stored hash, a
    directory user's (backend ``ldap``, a directory configured) by a bind as the user's entry.

    Unknown users, users of another external backend and wrong passwords all answer
    ``invalid_credentials`` after the same hashing work, so the answer reveals nothing. The
    directory not answering is ``directory_unavailable`` (503) and counts as no failure.
    """
    user = None
    if is_valid_username(username):
        async with core.pool.acquire() as conn:
            user = await store.get_user_by_username(conn, username)
    now = datetime.now(UTC)
    if user is not None and user["login_locked_until"] and user["login_locked_until"] > now:
        raise _login_locked(user["login_locked_until"], now)
    if user is not None and user["auth_backend"] == "ldap" and core.directory is not None:
        ok, via = await core.directory.verify_password(username, password), "ldap"
    else:
        local = user is not None and user["auth_backend"] == "local"
        stored_hash = user["password_hash"] if user is not None and local else None
        ok, via = await core.hasher.verify_password(password, stored_hash), "password"
    if user is None or not ok:
        await _record_failed_login(core, user, source)
        raise _invalid_credentials()
    return await open_session(core, user, source, via=via)


async def open_session(core: Core, user: asyncpg.Record, source: str, *, via: str) -> Session:
    """A session for ``user``, whose identity was just proven ``via`` a password, a directory
    bind or a signed assertion: failures reset, audited. ``user`` is the row read before the
    proof; a credential change meanwhile refuses, a disabled user is refused."""
    async with core.pool.acquire() as conn:
        try:
            async with conn.transaction():
                return await open_session_in(conn, user, source, via=via)
        except ProvisionerError as exc:
            if exc.code == "user_disabled":
                await audit.record(
                    conn,
                    _actor_of(user, source),
                    "auth.login_refused",
                    user["username"],
                    {"reason": "disabled"},
                )
            raise


async def open_session_in(
    conn: Connection, user: asyncpg.Record, source: str, *, via: str
) -> Session:
    """:func:`open_session` inside the caller's transaction, for a sign-in that changes more
    in one transaction (a user created at the first single sign-on). A disabled user raises
    ``user_disabled``: auditing that is the caller's part, as the transaction rolls back."""
    # Re-read under lock: a password change may have landed while we verified.
    current = await get_user(conn, user["username"], for_update=True)
    if current["credential_version"] != user["credential_version"]:
        raise conflict("password_changed_meanwhile", "The password changed meanwhile; retry.")
    if current["disabled_at"] is not None:
        raise forbidden("user_disabled", "This account is disabled; ask an administrator.")
    await store.reset_login_failures(conn, user["id"])
    must_change = bool(current["must_change_password"])
    audited = {"via": via, "password_change_required": must_change}
    await audit.record(conn, _actor_of(user, source), "auth.login", user["username"], audited)
    return await issue_token(
        conn,
        current,
        lifetime=PASSWORD_CHANGE_LIFETIME if must_change else SESSION_LIFETIME,
        password_change_only=must_change,
    )


def _actor_of(user: asyncpg.Record, source: str) -> Actor:
    return Actor(username=user["username"], role=user["role"], source=source, user_id=user["id"])


async def _record_failed_login(core: Core, user: asyncpg.Record | None, source: str) -> None:
    """Count the failure (committed, unlike the refused login) and audit it."""
    async with core.pool.acquire() as conn, conn.transaction():
        if user is None:
            await audit.record(conn, None, "auth.login_failed", None, source=source)
            return
        row = await store.record_login_failure(
            conn,
            user["id"],
            free_attempts=LOGIN_FREE_ATTEMPTS,
            base_seconds=LOGIN_LOCK_BASE_SECONDS,
            max_seconds=LOGIN_LOCK_MAX_SECONDS,
        )
        actor = Actor(username=user["username"], role=user["role"], source=source)
        await audit.record(
            conn, actor, "auth.login_failed", user["username"], {"failures": row["login_failures"]}
        )


def _login_locked(until: datetime, now: datetime) -> ProvisionerError:
    seconds = max(1, int((until - now).total_seconds() + 0.999))
    return ProvisionerError(
        Kind.RATE_LIMITED,
        "login_rate_limited",
        f"Too many failed logins for this account; try again in {seconds} seconds.",
        retry_after=seconds,
    )


async def authenticate(core: Core, token: str, source: str) -> Actor | None:
    """The actor a bearer token stands for, or None when it is unknown, expired or revoked."""
    async with core.pool.acquire() as conn:
        row = await store.get_live_session(conn, hash_token(token))
    if row is None:
        return None
    return Actor(
        username=row["username"],
        role=row["role"],
        source=source,
        user_id=row["user_id"],
        impersonator=row["impersonator_username"],
        password_change_only=row["password_change_only"],
    )


async def logout(core: Core, token: str) -> None:
    async with core.pool.acquire() as conn:
        await store.delete_session(conn, hash_token(token))


async def impersonate(core: Core, actor: Actor, username: str) -> Session:
    """A token that acts as ``username``; it dies with the admin's or the user's credentials."""
    require_admin(actor)
    if actor.impersonator is not None:
        raise conflict("already_impersonating", "Stop impersonating before you impersonate again.")
    if actor.acts_for(username):
        raise conflict("impersonate_self", "You cannot impersonate yourself.")
    async with core.pool.acquire() as conn, conn.transaction():
        target = await get_user(conn, username)
        admin = await get_user(conn, actor.username)
        session = await issue_token(
            conn, target, impersonator=admin, lifetime=IMPERSONATION_LIFETIME
        )
        await audit.record(conn, actor, "auth.impersonate", username)
    return session

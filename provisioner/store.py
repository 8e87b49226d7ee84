"""Every SQL statement the domain uses, one function per query.

Functions take the connection first and never open a transaction: the use case that calls them
owns it. Parameters are always bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from provisioner.db import Connection, release_session_lock

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


async def get_user_by_extension(conn: Connection, extension: str) -> Record | None:
    return await conn.fetchrow("SELECT * FROM users WHERE extension = $1", extension)


async def reset_pin_failures(conn: Connection, user_id: int) -> None:
    """A right PIN: failures count in a row, so the count starts again (reservations of checks
    still in flight included)."""
    await conn.execute(
        "UPDATE users SET pin_failures = 0 WHERE id = $1 AND pin_failures <> 0", user_id
    )


async def reserve_pin_check(conn: Connection, user_id: int, *, threshold: int) -> bool:
    """Count a PIN check as a failure *before* it is verified, unless the user is locked or
    ``threshold`` checks are already counted: at most ``threshold`` checks are ever in flight or
    failed in a row, whatever the concurrency. False: no check may be made now."""
    reserved = await conn.fetchval(
        """UPDATE users SET pin_failures = pin_failures + 1
           WHERE id = $1 AND pin_failures < $2
             AND (pin_locked_until IS NULL OR pin_locked_until <= now())
           RETURNING pin_failures""",
        user_id,
        threshold,
    )
    return reserved is not None


async def lock_pin_if_due(
    conn: Connection, user_id: int, *, threshold: int, base_seconds: int, max_seconds: int
) -> Record:
    """After a wrong PIN: when ``threshold`` failures in a row are counted, lock the user (each
    lock twice as long as the one before) and start counting again; ``locked_now`` says whether
    this call locked."""
    row = await conn.fetchrow(
        """WITH before AS (SELECT pin_failures >= $2 AS due FROM users WHERE id = $1 FOR UPDATE)
           UPDATE users SET
                  pin_lockouts = CASE WHEN before.due THEN pin_lockouts + 1
                                      ELSE pin_lockouts END,
                  pin_locked_until = CASE WHEN before.due
                      THEN now() + make_interval(secs => least($4::float8,
                               $3::float8 * power(2, pin_lockouts)))
                      ELSE pin_locked_until END,
                  pin_failures = CASE WHEN before.due THEN 0 ELSE pin_failures END
           FROM before
           WHERE id = $1
           RETURNING pin_failures, pin_lockouts, pin_locked_until, before.due AS locked_now""",
        user_id,
        threshold,
        base_seconds,
        max_seconds,
    )
    assert row is not None
    return row


_USER_FILTER = """($1::text IS NULL OR username ILIKE $1 OR display_name ILIKE $1
                   OR extension ILIKE $1 OR email ILIKE $1)
               AND ($2::text IS NULL OR auth_backend = $2)
               AND ($3::boolean IS NULL OR (disabled_at IS NOT NULL) = $3)"""


async def count_users(
    conn: Connection,
    search: str | None = None,
    *,
    backend: str | None = None,
    disabled: bool | None = None,
) -> int:
    value = await conn.fetchval(
        f"SELECT count(*) FROM users WHERE {_USER_FILTER}",  # noqa: S608 (a constant)
        _like(search),
        backend,
        disabled,
    )
    return int(value)


async def list_users(
    conn: Connection,
    *,
    search: str | None,
    limit: int,
    offset: int,
    backend: str | None = None,
    disabled: bool | None = None,
) -> list[Record]:
    """Users whose name, extension or email contains ``search``, of ``backend`` (any: None),
    disabled or not (either: None), by username."""
    return await conn.fetch(
        f"""SELECT * FROM users WHERE {_USER_FILTER}
            ORDER BY username LIMIT $4 OFFSET $5""",  # noqa: S608 (a constant)
        _like(search),
        backend,
        disabled,
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


async def lock_local_admins(conn: Connection) -> list[int]:
    """The ids of every enabled admin of the local backend, their rows locked until the
    transaction ends: two changes that would each remove one of the last two admins are
    serialised."""
    rows = await conn.fetch(
        """SELECT id FROM users
           WHERE role = 'admin' AND auth_backend = 'local' AND disabled_at IS NULL
           ORDER BY id FOR UPDATE"""
    )
    return [r["id"] for r in rows]


async def set_user_disabled(conn: Connection, user_id: int, by: str | None) -> Record:
    """Disable the user (``by`` = ``admin`` or ``directory``) or, with None, enable again."""
    row = await conn.fetchrow(
        """UPDATE users
           SET disabled_at = CASE WHEN $2::text IS NULL THEN NULL ELSE now() END,
               disabled_by = $2, updated_at = now()
           WHERE id = $1 RETURNING *""",
        user_id,
        by,
    )
    assert row is not None
    return row


async def lock_users_by_username(conn: Connection, usernames: Sequence[str]) -> list[Record]:
    """The users of these names, locked until the transaction ends."""
    return await conn.fetch(
        "SELECT * FROM users WHERE username = ANY($1::text[]) ORDER BY id FOR UPDATE", usernames
    )


async def lock_enabled_directory_users(conn: Connection) -> list[Record]:
    """Every enabled user of backend ``ldap``, locked until the transaction ends."""
    return await conn.fetch(
        """SELECT * FROM users WHERE auth_backend = 'ldap' AND disabled_at IS NULL
           ORDER BY id FOR UPDATE"""
    )


async def set_user_directory_dn(conn: Connection, user_id: int, dn: str) -> None:
    await conn.execute("UPDATE users SET directory_dn = $2 WHERE id = $1", user_id, dn)


async def try_lock_directory_sync(conn: Connection) -> bool:
    """Take the directory sync's lock for this session (one sync at a time across processes);
    False: another sync holds it."""
    return bool(
        await conn.fetchval("SELECT pg_try_advisory_lock(hashtext('provisioner.directory_sync'))")
    )


async def unlock_directory_sync(conn: Connection) -> None:
    await release_session_lock(
        conn, "SELECT pg_advisory_unlock(hashtext('provisioner.directory_sync'))"
    )


async def revoke_user_tokens(conn: Connection, user_id: int) -> None:
    """Bump the credential version: every token issued before dies (sessions check it)."""
    await conn.execute(
        "UPDATE users SET credential_version = credential_version + 1 WHERE id = $1", user_id
    )
    await delete_dead_sessions(conn, user_id)


async def delete_user(conn: Connection, user_id: int) -> None:
    await conn.execute("DELETE FROM users WHERE id = $1", user_id)


async def set_user_pin(
    conn: Connection, user_id: int, pin_hash: str, pin_encrypted: bytes
) -> list[Record]:
    """Store a new PIN (failure counters reset); (mac, vendor, model) of every device carrying
    the user, read in the same statement: one round trip fewer per PIN change (issue 14). Its
    snapshot is taken after the caller locked the user row, so it sees every assignment
    committed before that lock was granted."""
    return await conn.fetch(
        """WITH changed AS (
               UPDATE users SET pin_hash = $2, pin_encrypted = $3, pin_changed_at = now(),
                      pin_failures = 0, pin_lockouts = 0, pin_locked_until = NULL,
                      updated_at = now()
               WHERE id = $1 RETURNING id)
           SELECT DISTINCT d.mac, d.vendor, d.model
           FROM changed JOIN device_assignments a ON a.user_id = changed.id
                JOIN devices d ON d.mac = a.mac
           ORDER BY d.mac""",
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
           WHERE s.token_hash = $1 AND s.expires_at > now() AND u.disabled_at IS NULL
             AND (s.impersonator_id IS NULL
                  OR (i.credential_version = s.impersonator_version AND i.role = 'admin'
                      AND i.disabled_at IS NULL))""",
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
             AND ($2::text IS NULL OR action = $2 OR starts_with(action, $2 || '.'))
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

#: Every state of a push job, in the order a job passes through them.
PUSH_JOB_STATES = ("pending", "scheduled", "notified", "fetched", "failed")


async def list_device_macs_for_user(conn: Connection, user_id: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT mac FROM device_assignments WHERE user_id = $1 ORDER BY mac", user_id
    )
    return [r["mac"] for r in rows]


#: Opens a push job per device of ``$1`` (reason ``$2``): see :func:`enqueue_push_jobs`.
_UPSERT_PUSH_JOBS = """
    INSERT INTO push_jobs (mac, reason, not_before)
    SELECT unnest($1::text[]), $2, now() + $3::float8 * interval '1 second'
    ON CONFLICT (mac) WHERE state IN ('pending', 'scheduled', 'notified')
    DO UPDATE SET reason = EXCLUDED.reason, attempts = 0, last_error = NULL,
                  not_before = CASE WHEN push_jobs.state = 'pending'
                                    THEN least(greatest(push_jobs.not_before,
                                                        EXCLUDED.not_before),
                                               push_jobs.pending_since
                                               + $4::float8 * interval '1 second')
                                    ELSE EXCLUDED.not_before END,
                  pending_since = CASE WHEN push_jobs.state = 'pending'
                                       THEN push_jobs.pending_since ELSE now() END,
                  state = 'pending', lease_until = NULL, worker = NULL,
                  updated_at = now()
    RETURNING id"""

_INSERT_AUDIT_ENQUEUEING_PUSH_JOBS = (
    "WITH jobs AS (" + _UPSERT_PUSH_JOBS + ")"  # noqa: S608 - constants only, parameters bound
    """
    INSERT INTO audit_log (actor, impersonator, target_user, action, source, details)
    SELECT $5, $6, $7, $8, $9,
           $10::jsonb || jsonb_build_object('push_jobs', coalesce(jsonb_agg(jobs.id), '[]'))
    FROM jobs
    RETURNING details -> 'push_jobs'"""
)


async def enqueue_push_jobs(conn: Connection, macs: Sequence[str], reason: str) -> list[int]:
    """Open a push job per device, folding into the device's open job when it has one.

    A new job waits :data:`PUSH_DEBOUNCE` so a burst of changes to one device (many handsets of
    a DECT base) ends in one notification; each change folding into the pending job extends
    the wait, up to :data:`PUSH_MAX_WAIT` after the job became pending. Folding into a
    notified or scheduled job makes it pending again (a newer revision must be fetched; the
    worker schedules it again when the device must wait for its maintenance window).

    Nobody is woken here: the caller wakes the workers once its transaction has committed
    (:meth:`provisioner.pushwake.PushWaker.wake`) when this returned jobs. The device's open
    job row stays locked until then, so a change to a device many users share (a DECT base)
    queues it last in its transaction.
    """
    if not macs:
        return []
    rows = await conn.fetch(_UPSERT_PUSH_JOBS, list(macs), reason, PUSH_DEBOUNCE, PUSH_MAX_WAIT)
    return [r["id"] for r in rows]


async def insert_audit_enqueueing_push_jobs(
    conn: Connection,
    *,
    actor: str | None,
    impersonator: str | None,
    target_user: str | None,
    action: str,
    source: str | None,
    details: Mapping[str, Any],
    macs: Sequence[str],
    reason: str,
) -> list[int]:
    """:func:`insert_audit` and :func:`enqueue_push_jobs` in one statement; the jobs' ids,
    which the audit row's details carry as ``push_jobs``.

    One statement, so that it can be the last of its transaction although the audit row names
    the jobs: the open job rows it locks are held only from there to the commit.
    """
    jobs = await conn.fetchval(
        _INSERT_AUDIT_ENQUEUEING_PUSH_JOBS,
        list(macs),
        reason,
        PUSH_DEBOUNCE,
        PUSH_MAX_WAIT,
        actor,
        impersonator,
        target_user,
        action,
        source,
        dict(details),
    )
    return [int(job) for job in jobs]


#: Seconds a push job waits for further changes to the same device: every change within a
#: burst extends the wait by this much, but never beyond :data:`PUSH_MAX_WAIT` after the first.
PUSH_DEBOUNCE = 0.3
PUSH_MAX_WAIT = 2.0


async def claim_push_jobs(
    conn: Connection, *, worker: str, limit: int, lease_seconds: float
) -> list[Record]:
    """Lease up to ``limit`` due jobs; rows other workers hold are skipped, not waited for.

    Due are pending jobs past their debounce or retry delay, and scheduled jobs whose
    maintenance window has come.

    Planned afresh at each claim, in a transaction of its own (a savepoint inside the
    caller's), with sorts ruled out: the due jobs are read in the claim index's order and the
    scan stops at ``limit`` (issue 14). A plan cached by the connection was made from what the
    table looked like then: made on an empty table (a new installation, the benchmark), it
    scanned every job per claim and re-ran the limited subquery for each, a claim at 20,000
    jobs took seconds, and took far more than ``limit`` jobs. And while the statistics say few
    jobs are pending (they mostly do), a fresh plan reads and sorts every due job of a backlog
    to keep ``limit`` of them.
    """
    async with conn.transaction():
        await conn.execute(
            "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_sort = off"
        )
        return await conn.fetch(_CLAIM_PUSH_JOBS, worker, limit, lease_seconds)


_CLAIM_PUSH_JOBS = """UPDATE push_jobs j SET lease_until = now() + $3::float8 * interval '1 second',
                  worker = $1, attempts = j.attempts + 1, updated_at = now()
           FROM (SELECT id FROM push_jobs
                 WHERE state IN ('pending', 'scheduled') AND not_before <= now()
                   AND (lease_until IS NULL OR lease_until < now())
                 ORDER BY not_before, id LIMIT $2
                 FOR UPDATE SKIP LOCKED) due
           WHERE j.id = due.id
           RETURNING j.*"""


async def next_push_due(conn: Connection) -> float | None:
    """Seconds until the next pending or scheduled job is due (0: now), None when none.

    (Not ``greatest(0, ...)`` in SQL: GREATEST ignores a NULL, so with no job at all it said 0,
    and an idle worker looked again every 10 ms instead of sleeping until its poll.)"""
    value = await conn.fetchval(
        """SELECT extract(epoch FROM min(greatest(not_before,
                      coalesce(lease_until, not_before))) - now())
           FROM push_jobs WHERE state IN ('pending', 'scheduled')"""
    )
    return None if value is None else max(0.0, float(value))


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """An attempt's outcome, for :func:`finish_push_jobs`.

    ``notify_result``: what the device answered, or why it could not be notified (required
    with ``notified``); stored on the device whether or not the job is still the worker's.
    ``retry_in``: seconds until the job is due again (``scheduled``: until the device's
    maintenance window, where its attempts start again from zero).
    """

    job_id: int
    mac: str
    lease_until: datetime
    state: str
    revision: int | None
    transport: str | None
    error: str | None
    retry_in: float | None = None
    notify_result: str | None = None

    def __post_init__(self) -> None:
        if self.state == "notified" and self.notify_result is None:
            raise ValueError("a notified job needs the device's answer (notify_result)")


async def finish_push_jobs(
    conn: Connection, worker: str, outcomes: Sequence[PushOutcome]
) -> dict[int, str]:
    """Record attempts' outcomes (one a device) in two set-based statements: the devices'
    notify results, then the jobs. Returns job id → state stored; a job missing there was not
    ``worker``'s to finish any more (a newer change folded into it meanwhile). Call it in a
    transaction: a fetch record must not fall between the two statements' commits.

    ``notified`` is stored as ``fetched`` when the device has already fetched the revision: a
    fetch record written while the job was still pending (the phone fetched right after its
    200 OK) found no notified job to complete in :func:`record_fetches`. The first statement
    locks the devices (in MAC order, as every use case does) and reads ``fetched_revision``
    from their newest row versions, so a fetch record being written concurrently is either
    seen here or, written after this commit, sees the job as notified. This is also what keeps
    ``fetched`` exact while the phones' processes fold a device's repeated identical fetches
    (:class:`provisioner.phonecache.FetchRecorder`): a folded fetch repeats one already written,
    which set ``fetched_revision``, so a job notified after it is completed here and one
    notified before it by that write. The jobs are locked in MAC order too (a PIN change's
    upsert of its devices' jobs goes in that order).
    """
    if len({outcome.mac for outcome in outcomes}) != len(outcomes):
        raise ValueError("one outcome a device per call")
    noted = [outcome for outcome in outcomes if outcome.notify_result is not None]
    fetched: dict[str, bool] = {}
    if noted:
        rows = await conn.fetch(
            """WITH f AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int[])
                          AS f (mac, result, revision)),
                    locked AS MATERIALIZED (
                        SELECT d.mac FROM devices d WHERE d.mac IN (SELECT mac FROM f)
                        ORDER BY d.mac FOR UPDATE)
               UPDATE devices d SET last_notify_at = now(), last_notify_result = f.result
               FROM locked JOIN f ON f.mac = locked.mac
               WHERE d.mac = locked.mac
               RETURNING d.mac, coalesce(d.fetched_revision >= f.revision, false) AS fetched""",
            [outcome.mac for outcome in noted],
            [outcome.notify_result for outcome in noted],
            [outcome.revision for outcome in noted],
        )
        fetched = {row["mac"]: row["fetched"] for row in rows}
    rows = await conn.fetch(
        """WITH f AS (SELECT * FROM unnest($2::bigint[], $3::timestamptz[], $4::text[],
                                           $5::int[], $6::text[], $7::text[], $8::float8[],
                                           $9::bool[])
                      AS f (id, lease_until, state, revision, transport, error, retry_in,
                            fetched)),
                locked AS MATERIALIZED (
                    SELECT p.id FROM push_jobs p JOIN f ON f.id = p.id
                    WHERE p.worker = $1 AND p.lease_until = f.lease_until
                    ORDER BY p.mac FOR UPDATE OF p)
           UPDATE push_jobs p SET
                  state = CASE WHEN f.fetched THEN 'fetched' ELSE f.state END,
                  revision = coalesce(f.revision, p.revision),
                  transport = coalesce(f.transport, p.transport), last_error = f.error,
                  attempts = CASE WHEN f.state = 'scheduled' THEN 0 ELSE p.attempts END,
                  not_before = CASE WHEN f.retry_in IS NULL THEN p.not_before
                                    ELSE now() + f.retry_in * interval '1 second' END,
                  notified_at = CASE WHEN f.state = 'notified' THEN now() ELSE p.notified_at END,
                  fetched_at = CASE WHEN f.state = 'fetched' OR f.fetched
                                    THEN now() ELSE p.fetched_at END,
                  lease_until = NULL, updated_at = now()
           FROM locked JOIN f ON f.id = locked.id
           WHERE p.id = locked.id AND p.worker = $1 AND p.lease_until = f.lease_until
           RETURNING p.id, p.state""",
        worker,
        [outcome.job_id for outcome in outcomes],
        [outcome.lease_until for outcome in outcomes],
        [outcome.state for outcome in outcomes],
        [outcome.revision for outcome in outcomes],
        [outcome.transport for outcome in outcomes],
        [outcome.error for outcome in outcomes],
        [outcome.retry_in for outcome in outcomes],
        [outcome.state == "notified" and fetched.get(outcome.mac, False) for outcome in outcomes],
    )
    return {row["id"]: row["state"] for row in rows}


async def release_push_jobs(conn: Connection, worker: str) -> int:
    """Hand back jobs this worker leased but did not finish (graceful shutdown)."""
    status = await conn.execute(
        """UPDATE push_jobs SET lease_until = NULL, worker = NULL,
                  attempts = greatest(attempts - 1, 0)
           WHERE worker = $1 AND state IN ('pending', 'scheduled')
             AND lease_until IS NOT NULL""",
        worker,
    )
    return int(status.split()[-1])


async def reconsider_scheduled_push_jobs(conn: Connection, site: str) -> int:
    """Make the site's jobs that wait for a maintenance window due now, to be timed anew; how
    many. The caller wakes the workers after its commit when there are any."""
    status = await conn.execute(
        """UPDATE push_jobs SET not_before = now(), updated_at = now()
           WHERE state = 'scheduled' AND mac IN (SELECT mac FROM devices WHERE site = $1)""",
        site,
    )
    return int(status.split()[-1])


async def count_push_jobs_by_state(
    conn: Connection, job_ids: Sequence[int] | None = None
) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT state, count(*) AS n FROM push_jobs
           WHERE $1::bigint[] IS NULL OR id = ANY($1::bigint[]) GROUP BY state""",
        None if job_ids is None else list(job_ids),
    )
    return {r["state"]: int(r["n"]) for r in rows}


# --- sites -------------------------------------------------------------------------------------

#: Columns a caller may change through upsert_site, in the order views show them; the names are
#: formatted into SQL, so only these literals ever reach it.
SITE_EDITABLE_COLUMNS = (
    "registrar_host",
    "registrar_port",
    "transport",
    "timezone",
    "language",
    "ntp_server",
    "maintenance_window",
    "sip_realm",
)


async def get_site(conn: Connection, name: str) -> Record | None:
    return await conn.fetchrow("SELECT * FROM sites WHERE name = $1", name)


async def list_sites_by_name(conn: Connection, names: Iterable[str]) -> list[Record]:
    return await conn.fetch("SELECT * FROM sites WHERE name = ANY($1::text[])", list(names))


async def list_sites(conn: Connection) -> list[Record]:
    return await conn.fetch("SELECT * FROM sites ORDER BY name")


async def upsert_site(conn: Connection, name: str, changes: Mapping[str, Any]) -> Record:
    """Create the site if needed and apply ``changes`` (column names from a fixed set)."""
    unknown = set(changes) - set(SITE_EDITABLE_COLUMNS)
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    await conn.execute("INSERT INTO sites (name) VALUES ($1) ON CONFLICT DO NOTHING", name)
    assignments = "".join(f"{column} = ${i}, " for i, column in enumerate(changes, start=2))
    row = await conn.fetchrow(
        f"UPDATE sites SET {assignments}updated_at = now() WHERE name = $1 RETURNING *",  # noqa: S608
        name,
        *changes.values(),
    )
    assert row is not None
    return row


async def list_all_device_macs(conn: Connection) -> list[str]:
    return [r["mac"] for r in await conn.fetch("SELECT mac FROM devices ORDER BY mac")]


async def list_site_device_macs(conn: Connection, site: str) -> list[str]:
    rows = await conn.fetch("SELECT mac FROM devices WHERE site = $1 ORDER BY mac", site)
    return [r["mac"] for r in rows]


# --- generated secrets -------------------------------------------------------------------------


async def get_generated_secret(conn: Connection, name: str) -> Record | None:
    return await conn.fetchrow("SELECT * FROM generated_secrets WHERE name = $1", name)


async def insert_generated_secret(
    conn: Connection, name: str, *, username: str, secret_encrypted: bytes
) -> None:
    """Insert unless another process won the race (then theirs stays)."""
    await conn.execute(
        """INSERT INTO generated_secrets (name, username, secret_encrypted) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO NOTHING""",
        name,
        username,
        secret_encrypted,
    )


# --- devices -----------------------------------------------------------------------------------

DEVICE_EDITABLE_COLUMNS = frozenset({"model", "label", "site"})


async def get_device(conn: Connection, mac: str, *, for_update: bool = False) -> Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM devices WHERE mac = $1{lock}", mac)  # noqa: S608


async def list_devices_by_mac(conn: Connection, macs: Sequence[str]) -> list[Record]:
    return await conn.fetch("SELECT * FROM devices WHERE mac = ANY($1::text[])", list(macs))


async def insert_device(
    conn: Connection,
    *,
    mac: str,
    vendor: str,
    model: str,
    kind: str,
    label: str,
    site: str,
    credential_encrypted: bytes,
) -> Record:
    row = await conn.fetchrow(
        """INSERT INTO devices (mac, vendor, model, kind, label, site, credential_encrypted)
           VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
        mac,
        vendor,
        model,
        kind,
        label,
        site,
        credential_encrypted,
    )
    assert row is not None
    return row


async def replace_device_access_code(
    conn: Connection, mac: str, *, expected: bytes | None, new: bytes
) -> bytes | None:
    """Store ``new`` unless the code changed from ``expected`` meanwhile; the code in force.

    None when the device no longer exists.
    """
    current: bytes | None = await conn.fetchval(
        """WITH swapped AS (
               UPDATE devices SET access_code_encrypted = $3
               WHERE mac = $1 AND access_code_encrypted IS NOT DISTINCT FROM $2
               RETURNING access_code_encrypted)
           SELECT coalesce((SELECT access_code_encrypted FROM swapped),
                           (SELECT access_code_encrypted FROM devices WHERE mac = $1))""",
        mac,
        expected,
        new,
    )
    return current


async def set_device_access_code(conn: Connection, mac: str, encrypted: bytes) -> None:
    await conn.execute(
        "UPDATE devices SET access_code_encrypted = $2, updated_at = now() WHERE mac = $1",
        mac,
        encrypted,
    )


async def update_device(conn: Connection, mac: str, changes: Mapping[str, Any]) -> Record:
    unknown = set(changes) - DEVICE_EDITABLE_COLUMNS
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    row = await conn.fetchrow(
        f"UPDATE devices SET {assignments}, updated_at = now() WHERE mac = $1 RETURNING *",  # noqa: S608
        mac,
        *changes.values(),
    )
    assert row is not None
    return row


async def delete_device(conn: Connection, mac: str) -> None:
    await conn.execute("DELETE FROM devices WHERE mac = $1", mac)


async def count_devices(conn: Connection, search: str | None) -> int:
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM devices d
               WHERE $1::text IS NULL OR d.mac ILIKE $1 OR d.label ILIKE $1 OR d.model ILIKE $1
                  OR d.vendor ILIKE $1""",
            _like(search),
        )
    )


async def list_devices(
    conn: Connection, *, search: str | None, limit: int, offset: int
) -> list[Record]:
    return await conn.fetch(
        """SELECT d.*, j.id AS job_id, j.state AS job_state, j.last_error AS job_error
           FROM devices d
           LEFT JOIN LATERAL (SELECT id, state, last_error FROM push_jobs
                              WHERE mac = d.mac ORDER BY id DESC LIMIT 1) j ON true
           WHERE $1::text IS NULL OR d.mac ILIKE $1 OR d.label ILIKE $1 OR d.model ILIKE $1
              OR d.vendor ILIKE $1
           ORDER BY d.mac LIMIT $2 OFFSET $3""",
        _like(search),
        limit,
        offset,
    )


async def list_assignments(conn: Connection, mac: str) -> list[Record]:
    return (await list_assignments_of(conn, [mac])).get(mac, [])


async def list_assignments_of(conn: Connection, macs: Sequence[str]) -> dict[str, list[Record]]:
    """The lines of each of ``macs`` (none: left out), in slot order; one query for a batch."""
    lines: dict[str, list[Record]] = {}
    for row in await conn.fetch(
        """SELECT a.mac, a.slot, a.ipui, a.sip_user, a.sip_auth_user, a.sip_password_encrypted,
                  u.id AS user_id, u.username, u.display_name, u.extension,
                  u.disabled_at IS NOT NULL AS user_disabled
           FROM device_assignments a JOIN users u ON u.id = a.user_id
           WHERE a.mac = ANY($1::text[]) ORDER BY a.mac, a.slot""",
        list(macs),
    ):
        lines.setdefault(row["mac"], []).append(row)
    return lines


async def list_user_devices(conn: Connection, user_id: int) -> list[Record]:
    return await conn.fetch(
        """SELECT d.*, a.slot, j.state AS job_state, j.last_error AS job_error
           FROM device_assignments a JOIN devices d ON d.mac = a.mac
           LEFT JOIN LATERAL (SELECT state, last_error FROM push_jobs
                              WHERE mac = d.mac ORDER BY id DESC LIMIT 1) j ON true
           WHERE a.user_id = $1 ORDER BY d.mac, a.slot""",
        user_id,
    )


async def delete_assignments(conn: Connection, mac: str) -> None:
    """Every assignment of the device, lines parked by a hot-desk login included."""
    await conn.execute("DELETE FROM device_assignments WHERE mac = $1", mac)
    await conn.execute("DELETE FROM parked_assignments WHERE mac = $1", mac)


async def insert_assignment(
    conn: Connection,
    *,
    mac: str,
    slot: int,
    user_id: int,
    ipui: str | None,
    sip_user: str,
    sip_auth_user: str,
    sip_password_encrypted: bytes,
    hotdesk: bool = False,
) -> None:
    await conn.execute(
        """INSERT INTO device_assignments
               (mac, slot, user_id, ipui, sip_user, sip_auth_user, sip_password_encrypted, hotdesk)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        mac,
        slot,
        user_id,
        ipui,
        sip_user,
        sip_auth_user,
        sip_password_encrypted,
        hotdesk,
    )


async def set_assignment_password(conn: Connection, mac: str, slot: int, encrypted: bytes) -> None:
    """A line's new SIP password; its registrar digests are rewritten by the next render."""
    await conn.execute(
        """UPDATE device_assignments SET sip_password_encrypted = $3,
                  sip_realm = NULL, sip_ha1 = NULL, sip_ha1b = NULL
           WHERE mac = $1 AND slot = $2""",
        mac,
        slot,
        encrypted,
    )


async def get_assignment(conn: Connection, mac: str, slot: int) -> Record | None:
    return await conn.fetchrow(
        "SELECT * FROM device_assignments WHERE mac = $1 AND slot = $2", mac, slot
    )


async def delete_assignment(conn: Connection, mac: str, slot: int) -> None:
    await conn.execute("DELETE FROM device_assignments WHERE mac = $1 AND slot = $2", mac, slot)


async def park_assignment(conn: Connection, mac: str, slot: int) -> None:
    """Move the device's own (not hot-desk) line on ``slot`` aside, whole, until
    :func:`restore_parked_assignments`; a hot-desk assignment there is simply removed."""
    await conn.execute(
        """WITH moved AS (
               DELETE FROM device_assignments a WHERE a.mac = $1 AND a.slot = $2
               RETURNING a.*)
           INSERT INTO parked_assignments (mac, slot, assignment)
           SELECT m.mac, m.slot, to_jsonb(m) FROM moved m WHERE NOT m.hotdesk
           ON CONFLICT (mac, slot) DO NOTHING""",
        mac,
        slot,
    )


async def restore_parked_assignments(conn: Connection, macs: Sequence[str]) -> None:
    """Put the parked lines of ``macs`` back where their slot is free again (a parked line of a
    user deleted meanwhile is dropped)."""
    await conn.execute(
        """WITH back AS (
               DELETE FROM parked_assignments p
               WHERE p.mac = ANY($1::text[])
                 AND NOT EXISTS (SELECT 1 FROM device_assignments a
                                 WHERE a.mac = p.mac AND a.slot = p.slot)
               RETURNING p.assignment)
           INSERT INTO device_assignments
           SELECT r.* FROM back, jsonb_populate_record(NULL::device_assignments, back.assignment) r
           WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = r.user_id)""",
        list(macs),
    )


async def remove_hotdesk_assignments(
    conn: Connection, user_id: int, *, except_mac: str
) -> list[str]:
    """Log the user out of every other phone they were hot-desked at; return those MACs."""
    rows = await conn.fetch(
        """DELETE FROM device_assignments WHERE user_id = $1 AND hotdesk AND mac <> $2
           RETURNING mac""",
        user_id,
        except_mac,
    )
    return sorted({r["mac"] for r in rows})


async def remove_device_hotdesk(conn: Connection, mac: str) -> list[str]:
    """Remove the device's hot-desk assignments; return the usernames logged out."""
    rows = await conn.fetch(
        """DELETE FROM device_assignments a USING users u
           WHERE a.mac = $1 AND a.hotdesk AND u.id = a.user_id RETURNING u.username""",
        mac,
    )
    return [r["username"] for r in rows]


async def find_devices_by_line(conn: Connection, extension: str) -> list[str]:
    """Devices with a line whose SIP account is ``extension`` or whose user has that extension."""
    rows = await conn.fetch(
        """SELECT DISTINCT a.mac FROM device_assignments a JOIN users u ON u.id = a.user_id
           WHERE a.sip_user = $1 OR u.extension = $1 ORDER BY a.mac""",
        extension,
    )
    return [r["mac"] for r in rows]


async def set_device_contact(
    conn: Connection, mac: str, contact: str, contact_user: str, user_agent: str
) -> None:
    await conn.execute(
        """UPDATE devices SET sip_contact = $2, sip_contact_user = $3, sip_user_agent = $4,
                  registered_at = now()
           WHERE mac = $1""",
        mac,
        contact,
        contact_user,
        user_agent,
    )


async def list_lines_for_render(conn: Connection, macs: Sequence[str]) -> list[Record]:
    """The lines of ``macs`` with their users, by device and slot."""
    return await conn.fetch(
        """SELECT a.mac, a.slot, a.ipui, a.sip_user, a.sip_auth_user, a.sip_password_encrypted,
                  u.id AS user_id, u.username, u.display_name, u.extension, u.language,
                  u.pin_encrypted
           FROM device_assignments a JOIN users u ON u.id = a.user_id
           WHERE a.mac = ANY($1::text[]) ORDER BY a.mac, a.slot""",
        list(macs),
    )


# --- the PBX side ------------------------------------------------------------------------------


async def set_line_digests(
    conn: Connection, digests: Sequence[tuple[str, int, str, str, str]]
) -> None:
    """Store (mac, slot, realm, ha1, ha1b) of lines where they changed."""
    if not digests:
        return
    macs, slots, realms, ha1s, ha1bs = (list(column) for column in zip(*digests, strict=True))
    await conn.execute(
        """UPDATE device_assignments a
           SET sip_realm = v.realm, sip_ha1 = v.ha1, sip_ha1b = v.ha1b
           FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[])
                AS v (mac, slot, realm, ha1, ha1b)
           WHERE a.mac = v.mac AND a.slot = v.slot
             AND (a.sip_realm, a.sip_ha1, a.sip_ha1b) IS DISTINCT FROM (v.realm, v.ha1, v.ha1b)""",
        macs,
        slots,
        realms,
        ha1s,
        ha1bs,
    )


async def list_device_macs_without_digests(
    conn: Connection, macs: Sequence[str] | None = None
) -> list[str]:
    """Devices (of ``macs``, or all) with a line whose registrar digests are missing: not
    rendered since the line got its password, or since an upgrade added the digests."""
    rows = await conn.fetch(
        """SELECT DISTINCT mac FROM device_assignments
           WHERE sip_ha1 IS NULL AND ($1::text[] IS NULL OR mac = ANY($1::text[]))
           ORDER BY mac""",
        None if macs is None else list(macs),
    )
    return [r["mac"] for r in rows]


async def list_extension_accounts(conn: Connection, extension: str) -> list[Record]:
    return await conn.fetch(
        """SELECT * FROM pbx.extension_accounts WHERE extension = $1
           ORDER BY hotdesk DESC, mac, slot""",
        extension,
    )


async def list_pjsip_accounts(conn: Connection) -> list[Record]:
    return await conn.fetch(
        """SELECT e.*, a.username, a.md5_cred, a.realm, o.max_contacts, o.remove_existing,
                  o.qualify_frequency
           FROM pbx.ps_endpoints e
           JOIN pbx.ps_auths a ON a.id = e.auth
           JOIN pbx.ps_aors o ON o.id = e.aors
           ORDER BY e.id"""
    )


async def role_exists(conn: Connection, role: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role))


async def grant_pbx_views(conn: Connection, role: str) -> None:
    """Read access to schema ``pbx`` for ``role`` (a checked identifier), now and for views
    later migrations add.

    Identifiers cannot be bound parameters: ``format('%I')`` quotes the name in PostgreSQL.
    """
    await conn.execute("SELECT set_config('provisioner.pbx_role', $1, true)", role)
    await conn.execute(
        """DO $$
           DECLARE role_name text := current_setting('provisioner.pbx_role');
           BEGIN
               EXECUTE format('GRANT USAGE ON SCHEMA pbx TO %I', role_name);
               EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA pbx TO %I', role_name);
               EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA pbx GRANT SELECT ON TABLES TO %I',
                              role_name);
           END $$"""
    )


async def set_role_search_path(conn: Connection, role: str) -> None:
    """``search_path`` ``pbx`` for ``role`` in this database (its sessions elsewhere keep theirs).

    Needs superuser or CREATEROLE rights (InsufficientPrivilegeError otherwise).
    """
    await conn.execute("SELECT set_config('provisioner.pbx_role', $1, true)", role)
    await conn.execute(
        """DO $$
           BEGIN
               EXECUTE format('ALTER ROLE %I IN DATABASE %I SET search_path = pbx',
                              current_setting('provisioner.pbx_role'), current_database());
           END $$"""
    )


# --- revisions ---------------------------------------------------------------------------------


async def lock_device_revisions(conn: Connection, macs: Sequence[str]) -> list[Record]:
    """Lock the rows of ``macs`` in MAC order (the order every use case locks devices in);
    return each one's mac, revision and revision hash. Devices that no longer exist are left
    out."""
    return await conn.fetch(
        """SELECT mac, revision, revision_hash FROM devices WHERE mac = ANY($1::text[])
           ORDER BY mac FOR UPDATE""",
        list(macs),
    )


async def set_render_errors(conn: Connection, errors: Mapping[str, str | None]) -> None:
    """Record (or clear, with None) each device's render problem (mac → problem).

    A device without a problem before and now is not written.
    """
    if not errors:
        return
    await conn.execute(
        """UPDATE devices d SET render_error = u.error,
                  render_error_at = CASE WHEN u.error IS NULL THEN NULL ELSE now() END
           FROM unnest($1::text[], $2::text[]) AS u (mac, error)
           WHERE d.mac = u.mac AND (u.error IS NOT NULL OR d.render_error IS NOT NULL)""",
        list(errors),
        list(errors.values()),
    )


@dataclass(frozen=True)
class NewRevision:
    """A device's new revision: its files (name, sealed body, etag), their hash, any problem."""

    mac: str
    files: Sequence[tuple[str, bytes, str]]
    revision_hash: str
    render_error: str | None


async def replace_device_files(
    conn: Connection, revisions: Sequence[NewRevision]
) -> dict[str, int]:
    """Store each device's new revision in place of its files; return mac → new revision."""
    if not revisions:
        return {}
    macs = [r.mac for r in revisions]
    await conn.execute("DELETE FROM device_files WHERE mac = ANY($1::text[])", macs)
    files = [(r.mac, *file) for r in revisions for file in r.files]
    if files:
        file_macs, names, bodies, etags = (list(column) for column in zip(*files, strict=True))
        await conn.execute(
            """INSERT INTO device_files (mac, name, body, etag, sealed)
               SELECT mac, name, body, etag, true
               FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[])
                    AS f (mac, name, body, etag)""",
            file_macs,
            names,
            bodies,
            etags,
        )
    rows = await conn.fetch(
        """UPDATE devices d SET revision = d.revision + 1, revision_hash = u.hash,
                  rendered_at = now(), render_error = u.error,
                  render_error_at = CASE WHEN u.error IS NULL THEN NULL ELSE now() END
           FROM unnest($1::text[], $2::text[], $3::text[]) AS u (mac, hash, error)
           WHERE d.mac = u.mac
           RETURNING d.mac, d.revision""",
        macs,
        [r.revision_hash for r in revisions],
        [r.render_error for r in revisions],
    )
    return {row["mac"]: int(row["revision"]) for row in rows}


async def notify_devices_changed(conn: Connection, channel: str, macs: Sequence[str]) -> None:
    """One notification per device on ``channel`` (payload: the MAC), sent at COMMIT."""
    if macs:
        await conn.execute(
            "SELECT pg_notify($1, mac) FROM unnest($2::text[]) AS mac", channel, list(macs)
        )


def iterate_device_files(
    conn: Connection, macs: Sequence[str] | None = None, *, prefetch: int = 100
) -> AsyncIterable[Record]:
    """Stored files with what serving them needs, in MAC order; all devices when ``macs`` is
    None. Only inside a transaction (a cursor).

    Fetched ``prefetch`` rows at a time rather than in one list: every device's sealed bodies at
    once would be several times the cache they fill, and asyncpg keeps a query's last result
    until the connection's next query (for the phones' listener that may be hours away).

    Two statements, not one with ``$1 IS NULL OR d.mac = ANY($1)``: the listener's connection
    prepares the statement once and runs it for every batch of changed devices; after five runs
    PostgreSQL may switch to a generic plan, and the generic plan of that condition cannot use
    the primary key, so each batch scanned the whole devices table (issue 14).
    """
    if macs is None:
        return conn.cursor(_DEVICE_FILES + " ORDER BY d.mac", prefetch=prefetch)
    return conn.cursor(
        _DEVICE_FILES + " WHERE d.mac = ANY($1::text[]) ORDER BY d.mac",
        list(macs),
        prefetch=prefetch,
    )


_DEVICE_FILES = """
    SELECT d.mac, d.vendor, d.revision, d.credential_encrypted, d.bootstrap_allowed,
           f.name, f.body, f.sealed, f.etag
    FROM devices d LEFT JOIN device_files f ON f.mac = d.mac"""


async def lock_devices_with_clear_files(conn: Connection, limit: int) -> list[str]:
    """Lock up to ``limit`` devices that still have files stored in clear (before migration
    009), in MAC order, as a render locks a device; return their MACs."""
    rows = await conn.fetch(
        """SELECT mac FROM devices
           WHERE mac IN (SELECT DISTINCT mac FROM device_files WHERE NOT sealed
                         ORDER BY mac LIMIT $1)
           ORDER BY mac FOR UPDATE""",
        limit,
    )
    return [row["mac"] for row in rows]


async def list_files_of_devices(conn: Connection, macs: Sequence[str]) -> list[Record]:
    """Every stored file (mac, name, body, sealed) of ``macs``."""
    return await conn.fetch(
        "SELECT mac, name, body, sealed FROM device_files WHERE mac = ANY($1::text[])",
        list(macs),
    )


async def seal_device_files(conn: Connection, files: Sequence[tuple[str, str, bytes, str]]) -> None:
    """Replace clear files (mac, name, sealed body, etag) by their sealed form."""
    if not files:
        return
    macs, names, bodies, etags = (list(column) for column in zip(*files, strict=True))
    await conn.execute(
        """UPDATE device_files f SET body = u.body, etag = u.etag, sealed = true
           FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[]) AS u (mac, name, body, etag)
           WHERE f.mac = u.mac AND f.name = u.name AND NOT f.sealed""",
        macs,
        names,
        bodies,
        etags,
    )


async def set_revision_hashes(conn: Connection, hashes: Mapping[str, str]) -> None:
    """Set devices' revision hashes (mac → hash) without starting a new revision."""
    if not hashes:
        return
    await conn.execute(
        """UPDATE devices d SET revision_hash = u.hash
           FROM unnest($1::text[], $2::text[]) AS u (mac, hash) WHERE d.mac = u.mac""",
        list(hashes),
        list(hashes.values()),
    )


async def retire_bootstrap(conn: Connection, macs: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE devices SET bootstrap_allowed = false WHERE mac = ANY($1::text[])", list(macs)
    )


async def record_fetches(
    conn: Connection, fetches: Sequence[tuple[str, str, int, datetime, str, bool]]
) -> None:
    """Record fetches (mac, file, revision, at, source, personal) on their devices' rows.

    Each device keeps its latest fetch (file, revision, time, source) and the newest revision of
    its personal file (not a shared one) it fetched; such a fetch at a revision at least the one
    a notified (or scheduled) push job was made for completes that job. No row per fetch is kept:
    :class:`provisioner.phonecache.FetchRecorder` already folds a device's repeated identical
    fetches into one a minute. A boot storm still brings thousands of fetches a second, so this is
    a handful of set-based statements per batch (array parameters, ``unnest``), never a statement
    per fetch. A device deleted since its fetch is skipped (no row to update), not an error.
    """
    latest: dict[str, tuple[str, str, int, datetime, str, bool]] = {}
    personal: dict[str, tuple[datetime, int]] = {}
    for fetch in fetches:
        mac, _, revision, at, _, is_personal = fetch
        if mac not in latest or latest[mac][3] <= at:
            latest[mac] = fetch
        if is_personal and (mac not in personal or personal[mac][1] <= revision):
            personal[mac] = (at, revision)
    last = list(zip(*(fetch[:5] for fetch in latest.values()), strict=True))
    # The rows are locked in MAC order first, as every use case locks devices: the push
    # worker's write of a batch's outcomes locks many of them too, and two statements locking
    # the same rows in different orders can deadlock.
    await conn.execute(
        """WITH f AS (SELECT * FROM unnest($1::text[], $2::text[], $3::int[],
                                           $4::timestamptz[], $5::text[])
                      AS f (mac, file, revision, at, source)),
                locked AS MATERIALIZED (
                    SELECT d.mac FROM devices d WHERE d.mac IN (SELECT mac FROM f)
                    ORDER BY d.mac FOR UPDATE)
           UPDATE devices d SET last_fetch_file = f.file, last_fetch_revision = f.revision,
                  last_fetch_at = f.at, last_fetch_source = f.source
           FROM locked JOIN f ON f.mac = locked.mac
           WHERE d.mac = locked.mac AND (d.last_fetch_at IS NULL OR d.last_fetch_at <= f.at)""",
        *(list(column) for column in last),
    )
    if not personal:
        return
    macs = list(personal)
    ats = [at for at, _ in personal.values()]
    revisions = [revision for _, revision in personal.values()]
    await conn.execute(
        """UPDATE devices d SET fetched_revision = f.revision
           FROM unnest($1::text[], $2::int[]) AS f (mac, revision)
           WHERE d.mac = f.mac AND d.fetched_revision < f.revision""",
        macs,
        revisions,
    )
    await conn.execute(  # in MAC order too, as a PIN change upserts its devices' jobs
        """WITH f AS (SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[])
                      AS f (mac, at, revision)),
                locked AS MATERIALIZED (
                    SELECT j.id, f.at FROM push_jobs j JOIN f ON f.mac = j.mac
                    WHERE j.state IN ('notified', 'scheduled') AND j.revision <= f.revision
                    ORDER BY j.mac FOR UPDATE OF j)
           UPDATE push_jobs j SET state = 'fetched', fetched_at = locked.at, updated_at = now()
           FROM locked WHERE j.id = locked.id""",
        macs,
        ats,
        revisions,
    )


# --- push jobs (listing) -----------------------------------------------------------------------


async def list_push_jobs(
    conn: Connection, *, state: str | None, mac: str | None, limit: int
) -> list[Record]:
    return await conn.fetch(
        """SELECT * FROM push_jobs
           WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR mac = $2)
           ORDER BY id DESC LIMIT $3""",
        state,
        mac,
        limit,
    )


# --- hooks -------------------------------------------------------------------------------------


async def remember_hook_signature(conn: Connection, signature: str, expires_epoch: int) -> bool:
    """Store a used signature; False when it was seen before (a replay)."""
    await conn.execute("DELETE FROM hook_signatures WHERE expires_at < now()")
    inserted = await conn.fetchval(
        """INSERT INTO hook_signatures (signature, expires_at) VALUES ($1, to_timestamp($2))
           ON CONFLICT DO NOTHING RETURNING true""",
        signature,
        expires_epoch,
    )
    return bool(inserted)


# --- device management API access -------------------------------------------------------------


async def get_device_api_access(conn: Connection, mac: str) -> Record | None:
    return await conn.fetchrow("SELECT * FROM device_api_access WHERE mac = $1", mac)


async def set_device_api_access(
    conn: Connection,
    mac: str,
    *,
    host: str,
    port: int,
    username: str,
    password_encrypted: bytes,
    fingerprint: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO device_api_access
               (mac, host, port, username, password_encrypted, fingerprint)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (mac) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port,
               username = EXCLUDED.username, password_encrypted = EXCLUDED.password_encrypted,
               fingerprint = EXCLUDED.fingerprint, updated_at = now()""",
        mac,
        host,
        port,
        username,
        password_encrypted,
        fingerprint,
    )


async def delete_device_api_access(conn: Connection, mac: str) -> bool:
    status = await conn.execute("DELETE FROM device_api_access WHERE mac = $1", mac)
    return status.endswith(" 1")


# --- contacts from the PBX ---------------------------------------------------------------------


async def set_contacts_by_sip_user(
    conn: Connection, contacts: Sequence[tuple[str, str, str | None]]
) -> list[str]:
    """Record where lines are registered, from ``(SIP account, contact URI, User-Agent or None)``
    in the order the PBX reported them; the MACs of the devices updated.

    Accounts no line has are skipped. A device's contact becomes the last one given for any of
    its lines, and ``sip_contact_user`` that line's extension (the push worker notifies the line
    the device registered). Without a User-Agent the stored one stays.
    """
    if not contacts:
        return []
    sip_users, uris, user_agents = (list(column) for column in zip(*contacts, strict=True))
    rows = await conn.fetch(
        """UPDATE devices d
           SET sip_contact = c.contact, sip_contact_user = c.extension,
               sip_user_agent = COALESCE(c.user_agent, d.sip_user_agent), registered_at = now()
           FROM (SELECT DISTINCT ON (a.mac) a.mac, u.extension, i.contact, i.user_agent
                 FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
                      AS i (sip_user, contact, user_agent, n)
                 JOIN device_assignments a ON a.sip_user = i.sip_user AND a.sip_user <> ''
                 JOIN users u ON u.id = a.user_id
                 ORDER BY a.mac, i.n DESC) c
           WHERE d.mac = c.mac
           RETURNING d.mac""",
        sip_users,
        uris,
        user_agents,
    )
    return sorted(r["mac"] for r in rows)


# --- discovered devices (provisioner/discovery.py) ----------------------------------------------


async def lock_discovery(conn: Connection) -> None:
    """Serialise every write of discovered rows and each adoption (until the transaction ends),
    so the per-source limit and the per-site cap hold across processes."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('provisioner.discovery'))")


async def device_exists(conn: Connection, mac: str) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM devices WHERE mac = $1)", mac))


async def touch_discovered_device(
    conn: Connection,
    mac: str,
    *,
    vendor: str,
    model: str | None,
    firmware: str | None,
    source: str,
) -> bool:
    """Refresh a discovered row with what its phone sent now; False when there is none."""
    updated = await conn.fetchval(
        """UPDATE discovered_devices
           SET vendor = $2, model = COALESCE($3, model), firmware = COALESCE($4, firmware),
               source = $5, last_seen = now()
           WHERE mac = $1
           RETURNING mac""",
        mac,
        vendor,
        model,
        firmware,
        source,
    )
    return updated is not None


async def discovered_recently_from(conn: Connection, source: str, seconds: float) -> bool:
    """Whether ``source`` added a discovered row within the last ``seconds``."""
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM discovered_devices
                              WHERE source = $1
                                AND first_seen > now() - $2::float8 * interval '1 second')""",
            source,
            seconds,
        )
    )


async def insert_discovered_device(
    conn: Connection,
    *,
    mac: str,
    site: str,
    vendor: str,
    model: str | None,
    firmware: str | None,
    source: str,
) -> None:
    await conn.execute(
        """INSERT INTO discovered_devices (mac, site, vendor, model, firmware, source)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        mac,
        site,
        vendor,
        model,
        firmware,
        source,
    )


async def trim_discovered_devices(conn: Connection, site: str, keep: int) -> list[str]:
    """Drop the site's least recently seen rows beyond the newest ``keep``; their MACs."""
    rows = await conn.fetch(
        """DELETE FROM discovered_devices
           WHERE mac IN (SELECT mac FROM discovered_devices WHERE site = $1
                         ORDER BY last_seen DESC, first_seen DESC, mac OFFSET $2)
           RETURNING mac""",
        site,
        keep,
    )
    return [r["mac"] for r in rows]


async def list_discovered_devices(conn: Connection) -> list[Record]:
    """Every discovered row, most recently seen first (at most the cap per site)."""
    return await conn.fetch(
        """SELECT mac, site, vendor, model, firmware, source, first_seen, last_seen
           FROM discovered_devices ORDER BY last_seen DESC, mac"""
    )


async def delete_discovered_device(conn: Connection, mac: str) -> Record | None:
    """Remove the discovered row of ``mac`` (adopted); the row, or None when there was none."""
    return await conn.fetchrow(
        """DELETE FROM discovered_devices WHERE mac = $1
           RETURNING mac, site, vendor, model, firmware, source, first_seen, last_seen""",
        mac,
    )


async def seed_device_contact(conn: Connection, mac: str, contact: str) -> None:
    """Where to notify a device before any registration reports its contact (an adopted
    discovered phone has no SIP account yet); a registration replaces it, and none is faked:
    ``registered_at`` stays unset."""
    await conn.execute(
        "UPDATE devices SET sip_contact = $2 WHERE mac = $1 AND sip_contact IS NULL", mac, contact
    )


# --- SAML single sign-on (provisioner/sso.py) --------------------------------------------------


async def insert_saml_request(
    conn: Connection, request_id: str, next_path: str, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO saml_requests (id, next_path, expires_at) VALUES ($1, $2, $3)",
        request_id,
        next_path,
        expires_at,
    )


async def get_saml_request(conn: Connection, request_id: str) -> Record | None:
    """An unexpired request this service sent and has not had an answer to yet."""
    return await conn.fetchrow(
        "SELECT * FROM saml_requests WHERE id = $1 AND expires_at > now()", request_id
    )


async def take_saml_request(conn: Connection, request_id: str) -> Record | None:
    """Remove the unexpired request and return it; None when an answer took it already."""
    return await conn.fetchrow(
        "DELETE FROM saml_requests WHERE id = $1 AND expires_at > now() RETURNING *", request_id
    )


async def saml_assertion_seen(conn: Connection, issuer: str, assertion_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM saml_assertions WHERE issuer = $1 AND id = $2)",
            issuer,
            assertion_id,
        )
    )


async def insert_saml_assertion(
    conn: Connection, issuer: str, assertion_id: str, expires_at: datetime
) -> bool:
    """Record an accepted assertion; False when it was accepted before (a replay)."""
    inserted = await conn.fetchval(
        """INSERT INTO saml_assertions (issuer, id, expires_at) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING true""",
        issuer,
        assertion_id,
        expires_at,
    )
    return bool(inserted)


async def delete_expired_saml_state(conn: Connection) -> None:
    """Forget requests nobody answered and assertions that can no longer be accepted."""
    await conn.execute("DELETE FROM saml_requests WHERE expires_at <= now()")
    await conn.execute("DELETE FROM saml_assertions WHERE expires_at <= now()")

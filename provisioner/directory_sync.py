"""Directory sync: the directory's users become users of backend ``ldap``.

A sync reads the directory page by page (paged search) and applies each page in one
transaction: a new user is created, a known one gets the fields the directory owns (name,
email, extension as mapped; the role when an admin group is set) and, if the sync had
disabled it, is enabled again. After the last page, every enabled ``ldap`` user the directory
no longer lists is disabled (``disabled_by = 'directory'``): tokens revoked, PIN checks
refused, devices left as they are. Users of the other backends are never touched; a directory
user whose username a local user has is reported and skipped. An admin's disabling stands: the
sync enables only users it disabled itself.

One sync runs at a time across processes (a PostgreSQL advisory lock); the service runs one
every ``PROVISIONER_LDAP_SYNC_INTERVAL`` seconds (:class:`IntervalSync`), riding out directory
and database outages with back-off and one log line per change of state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from provisioner import audit, store, users
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.errors import Kind, ProvisionerError, conflict
from provisioner.outage import Backoff, Outage, database_unavailable

if TYPE_CHECKING:
    from provisioner.directory import Directory, Entry

log = logging.getLogger(__name__)

#: Who the interval sync's audit rows name.
INTERVAL_ACTOR = Actor(username="directory", role="admin", source="directory sync")
#: Fields that reach devices (a change queues push jobs, as an admin's change does).
_DEVICE_FIELDS = frozenset({"display_name", "extension"})


@dataclass
class SyncReport:
    """What a sync did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    created: int = 0
    updated: int = 0
    enabled: int = 0
    disabled: int = 0
    unchanged: int = 0
    entries: int = 0
    pages: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Entries the sync could not take: ``{"dn", "username"?, "reason"}``."""
    conflicts: list[dict[str, str]] = field(default_factory=list)
    """Directory users whose username belongs to a user of another backend (or to another
    entry): ``{"username", "dn", "reason"}``."""

    def view(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "enabled": self.enabled,
            "disabled": self.disabled,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "conflicts": self.conflicts,
            "entries": self.entries,
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class DirectoryUser:
    """A directory entry as a user: its validated fields (the ones the directory owns)."""

    username: str
    dn: str
    fields: dict[str, Any]
    usable: bool = True
    """False: listed, but its fields break a rule (reported as skipped; the user is left as
    it is, neither updated nor disabled)."""


Progress = Callable[[SyncReport], None]


def require_directory(core: Core) -> Directory:
    if core.directory is None:
        raise ProvisionerError(
            Kind.UNAVAILABLE,
            "directory_not_configured",
            "No directory is configured (PROVISIONER_LDAP_URL).",
        )
    return core.directory


async def sync(
    core: Core, actor: Actor, *, dry_run: bool = False, progress: Progress | None = None
) -> SyncReport:
    """Bring the ``ldap`` users in line with the directory; ``progress`` hears after each page.

    ``directory_unavailable`` when the directory fails midway: the pages applied stay applied,
    and nobody is disabled (a directory read only in part says nothing about who left).
    """
    users.require_admin(actor)
    directory = require_directory(core)
    report = SyncReport(dry_run=dry_run)
    async with core.pool.acquire() as lock:
        if not await store.try_lock_directory_sync(lock):
            raise conflict("directory_sync_running", "A directory sync is running; try later.")
        try:
            admins = await directory.admin_members()
            seen: set[str] = set()
            async for page in directory.pages():
                wanted = [u for e in page.entries if (u := _as_user(core, e, admins, report))]
                await _apply_page(core, actor, wanted, seen, report)
                report.entries += len(page.entries)
                report.pages = page.number
                if progress is not None:
                    progress(report)
            await _disable_missing(core, actor, seen, report)
            async with core.pool.acquire() as conn:
                await audit.record(conn, actor, "directory.sync", None, _summary(report))
        finally:
            await store.unlock_directory_sync(lock)
    return report


def _summary(report: SyncReport) -> dict[str, Any]:
    counts = ("created", "updated", "enabled", "disabled", "unchanged", "entries", "dry_run")
    view = report.view()
    return {
        **{k: view[k] for k in counts},
        "skipped": len(report.skipped),
        "conflicts": len(report.conflicts),
    }


def _as_user(
    core: Core, entry: Entry, admins: frozenset[str], report: SyncReport
) -> DirectoryUser | None:
    """The entry as a user, or None (reported as skipped) when it makes no valid user."""
    from provisioner.directory import normalise_dn

    settings = core.settings.ldap
    assert settings is not None
    username = (entry.fields.get("username") or "").lower()
    if not users.is_valid_username(username):
        report.skipped.append({"dn": entry.dn, "reason": "username_invalid"})
        return None
    wanted = {k: v for k, v in entry.fields.items() if k != "username"}
    if "display_name" in wanted:
        wanted["display_name"] = (wanted["display_name"] or username)[:128]
    if settings.admin_group is not None:
        wanted["role"] = "admin" if normalise_dn(entry.dn) in admins else "user"
    try:
        fields = users.validate_fields(wanted)
    except ProvisionerError as exc:
        report.skipped.append({"dn": entry.dn, "username": username, "reason": exc.code})
        return DirectoryUser(username, entry.dn, {}, usable=False)
    return DirectoryUser(username, entry.dn, fields)


async def _apply_page(
    core: Core,
    actor: Actor,
    wanted: list[DirectoryUser],
    seen: set[str],
    report: SyncReport,
) -> None:
    """One page in one transaction (rolled back for a dry run); the devices whose users
    changed get push jobs, and the workers are woken after the commit."""
    macs: list[str] = []
    async with core.pool.acquire() as conn, _transaction(conn, dry_run=report.dry_run):
        rows = await store.lock_users_by_username(conn, [u.username for u in wanted])
        existing = {r["username"]: r for r in rows}
        for user in wanted:
            if user.username in seen:
                report.conflicts.append(_conflict(user, "duplicate_in_directory"))
                continue
            seen.add(user.username)
            if not user.usable:
                continue
            row = existing.get(user.username)
            if row is None:
                await _create(conn, actor, user, report)
            elif row["auth_backend"] != "ldap":
                report.conflicts.append(_conflict(user, f"{row['auth_backend']}_user"))
            else:
                macs += await _update(conn, actor, row, user, report)
    if macs and not report.dry_run:  # each has a push job
        core.push_wake.wake()


def _conflict(user: DirectoryUser, reason: str) -> dict[str, str]:
    return {"username": user.username, "dn": user.dn, "reason": reason}


async def _create(conn: Connection, actor: Actor, user: DirectoryUser, report: SyncReport) -> None:
    fields = {"display_name": user.username, **user.fields}
    try:
        async with conn.transaction():  # a savepoint: one taken extension skips one user
            row = await store.insert_user(
                conn,
                username=user.username,
                display_name=fields["display_name"],
                extension=fields.get("extension"),
                email=fields.get("email"),
                auth_backend="ldap",
                language="de",
                role=fields.get("role", "user"),
            )
    except asyncpg.UniqueViolationError as exc:
        report.conflicts.append(_conflict(user, _unique_reason(exc)))
        return
    await store.set_user_directory_dn(conn, row["id"], user.dn)
    details = {"fields": sorted(fields), "via": "directory"}
    await audit.record(conn, actor, "user.create", user.username, details)
    report.created += 1


def _unique_reason(exc: asyncpg.UniqueViolationError) -> str:
    return "extension_taken" if "extension" in (exc.constraint_name or "") else "username_taken"


async def _update(
    conn: Connection, actor: Actor, row: Any, user: DirectoryUser, report: SyncReport
) -> list[str]:
    changed = {k: v for k, v in user.fields.items() if row[k] != v}
    dropped = "extension" in changed and changed["extension"] is None
    if dropped and await store.list_device_macs_for_user(conn, row["id"]):
        # Lines need the extension (an admin is refused the same): kept, and reported.
        report.conflicts.append(_conflict(user, "extension_in_use"))
        del changed["extension"]
    enable = row["disabled_by"] == "directory"
    if not changed and not enable and row["directory_dn"] == user.dn:
        report.unchanged += 1
        return []
    if changed:
        try:
            async with conn.transaction():
                await store.update_user(conn, row["id"], changed)
        except asyncpg.UniqueViolationError as exc:
            report.conflicts.append(_conflict(user, _unique_reason(exc)))
            return []
    if enable:
        await store.set_user_disabled(conn, row["id"], None)
    if row["directory_dn"] != user.dn:
        await store.set_user_directory_dn(conn, row["id"], user.dn)
    macs: list[str] = []
    jobs: list[int] = []
    if _DEVICE_FIELDS & changed.keys():
        macs = await store.list_device_macs_for_user(conn, row["id"])
        jobs = await store.enqueue_push_jobs(conn, macs, "user.update")
    details: dict[str, Any] = {"fields": sorted(changed), "push_jobs": jobs, "via": "directory"}
    if enable:
        details["disabled"] = False
        report.enabled += 1
    if changed:
        report.updated += 1
    elif not enable:
        report.unchanged += 1  # only the entry moved
    await audit.record(conn, actor, "user.update", user.username, details)
    return macs


async def _disable_missing(core: Core, actor: Actor, seen: set[str], report: SyncReport) -> None:
    """Disable every enabled ``ldap`` user the directory no longer lists (one transaction)."""
    async with core.pool.acquire() as conn, _transaction(conn, dry_run=report.dry_run):
        for row in await store.lock_enabled_directory_users(conn):
            if row["username"] in seen:
                continue
            await store.set_user_disabled(conn, row["id"], "directory")
            await store.revoke_user_tokens(conn, row["id"])
            details = {"fields": [], "disabled": True, "via": "directory"}
            await audit.record(conn, actor, "user.update", row["username"], details)
            report.disabled += 1


@asynccontextmanager
async def _transaction(conn: Connection, *, dry_run: bool) -> AsyncIterator[None]:
    """A transaction that commits, or for a dry run rolls back, when the block ends."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except BaseException:
        await transaction.rollback()
        raise
    if dry_run:
        await transaction.rollback()
    else:
        await transaction.commit()


class IntervalSync:
    """The service's sync every ``interval`` seconds, which waits out outages by itself."""

    def __init__(self, core: Core, interval: float) -> None:
        self.core = core
        self.interval = interval
        self.directory = Outage(
            log, "directory sync", Backoff(base=2.0, cap=min(300.0, interval)), peer="directory"
        )
        self.database = Outage(log, "directory sync")
        self.last: SyncReport | None = None
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._runs = 0

    async def run(self) -> None:
        """Never ends by itself; cancel it. :meth:`wake` starts the next sync at once."""
        while True:
            delay = await self.run_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> float:
        """One sync; the seconds until the next."""
        delay = float(self.interval)
        try:
            report = await sync(self.core, INTERVAL_ACTOR)
        except ProvisionerError as exc:
            if exc.code == "directory_unavailable":
                delay = self.directory.lost(exc)
            elif exc.code != "directory_sync_running":  # another process syncs now: fine
                log.error("directory sync refused: %s (%s)", exc.message, exc.code)
        except Exception as exc:
            if database_unavailable(exc):
                delay = self.database.lost(exc)
            else:  # a bug: logged, and the next sync is tried as usual
                log.exception("directory sync failed")
        else:
            self.directory.reached()
            self.database.reached()
            self.last = report
            if report.created or report.updated or report.enabled or report.disabled:
                log.info("directory sync: %s", _summary(report))
        async with self._changed:
            self._runs += 1
            self._changed.notify_all()
        return delay

    async def wait(self, done: Callable[[IntervalSync], bool]) -> None:
        """Wait until ``done(self)`` holds after a run (for tests and shutdown)."""
        async with self._changed:
            await self._changed.wait_for(lambda: done(self))

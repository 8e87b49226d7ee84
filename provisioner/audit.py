"""Who did what to whom, from where: the actor behind every change, and the audit trail.

Audit rows never carry a secret: callers pass only non-secret details (a mode, a flag, a count).
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from provisioner import store
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.errors import forbidden


@dataclass(frozen=True)
class Actor:
    """The party a request acts as. With impersonation, ``username`` is the impersonated user."""

    username: str
    role: str
    source: str
    """Client address, or ``cli`` for the command line."""
    user_id: int | None = None
    impersonator: str | None = None
    password_change_only: bool = False

    @property
    def is_admin(self) -> bool:
        # An impersonating admin acts with the user's rights, not with their own.
        return self.role == "admin"

    def acts_for(self, username: str) -> bool:
        return self.username == username

    @classmethod
    def cli(cls) -> Actor:
        """The operator at the command line: full rights, named by their OS account."""
        return cls(username=f"cli:{getpass.getuser()}", role="admin", source="cli")


async def record(
    conn: Connection,
    actor: Actor | None,
    action: str,
    target_user: str | None,
    details: Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
) -> None:
    """Write one audit row inside the caller's transaction."""
    await store.insert_audit(
        conn,
        actor=actor.username if actor else None,
        impersonator=actor.impersonator if actor else None,
        target_user=target_user,
        action=action,
        source=actor.source if actor else source,
        details=details or {},
    )


async def record_with_push_jobs(
    conn: Connection,
    actor: Actor,
    action: str,
    target_user: str | None,
    details: Mapping[str, Any],
    *,
    macs: Sequence[str],
    reason: str,
) -> list[int]:
    """:func:`record` and :func:`provisioner.store.enqueue_push_jobs` as one statement, the
    last of a hot transaction (a PIN change); the jobs, named by the row's ``push_jobs``."""
    return await store.insert_audit_enqueueing_push_jobs(
        conn,
        actor=actor.username,
        impersonator=actor.impersonator,
        target_user=target_user,
        action=action,
        source=actor.source,
        details=details,
        macs=macs,
        reason=reason,
    )


async def search(
    core: Core,
    actor: Actor,
    *,
    user: str | None,
    action: str | None,
    since: datetime | None,
    limit: int,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Audit entries, newest first; ``action`` matches exactly or as a prefix (``password``)."""
    if not actor.is_admin:
        raise forbidden("forbidden", "This needs an administrator.")
    async with core.pool.acquire() as conn:
        rows = await store.list_audit(
            conn, user=user, action=action, since=since, limit=limit, before_id=before_id
        )
    return [
        {
            "id": r["id"],
            "at": r["at"].isoformat(),
            "actor": r["actor"],
            "impersonator": r["impersonator"],
            "user": r["target_user"],
            "action": r["action"],
            "source": r["source"],
            "details": r["details"],
        }
        for r in rows
    ]

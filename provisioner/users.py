"""Users: who they are, which backend authenticates them, and the rules for their fields."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import asyncpg

from provisioner import audit, store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.errors import ProvisionerError, conflict, forbidden, invalid, not_found

AuthBackend = Literal["local", "ldap", "saml"]
Role = Literal["user", "admin"]
Language = Literal["de", "en"]
AUTH_BACKENDS: tuple[str, ...] = get_args(AuthBackend)
ROLES: tuple[str, ...] = get_args(Role)
LANGUAGES: tuple[str, ...] = get_args(Language)

# The rules on user fields, as patterns both Python (fullmatch) and the API document's JSON Schema
# (ECMA-262, anchored) read the same way: the API refuses at its edge what the domain refuses.
USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"
EXTENSION_PATTERN = r"^[0-9]{1,15}$"
#: C0 and C1 control characters, DEL and the Unicode line/paragraph separators: none belongs in
#: a name, and each can break a line-based format (a config file, a mail header) it reaches.
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
# What str.strip() removes, beyond the control characters.
_SPACES = r" \xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
DISPLAY_NAME_MAX_LENGTH = 128
#: No control character, and something besides spaces.
DISPLAY_NAME_PATTERN = f"^[^{CONTROL_CHARS}]*[^{CONTROL_CHARS}{_SPACES}][^{CONTROL_CHARS}]*$"
# Deliberately simple: one @, a dotted domain, no spaces or control characters. Deliverability
# is the SMTP server's verdict, reported as mail_failed.
_EMAIL_ADDRESS = r"[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,63}"
EMAIL_MAX_LENGTH = 254
#: An address, maybe with spaces around it, or only spaces (no address).
EMAIL_OR_BLANK_PATTERN = rf"^\s*(?:{_EMAIL_ADDRESS})?\s*$"

_USERNAME = re.compile(USERNAME_PATTERN)
_EXTENSION = re.compile(EXTENSION_PATTERN)
_DISPLAY_NAME = re.compile(DISPLAY_NAME_PATTERN)
_EMAIL = re.compile(_EMAIL_ADDRESS)
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")
# Fields whose change alters what the user's devices are sent.
_DEVICE_FIELDS = frozenset({"display_name", "extension", "language"})


@dataclass(frozen=True)
class NewUser:
    username: str
    display_name: str
    extension: str | None = None
    email: str | None = None
    auth_backend: str = "local"
    language: str = "de"
    role: str = "user"


def validate_username(username: str) -> str:
    if not is_valid_username(username):
        raise invalid(
            "username_invalid",
            "A username is 1-64 lower-case letters, digits and . _ @ -, starting with a "
            "letter or digit.",
        )
    return username


def is_valid_username(username: str) -> bool:
    return _USERNAME.fullmatch(username) is not None


def has_control_chars(text: str) -> bool:
    return _CONTROL.search(text) is not None


def is_valid_email(email: str) -> bool:
    return len(email) <= EMAIL_MAX_LENGTH and _EMAIL.fullmatch(email) is not None


def validate_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise editable user fields; raise with the first offending field (the
    API's, the pages' and the directory sync's rules are these)."""
    clean: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "display_name":
            if len(value) > DISPLAY_NAME_MAX_LENGTH or not _DISPLAY_NAME.fullmatch(value):
                raise invalid("display_name_invalid", "A display name is 1-128 characters.")
            value = value.strip()
        elif name == "extension" and value is not None:
            if not _EXTENSION.fullmatch(value):
                raise invalid("extension_invalid", "An extension is 1-15 digits.")
        elif name == "email" and value is not None:
            value = value.strip() or None
            if value is not None and not is_valid_email(value):
                raise invalid("email_invalid", "The email address is not valid.")
        elif name == "auth_backend" and value not in AUTH_BACKENDS:
            raise invalid("auth_backend_invalid", f"auth_backend is one of {AUTH_BACKENDS}.")
        elif name == "language" and value not in LANGUAGES:
            raise invalid("language_invalid", f"language is one of {LANGUAGES}.")
        elif name == "role" and value not in ROLES:
            raise invalid("role_invalid", f"role is one of {ROLES}.")
        clean[name] = value
    return clean


def valid_or_none(name: str, value: str | None) -> str | None:
    """``value`` as field ``name`` stores it, or None when it is no valid one: for values from
    a directory or an identity provider, which are left out rather than refused."""
    if value is None:
        return None
    try:
        clean: str | None = validate_fields({name: value})[name]
    except ProvisionerError:
        return None
    return clean


def require_admin(actor: Actor) -> None:
    if not actor.is_admin:
        raise forbidden("forbidden", "This needs an administrator.")


def require_self_or_admin(actor: Actor, username: str) -> None:
    if not (actor.is_admin or actor.acts_for(username)):
        raise forbidden("forbidden", "You may only change your own credentials.")


async def get_user(conn: Connection, username: str, *, for_update: bool = False) -> Any:
    row = (
        await store.get_user_by_username(conn, username, for_update=for_update)
        if is_valid_username(username)
        else None
    )
    if row is None:
        raise not_found("user_not_found", "There is no such user.")
    return row


def _unique_violation(exc: asyncpg.UniqueViolationError) -> Exception:
    if "extension" in (exc.constraint_name or ""):
        return conflict("extension_taken", "Another user has this extension.")
    return conflict("username_taken", "A user with this username exists.")


async def create_user(core: Core, actor: Actor, new: NewUser) -> Any:
    require_admin(actor)
    validate_username(new.username)
    fields = validate_fields(
        {
            "display_name": new.display_name,
            "extension": new.extension,
            "email": new.email,
            "auth_backend": new.auth_backend,
            "language": new.language,
            "role": new.role,
        }
    )
    async with core.pool.acquire() as conn, conn.transaction():
        try:
            row = await store.insert_user(conn, username=new.username, **fields)
        except asyncpg.UniqueViolationError as exc:
            raise _unique_violation(exc) from None
        await audit.record(conn, actor, "user.create", new.username, {"fields": sorted(fields)})
    return row


async def update_user(core: Core, actor: Actor, username: str, changes: Mapping[str, Any]) -> Any:
    """Change editable fields, and ``disabled``; devices that show a changed field get a push
    job. Disabling revokes the user's tokens; the user's devices and PIN stay as they are."""
    require_admin(actor)
    unknown = set(changes) - store.USER_EDITABLE_COLUMNS - {"disabled"}
    if unknown:
        raise invalid("field_unknown", f"These fields cannot be changed: {sorted(unknown)}.")
    disable = changes.get("disabled")
    fields = validate_fields({k: v for k, v in changes.items() if k != "disabled"})
    if disable and actor.acts_for(username):
        raise conflict("cannot_disable_self", "You cannot disable your own account.")
    async with core.pool.acquire() as conn, conn.transaction():
        admins = []
        if {"role", "auth_backend"} & fields.keys() or disable:
            admins = await store.lock_local_admins(conn)
        user = await get_user(conn, username, for_update=True)
        changed = {k: v for k, v in fields.items() if user[k] != v}
        _refuse_directory_fields(core, user, changed)
        toggled = disable is not None and disable != (user["disabled_at"] is not None)
        if not changed and not toggled:
            return user
        if {"role", "auth_backend"} & changed.keys() or (toggled and disable):
            stays_local_admin = (
                changed.get("role", user["role"]) == "admin"
                and changed.get("auth_backend", user["auth_backend"]) == "local"
                and not disable
            )
            if not stays_local_admin:
                _keep_an_admin(admins, user["id"])
        macs = await store.list_device_macs_for_user(conn, user["id"])
        if "extension" in changed and changed["extension"] is None and macs:
            raise conflict(
                "extension_in_use",
                "The user has lines on devices; remove them before the extension.",
            )
        row = user
        if changed:
            try:
                row = await store.update_user(conn, user["id"], changed)
            except asyncpg.UniqueViolationError as exc:
                raise _unique_violation(exc) from None
        if toggled:
            row = await store.set_user_disabled(conn, user["id"], "admin" if disable else None)
        if "auth_backend" in changed or (toggled and disable):
            # The user now signs in elsewhere, or not at all: no token issued before stays valid.
            await store.revoke_user_tokens(conn, user["id"])
        jobs: list[int] = []
        if _DEVICE_FIELDS & changed.keys():
            jobs = await store.enqueue_push_jobs(conn, macs, "user.update")
        else:
            macs = []
        details: dict[str, Any] = {"fields": sorted(changed), "push_jobs": jobs}
        if toggled:
            details["disabled"] = bool(disable)
        await audit.record(conn, actor, "user.update", username, details)
    if jobs:
        core.push_wake.wake()
    return row


async def delete_user(core: Core, actor: Actor, username: str) -> None:
    require_admin(actor)
    if actor.acts_for(username):
        raise conflict("cannot_delete_self", "You cannot delete your own account.")
    async with core.pool.acquire() as conn, conn.transaction():
        admins = await store.lock_local_admins(conn)
        user = await get_user(conn, username, for_update=True)
        _keep_an_admin(admins, user["id"])
        macs = await store.list_device_macs_for_user(conn, user["id"])
        await store.delete_user(conn, user["id"])
        jobs = await store.enqueue_push_jobs(conn, macs, "user.delete")
        await audit.record(conn, actor, "user.delete", username, {"push_jobs": jobs})
    if jobs:
        core.push_wake.wake()


def directory_fields(core: Core, user: Any) -> frozenset[str]:
    """The fields of ``user`` that the directory owns: the sync writes them, nobody else."""
    ldap = core.settings.ldap
    if ldap is None or user["auth_backend"] != "ldap":
        return frozenset()
    return ldap.owned_fields


def _refuse_directory_fields(core: Core, user: Any, changed: Mapping[str, Any]) -> None:
    owned = sorted(directory_fields(core, user) & changed.keys())
    if owned:
        raise conflict(
            "field_from_directory",
            f"These fields come from the directory and change there: {', '.join(owned)}.",
        )


def _keep_an_admin(local_admins: list[int], user_id: int) -> None:
    """Refuse to take the last local admin away (demote, delete, move to another backend):
    nobody could administer the service any more, and an external directory may be down."""
    if local_admins == [user_id]:
        raise conflict(
            "last_admin",
            "This is the only administrator who signs in locally; make another one first.",
        )


async def find_user(core: Core, actor: Actor, username: str) -> Any:
    require_self_or_admin(actor, username)
    async with core.pool.acquire() as conn:
        return await get_user(conn, username)


async def list_users(
    core: Core,
    actor: Actor,
    *,
    search: str | None,
    limit: int,
    offset: int,
    backend: str | None = None,
    disabled: bool | None = None,
) -> tuple[list[Any], int]:
    """A page of users and how many match: ``backend`` and ``disabled`` narrow (None: any)."""
    require_admin(actor)
    if backend is not None and backend not in AUTH_BACKENDS:
        raise invalid("auth_backend_invalid", f"backend is one of {AUTH_BACKENDS}.")
    async with core.pool.acquire() as conn:
        rows = await store.list_users(
            conn, search=search, limit=limit, offset=offset, backend=backend, disabled=disabled
        )
        total = await store.count_users(conn, search, backend=backend, disabled=disabled)
    return rows, total


def public_view(user: Any) -> dict[str, Any]:
    """The user as admins and the user see it: no hash, no ciphertext, no counter internals."""
    locked_until = user["pin_locked_until"]
    return {
        "username": user["username"],
        "display_name": user["display_name"],
        "extension": user["extension"],
        "email": user["email"],
        "auth_backend": user["auth_backend"],
        "language": user["language"],
        "role": user["role"],
        "pin_set": user["pin_hash"] is not None,
        "pin_changed_at": iso_or_none(user["pin_changed_at"]),
        "pin_locked_until": iso_or_none(locked_until),
        "password_set": user["password_hash"] is not None,
        "password_changed_at": iso_or_none(user["password_changed_at"]),
        "must_change_password": user["must_change_password"],
        "disabled": user["disabled_at"] is not None,
        "disabled_at": iso_or_none(user["disabled_at"]),
        "disabled_by": user["disabled_by"],
        "directory_dn": user["directory_dn"],
        "created_at": iso_or_none(user["created_at"]),
        "updated_at": iso_or_none(user["updated_at"]),
    }


def iso_or_none(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())

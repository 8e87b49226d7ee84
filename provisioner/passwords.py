"""Client passwords (local backend only): policy, generation and the change use cases."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal, get_args

import asyncpg

from provisioner import audit, auth, store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.errors import Kind, ProvisionerError, conflict, invalid, unprocessable
from provisioner.mail import render_new_password
from provisioner.users import get_user, is_valid_email, require_admin

Mode = Literal["set", "set_and_email", "random_and_email"]
MODES: tuple[str, ...] = get_args(Mode)
MIN_LENGTH = 8
MAX_LENGTH = 256
RANDOM_LENGTH = 20
# No look-alikes (0/O, 1/l/I): the password travels by mail and is often typed by hand.
_RANDOM_ALPHABET = "".join(
    c for c in string.ascii_letters + string.digits + "-_.+!?#" if c not in "0O1lI"
)


@dataclass(frozen=True)
class PasswordChange:
    email_sent: bool


@cache
def common_passwords() -> frozenset[str]:
    """The blocklist shipped in ``provisioner/data/common-passwords.txt``, lower-cased."""
    text = resources.files("provisioner").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def _policy_error(reason: str, message: str) -> ProvisionerError:
    return ProvisionerError(Kind.UNPROCESSABLE, "password_policy", message, reason=reason)


def check_password_policy(password: str, *, username: str, email: str | None) -> None:
    """Raise ``password_policy`` with the reason when ``password`` is not acceptable."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise _policy_error(
            "length", f"A password has between {MIN_LENGTH} and {MAX_LENGTH} characters."
        )
    if not password.isascii() or not password.isprintable():
        # UC clients and phone keypads cannot reliably enter anything else.
        raise _policy_error(
            "characters", "Use letters A-Z, digits, spaces and ASCII punctuation only."
        )
    lowered = password.lower()
    if lowered == username.lower() or (
        email and lowered in (email.lower(), email.split("@")[0].lower())
    ):
        raise _policy_error("personal", "A password must not be your username or email address.")
    if lowered in common_passwords():
        raise _policy_error("common", "This password is too common; choose another.")


def generate_password() -> str:
    return "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(RANDOM_LENGTH))


def _require_local(user: asyncpg.Record) -> None:
    if user["auth_backend"] != "local":
        raise ProvisionerError(
            Kind.CONFLICT,
            "auth_backend_external",
            f"This user signs in through {user['auth_backend'].upper()}; "
            "the password is managed there.",
        )


def _require_email(user: asyncpg.Record) -> str:
    email = user["email"]
    if not email:
        raise unprocessable("email_missing", "The user has no email address.")
    if not is_valid_email(email):
        raise unprocessable("email_invalid", "The user's email address is not valid.")
    return str(email)


async def admin_set_password(
    core: Core,
    actor: Actor,
    username: str,
    *,
    mode: str,
    password: str | None,
    temporary: bool = True,
) -> PasswordChange:
    """An administrator sets a password, optionally mailing it, or a random one and mails it.

    For the email modes the mail is sent first, before any row is locked or written: when the
    mail server refuses, nothing changes and the old password keeps working; a slow one holds
    no lock. A change of the user's password or email while the mail was on its way refuses
    this one (``password_changed_meanwhile``): the mail then names a password never set.
    """
    require_admin(actor)
    if mode not in MODES:
        raise invalid("mode_invalid", f"mode is one of {MODES}.")
    if mode == "random_and_email":
        if password is not None:
            raise invalid("password_not_expected", "A random password is generated: send none.")
        temporary = True
    elif password is None:
        raise invalid("password_missing", "This mode needs a password.")
    async with core.pool.acquire() as conn:
        user = await get_user(conn, username)
    _require_local(user)
    emailing = mode != "set"
    if emailing:
        _require_email(user)
        mailer = core.require_mailer()
    new_password = generate_password() if password is None else password
    check_password_policy(new_password, username=username, email=user["email"])
    password_hash = await core.hasher.hash_password(new_password)
    if emailing:
        # Sent before any lock is taken (a slow mail server must not block the user's other
        # changes) and before anything is written: refused mail changes nothing.
        await mailer.send(
            render_new_password(
                to=_require_email(user),
                display_name=user["display_name"],
                username=username,
                password=new_password,
                temporary=temporary,
                language=user["language"],
            )
        )
    async with core.pool.acquire() as conn, conn.transaction():
        current = await get_user(conn, username, for_update=True)
        _require_local(current)
        if current["credential_version"] != user["credential_version"] or (
            emailing and current["email"] != user["email"]
        ):
            raise conflict(
                "password_changed_meanwhile",
                "The user's password or email changed meanwhile; nothing was set. Try again.",
            )
        await store.set_user_password(conn, user["id"], password_hash, must_change=temporary)
        await store.delete_dead_sessions(conn, user["id"])
        await audit.record(
            conn,
            actor,
            "password.change",
            username,
            {"mode": mode, "temporary": temporary, "email_sent": emailing},
        )
    return PasswordChange(email_sent=emailing)


async def change_own_password(
    core: Core, actor: Actor, current_password: str | None, new_password: str
) -> auth.Session:
    """A user replaces their password; an impersonating admin needs no current password.

    Returns a fresh token: the change revokes every token issued before, the caller's included.
    """
    async with core.pool.acquire() as conn:
        user = await get_user(conn, actor.username)
    _require_local(user)
    if actor.impersonator is None:
        if current_password is None:
            raise unprocessable("current_password_missing", "Enter your current password.")
        if not await core.hasher.verify_password(current_password, user["password_hash"]):
            raise ProvisionerError(
                Kind.FORBIDDEN, "current_password_wrong", "The current password is wrong."
            )
    check_password_policy(new_password, username=actor.username, email=user["email"])
    if current_password is not None and new_password == current_password:
        raise _policy_error("unchanged", "The new password must differ from the current one.")
    password_hash = await core.hasher.hash_password(new_password)
    async with core.pool.acquire() as conn, conn.transaction():
        locked = await get_user(conn, actor.username, for_update=True)
        if locked["credential_version"] != user["credential_version"]:
            raise conflict("password_changed_meanwhile", "The password changed meanwhile; retry.")
        await store.set_user_password(conn, user["id"], password_hash, must_change=False)
        await store.delete_dead_sessions(conn, user["id"])
        refreshed = await get_user(conn, actor.username)
        impersonator = (
            await get_user(conn, actor.impersonator) if actor.impersonator is not None else None
        )
        session = await auth.issue_token(
            conn,
            refreshed,
            impersonator=impersonator,
            lifetime=auth.IMPERSONATION_LIFETIME if impersonator else auth.SESSION_LIFETIME,
        )
        await audit.record(conn, actor, "password.change", actor.username, {"mode": "self"})
    return session


BOOTSTRAP_ADMIN = "admin"


async def bootstrap_admin(core: Core, password: str | None) -> str | None:
    """On an empty database create ``admin``; return its generated one-time password.

    With ``password`` given (``PROVISIONER_ADMIN_PASSWORD``) that one is used, is not temporary,
    and None is returned: there is nothing to show.
    """
    async with core.pool.acquire() as conn:
        if await store.any_user_exists(conn):
            return None
    generated = password is None
    secret = generate_password() if password is None else password
    check_password_policy(secret, username=BOOTSTRAP_ADMIN, email=None)
    password_hash = await core.hasher.hash_password(secret)
    async with core.pool.acquire() as conn, conn.transaction():
        await store.lock_user_bootstrap(conn)
        if await store.any_user_exists(conn):
            return None
        user = await store.insert_user(
            conn,
            username=BOOTSTRAP_ADMIN,
            display_name="Administrator",
            extension=None,
            email=None,
            auth_backend="local",
            language="en",
            role="admin",
        )
        await store.set_user_password(conn, user["id"], password_hash, must_change=generated)
        await audit.record(
            conn, None, "user.create", BOOTSTRAP_ADMIN, {"bootstrap": True}, source="startup"
        )
    return secret if generated else None

"""Signing in with SAML single sign-on: the use cases behind ``/saml/login`` and
``/saml/acs``.

Only answers to requests this service sent are taken (SP-initiated sign-on): an IdP-initiated
answer could be planted in a victim's browser to sign it in as someone else, and has no
request to bind it to. Each request is answered once, and each accepted assertion is kept
until it expires, so posting an answer again is refused (``saml_invalid``, ``replayed``).

A verified identity becomes a session of a user of backend ``saml``: one unknown so far is
created first when ``PROVISIONER_SAML_CREATE_USERS`` is on (in the same transaction as the
session); a user of another backend is refused, since the IdP does not speak for accounts
this service or a directory authenticates. The display name and email the assertion carries
update the user at every sign-in.

Every refusal is audited (``auth.login_refused``, via ``saml``) with its code and reason,
never with what the assertion carried beyond the username it names.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from provisioner import audit, auth, store, users
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.errors import Kind, ProvisionerError, conflict, forbidden
from provisioner.saml import NAME_ID, Assertion, Unverified, is_transient, peek, refused
from provisioner.settings import SamlSettings

if TYPE_CHECKING:  # pysaml2 takes seconds to import: only where SAML is configured
    from provisioner.saml_sp import ServiceProvider

#: How long the IdP has to answer a request (the user may have to type a password and
#: pass a second factor there).
REQUEST_LIFETIME = timedelta(minutes=15)
VIA = "saml"
# The assertion may update these on every sign-in; the extension is taken only at creation,
# as changing it moves the user's lines.
_UPDATED_FIELDS = ("display_name", "email")


@dataclass(frozen=True)
class SignedIn:
    session: auth.Session
    next_path: str
    """The page the sign-in started from (already checked to be one of ours), or empty."""


def not_configured() -> ProvisionerError:
    return ProvisionerError(
        Kind.UNAVAILABLE,
        "saml_not_configured",
        "Single sign-on is not configured (PROVISIONER_SAML_IDP_METADATA).",
    )


async def begin(core: Core, sp: ServiceProvider, next_path: str) -> str:
    """Send the browser to the IdP: the URL carrying a new AuthnRequest, which is remembered
    with the page to return to (``next_path``, already checked to be one of ours)."""
    request_id, url = sp.authn_request(relay_state=next_path)
    async with core.pool.acquire() as conn:
        await store.delete_expired_saml_state(conn)
        await store.insert_saml_request(
            conn, request_id, next_path, datetime.now(UTC) + REQUEST_LIFETIME
        )
    return url


async def finish(
    core: Core, sp: ServiceProvider, saml_response: str, source: str, *, language: str
) -> SignedIn:
    """Take the IdP's posted answer: verify it, then sign the user in (creating them first
    where allowed; ``language`` is a new user's). Refusals raise, audited."""
    settings = core.settings.saml
    assert settings is not None
    username = None
    try:
        request = await _outstanding_request(core, peek(saml_response))
        assertion = await asyncio.to_thread(sp.verify, saml_response, request["id"])
        username = _username(settings, assertion)
        return await _sign_in(core, settings, assertion, username, source, language)
    except ProvisionerError as exc:
        async with core.pool.acquire() as conn:
            details = {"via": VIA, "code": exc.code, "reason": exc.reason}
            await audit.record(conn, None, "auth.login_refused", username, details, source=source)
        raise


async def _outstanding_request(core: Core, claimed: Unverified) -> asyncpg.Record:
    """The request the answer claims to answer; refused early when there is none or when
    the assertion it claims to carry was used already (both checked again once verified)."""
    async with core.pool.acquire() as conn:
        issuer, assertion_id = claimed.issuer, claimed.assertion_id
        if issuer and assertion_id and await store.saml_assertion_seen(conn, issuer, assertion_id):
            raise refused("replayed", "This assertion was used already.")
        request_id = claimed.in_response_to
        if request_id and len(request_id) <= 64:
            request = await store.get_saml_request(conn, request_id)
            if request is not None:
                return request
    raise refused("unsolicited", "The answer is to no request of this service.")


def _username(settings: SamlSettings, assertion: Assertion) -> str:
    source = settings.attributes.attribute("username")
    assert source is not None  # the settings require it
    if source.lower() == NAME_ID and is_transient(assertion):
        raise refused(
            "nameid_transient",
            "The identity provider sends a NameID that changes at every sign-in; configure a "
            "persistent one or map the username to an attribute.",
        )
    value = assertion.value(source)
    if not value:
        raise refused("username_missing", f"The assertion carries no {source}.")
    username = value.strip().lower()
    if not users.is_valid_username(username):
        raise refused("username_invalid", f"The assertion's {source} is no valid username.")
    return username


def _fields(settings: SamlSettings, assertion: Assertion) -> dict[str, str]:
    """The user fields the assertion carries valid values for."""
    fields = {}
    for name, source in settings.attributes.pairs:
        value = users.valid_or_none(name, assertion.value(source))
        if name != "username" and value is not None:
            fields[name] = value
    return fields


async def _sign_in(
    core: Core,
    settings: SamlSettings,
    assertion: Assertion,
    username: str,
    source: str,
    language: str,
) -> SignedIn:
    fields = _fields(settings, assertion)
    actor = Actor(username=username, role="user", source=source)
    macs: list[str] = []
    async with core.pool.acquire() as conn, conn.transaction():
        request = await store.take_saml_request(conn, assertion.request_id)
        fresh = await store.insert_saml_assertion(
            conn, assertion.issuer, assertion.id, assertion.expires_at
        )
        if request is None or not fresh:
            raise refused("replayed", "This answer was used already.")
        user = await store.get_user_by_username(conn, username, for_update=True)
        if user is None:
            if not settings.create_users:
                raise forbidden(
                    "saml_user_unknown",
                    "There is no user of this name here; ask an administrator to add you.",
                )
            user = await _create_user(conn, actor, username, fields, language)
        elif user["auth_backend"] != VIA:
            raise forbidden(
                "auth_backend_mismatch",
                "This account does not sign in with single sign-on.",
            )
        else:
            user, macs = await _update_user(conn, actor, user, fields)
        session = await auth.open_session_in(conn, user, source, via=VIA)
    if macs:  # each has a push job
        core.push_wake.wake()
    return SignedIn(session, request["next_path"])


async def _create_user(
    conn: Connection, actor: Actor, username: str, fields: dict[str, str], language: str
) -> asyncpg.Record:
    extension = fields.get("extension")
    if extension is not None and await store.get_user_by_extension(conn, extension):
        extension = None  # another user's: the new user gets none rather than no sign-in
    try:
        row = await store.insert_user(
            conn,
            username=username,
            display_name=fields.get("display_name", username),
            extension=extension,
            email=fields.get("email"),
            auth_backend=VIA,
            language=language,
            role="user",
        )
    except asyncpg.UniqueViolationError:
        # A sign-in in another tab created the user, or took the extension, meanwhile.
        raise conflict(
            "user_created_meanwhile", "The user was created meanwhile; sign in again."
        ) from None
    stored = ["display_name", "username", *(k for k in ("email", "extension") if row[k])]
    await audit.record(conn, actor, "user.create", username, {"via": VIA, "fields": stored})
    return row


async def _update_user(
    conn: Connection, actor: Actor, user: asyncpg.Record, fields: dict[str, str]
) -> tuple[asyncpg.Record, list[str]]:
    """Take the display name and email the assertion carries; the user's devices that show
    a changed field get a push job. Returns the row and the devices to render."""
    changed: dict[str, Any] = {
        k: fields[k] for k in _UPDATED_FIELDS if k in fields and fields[k] != user[k]
    }
    if not changed:
        return user, []
    row = await store.update_user(conn, user["id"], changed)
    macs = (
        await store.list_device_macs_for_user(conn, user["id"]) if "display_name" in changed else []
    )
    jobs = await store.enqueue_push_jobs(conn, macs, "user.update")
    details = {"via": VIA, "fields": sorted(changed), "push_jobs": jobs}
    await audit.record(conn, actor, "user.update", user["username"], details)
    return row, macs

"""What the PBX asks of us: PIN checks, hot-desk logins and logouts, device reachability.

PIN checks lock a user after :data:`PIN_FAILURES_BEFORE_LOCK` consecutive failures, for a
cool-down that doubles with every lock (capped at a day); an admin's or the user's PIN change
lifts the lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from provisioner import audit, provisioning, store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.devices.base import normalise_mac
from provisioner.devices_service import get_device_row, parse_mac, sip_account_name
from provisioner.errors import Kind, ProvisionerError, not_found, unprocessable
from provisioner.metrics import METRICS
from provisioner.pins import MAX_LENGTH
from provisioner.vault import sip_password_purpose

PIN_FAILURES_BEFORE_LOCK = 10
LOCK_BASE_SECONDS = 300
LOCK_MAX_SECONDS = 86_400
_UA_MAC = re.compile(
    r"(?<![0-9A-Fa-f])((?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}|[0-9A-Fa-f]{12})(?![0-9A-Fa-f])"
)
_EXTENSION = re.compile(r"[0-9A-Za-z_.+-]{1,64}")


@dataclass(frozen=True)
class PinCheck:
    valid: bool
    locked_until: datetime | None = None


def _pin_locked(until: datetime) -> ProvisionerError:
    seconds = max(1, int((until - datetime.now(UTC)).total_seconds() + 0.999))
    return ProvisionerError(
        Kind.LOCKED,
        "pin_locked",
        f"The PIN is locked after repeated failures; try again in {seconds} seconds.",
        retry_after=seconds,
    )


def _check_extension(extension: str) -> str:
    if not _EXTENSION.fullmatch(extension):
        raise unprocessable("extension_invalid", "The extension is not valid.")
    return extension


async def check_pin(core: Core, extension: str, pin: str, source: str) -> tuple[Any, PinCheck]:
    """Verify ``pin`` for the user with ``extension``; count failures, lock when due.

    Each check is counted as a failure before the (slow) verification and taken back by a right
    PIN, so at most :data:`PIN_FAILURES_BEFORE_LOCK` wrong PINs are ever verified in a row, even
    when a hundred arrive at once. Raises ``pin_locked`` while the user is locked, or while that
    many checks are already under way (the PIN is not checked then), ``user_not_found`` for an
    unknown extension and ``pin_policy`` for a PIN longer than any PIN.
    """
    _check_extension(extension)
    if len(pin) > MAX_LENGTH:
        raise ProvisionerError(
            Kind.UNPROCESSABLE,
            "pin_policy",
            f"A PIN has at most {MAX_LENGTH} digits.",
            reason="length",
        )
    async with core.pool.acquire() as conn:
        user = await store.get_user_by_extension(conn, extension)
        if user is None:
            raise not_found("user_not_found", "No user has this extension.")
        if user["disabled_at"] is not None:
            raise ProvisionerError(Kind.FORBIDDEN, "user_disabled", "This user is disabled.")
        reserved = await store.reserve_pin_check(
            conn, user["id"], threshold=PIN_FAILURES_BEFORE_LOCK
        )
        if not reserved:
            locked = await store.get_user_by_id(conn, user["id"])
    if not reserved:
        now = datetime.now(UTC)
        until = locked["pin_locked_until"] if locked is not None else None
        # Not locked yet: the last checks before the lock are still being verified.
        raise _pin_locked(until if until is not None and until > now else now)
    valid = (
        user["pin_hash"] is not None
        and pin.isascii()
        and pin.isdigit()
        and core.pin_verifier.check(user["id"], pin, user["pin_hash"])
    )
    actor = Actor(username="pbx", role="system", source=source)
    async with core.pool.acquire() as conn, conn.transaction():
        if valid:
            await store.reset_pin_failures(conn, user["id"])
            return user, PinCheck(True)
        METRICS.auth_failures.inc(kind="pin")
        row = await store.lock_pin_if_due(
            conn,
            user["id"],
            threshold=PIN_FAILURES_BEFORE_LOCK,
            base_seconds=LOCK_BASE_SECONDS,
            max_seconds=LOCK_MAX_SECONDS,
        )
        locked_until = row["pin_locked_until"]
        if locked_until is not None and locked_until > datetime.now(UTC):
            if row["locked_now"]:
                METRICS.lockouts.inc(kind="pin")
                await audit.record(
                    conn, actor, "pin.locked", user["username"], {"lockouts": row["pin_lockouts"]}
                )
            return user, PinCheck(False, locked_until)
        await audit.record(
            conn, actor, "pin.check_failed", user["username"], {"failures": row["pin_failures"]}
        )
    return user, PinCheck(False)


async def verify_pin(core: Core, extension: str, pin: str, source: str) -> PinCheck:
    """The contract's ``{"valid": bool}``: an unknown extension or a locked PIN is not valid
    (a locked one says until when)."""
    try:
        _, result = await check_pin(core, extension, pin, source)
    except ProvisionerError as exc:
        if exc.code in ("user_not_found", "user_disabled"):
            return PinCheck(False)
        if exc.code == "pin_locked":
            return PinCheck(False, datetime.now(UTC) + timedelta(seconds=exc.retry_after or 0))
        raise
    return result


async def pin_login(
    core: Core, extension: str, pin: str, mac_text: str, source: str
) -> tuple[str, str]:
    """Bind the user to the device's first line; they leave the phone they were logged in at.

    The line the login displaces (the phone's own user on slot 1) is parked, not deleted: it
    comes back, with its SIP account and password, when the hot-desk user logs out or logs in
    at another phone.
    """
    mac = parse_mac(mac_text)
    async with core.pool.acquire() as conn:
        await get_device_row(conn, mac)
    user, result = await check_pin(core, extension, pin, source)
    if not result.valid:
        if result.locked_until is not None:
            raise _pin_locked(result.locked_until)
        raise ProvisionerError(Kind.FORBIDDEN, "pin_invalid", "The PIN is wrong.")
    actor = Actor(username="pbx", role="system", source=source)
    async with core.pool.acquire() as conn, conn.transaction():
        await get_device_row(conn, mac, for_update=True)
        left = await store.remove_hotdesk_assignments(conn, user["id"], except_mac=mac)
        await store.restore_parked_assignments(conn, left)
        await _bind(core, conn, mac, user)
        jobs = await store.enqueue_push_jobs(conn, [mac, *left], "hotdesk.login")
        await audit.record(
            conn,
            actor,
            "hotdesk.login",
            user["username"],
            {"mac": mac, "left": left, "push_jobs": jobs},
        )
    if jobs:
        core.push_wake.wake()
    return user["username"], mac


async def _bind(core: Core, conn: Connection, mac: str, user: Any) -> None:
    current = await store.get_assignment(conn, mac, 1)
    if current is not None and current["user_id"] == user["id"]:
        return
    # The phone's own line waits, account and password kept, until the user logs out.
    await store.park_assignment(conn, mac, 1)
    await store.insert_assignment(
        conn,
        mac=mac,
        slot=1,
        user_id=user["id"],
        ipui=None,
        sip_user=sip_account_name(user["extension"], mac, 1),
        sip_auth_user=sip_account_name(user["extension"], mac, 1),
        sip_password_encrypted=core.vault.encrypt(
            provisioning.new_secret(), sip_password_purpose(mac, 1)
        ),
        hotdesk=True,
    )


async def logout(core: Core, mac_text: str, source: str) -> list[str]:
    """Undo hot-desk logins on the device and bring its own line back; returns the users
    logged out."""
    mac = parse_mac(mac_text)
    actor = Actor(username="pbx", role="system", source=source)
    async with core.pool.acquire() as conn, conn.transaction():
        await get_device_row(conn, mac, for_update=True)
        usernames = await store.remove_device_hotdesk(conn, mac)
        await store.restore_parked_assignments(conn, [mac])
        jobs = await store.enqueue_push_jobs(conn, [mac], "hotdesk.logout") if usernames else []
        for username in usernames:
            await audit.record(
                conn, actor, "hotdesk.logout", username, {"mac": mac, "push_jobs": jobs}
            )
    if jobs:
        core.push_wake.wake()
    if usernames:
        await provisioning.render_device(core, mac)
    return usernames


def is_contact_uri(contact: str) -> bool:
    """Whether the PBX's word for where a device is reachable can be stored and used: a SIP URI
    of at most 512 characters, without line breaks or spaces."""
    return (
        contact.startswith(("sip:", "sips:"))
        and len(contact) <= 512
        and not any(c in contact for c in "\r\n ")
    )


async def registered(
    core: Core, extension: str, contact: str, user_agent: str, mac_text: str | None
) -> str:
    """Remember where the device is reachable; returns its MAC."""
    _check_extension(extension)
    if not is_contact_uri(contact):
        raise unprocessable("contact_invalid", "contact is a SIP URI (sip:user@host:port).")
    async with core.pool.acquire() as conn, conn.transaction():
        mac = await _resolve_device(conn, extension, user_agent, mac_text)
        await store.set_device_contact(conn, mac, contact, extension, user_agent[:512])
    return mac


async def _resolve_device(
    conn: Connection, extension: str, user_agent: str, mac_text: str | None
) -> str:
    if mac_text:
        mac = parse_mac(mac_text)
        await get_device_row(conn, mac)
        return mac
    for candidate in _UA_MAC.findall(user_agent):
        found = normalise_mac(candidate)
        if found and await store.get_device(conn, found) is not None:
            return found
    macs = await store.find_devices_by_line(conn, extension)
    if len(macs) == 1:
        return macs[0]
    if not macs:
        raise not_found("device_not_found", "No device has a line for this extension.")
    raise ProvisionerError(
        Kind.CONFLICT,
        "device_ambiguous",
        "Several devices have a line for this extension; send the mac.",
    )


async def reprovision(
    core: Core, mac_text: str | None, extension: str | None, source: str
) -> list[int]:
    actor = Actor(username="pbx", role="system", source=source)
    async with core.pool.acquire() as conn, conn.transaction():
        if mac_text:
            mac = parse_mac(mac_text)
            await get_device_row(conn, mac)
            macs = [mac]
        else:
            assert extension is not None
            _check_extension(extension)
            user = await store.get_user_by_extension(conn, extension)
            if user is None:
                raise not_found("user_not_found", "No user has this extension.")
            macs = await store.list_device_macs_for_user(conn, user["id"])
        jobs = await store.enqueue_push_jobs(conn, macs, "reprovision")
        await audit.record(
            conn, actor, "device.reprovision", None, {"macs": macs, "push_jobs": jobs}
        )
    if jobs:
        core.push_wake.wake()
    return jobs

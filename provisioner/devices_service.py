"""Devices: adding them, assigning users to their lines or handsets, re-provisioning.

Every change commits the device row, its assignments, the audit row and the push job together;
the device is re-rendered after the commit (rendering is idempotent, so a crash in between only
delays the new revision until the next render of that device).
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg
import jinja2

from provisioner import access_codes, audit, discovery, provisioning, sites, store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.devices import ADAPTERS
from provisioner.devices.base import Adapter, ModelInfo, RenderError, normalise_mac
from provisioner.errors import ProvisionerError, conflict, invalid, not_found, unprocessable
from provisioner.users import (
    CONTROL_CHARS,
    get_user,
    has_control_chars,
    require_admin,
    require_self_or_admin,
)
from provisioner.vault import (
    VaultError,
    access_code_purpose,
    device_api_password_purpose,
    device_credential_purpose,
    sip_password_purpose,
)

log = logging.getLogger(__name__)

_HEX = "[0-9A-Fa-f]"
#: A MAC address as people type it: 12 hex digits in any case, plain or split into equal groups
#: by one kind of separator (``00:15:65:aa:bb:cc``, ``0015.65aa.bbcc``), spaces around allowed.
#: Read by Python (fullmatch) and, in the API document, as ECMA-262 JSON Schema.
MAC_PATTERN = (
    r"^\s*(?:"
    + "|".join(
        [f"{_HEX}{{12}}"]
        + [
            f"{_HEX}{{{size}}}(?:{re.escape(sep)}{_HEX}{{{size}}}){{{12 // size - 1}}}"
            for size in (6, 4, 3, 2, 1)
            for sep in ":-."
        ]
    )
    + r")\s*$"
)
_MAC = re.compile(MAC_PATTERN)
LABEL_MAX_LENGTH = 128
LABEL_PATTERN = f"^[^{CONTROL_CHARS}]*$"
#: A handset's IPUI, or blank for none.
IPUI_OR_BLANK_PATTERN = rf"^\s*(?:{_HEX}{{10}})?\s*$"
_IPUI = re.compile(IPUI_OR_BLANK_PATTERN)
#: A SHA-256 fingerprint in hex, plain or as colon-separated pairs, or blank for none.
FINGERPRINT_OR_BLANK_PATTERN = rf"^\s*(?:{_HEX}{{64}}|{_HEX}{{2}}(?::{_HEX}{{2}}){{31}})?\s*$"
_FINGERPRINT = re.compile(FINGERPRINT_OR_BLANK_PATTERN)


@dataclass(frozen=True)
class NewDevice:
    mac: str
    vendor: str
    model: str
    label: str = ""
    site: str = "default"


@dataclass(frozen=True)
class Assignment:
    slot: int
    username: str
    ipui: str | None = None


@dataclass(frozen=True)
class ImportReport:
    imported: int
    errors: list[tuple[int, str]]
    """(line number, message) for every refused row; when any, nothing was imported."""


def parse_mac(text: str) -> str:
    # normalise_mac takes any mix of separators; an address typed by a person uses one kind.
    mac = normalise_mac(text) if _MAC.fullmatch(text) else None
    if mac is None:
        raise unprocessable(
            "mac_invalid", "A MAC address is 12 hex digits, e.g. 00:15:65:aa:bb:cc or 001565aabbcc."
        )
    return mac


def resolve_model(vendor: str, model: str, *, generic: bool = False) -> tuple[Adapter, ModelInfo]:
    """The adapter and the capabilities of ``vendor`` ``model``; ``model_unknown`` (422) when
    the table does not list it, unless ``generic`` lets a name of the family's through
    (served with the family's generic configuration, :meth:`Adapter.generic_model`)."""
    adapter = ADAPTERS.get(vendor.strip().lower())
    if adapter is None:
        raise unprocessable("vendor_unknown", f"vendor is one of {', '.join(sorted(ADAPTERS))}.")
    resolved = adapter.resolve_model(model)
    if resolved is None or (not resolved[1] and not generic):
        raise unprocessable(
            "model_unknown",
            f"{adapter.vendor} models are {', '.join(m.name for m in adapter.models.values())}.",
        )
    return adapter, resolved[0]


def model_known(device: Any) -> bool:
    """Whether the device's model is in its vendor's table (else served generically)."""
    adapter = ADAPTERS.get(device["vendor"])
    return adapter is not None and adapter.model(device["model"]) is not None


def _check_label(label: str) -> str:
    if len(label) > LABEL_MAX_LENGTH or has_control_chars(label):
        raise invalid("label_invalid", f"A label is at most {LABEL_MAX_LENGTH} characters.")
    return label.strip()


async def _check_site(conn: Connection, site: str) -> str:
    if not sites.is_site_name(site) or await store.get_site(conn, site) is None:
        raise unprocessable("site_unknown", "There is no such site.")
    return site


async def get_device_row(conn: Connection, mac: str, *, for_update: bool = False) -> Any:
    row = await store.get_device(conn, mac, for_update=for_update)
    if row is None:
        raise not_found("device_not_found", "There is no such device.")
    return row


async def _insert_device(
    core: Core, conn: Connection, new: NewDevice, *, generic: bool = False
) -> tuple[Any, list[int]]:
    """Insert the device; adopting it when it was discovered. The row and the push jobs
    adoption queued (none for a device that was not discovered)."""
    mac = parse_mac(new.mac)
    adapter, model = resolve_model(new.vendor, new.model, generic=generic)
    label = _check_label(new.label)
    site = await _check_site(conn, new.site)
    if await store.get_device(conn, mac) is not None:
        raise conflict("device_exists", "A device with this MAC address exists.")
    row = await store.insert_device(
        conn,
        mac=mac,
        vendor=adapter.vendor,
        model=model.name,
        kind=model.kind,
        label=label,
        site=site,
        credential_encrypted=core.vault.encrypt(
            provisioning.new_secret(), device_credential_purpose(mac)
        ),
    )
    return row, await discovery.adopt(conn, mac)


async def create_device(
    core: Core, actor: Actor, new: NewDevice, assignments: Sequence[Assignment] = ()
) -> Any:
    """Add a device, with its first assignments when given: all of it, or (refused) nothing.

    A model the vendor's table does not list, but whose name fits the family, is added and
    served with the family's generic configuration (``model_known`` false; logged). A
    discovered phone is adopted: its discovered row goes and a push is queued
    (:func:`provisioner.discovery.adopt`).
    """
    require_admin(actor)
    async with core.pool.acquire() as conn, conn.transaction():
        try:
            row, adopted = await _insert_device(core, conn, new, generic=True)
        except asyncpg.UniqueViolationError:  # a concurrent add of the same MAC
            raise conflict("device_exists", "A device with this MAC address exists.") from None
        details: dict[str, Any] = {
            "mac": row["mac"],
            "vendor": row["vendor"],
            "model": row["model"],
        }
        if adopted:
            details["discovered"] = True
            details["push_jobs"] = adopted
        if not model_known(row):
            details["model_known"] = False
            log.warning(
                "device %s: %s %s is not in the model table; served with the family's generic "
                "configuration",
                row["mac"],
                row["vendor"],
                row["model"],
            )
        if assignments:
            details["slots"] = await _write_assignments(core, conn, row, assignments)
        await audit.record(conn, actor, "device.create", None, details)
    if adopted:
        core.push_wake.wake()
    await provisioning.render_device(core, row["mac"])
    return row


def model_warning(device: Any) -> str | None:
    """What an admin should know about a device whose model is served generically."""
    if model_known(device):
        return None
    return (
        f"{device['model']} is not in the {device['vendor']} model table: it is served with the "
        "family's generic configuration. Check the device's files (GET .../devices/{mac}) and "
        "that it registers."
    )


def list_models(actor: Actor) -> list[dict[str, Any]]:
    """Every model of every vendor's table."""
    require_admin(actor)
    return [
        {
            "vendor": adapter.vendor,
            "model": model.name,
            "kind": model.kind,
            "slots": model.slots,
            "family": model.family,
        }
        for adapter in ADAPTERS.values()
        for model in adapter.models.values()
    ]


async def update_device(core: Core, actor: Actor, mac_text: str, changes: Mapping[str, Any]) -> Any:
    """Change label, model (within the vendor) or site; re-renders and queues a push."""
    require_admin(actor)
    mac = parse_mac(mac_text)
    async with core.pool.acquire() as conn, conn.transaction():
        device = await get_device_row(conn, mac, for_update=True)
        clean: dict[str, Any] = {}
        if "label" in changes:
            clean["label"] = _check_label(changes["label"])
        if "site" in changes:
            clean["site"] = await _check_site(conn, changes["site"])
        if "model" in changes:
            _, model = resolve_model(device["vendor"], changes["model"], generic=True)
            taken = max((a["slot"] for a in await store.list_assignments(conn, mac)), default=0)
            if taken > model.slots or model.kind != device["kind"]:
                raise unprocessable(
                    "model_incompatible", f"{model.name} cannot carry this device's assignments."
                )
            clean["model"] = model.name
        changed = {k: v for k, v in clean.items() if device[k] != v}
        if not changed:
            return device
        row = await store.update_device(conn, mac, changed)
        jobs = await store.enqueue_push_jobs(conn, [mac], "device.update")
        await audit.record(
            conn,
            actor,
            "device.update",
            None,
            {"mac": mac, "fields": sorted(changed), "push_jobs": jobs},
        )
    core.push_wake.wake()
    await provisioning.render_device(core, mac)
    return row


async def delete_device(core: Core, actor: Actor, mac_text: str) -> None:
    require_admin(actor)
    mac = parse_mac(mac_text)
    async with core.pool.acquire() as conn, conn.transaction():
        await get_device_row(conn, mac, for_update=True)
        await store.delete_device(conn, mac)
        await audit.record(conn, actor, "device.delete", None, {"mac": mac})
        await conn.execute("SELECT pg_notify($1, $2)", provisioning.DEVICE_CHANNEL, mac)


class DeviceDetails(NamedTuple):
    device: Any
    assignments: list[Any]
    access_code: str | None
    """The DECT system's access code for subscribing handsets; None for desk phones."""


async def find_device(core: Core, actor: Actor, mac_text: str) -> DeviceDetails:
    require_admin(actor)
    mac = parse_mac(mac_text)
    async with core.pool.acquire() as conn:
        device = await get_device_row(conn, mac)
        return DeviceDetails(
            device,
            await store.list_assignments(conn, mac),
            await access_codes.ensure(core.vault, conn, device),
        )


async def set_access_code(
    core: Core, actor: Actor, mac_text: str, code: str | None
) -> tuple[str, list[int]]:
    """Replace the DECT system's access code with ``code``, or a new random one when None.

    One transaction: the device row, the audit row (never the code) and the push job; the
    device is re-rendered. A PIN change never touches the code. Returns the code and the jobs.
    ``access_code_invalid`` when ``code`` is not exactly the digits the vendor's key takes,
    ``access_code_unused`` for models without an access code.
    """
    require_admin(actor)
    mac = parse_mac(mac_text)
    async with core.pool.acquire() as conn, conn.transaction():
        device = await get_device_row(conn, mac, for_update=True)
        key = access_codes.key_of(device)
        if key is None:
            raise unprocessable(
                "access_code_unused",
                "Only DECT systems have an access code for subscribing handsets.",
            )
        chosen = (
            access_codes.generate(key.digits) if code is None else access_codes.check(code, key)
        )
        await store.set_device_access_code(
            conn, mac, core.vault.encrypt(chosen, access_code_purpose(mac))
        )
        jobs = await store.enqueue_push_jobs(conn, [mac], "device.access_code")
        await audit.record(
            conn,
            actor,
            "device.access_code",
            None,
            {"mac": mac, "generated": code is None, "push_jobs": jobs},
        )
    core.push_wake.wake()
    await provisioning.render_device(core, mac)
    return chosen, jobs


async def list_user_devices(core: Core, actor: Actor, username: str) -> list[Any]:
    """The devices carrying a user, each with its slot and its latest push job's state."""
    require_self_or_admin(actor, username)
    async with core.pool.acquire() as conn:
        user = await get_user(conn, username)
        return await store.list_user_devices(conn, user["id"])


async def preview_device(
    core: Core, actor: Actor, mac_text: str, *, mask: bool
) -> dict[str, bytes]:
    """What the device would get if it were rendered now (nothing is stored).

    With ``mask`` every PIN, SIP password and device credential is replaced, for showing to
    people. Raises ``render_failed`` when the device cannot be rendered.
    """
    require_admin(actor)
    mac = parse_mac(mac_text)
    async with core.pool.acquire() as conn:
        await get_device_row(conn, mac)
    try:
        files = await provisioning.preview(core, mac)
        if mask:
            shown = provisioning.masked(files, await provisioning.device_secrets(core, mac))
            files = {name: text.encode() for name, text in shown.items()}
    except (RenderError, jinja2.TemplateError, VaultError) as exc:
        raise unprocessable("render_failed", f"{mac} cannot be rendered: {exc}") from None
    return dict(sorted(files.items()))


async def list_devices(
    core: Core, actor: Actor, *, search: str | None, limit: int, offset: int
) -> tuple[list[Any], int]:
    require_admin(actor)
    async with core.pool.acquire() as conn:
        return (
            await store.list_devices(conn, search=search, limit=limit, offset=offset),
            await store.count_devices(conn, search),
        )


def _check_assignments(
    device: Any, model: ModelInfo, assignments: Sequence[Assignment]
) -> list[Assignment]:
    seen: set[int] = set()
    checked = []
    for a in assignments:
        if not 1 <= a.slot <= model.slots:
            raise unprocessable(
                "slot_invalid", f"{model.name} has slots 1 to {model.slots}; {a.slot} is outside."
            )
        if a.slot in seen:
            raise unprocessable("slot_duplicate", f"Slot {a.slot} is assigned twice.")
        seen.add(a.slot)
        ipui = (a.ipui or "").strip().upper() or None
        if ipui is not None:
            if device["kind"] != "dect":
                raise unprocessable("ipui_not_dect", "Only DECT handsets have an IPUI.")
            if not _IPUI.fullmatch(ipui):
                raise unprocessable("ipui_invalid", "An IPUI is 10 hex digits.")
        checked.append(Assignment(a.slot, a.username, ipui))
    return checked


def sip_account_name(extension: str, mac: str, slot: int) -> str:
    """One SIP account per line: the extension, the device and the slot, so it is unique.

    The whole MAC: devices of different vendors may share the last six digits.
    """
    return f"{extension}-{mac}-{slot}"


async def _write_assignments(
    core: Core, conn: Connection, device: Any, assignments: Sequence[Assignment]
) -> dict[str, str]:
    """Replace ``device``'s assignments inside the caller's transaction.

    Slots that keep their user keep their SIP account; new ones get a fresh random password.
    Returns slot → username for the audit row.
    """
    mac = device["mac"]
    _, model = resolve_model(device["vendor"], device["model"], generic=True)
    checked = _check_assignments(device, model, assignments)
    previous = {a["slot"]: a for a in await store.list_assignments(conn, mac)}
    users = {a.username: await get_user(conn, a.username) for a in checked}
    await store.delete_assignments(conn, mac)
    for a in checked:
        user = users[a.username]
        if not user["extension"]:
            raise unprocessable("extension_missing", f"{a.username} needs an extension for a line.")
        kept = previous.get(a.slot)
        if kept is not None and kept["user_id"] == user["id"] and kept["sip_auth_user"]:
            account, encrypted = kept["sip_auth_user"], kept["sip_password_encrypted"]
        else:
            account = sip_account_name(user["extension"], mac, a.slot)
            encrypted = core.vault.encrypt(
                provisioning.new_secret(), sip_password_purpose(mac, a.slot)
            )
        await store.insert_assignment(
            conn,
            mac=mac,
            slot=a.slot,
            user_id=user["id"],
            ipui=a.ipui,
            sip_user=account,
            sip_auth_user=account,
            sip_password_encrypted=encrypted,
        )
    return {str(a.slot): a.username for a in checked}


async def set_assignments(
    core: Core, actor: Actor, mac_text: str, assignments: Sequence[Assignment]
) -> list[Any]:
    """Replace the device's assignments, queue a push and re-render."""
    require_admin(actor)
    mac = parse_mac(mac_text)
    async with core.pool.acquire() as conn, conn.transaction():
        device = await get_device_row(conn, mac, for_update=True)
        slots = await _write_assignments(core, conn, device, assignments)
        jobs = await store.enqueue_push_jobs(conn, [mac], "device.assign")
        await audit.record(
            conn, actor, "device.assign", None, {"mac": mac, "slots": slots, "push_jobs": jobs}
        )
        rows = await store.list_assignments(conn, mac)
    core.push_wake.wake()
    await provisioning.render_device(core, mac)
    return rows


@dataclass(frozen=True)
class ApiAccessInput:
    host: str
    username: str
    password: str
    port: int | None = None
    fingerprint: str | None = None


async def set_api_access(core: Core, actor: Actor, mac_text: str, access: ApiAccessInput) -> None:
    """Store how to reach the device's management API (e.g. a Mitel OMM's OM AXI).

    Only for vendors pushed through such an API; the password is stored encrypted and never
    shown again.
    """
    require_admin(actor)
    mac = parse_mac(mac_text)
    if not sites.is_host(access.host):
        raise invalid("host_invalid", "host must be a host name or IP address.")
    port = access.port if access.port is not None else 12622
    if not 1 <= port <= 65535:
        raise invalid("port_invalid", "port is 1 to 65535.")
    if not access.username or len(access.username) > 64 or not access.password:
        raise invalid("credentials_invalid", "username and password are required.")
    fingerprint = None
    if access.fingerprint is not None:
        if not _FINGERPRINT.fullmatch(access.fingerprint):
            raise invalid("fingerprint_invalid", "fingerprint is a SHA-256 in hex (64 digits).")
        fingerprint = access.fingerprint.replace(":", "").strip().lower() or None
    async with core.pool.acquire() as conn, conn.transaction():
        device = await get_device_row(conn, mac, for_update=True)
        adapter, model = resolve_model(device["vendor"], device["model"], generic=True)
        if adapter.sip_event(model) is not None:
            raise unprocessable(
                "api_access_unused", f"{adapter.vendor} devices are notified over SIP, not an API."
            )
        await store.set_device_api_access(
            conn,
            mac,
            host=access.host,
            port=port,
            username=access.username,
            password_encrypted=core.vault.encrypt(
                access.password, device_api_password_purpose(mac)
            ),
            fingerprint=fingerprint,
        )
        await audit.record(
            conn,
            actor,
            "device.api_access",
            None,
            {"mac": mac, "host": access.host, "port": port, "pinned": fingerprint is not None},
        )


async def reprovision_device(
    core: Core, actor: Actor, mac_text: str, *, rotate_sip: bool = False
) -> list[int]:
    """Re-render the device and queue a push; ``rotate_sip`` first gives every line a new password.

    With ``rotate_sip`` the new passwords, the registrar's digests of them (``pbx`` views), the
    rendered config, the audit row and the push job commit in one transaction: the registrar
    never knows a password the served config does not carry, or the other way round.
    """
    require_admin(actor)
    mac = parse_mac(mac_text)
    async with core.pool.acquire() as conn, conn.transaction():
        await get_device_row(conn, mac, for_update=rotate_sip)
        details: dict[str, Any] = {"mac": mac}
        if rotate_sip:
            slots = [a["slot"] for a in await store.list_assignments(conn, mac)]
            for slot in slots:
                await store.set_assignment_password(
                    conn,
                    mac,
                    slot,
                    core.vault.encrypt(provisioning.new_secret(), sip_password_purpose(mac, slot)),
                )
            details["rotate_sip"] = slots
        jobs = await store.enqueue_push_jobs(conn, [mac], "reprovision")
        await audit.record(conn, actor, "device.reprovision", None, {**details, "push_jobs": jobs})
        if rotate_sip:
            outcome = await provisioning.render_device_in(core, conn, mac)
            if await store.list_device_macs_without_digests(conn, [mac]):
                # Not rendered: new passwords no config carries would lock the phones out.
                raise unprocessable(
                    "render_failed", f"{mac} cannot be rendered, nothing rotated: {outcome.error}"
                )
    core.push_wake.wake()
    if not rotate_sip:
        await provisioning.render_device(core, mac)
    return jobs


async def reprovision_user(core: Core, actor: Actor, username: str) -> list[int]:
    require_admin(actor)
    async with core.pool.acquire() as conn, conn.transaction():
        user = await get_user(conn, username)
        macs = await store.list_device_macs_for_user(conn, user["id"])
        jobs = await store.enqueue_push_jobs(conn, macs, "reprovision")
        await audit.record(conn, actor, "device.reprovision", username, {"push_jobs": jobs})
    if jobs:
        core.push_wake.wake()
    return jobs


async def reprovision_all(core: Core, actor: Actor) -> list[int]:
    require_admin(actor)
    async with core.pool.acquire() as conn, conn.transaction():
        macs = await store.list_all_device_macs(conn)
        jobs = await store.enqueue_push_jobs(conn, macs, "reprovision")
        await audit.record(
            conn, actor, "device.reprovision", None, {"all": True, "push_jobs": len(jobs)}
        )
    if jobs:
        core.push_wake.wake()
    await provisioning.render_devices(core, macs)
    return jobs


async def job_states(core: Core, job_ids: Sequence[int]) -> dict[str, int]:
    """How many of ``job_ids`` are in each state now."""
    async with core.pool.acquire() as conn:
        return await store.count_push_jobs_by_state(conn, job_ids)


async def list_push_jobs(
    core: Core, actor: Actor, *, state: str | None, device: str | None, limit: int
) -> list[Any]:
    require_admin(actor)
    if state is not None and state not in store.PUSH_JOB_STATES:
        raise invalid("query_invalid", f"state is one of {', '.join(store.PUSH_JOB_STATES)}.")
    mac = parse_mac(device) if device else None
    async with core.pool.acquire() as conn:
        return await store.list_push_jobs(conn, state=state, mac=mac, limit=limit)


# --- CSV import --------------------------------------------------------------------------------

CSV_COLUMNS = ("mac", "vendor", "model", "label", "site", "user", "slot")


@dataclass
class _CsvDevice:
    new: NewDevice
    line: int
    assignments: list[tuple[int, Assignment]]


class _ImportRefused(Exception):
    """Raised inside the import transaction to roll every row back."""


def _parse_csv(text: str) -> tuple[dict[str, _CsvDevice], list[tuple[int, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or ())
    if not {"mac", "vendor", "model"} <= columns:
        raise invalid("csv_invalid", "The header row must name at least mac, vendor and model.")
    if columns - set(CSV_COLUMNS):
        raise invalid("csv_invalid", f"Columns are {', '.join(CSV_COLUMNS)}.")
    devices: dict[str, _CsvDevice] = {}
    errors: list[tuple[int, str]] = []
    for row in reader:
        line = reader.line_num
        try:
            new = NewDevice(
                mac=parse_mac(row["mac"] or ""),
                vendor=(row["vendor"] or "").strip(),
                model=(row["model"] or "").strip(),
                label=_check_label(row.get("label") or ""),
                site=(row.get("site") or "default").strip(),
            )
            resolve_model(new.vendor, new.model)
            entry = devices.setdefault(new.mac, _CsvDevice(new, line, []))
            if (entry.new.vendor.lower(), entry.new.model.lower()) != (
                new.vendor.lower(),
                new.model.lower(),
            ):
                raise unprocessable(
                    "csv_conflict", f"Line {entry.line} gives this MAC another model."
                )
            if row.get("user"):
                slot = (row.get("slot") or "1").strip()
                if not (slot.isascii() and slot.isdigit()):
                    raise unprocessable("slot_invalid", "slot must be a whole number.")
                entry.assignments.append((line, Assignment(int(slot), row["user"].strip())))
        except ProvisionerError as exc:
            errors.append((line, exc.message))
    return devices, errors


async def import_csv(
    core: Core,
    actor: Actor,
    text: str,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import devices from CSV: every row, or (when any row is refused) none.

    Columns (header row required): ``mac,vendor,model`` and optionally ``label``, ``site``,
    ``user`` and ``slot`` (put the user on that line or handset; default 1). Several rows may
    name the same MAC to fill several slots. ``progress(done, total)`` follows the devices'
    first renders, which take most of the time.
    """
    require_admin(actor)
    devices, errors = _parse_csv(text)
    if errors:
        return ImportReport(0, errors)
    adopted: list[int] = []
    try:
        async with core.pool.acquire() as conn, conn.transaction():
            for entry in devices.values():
                try:
                    async with conn.transaction():
                        row, jobs = await _insert_device(core, conn, entry.new)
                        await _write_assignments(core, conn, row, [a for _, a in entry.assignments])
                    adopted += jobs
                except ProvisionerError as exc:
                    lines = [entry.line] + [line for line, _ in entry.assignments]
                    errors.append((min(lines), f"{entry.new.mac}: {exc.message}"))
            if errors:
                raise _ImportRefused
            await audit.record(conn, actor, "device.import", None, {"devices": len(devices)})
    except _ImportRefused:
        return ImportReport(0, errors)
    if adopted:
        core.push_wake.wake()
    tick = None if progress is None else functools.partial(_tick, progress, len(devices))
    await provisioning.render_devices(core, devices, tick)
    return ImportReport(len(devices), [])


def _tick(progress: Callable[[int, int], None], total: int, done: int) -> None:
    progress(done, total)

"""The render pipeline: a device's data → its vendor's files → a stored revision.

Rendering happens on change, never per request. Each device keeps its last good revision (bytes
per file, sealed under the vault key by :mod:`provisioner.sealing`, and a keyed content hash); a
render whose output is byte-identical keeps the revision, and a failed render keeps the previous
revision in service and records the error on the device.

A change that queues a push is rendered by the push worker when the job is due, a claimed batch
of devices in one transaction (:func:`render_devices_in`); a single device is that batch with
one MAC (:func:`render_device`, for changes that render before they answer or inside their own
transaction).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from provisioner import access_codes, pbx, sealing, store
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.devices import ADAPTERS, served
from provisioner.devices.base import (
    Adapter,
    DeviceInfo,
    Line,
    RenderContext,
    RenderError,
    Site,
    Templates,
    clean_text,
)
from provisioner.vault import (
    VaultError,
    device_credential_purpose,
    pin_purpose,
    sip_password_purpose,
)

log = logging.getLogger(__name__)

#: LISTEN/NOTIFY channel announcing that a device's revision or credential changed.
DEVICE_CHANNEL = "provisioner_device"
BOOTSTRAP_SECRET_NAME = "phones-bootstrap"  # noqa: S105 (a row name)


@dataclass(frozen=True)
class RenderOutcome:
    mac: str
    revision: int
    changed: bool
    error: str | None = None


def new_secret() -> str:
    """A random credential for a machine (phone, SIP line): 144 bits, URL- and config-safe."""
    return secrets.token_urlsafe(18)


def provisioning_url(core: Core) -> str:
    return f"{core.settings.public_url}/provisioning/"


def adapter_for(vendor: str) -> Adapter:
    adapter = ADAPTERS.get(vendor)
    if adapter is None:  # only if a vendor module was removed while devices still use it
        raise RenderError(f"no adapter for vendor {vendor!r}")
    return adapter


def carries_pin(vendor: str, model_name: str) -> bool:
    """Whether devices of this vendor and model carry their users' PINs in their configs."""
    found = served(vendor, model_name)
    return found is not None and found[0].pin_key(found[1]) is not None


def site_of(row: Any) -> Site:
    """The settings every config of a site carries, from its ``sites`` row."""
    return Site(
        registrar_host=row["registrar_host"],
        registrar_port=row["registrar_port"],
        transport=row["transport"],
        timezone=row["timezone"],
        language=row["language"],
        ntp_server=row["ntp_server"],
        sip_realm=pbx.effective_realm(row),
    )


Loaded = tuple[Adapter, RenderContext]
"""What rendering a device needs: its vendor's adapter and everything its files carry."""

#: Why a device cannot be rendered; recorded on the device, never raised by a render.
RENDER_ERRORS = (RenderError, jinja2.TemplateError, VaultError)

#: Devices rendered in one transaction by :func:`render_devices`.
BATCH = 100


async def load_contexts(
    core: Core, conn: Connection, macs: Sequence[str]
) -> dict[str, Loaded | Exception]:
    """For each of ``macs``, everything its files carry (secrets decrypted, in memory only),
    or why that cannot be built (one of :data:`RENDER_ERRORS`).

    Three queries whatever the number of devices (devices, their sites, their lines), plus a
    write for each DECT system's first access code.
    """
    devices = {row["mac"]: row for row in await store.list_devices_by_mac(conn, macs)}
    sites = {
        row["name"]: row
        for row in await store.list_sites_by_name(conn, {d["site"] for d in devices.values()})
    }
    lines: dict[str, list[Any]] = {}
    for row in await store.list_lines_for_render(conn, list(devices)):
        lines.setdefault(row["mac"], []).append(row)
    loaded: dict[str, Loaded | Exception] = {}
    for mac in macs:
        device = devices.get(mac)
        try:
            if device is None:
                raise RenderError("the device no longer exists")
            site_row = sites[device["site"]]  # foreign key
            loaded[mac] = await _context(core, conn, device, site_row, lines.get(mac, []))
        except RENDER_ERRORS as exc:
            loaded[mac] = exc
    return loaded


async def _context(
    core: Core, conn: Connection, device: Any, site_row: Any, line_rows: Sequence[Any]
) -> Loaded:
    mac = device["mac"]
    adapter = adapter_for(device["vendor"])
    model = adapter.served_model(device["model"])
    if model is None:
        raise RenderError(f"{device['vendor']} has no model {device['model']!r}")
    if not site_row["registrar_host"]:
        raise RenderError(f"site {device['site']!r} has no SIP registrar configured")
    site = site_of(site_row)
    # The PIN reaches only models with a documented user-PIN key (DESIGN, "PIN on devices").
    carries_pin = adapter.pin_key(model) is not None
    lines = []
    for row in line_rows:
        pin = None
        if carries_pin and row["pin_encrypted"] is not None:
            pin = core.vault.decrypt(row["pin_encrypted"], pin_purpose(row["user_id"]))
        lines.append(
            Line(
                slot=row["slot"],
                username=row["username"],
                display_name=clean_text(row["display_name"]),
                extension=row["extension"] or "",
                sip_user=row["sip_user"],
                sip_auth_user=row["sip_auth_user"],
                sip_password=core.vault.decrypt(
                    row["sip_password_encrypted"], sip_password_purpose(mac, row["slot"])
                ),
                pin=pin,
                language=row["language"],
                ipui=row["ipui"],
            )
        )
    credential = core.vault.decrypt(device["credential_encrypted"], device_credential_purpose(mac))
    ctx = RenderContext(
        device=DeviceInfo(mac=mac, model=model, label=clean_text(device["label"])),
        lines=tuple(lines),
        site=site,
        provisioning_url=provisioning_url(core),
        provisioning_user=mac,
        provisioning_password=credential,
        access_code=await access_codes.ensure(core.vault, conn, device),
    )
    return adapter, ctx


async def load_context(core: Core, conn: Connection, mac: str) -> Loaded:
    """:func:`load_contexts` of one device; raises what keeps it from being built."""
    found = (await load_contexts(core, conn, [mac]))[mac]
    if isinstance(found, Exception):
        raise found
    return found


def render_files(
    core: Core, adapter: Adapter, ctx: RenderContext
) -> tuple[dict[str, bytes], list[str]]:
    """Render and return the files plus any template problems (broken site overrides)."""
    templates = Templates(adapter.vendor, core.settings.template_dir)
    files = adapter.render(ctx, templates)
    return files, templates.problems


async def preview(core: Core, mac: str) -> dict[str, bytes]:
    """What the device would get if it were rendered now (nothing is stored)."""
    async with core.pool.acquire() as conn:
        adapter, ctx = await load_context(core, conn, mac)
    files, _ = await asyncio.to_thread(render_files, core, adapter, ctx)
    return files


async def render_device(core: Core, mac: str) -> RenderOutcome:
    """Render ``mac`` and store a new revision when its files changed.

    Idempotent: rendering twice without a change in between keeps the revision. Renders of one
    device are serialised (the device's row is locked from reading its data to storing the
    files), so an older render can never overwrite a newer one. Never raises for a device that
    cannot be rendered: the error is recorded on the device and returned.
    """
    async with core.pool.acquire() as conn, conn.transaction():
        return await render_device_in(core, conn, mac)


async def render_device_in(core: Core, conn: Connection, mac: str) -> RenderOutcome:
    """:func:`render_devices_in` of one device.

    For a change that must commit together with the config it renders, e.g. new line
    passwords: the lines' registrar digests (:mod:`provisioner.pbx`) are written too, so the
    registrar and the config change in one commit.
    """
    return (await render_devices_in(core, conn, [mac]))[mac]


@dataclass(frozen=True)
class _Rendered:
    """A device's render, done off the event loop: a new revision, or its problem (if any)."""

    new: store.NewRevision | None
    problem: str | None
    digests: list[tuple[str, int, str, str, str]]


async def render_devices_in(
    core: Core, conn: Connection, macs: Iterable[str]
) -> dict[str, RenderOutcome]:
    """Render ``macs`` inside the caller's transaction (which must be open); mac → outcome.

    What :func:`render_device` guarantees, for each device, at a fixed number of statements
    for the whole batch: the devices' rows are locked first, in MAC order, as every use case
    that changes a device does before it touches the device's lines (renders of one device are
    serialised by it, a render never reads lines a change has not committed yet, and the locks
    are always taken in one order); their data is read set-based; all are rendered in one
    thread hop; changed files, the lines' registrar digests and the render problems are
    stored set-based; and each device with a new revision is announced on
    :data:`DEVICE_CHANNEL` (delivered at COMMIT). A device that cannot be rendered keeps its
    previous revision and gets its error recorded; the others are not held up by it.
    """
    wanted = list(dict.fromkeys(macs))
    locked = {row["mac"]: row for row in await store.lock_device_revisions(conn, wanted)}
    outcomes = {
        mac: RenderOutcome(mac, 0, changed=False, error="the device no longer exists")
        for mac in wanted
        if mac not in locked
    }
    loaded = await load_contexts(core, conn, sorted(locked))
    hashes = {mac: row["revision_hash"] for mac, row in locked.items()}
    rendered = await asyncio.to_thread(_render_all, core, loaded, hashes)
    await store.set_line_digests(conn, [d for r in rendered.values() for d in r.digests])
    await store.set_render_errors(
        conn, {mac: r.problem for mac, r in rendered.items() if r.new is None}
    )
    revisions = await store.replace_device_files(
        conn, [r.new for r in rendered.values() if r.new is not None]
    )
    await store.notify_devices_changed(conn, DEVICE_CHANNEL, sorted(revisions))
    for mac, r in rendered.items():
        if mac in revisions:
            log.debug("device %s rendered: revision %d", mac, revisions[mac])
            outcomes[mac] = RenderOutcome(mac, revisions[mac], changed=True, error=r.problem)
        else:
            revision = locked[mac]["revision"]
            outcomes[mac] = RenderOutcome(mac, revision, changed=False, error=r.problem)
    return outcomes


def _render_all(
    core: Core, loaded: dict[str, Loaded | Exception], hashes: dict[str, str | None]
) -> dict[str, _Rendered]:
    """Render, hash and (where the files changed) seal each device; runs in a thread."""
    rendered = {}
    for mac, found in loaded.items():
        try:
            if isinstance(found, Exception):
                raise found
            adapter, ctx = found
            files, problems = render_files(core, adapter, ctx)
        except RENDER_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "device %s not rendered, previous revision stays in service: %s", mac, error
            )
            rendered[mac] = _Rendered(None, error, [])
            continue
        except Exception as exc:
            # A bug in an adapter: the rest of the batch is still rendered and pushed.
            log.exception("device %s not rendered: unexpected failure", mac)
            rendered[mac] = _Rendered(None, f"internal error ({type(exc).__name__})", [])
            continue
        digests = [(mac, *digest) for digest in pbx.line_digests(ctx.lines, ctx.site.sip_realm)]
        new_hash = sealing.content_hash(core.vault, files)
        problem = "; ".join(problems) or None
        new = None
        if hashes[mac] != new_hash:
            sealed = sealing.seal(core.vault, mac, files)
            new = store.NewRevision(mac, sealed, new_hash, problem)
        rendered[mac] = _Rendered(new, problem, digests)
    return rendered


async def render_devices(
    core: Core, macs: Iterable[str], progress: Callable[[int], None] | None = None
) -> list[RenderOutcome]:
    """Render each device once, :data:`BATCH` devices to a transaction; ``progress`` gets the
    count done for each device, once its batch has committed."""
    wanted = list(dict.fromkeys(macs))
    outcomes: list[RenderOutcome] = []
    for start in range(0, len(wanted), BATCH):
        chunk = wanted[start : start + BATCH]
        async with core.pool.acquire() as conn, conn.transaction():
            done = await render_devices_in(core, conn, chunk)
        for mac in chunk:
            outcomes.append(done[mac])
            if progress is not None:
                progress(len(outcomes))
    return outcomes


async def bootstrap_credential(core: Core) -> tuple[str, str]:
    """The site-wide credential a phone may use for its first fetch.

    From ``PROVISIONER_PROVISIONING_USER``/``_PASSWORD`` when set; otherwise generated once,
    stored encrypted, and shown by ``provisioner info``.
    """
    settings = core.settings
    if settings.provisioning_user and settings.provisioning_password:
        return settings.provisioning_user, settings.provisioning_password
    async with core.pool.acquire() as conn:
        row = await store.get_generated_secret(conn, BOOTSTRAP_SECRET_NAME)
        if row is None:
            await store.insert_generated_secret(
                conn,
                BOOTSTRAP_SECRET_NAME,
                username="provision",
                secret_encrypted=core.vault.encrypt(new_secret(), BOOTSTRAP_SECRET_NAME),
            )
            row = await store.get_generated_secret(conn, BOOTSTRAP_SECRET_NAME)
    assert row is not None
    return row["username"], core.vault.decrypt(row["secret_encrypted"], BOOTSTRAP_SECRET_NAME)


async def device_secrets(core: Core, mac: str) -> list[str]:
    """Every secret the device's files may carry: for masking previews."""
    async with core.pool.acquire() as conn:
        _, ctx = await load_context(core, conn, mac)
    found = [ctx.provisioning_password]
    if ctx.access_code:
        found.append(ctx.access_code)
    for line in ctx.lines:
        found.append(line.sip_password)
        if line.pin:
            found.append(line.pin)
    return found


def masked(files: dict[str, bytes], secrets_to_mask: Sequence[str]) -> dict[str, str]:
    """Files as text with every given secret replaced, for previews shown to people."""
    shown = {}
    for name, body in files.items():
        text = body.decode("utf-8", errors="replace")
        for secret in sorted(secrets_to_mask, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "********")
        shown[name] = text
    return shown

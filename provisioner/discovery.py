"""Plug-and-play discovery: phones of a known vendor that nobody has added yet (issue 12).

A phone that fetches with the bootstrap credential for a MAC no device has is *discovered*:
recorded (MAC, vendor, model, firmware, source address, first and last seen) for an admin to
adopt with the normal ``POST /api/v1/devices`` (:func:`adopt`, in the same transaction), and,
where its vendor's format allows, served a *minimal config*: the adapter's own render with no
lines, the bootstrap credential as the provisioning credential (the phone has no credential of
its own yet, and already holds this one), the site's time, NTP server and language. It carries
no SIP account and no secret of anyone: the context it is rendered from has no line and no
access code, so no user's data can reach it.

What is served:

- a desk phone whose model its adapter serves (from the table or generically): the minimal
  config;
- a DECT system: nothing, it is recorded only. Its configs are built around the system's access
  code, a secret that must be stable and known to the admin: a throwaway random code would be
  known to nobody (no handset could subscribe until adoption), differ between processes (each
  with its own ETag, so the base re-applies its config on every other fetch), and Gigaset's and
  Snom's formats cannot even be rendered without one. A base gains nothing before adoption: it
  already fetches from here, and has no handset to configure;
- a model its adapter recognises but does not serve (Gigaset N720, Yealink T18P), or a request
  that names no model: nothing, it is recorded only.

Limits. The database is the shared truth: rows are written in one transaction under an advisory
lock that serialises every discovery write of the installation (rare by construction), which
refuses a second new row from one source address within :data:`WINDOW` seconds and keeps at
most :data:`MAX_PER_SITE` rows per site, dropping the least recently seen. Each process keeps
the discovered phones it serves in memory, bounded in bytes (:class:`Discovery`), and asks the
database once per phone it does not know, at most :data:`MAX_IN_FLIGHT` at a time.

A refusal (the source's new row of this minute is taken) is answered ``429 discovery_limited``
and counts as a failure of the source (:class:`provisioner.phoneauth.FailureLimiter`), as an
unknown MAC does without discovery: whoever walks MACs with a leaked bootstrap credential, to
find devices that still take it, is blocked after as many guesses as before. A flood of MACs
from one source therefore costs a handful of transactions before the source is blocked. What is
admitted or served is not counted: a branch office behind one NAT address gets its phones
recorded one a minute, each as it fetches again.

``last_seen``: a fetch of a served phone queues a refresh at most once per :data:`WINDOW` per MAC
and process; the background task (:meth:`Discovery.run`) writes the refreshes in one transaction
a second, never on the request's path, and renders the minimal config again (the site's settings
may have changed). A refresh that finds the row gone (adopted, or dropped by the cap) forgets
the phone; its next fetch is a new admission.

The site: the bootstrap credential is the installation's, so discovered phones belong to the
``default`` site (:data:`SITE`) and are rendered with its settings; adoption may name another.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import jinja2

from provisioner import store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.db import Connection
from provisioner.devices import ADAPTERS, served
from provisioner.devices.base import (
    Adapter,
    DeviceInfo,
    DeviceKind,
    FileRequest,
    ModelInfo,
    RenderContext,
    RenderError,
    Site,
    Templates,
)
from provisioner.outage import Outage, database_unavailable
from provisioner.phonecache import ServedFile, served_file
from provisioner.provisioning import provisioning_url, site_of
from provisioner.sealing import etag_of
from provisioner.users import require_admin

log = logging.getLogger(__name__)

WINDOW = 60.0
"""Seconds within which a source address may add one new row; also the refresh interval."""
MAX_PER_SITE = 1000
"""Discovered rows a site keeps; past it the least recently seen are dropped."""
MAX_IN_FLIGHT = 32
"""Admissions a process waits on at once; more are answered 429 at once."""
SITE = "default"
"""Where discovered phones belong: the bootstrap credential is the installation's."""
#: The port a phone without a registration is notified at: SIP's default (RFC 3261 §19.1.2).
SIP_PORT = 5060

_MAC = re.compile(r"[0-9a-f]{12}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _./+-]{0,63}")
#: A firmware version in a User-Agent: three or more dot-separated parts starting with a number
#: (``96.86.0.70``, ``8.7.5.35``, ``83.V2.11.0+build.a546b91``, ``70.089.00.000.000``). Two parts
#: (``Mozilla/4.0``) are never one; the first match is taken, vendors put it after the model.
_FIRMWARE = re.compile(r"(?<![\w.])\d+(?:\.[0-9A-Za-z]+){2,7}(?:\+[0-9A-Za-z.]+)?")
_UNREADABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_TEXT = 64


@dataclass(frozen=True, slots=True)
class Sighting:
    """What one request tells about a phone nobody has added."""

    mac: str
    vendor: str
    model: str | None
    firmware: str | None
    source: str


def sighting_of(
    vendor: str, request: FileRequest, mac: str, source: str, user_agent: str
) -> Sighting | None:
    """The sighting a request makes, or None when it cannot be recorded as one (a MAC or a
    source address that is not one). Texts that are not what a model or a version look like
    are dropped, never stored: they come from whoever sent the request."""
    if not _MAC.fullmatch(mac) or not 0 < len(source) <= _MAX_TEXT:
        return None
    model = request.model if request.model and _MODEL.fullmatch(request.model) else None
    # A User-Agent its adapter names no model in, or with control characters, is not
    # understood: nothing else in it is believed either.
    unread = model is None or _UNREADABLE.search(user_agent)
    found = None if unread else _FIRMWARE.search(user_agent)
    firmware = found[0] if found and len(found[0]) <= _MAX_TEXT else None
    return Sighting(mac, vendor, model, firmware, source)


class Admission(Enum):
    """What the database said to a sighting."""

    RECORDED = "recorded"
    """The phone has a discovered row (new, or refreshed)."""
    LIMITED = "limited"
    """The source added a row within :data:`WINDOW`: not now."""
    DEVICE = "device"
    """A device of this MAC exists (adopted meanwhile): the device cache will serve it."""


async def record(conn: Connection, sightings: Iterable[Sighting]) -> dict[str, Admission]:
    """Record ``sightings`` inside the caller's transaction; what became of each, by MAC."""
    await store.lock_discovery(conn)
    outcomes: dict[str, Admission] = {}
    for seen in sightings:
        if await store.device_exists(conn, seen.mac):
            outcomes[seen.mac] = Admission.DEVICE
            continue
        fields: dict[str, Any] = {
            "vendor": seen.vendor,
            "model": seen.model,
            "firmware": seen.firmware,
            "source": seen.source,
        }
        if await store.touch_discovered_device(conn, seen.mac, **fields):
            outcomes[seen.mac] = Admission.RECORDED
            continue
        if await store.discovered_recently_from(conn, seen.source, WINDOW):
            outcomes[seen.mac] = Admission.LIMITED
            continue
        await store.insert_discovered_device(conn, mac=seen.mac, site=SITE, **fields)
        dropped = await store.trim_discovered_devices(conn, SITE, MAX_PER_SITE)
        log.info(
            "discovered %s %s %s at %s%s",
            seen.vendor,
            seen.model or "(model not named)",
            seen.mac,
            seen.source,
            f"; {len(dropped)} least recently seen dropped" if dropped else "",
        )
        outcomes[seen.mac] = Admission.RECORDED
    return outcomes


async def list_discovered(core: Core, actor: Actor) -> list[Any]:
    """Every discovered phone, most recently seen first."""
    require_admin(actor)
    async with core.pool.acquire() as conn:
        return await store.list_discovered_devices(conn)


def contact_of(source: str) -> str | None:
    """Where to notify a phone at ``source`` that is not registered yet: SIP's default port."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return None
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"sip:{host}:{SIP_PORT}"


async def adopt(conn: Connection, mac: str) -> list[int]:
    """Inside the transaction that adds device ``mac``: drop its discovered row, if any, and
    queue the push that brings the phone its full config; the push jobs.

    The phone has no SIP account, so no registration tells where it is: it is notified at the
    address it fetched from on SIP's default port until a registration reports its contact. A
    phone behind NAT may not be reached that way; it gets its config on its next fetch.
    """
    await store.lock_discovery(conn)
    row = await store.delete_discovered_device(conn, mac)
    if row is None:
        return []
    contact = contact_of(row["source"])
    if contact is not None:
        await store.seed_device_contact(conn, mac, contact)
    return await store.enqueue_push_jobs(conn, [mac], "device.adopt")


# --- the minimal config ------------------------------------------------------------------------


def kind_of(vendor: str, model_name: str | None) -> DeviceKind | None:
    """Whether a discovered phone is a desk phone or a DECT system, when its model tells."""
    found = served(vendor, model_name)
    return None if found is None else found[1].kind


def servable_model(adapter: Adapter, model_name: str | None) -> ModelInfo | None:
    """The model a discovered phone is served as; None when it gets nothing (module doc)."""
    model = adapter.served_model(model_name) if model_name else None
    if model is None or model.kind != "desk" or adapter.access_code_key(model) is not None:
        return None
    return model


@dataclass(frozen=True)
class Bootstrap:
    """What every minimal config of this installation carries besides the site's settings."""

    url: str
    username: str
    password: str


def minimal_files(
    adapter: Adapter,
    model: ModelInfo,
    mac: str,
    site: Site,
    bootstrap: Bootstrap,
    templates: Templates,
) -> dict[str, bytes] | None:
    """The vendor's render of ``mac`` with no line and the bootstrap credential; None when the
    vendor's format refuses it (e.g. Poly and a provisioning URL it cannot fetch from)."""
    ctx = RenderContext(
        device=DeviceInfo(mac=mac, model=model),
        lines=(),
        site=site,
        provisioning_url=bootstrap.url,
        provisioning_user=bootstrap.username,
        provisioning_password=bootstrap.password,
    )
    try:
        return adapter.render(ctx, templates)
    except (RenderError, jinja2.TemplateError) as exc:
        log.warning("no minimal config for %s %s: %s", adapter.vendor, model.name, exc)
        return None


# --- per-process state -------------------------------------------------------------------------


@dataclass(slots=True)
class Known:
    """A discovered phone this process serves."""

    sighting: Sighting
    files: Mapping[str, ServedFile]
    """Its minimal config by file name; empty for a phone that is recorded only."""
    cost: int
    refreshed: float
    """When (monotonic) its row and files were last written or read."""


class Discovery:
    """One process's discovered phones: answers from memory, asks the database once per phone
    it does not know, refreshes in the background. See the module doc for the limits."""

    ENTRY_BYTES = 1024
    """A phone beside its files' bytes: dict slot, sighting, entry; rounded up."""
    FILE_BYTES = 512
    """A served file beside its body: name, ETag, content type."""

    def __init__(
        self,
        core: Core,
        username: str,
        password: str,
        *,
        max_bytes: int = 16 * 1024 * 1024,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        """``username``/``password``: the bootstrap credential the minimal configs carry.
        ``max_bytes``: 16 MiB holds a few thousand phones' minimal configs (a site keeps 1,000
        discovered rows)."""
        self._core = core
        self._bootstrap = Bootstrap(provisioning_url(core), username, password)
        self.max_bytes = max_bytes
        self.bytes = 0
        self.max_in_flight = max_in_flight
        self.refresh_after = WINDOW
        """Seconds after which a fetch of a served phone queues a refresh of its row."""
        # In order of refreshed. An ordered dict: the oldest is taken after removals, which a
        # plain dict would find only by scanning the holes they left (see FailureLimiter).
        self._known: OrderedDict[str, Known] = OrderedDict()
        self._admitting: dict[str, asyncio.Task[tuple[Admission, Known | None]]] = {}
        self._due: dict[str, Sighting] = {}
        self.outage = Outage(log, "discovery")

    def __len__(self) -> int:
        return len(self._known)

    def known(self, seen: Sighting, now: float | None = None) -> Known | None:
        """The phone, when this process serves it; queues a refresh when one is due."""
        entry = self._known.get(seen.mac)
        now = time.monotonic() if now is None else now
        if entry is not None and now - entry.refreshed >= self.refresh_after:
            self._due[seen.mac] = seen
        return entry

    def busy(self, seen: Sighting) -> bool:
        """Whether ``seen`` must wait: as many admissions as allowed are under way (its own
        may be one of them: it is then joined, not counted)."""
        return seen.mac not in self._admitting and len(self._admitting) >= self.max_in_flight

    async def admit(self, seen: Sighting) -> tuple[Admission, Known | None]:
        """Ask the database about ``seen``; the answer, and the phone when it is recorded.

        Concurrent requests for one MAC share one admission; a client that goes away does not
        cancel it. Raises what the pool raises when the database cannot be reached.
        """
        task = self._admitting.get(seen.mac)
        if task is None:
            task = asyncio.create_task(self._admit(seen))
            self._admitting[seen.mac] = task
            task.add_done_callback(lambda _: self._admitting.pop(seen.mac, None))
        return await asyncio.shield(task)

    async def _admit(self, seen: Sighting) -> tuple[Admission, Known | None]:
        async with self._core.pool.acquire() as conn, conn.transaction():
            outcome = (await record(conn, [seen]))[seen.mac]
            site = await store.get_site(conn, SITE)
        if outcome is not Admission.RECORDED:
            return outcome, None
        assert site is not None  # the default site is never deleted
        return outcome, await self._remember(seen, site_of(site))

    async def _remember(self, seen: Sighting, site: Site) -> Known:
        adapter = ADAPTERS[seen.vendor]
        model = servable_model(adapter, seen.model)
        files: dict[str, ServedFile] = {}
        if model is not None:
            templates = Templates(adapter.vendor, self._core.settings.template_dir)
            rendered = await asyncio.to_thread(
                minimal_files, adapter, model, seen.mac, site, self._bootstrap, templates
            )
            vault = self._core.vault
            for name, body in (rendered or {}).items():
                files[name] = served_file(name, body, etag_of(vault, body))
        cost = self.ENTRY_BYTES + sum(self.FILE_BYTES + len(f.body) for f in files.values())
        self._forget(seen.mac)
        entry = Known(seen, files, cost, time.monotonic())
        self._known[seen.mac] = entry
        self.bytes += cost
        while self.bytes > self.max_bytes and self._known:
            self._forget(next(iter(self._known)))
        return entry

    def _forget(self, mac: str) -> None:
        entry = self._known.pop(mac, None)
        if entry is not None:
            self.bytes -= entry.cost

    async def refresh(self) -> bool:
        """Write the due refreshes and render those phones again; False when the database is
        away (they wait for next time)."""
        due, self._due = self._due, {}
        if not due:
            return True
        try:
            async with self._core.pool.acquire() as conn, conn.transaction():
                outcomes = await record(conn, due.values())
                site = await store.get_site(conn, SITE)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self._due = {**due, **self._due}
            self.outage.lost(exc)
            return False
        self.outage.reached()
        assert site is not None
        for mac, seen in due.items():
            if outcomes[mac] is Admission.RECORDED:
                await self._remember(seen, site_of(site))
            else:
                self._forget(mac)
        return True

    def expire(self, now: float | None = None) -> None:
        """Forget the phones that did not fetch for a whole window after a refresh fell due
        (adopted ones among them: the device cache serves those)."""
        now = time.monotonic() if now is None else now
        while self._known:
            mac, entry = next(iter(self._known.items()))
            if now - entry.refreshed < 2 * self.refresh_after or mac in self._due:
                return
            self._forget(mac)

    async def run(self, interval: float = 1.0) -> None:
        """Refresh and expire every ``interval`` seconds until cancelled; never ends by itself."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("discovery: refreshing discovered phones failed")
            self.expire()

    async def close(self) -> None:
        """Cancel the admissions under way."""
        tasks = list(self._admitting.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

"""What the phones' endpoint serves from memory: rendered files and device credentials.

Each process keeps every device's current revision and a keyed digest of its credential, so a
fetch costs no database round trip and no slow password hash. The cache is loaded at start and
refreshed for one device whenever any process announces a change on the
:data:`provisioner.provisioning.DEVICE_CHANNEL` channel (LISTEN/NOTIFY).

Fetches are recorded in memory and written in batches by :class:`FetchRecorder`, a device's
repeated identical fetches folded into one write a minute.

Both outlive the database: while it is away the cache serves what it holds and the recorder
keeps its records (compacted, so a boot storm during an outage cannot exhaust memory); both
retry with back-off, log the loss and the return once each, and catch up by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import sys
import time
import weakref
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from provisioner import store
from provisioner.bounded import BytesBounded
from provisioner.db import Connection
from provisioner.outage import DATABASE_BACKOFF, Outage, database_unavailable
from provisioner.provisioning import DEVICE_CHANNEL
from provisioner.sealing import unseal
from provisioner.vault import Vault, VaultError, device_credential_purpose

log = logging.getLogger(__name__)

REALM = "provisioner"


class Packing:
    """Deflate against a preset dictionary: a body of the same kind of file.

    The files of one kind (one vendor, one name but for the MAC) come from one template and
    differ in a few values, so against a sample of their kind they shrink to those values: a
    Yealink T54W's 4 KB config to ~150 bytes (plain zlib: ~730). Unpacking one costs a few
    microseconds per request, less than plain zlib's (the output is mostly copied from the
    dictionary). Bodies are served unpacked, so no phone needs to understand compression, and
    no response's size depends on how its secrets compress with anything else. The sample is a
    real device's body: its secrets stay in the process (never served) until the next full
    load picks new samples, even if that device goes.
    """

    __slots__ = ("_zdict",)

    LEVEL = 6
    """Level 1 leaves twice the bytes for no less time (~35 µs a 4 KB config); above 6 gains
    nothing on configs."""
    WINDOW = 32 * 1024
    """Deflate refers back at most this far: the rest of a longer sample would be dead weight."""

    def __init__(self, sample: bytes) -> None:
        self._zdict = sample[-self.WINDOW :]

    def pack(self, body: bytes) -> bytes:
        packer = zlib.compressobj(self.LEVEL, zlib.DEFLATED, -15, zdict=self._zdict)
        return packer.compress(body) + packer.flush()

    def unpack(self, packed: bytes) -> bytes:
        # A whole stream (``pack`` flushed it) comes out in one call; a flush() would only
        # add its own buffer's cost (~1.5 µs).
        return zlib.decompressobj(-15, zdict=self._zdict).decompress(packed)


@dataclass(frozen=True, slots=True)
class ServedFile:
    packed: bytes
    """The body, packed by ``packing`` (or the body itself when that is None)."""
    etag: str
    content_type: str
    packing: Packing | None = None

    @property
    def body(self) -> bytes:
        return self.packed if self.packing is None else self.packing.unpack(self.packed)

    def headers(self) -> tuple[tuple[str, str], ...]:
        """Response headers, built per request from shared strings: a prebuilt mapping per
        file cost ~200 bytes each, its copy per request about as much time as this."""
        return (
            ("ETag", self.etag),
            ("Cache-Control", "no-cache"),
            ("Content-Type", self.content_type),
        )


def served_file(name: str, body: bytes, etag: str, packing: Packing | None = None) -> ServedFile:
    content_type = content_type_of(name, body)
    packed = body if packing is None else packing.pack(body)
    return ServedFile(packed, etag, content_type, packing)


@dataclass(frozen=True, slots=True)
class Credential:
    """A username with a keyed digest of its password (Basic) and its HA1 (Digest)."""

    username: str
    password_digest: bytes
    ha1: str


@dataclass(slots=True, weakref_slot=True)  # weakly held by Verified
class CachedDevice:
    mac: str
    vendor: str
    revision: int
    files: dict[str, ServedFile]
    """By file name with the device's MAC as :data:`MAC_IN_NAME` (see :func:`file_key`)."""
    credential: Credential | None
    bootstrap_allowed: bool

    def file(self, name: str) -> ServedFile | None:
        return self.files.get(file_key(name, self.mac))


class Verified:
    """A request that authenticated with its device's own Basic credential and was served one
    of its files: what :class:`VerifiedFetches` keeps of it, and what must still hold for the
    same request to be answered alike without being checked again (:meth:`current`).

    The device is held weakly: a device the cache replaced or dropped is not kept alive by the
    requests that named it (the bound of :class:`VerifiedFetches` counts no device's bytes)."""

    __slots__ = ("_device", "bootstrap", "file", "personal")

    def __init__(
        self, device: CachedDevice, file: str, personal: bool, bootstrap: Credential | None
    ) -> None:
        self._device = weakref.ref(device)
        self.file = file
        """The file as the device's adapter named it (what the fetch record says)."""
        self.personal = personal
        self.bootstrap = bootstrap

    def current(self, cache: DeviceCache) -> CachedDevice | None:
        """The device, when the cache would decide the same now; else None.

        The same: the device object checked is still the cache's (any reload of the device,
        for a new revision, credential or bootstrap right, makes a new object; the cache keys
        devices by MAC, which is their credential's username), its bootstrap right is retired,
        the bootstrap credential unchanged."""
        device = self._device()
        if (
            device is not None
            and cache.devices.get(device.mac) is device
            and not device.bootstrap_allowed
            and cache.bootstrap is self.bootstrap
        ):
            return device
        return None


class VerifiedFetches(BytesBounded[tuple[str, str, str], Verified]):
    """Requests that authenticated with Basic and were served, by their exact path, User-Agent
    and ``Authorization``: a phone repeats the same bytes on every fetch, so its next one can
    skip identification and the credential check (:func:`provisioner.web.phones.answer`).

    Only requests that authenticated are kept, so a client without a credential adds nothing;
    Digest answers are never kept (each has its own nonce). Bounded in bytes, oldest first out
    (:class:`provisioner.bounded.BytesBounded`, as :class:`provisioner.devices.IdentifyCache`).
    The key holds ``Authorization`` as sent, the device's credential in base64: nothing this
    process does not hold already (the files it serves hand each device its credential), and
    never written anywhere."""

    ENTRY_BYTES = 400
    """One entry beside its key's characters, rounded up from tracemalloc (~390 bytes): the dict
    slot, the key tuple and its three string headers, the :class:`Verified` and its weak
    reference, the deque's slot."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024) -> None:
        """``max_bytes``: 16 MiB holds about 32,000 requests of a Yealink's length (a file of
        each of as many devices)."""
        super().__init__(max_bytes)

    def get(self, path: str, user_agent: str, authorization: str) -> Verified | None:
        return self._entries.get((path, user_agent, authorization))

    def put(self, path: str, user_agent: str, authorization: str, verified: Verified) -> None:
        self._put((path, user_agent, authorization), verified, replace=True)


MAC_IN_NAME = "{mac}"


def file_key(name: str, mac: str) -> str:
    """``<mac>.cfg`` → ``{mac}.cfg``: every device's key of a kind of file is one shared string
    instead of a name of its own (~130 bytes a Yealink). No name a phone may ask for holds
    braces, so no key stands for two names."""
    return name.replace(mac, MAC_IN_NAME)


def content_type_of(name: str, body: bytes) -> str:
    if body.lstrip()[:1] == b"<":
        return "application/xml; charset=utf-8"
    return "text/plain; charset=utf-8"


class CredentialHasher:
    """Keyed BLAKE2b (its MAC mode) under a per-process random key: fast, and useless outside
    this process. One C call per digest: HMAC-SHA256 from a pre-keyed copy took twice the time
    (~2.4 µs against ~1.1 on the benchmark machine), on every authenticated fetch."""

    DIGEST_SIZE = 16

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def digest(self, password: str) -> bytes:
        return hashlib.blake2b(
            password.encode("utf-8"), key=self._key, digest_size=self.DIGEST_SIZE
        ).digest()

    def credential(self, username: str, password: str) -> Credential:
        ha1 = hashlib.md5(
            f"{username}:{REALM}:{password}".encode(), usedforsecurity=False
        ).hexdigest()
        return Credential(username, self.digest(password), ha1)

    def matches(self, credential: Credential, password: str) -> bool:
        return hmac.compare_digest(credential.password_digest, self.digest(password))


@dataclass
class DeviceCache:
    vault: Vault
    hasher: CredentialHasher = field(default_factory=CredentialHasher)
    devices: dict[str, CachedDevice] = field(default_factory=dict)
    bootstrap: Credential | None = None
    sync: Outage = field(default_factory=lambda: Outage(log, "device cache"))
    """Whether the cache follows the database's changes (``down``: it serves what it has)."""
    _packings: dict[tuple[str, str], Packing] = field(default_factory=dict)
    """By vendor and lower-cased :func:`file_key`: see :class:`Packing`."""

    def set_bootstrap(self, username: str, password: str) -> None:
        self.bootstrap = self.hasher.credential(username, password)

    async def load(self, conn: Connection, macs: Sequence[str] | None = None) -> None:
        """(Re)load ``macs`` (every device when None); devices gone from the table are dropped.

        A full load also picks the packing samples afresh, so they follow what is rendered now.
        """
        if macs is None:
            self._packings = {}
        fresh: dict[str, CachedDevice] = {}
        # One object for equal keys and equal files (same ETag: same bytes) across the devices
        # of this load: the files every device of a model shares, a Yealink's two boot files.
        keys: dict[str, str] = {}
        files: dict[str, ServedFile] = {}
        async with conn.transaction():
            async for row in store.iterate_device_files(conn, macs):
                mac = row["mac"]
                device = fresh.get(mac)
                if device is None:
                    device = fresh[mac] = CachedDevice(
                        mac=mac,
                        vendor=sys.intern(row["vendor"]),
                        revision=row["revision"],
                        files={},
                        credential=self._credential(mac, row["credential_encrypted"]),
                        bootstrap_allowed=row["bootstrap_allowed"],
                    )
                name = row["name"]
                if name is None:
                    continue
                key = file_key(name, mac)
                key = keys.setdefault(key, key)
                body = self._body(mac, name, bytes(row["body"]), row["sealed"])
                if body is None:
                    continue
                served = files.get(row["etag"])
                # Shared only when the bytes are equal too: a row's ETag is no proof of its body.
                if served is None or served.body != body:
                    packing = self._packing(device.vendor, mac, name, body)
                    served = files[row["etag"]] = served_file(name, body, row["etag"], packing)
                device.files[key] = served
        if macs is None:
            self.devices = fresh
            return
        for mac in macs:
            if mac in fresh:
                self.devices[mac] = fresh[mac]
            else:
                self.devices.pop(mac, None)

    def _packing(self, vendor: str, mac: str, name: str, body: bytes) -> Packing:
        """The packing of this kind of file; the first body of a kind becomes its sample."""
        kind = (vendor, file_key(name.lower(), mac))
        packing = self._packings.get(kind)
        if packing is None:
            packing = self._packings[kind] = Packing(body)
        return packing

    def _body(self, mac: str, name: str, stored: bytes, sealed: bool) -> bytes | None:
        """The file's clear bytes: decrypted here, once per cache fill, never per request."""
        try:
            return unseal(self.vault, mac, name, stored, sealed=sealed)
        except VaultError:
            log.error("device %s: %s does not decrypt with this key; not served", mac, name)
            return None

    def _credential(self, mac: str, encrypted: bytes | None) -> Credential | None:
        if encrypted is None:
            return None
        try:
            password = self.vault.decrypt(encrypted, device_credential_purpose(mac))
        except VaultError:
            log.error("device %s: credential does not decrypt with this key; device refused", mac)
            return None
        return self.hasher.credential(mac, password)


class DeviceListener:
    """Keeps a :class:`DeviceCache` in step with the database over LISTEN/NOTIFY."""

    def __init__(self, dsn: str, cache: DeviceCache, channel: str) -> None:
        self._dsn = dsn
        self._cache = cache
        self._channel = channel
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()
        """Set once the cache is loaded and changes are being listened for."""

    def _on_notify(self, _conn: Connection, _pid: int, _channel: str, payload: object) -> None:
        self._pending.add(str(payload))
        self._wake.set()

    async def run(self) -> None:
        """Listen until cancelled; after a lost connection, reconnect and reload everything.

        Meanwhile the cache serves what it holds. Never ends by itself.
        """
        sync = self._cache.sync
        while True:
            try:
                await self._follow()
            except Exception as exc:
                if database_unavailable(exc):
                    delay = sync.lost(exc)
                else:
                    log.exception("device listener: unexpected failure; reconnecting")
                    delay = DATABASE_BACKOFF.cap
                await asyncio.sleep(delay)

    async def _follow(self) -> None:
        """One connection's worth of following; raises when the connection is lost."""
        conn = await asyncpg.connect(self._dsn)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            await conn.add_listener(self._channel, self._on_notify)
            # Load after LISTEN, so no change can fall between the load and the listening.
            self._pending.clear()
            await self._cache.load(conn)
            self._cache.sync.reached()
            self.ready.set()
            while not lost.is_set():
                waiter = asyncio.create_task(self._wake.wait())
                lost_waiter = asyncio.create_task(lost.wait())
                try:
                    await asyncio.wait({waiter, lost_waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    lost_waiter.cancel()
                self._wake.clear()
                macs, self._pending = sorted(self._pending), set()
                if macs and not lost.is_set():
                    await self._cache.load(conn, macs)
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        raise ConnectionResetError("the listening connection was lost")


#: A device's fetch that repeats its last written one (same file, revision and source) within
#: this many seconds of that write is folded: only its time is kept, written when they are up.
#: So a device costs at most one write a minute while nothing about its fetches changes.
LAST_SEEN_INTERVAL = 60.0

Fetch = tuple[str, str, int, datetime, str, bool]
"""A fetch record: mac, file, revision, time, source address, personal (the device's own file)."""


@dataclass(slots=True)
class Written:
    """What a device's last written fetch was, and the newest identical one folded since."""

    file: str
    revision: int
    source: str
    personal: bool
    due: float
    """When (monotonic) an identical fetch is written again rather than folded."""
    folded: float | None = None
    """The time (:func:`time.time`) of the newest identical fetch since the write, not written
    yet: a float is what a fetch that is only folded costs (a ``datetime`` per fetch cost
    more than the rest of the fold), made a ``datetime`` once, when it is queued."""


@dataclass
class FetchRecorder:
    """Buffers fetch records; :meth:`flush` writes them in one round trip per batch.

    What is written is what delivery confirmation and the admin pages need, on the device's row
    (:func:`provisioner.store.record_fetches`): the revision it last fetched, when and from
    where, and the newest revision of its own file, which completes push jobs. A fetch that
    differs from the device's last written one in file, revision or source is written at once
    (with the next batch). One that repeats it within :data:`LAST_SEEN_INTERVAL` of that write
    is folded: only its time is kept, and written (the newest one) when the interval is over,
    which starts the next interval. A phone polling its file, or a boot storm's retries, thus
    costs one write a minute, and the last-seen time lags by at most that.

    Folded, never dropped: every fetch reaches the database, so ``fetched`` stays exact. The
    wait does not even delay a push's confirmation. A folded fetch repeats one already queued,
    which sets the device's ``fetched_revision`` when written: a job notified before that write
    is completed by it, and one notified after it is stored as ``fetched`` at once by
    :func:`provisioner.store.finish_push_job` (it looks at ``fetched_revision``, under a row
    lock that orders it with the write). Only a job held for a maintenance window (``scheduled``)
    that such a repeat would complete waits for the folded write, at most one interval (and so
    would a job of a device deleted and added again within the interval, whose first fetch
    repeats the old row's last one).

    Memory: :attr:`written` holds one entry per device written within the last interval (plus
    the ones with a folded fetch still to write). Only devices this process serves from its
    cache are recorded, so it is bounded by the devices it knows; an entry whose interval is
    over is dropped at the next flush (the device's next fetch is written anyway), so a deleted
    device leaves it within two intervals. Entries are kept in the order of their ``due``
    time, which makes finding the due ones cost nothing for the others.

    While the database is away the records wait in memory. Past ``compact_at`` of them, only
    the newest fetch of each device's file is kept: what completes push jobs and shows a
    device's last fetch survives, the complete history of an outage's boot storm does not.
    """

    pool: asyncpg.Pool
    fetches: list[Fetch] = field(default_factory=list)
    retired: set[str] = field(default_factory=set)
    compact_at: int = 100_000
    outage: Outage = field(default_factory=lambda: Outage(log, "fetch recorder"))
    last_seen_interval: float = LAST_SEEN_INTERVAL
    clock: Callable[[], float] = time.monotonic
    """Monotonic seconds: when an interval is over (tests move it instead of waiting)."""
    written: dict[str, Written] = field(default_factory=dict)
    """Per device (MAC), its last written fetch; oldest ``due`` first."""
    _retry_in: float = field(default=0.0, init=False)

    def record(self, mac: str, file: str, revision: int, source: str, *, personal: bool) -> None:
        """Queue a fetch, or fold it into the device's last written one (see the class)."""
        now = self.clock()
        last = self.written.get(mac)
        if last is not None:
            if (
                now < last.due
                and last.file == file
                and last.revision == revision
                and last.source == source
            ):
                last.folded = time.time()
                return
            del self.written[mac]  # re-entered below, last: the newest due time
            self._queue_folded(mac, last)  # nothing folded is lost to what replaces it
        self.written[mac] = Written(file, revision, source, personal, now + self.last_seen_interval)
        self._queue((mac, file, revision, datetime.now(UTC), source, personal))

    def _queue(self, fetch: Fetch) -> None:
        self.fetches.append(fetch)
        if len(self.fetches) >= self.compact_at:
            self._compact()

    def _queue_folded(self, mac: str, last: Written) -> None:
        if last.folded is not None:
            at = datetime.fromtimestamp(last.folded, UTC)
            self._queue((mac, last.file, last.revision, at, last.source, last.personal))
            last.folded = None

    def _queue_due(self, *, everything: bool) -> None:
        """Queue the folded fetches whose interval is over (``everything``: all of them) and
        forget the devices whose interval is over with nothing folded."""
        now = self.clock()
        # One pass to find them: taking the first item again after each deletion would scan
        # past every entry deleted since the dict was last resized, each time.
        due = []
        for mac, last in self.written.items():
            if last.due > now and not everything:
                break
            due.append((mac, last))
        for mac, last in due:
            del self.written[mac]
            if last.folded is None:
                continue  # nothing to write; the device's next fetch is written anyway
            self._queue_folded(mac, last)
            if not everything:
                # Written now: the next interval starts; re-entered last, in due order.
                last.due = now + self.last_seen_interval
                self.written[mac] = last

    def _compact(self) -> None:
        newest: dict[tuple[str, str], Fetch] = {}
        for fetch in self.fetches:  # in order of arrival: the last one of a file stays
            newest[fetch[0], fetch[1]] = fetch
        self.fetches = list(newest.values())
        # As many devices' files as that still leaves: compact again only when it doubled.
        self.compact_at = max(self.compact_at, 2 * len(self.fetches))
        log.debug("fetch records compacted to %d (database unavailable)", len(self.fetches))

    def retire_bootstrap(self, mac: str) -> None:
        self.retired.add(mac)

    async def flush(self, *, everything: bool = False) -> bool:
        """Write what is buffered and the folded fetches now due; False when the database is
        away (it all waits for next time). ``everything``: every folded fetch (at shutdown)."""
        self._queue_due(everything=everything)
        fetches, self.fetches = self.fetches, []
        retired, self.retired = self.retired, set()
        if not fetches and not retired:
            return True
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if retired:
                    await store.retire_bootstrap(conn, sorted(retired))
                    # Every process's cache must stop accepting the bootstrap credential too.
                    await conn.executemany(
                        "SELECT pg_notify($1, $2)", [(DEVICE_CHANNEL, m) for m in sorted(retired)]
                    )
                if fetches:
                    await store.record_fetches(conn, fetches)
        except asyncpg.DeadlockDetectedError:
            # PostgreSQL aborted this write to end a deadlock with another transaction (the
            # devices and jobs are locked in MAC order, so this should not happen): nothing was
            # written, and the next flush writes it all.
            log.info("fetch records met a deadlock; written with the next flush")
            self.fetches[:0] = fetches
            self.retired |= retired
            return True
        except Exception as exc:
            if not database_unavailable(exc):
                # Retrying records the database refuses would fail the same way forever.
                log.exception("%d fetch record(s) dropped: the database refused them", len(fetches))
                return True
            self.fetches[:0] = fetches
            self.retired |= retired
            self._retry_in = self.outage.lost(exc)
            return False
        self.outage.reached()
        return True

    async def run(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds until cancelled; never ends by itself."""
        while True:
            started = time.monotonic()
            if await self.flush():
                delay = interval - (time.monotonic() - started)
            else:
                delay = self._retry_in
            await asyncio.sleep(max(0.05, delay))

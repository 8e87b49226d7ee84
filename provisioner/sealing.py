"""Rendered configs at rest: sealed under the vault key, opened when the phones' cache fills.

A rendered file carries every secret of its device (its own credential, its lines' SIP
passwords, users' PINs, DECT access codes), so ``device_files.body`` holds it AES-GCM encrypted
like the other secrets (:func:`provisioner.vault.rendered_file_purpose`: bound to device and file
name, so a file copied into another device's row does not decrypt). The phones' endpoint never
decrypts per request: each process opens a device's files once, when its cache (re)loads the
device, and serves the clear bytes from memory.

ETags and revision hashes are HMAC-SHA256 under keys derived from the vault key, not plain
SHA-256: a plain digest of a file whose only secret is a 4-digit access code (a DECT base
without handsets) gives the code away to whoever reads the database in 10,000 guesses. Every
process derives the same keys, so identical content keeps its ETag (304) and an unchanged render
keeps its revision, across processes and restarts.

Rows written before migration 009 are in clear (``sealed = false``). Sealing them needs the
vault key, which SQL migrations do not have (and the database must never hold), so
:func:`seal_clear_files` is a data step run right after the SQL migrations by
:func:`provisioner.core.open_core`. The ``sealed`` column is its record: the clear rows are found
through a partial index, so once all are sealed the step costs one empty index scan. It goes in
batches of devices, one transaction each, locking each device row as a render does, so it is
idempotent, resumable after a crash and safe in several processes at once; it also seals rows an
older process writes during an upgrade. Readers accept both forms, so nothing depends on the step
having run (``provisioner migrate`` alone has no key and leaves it to the next start).
Alternatives weighed: lazy sealing on read (rows of devices never read by a process that can
write would stay in clear, and every process start would race the writers) and a separate
one-off command (an operator could forget it; the README promises encryption at rest).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping

import asyncpg

from provisioner import store
from provisioner.db import Connection
from provisioner.vault import Vault, VaultError, rendered_file_purpose

log = logging.getLogger(__name__)

_ETAG_KEY = "rendered-etag"
_REVISION_KEY = "rendered-revision"
_BATCH = 200


def etag_of(vault: Vault, body: bytes) -> str:
    """A strong ETag: a keyed digest of the file's bytes."""
    digest = hmac.new(vault.derive_key(_ETAG_KEY), body, hashlib.sha256).hexdigest()
    return f'"{digest[:32]}"'


def content_hash(vault: Vault, files: Mapping[str, bytes]) -> str:
    """A keyed digest of a whole revision (names and bytes): equal iff the files are."""
    digest = hmac.new(vault.derive_key(_REVISION_KEY), digestmod=hashlib.sha256)
    for name in sorted(files):
        body = files[name]
        digest.update(f"{name}\0{len(body)}\0".encode())
        digest.update(body)
    return digest.hexdigest()


def seal(vault: Vault, mac: str, files: Mapping[str, bytes]) -> list[tuple[str, bytes, str]]:
    """What :func:`provisioner.store.replace_device_files` stores: (name, sealed body, etag)."""
    return [
        (name, vault.encrypt_bytes(body, rendered_file_purpose(mac, name)), etag_of(vault, body))
        for name, body in sorted(files.items())
    ]


def unseal(vault: Vault, mac: str, name: str, body: bytes, *, sealed: bool) -> bytes:
    """A stored file's bytes; raises :class:`VaultError` when it does not decrypt."""
    if not sealed:
        return body
    return vault.decrypt_bytes(body, rendered_file_purpose(mac, name))


async def seal_clear_files(vault: Vault, pool: asyncpg.Pool, *, batch: int = _BATCH) -> int:
    """Seal every file still stored in clear; return how many devices were sealed now.

    Each sealed file gets its keyed ETag and each device its keyed revision hash, computed from
    the same bytes: the revision number stays, phones fetch the same content (once more, as
    their old ETag no longer matches).
    """
    sealed_devices = 0
    while True:
        try:
            async with pool.acquire() as conn, conn.transaction():
                macs = await store.lock_devices_with_clear_files(conn, batch)
                if not macs:
                    break
                sealed_devices += await _seal_devices(vault, conn, macs)
        except asyncpg.DeadlockDetectedError:
            # Another use case locked some of these devices in another order: go again.
            log.info("sealing stored configs met a deadlock; retrying the batch")
    if sealed_devices:
        log.info("sealed the stored configs of %d devices", sealed_devices)
    return sealed_devices


async def _seal_devices(vault: Vault, conn: Connection, macs: list[str]) -> int:
    files: dict[str, dict[str, tuple[bytes, bool]]] = {mac: {} for mac in macs}
    for row in await store.list_files_of_devices(conn, macs):
        files[row["mac"]][row["name"]] = (bytes(row["body"]), row["sealed"])
    updates: list[tuple[str, str, bytes, str]] = []
    hashes: dict[str, str] = {}
    for mac, stored in files.items():
        clear = {name: body for name, (body, sealed) in stored.items() if not sealed}
        if not clear:
            continue  # sealed by another process while this one waited for the lock
        updates += [(mac, *row) for row in seal(vault, mac, clear)]
        try:
            opened = {
                name: unseal(vault, mac, name, body, sealed=sealed)
                for name, (body, sealed) in stored.items()
            }
        except VaultError:
            log.error("device %s: a stored config does not decrypt with this key", mac)
            continue  # its next render stores a whole new revision
        hashes[mac] = content_hash(vault, opened)
    await store.seal_device_files(conn, updates)
    await store.set_revision_hashes(conn, hashes)
    return len({mac for mac, *_ in updates})

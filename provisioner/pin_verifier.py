"""Phone PIN verifiers: HMAC-SHA256 under a key derived from the vault key for this use only.

A PIN of 6-12 digits has at most 10^12 values: no hash function, however slow, keeps such a
space from an attacker who holds the ``users`` table, while a keyed verifier cannot be tried at
all without the key. That key is already what protects the PIN, whose encrypted copy sits in
the same row (templates must carry it). So the verifier is keyed, cheap, and compared in
constant time; it is bound to the user's id, so two users with the same PIN have different
verifiers. Passwords stay argon2id (:mod:`provisioner.hashing`): people choose and reuse them.

:func:`rekey_argon2_verifiers` is the data step of this change, run after the SQL migrations:
each argon2id verifier of earlier versions is replaced by the keyed one, computed from the
encrypted copy.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import asyncpg

from provisioner.vault import Vault, VaultError, pin_purpose

log = logging.getLogger(__name__)

SCHEME = "hmac-sha256$"
_PURPOSE = "pin-verifier"
_BATCH = 500


class PinVerifier:
    def __init__(self, vault: Vault) -> None:
        self._key = vault.derive_key(_PURPOSE)

    def make(self, user_id: int, pin: str) -> str:
        digest = hmac.new(self._key, f"{user_id}:{pin}".encode(), hashlib.sha256).hexdigest()
        return SCHEME + digest

    def check(self, user_id: int, pin: str, verifier: str) -> bool:
        """Whether ``pin`` is the PIN ``verifier`` was made of, in constant time."""
        return hmac.compare_digest(self.make(user_id, pin), verifier)


async def rekey_argon2_verifiers(vault: Vault, pool: asyncpg.Pool) -> int:
    """Replace every argon2id PIN verifier by the keyed one, from the encrypted copy; one
    transaction per batch, rows locked. A row whose copy does not decrypt keeps no verifier (the
    PIN must be set again): logged, without the PIN. Returns how many were replaced."""
    verifier = PinVerifier(vault)
    replaced = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, username, pin_encrypted FROM users
                   WHERE pin_hash NOT LIKE $1 || '%' ORDER BY id LIMIT $2 FOR UPDATE""",
                SCHEME,
                _BATCH,
            )
            if not rows:
                break
            updates: list[tuple[int, str | None]] = []
            for row in rows:
                try:
                    pin = vault.decrypt(bytes(row["pin_encrypted"]), pin_purpose(row["id"]))
                except (TypeError, VaultError):
                    log.warning("PIN of %s cannot be re-keyed: set it again", row["username"])
                    updates.append((row["id"], None))
                    continue
                updates.append((row["id"], verifier.make(row["id"], pin)))
            await conn.executemany(
                """UPDATE users
                   SET pin_hash = $2::text,
                       pin_encrypted = CASE WHEN $2::text IS NULL THEN NULL ELSE pin_encrypted END
                   WHERE id = $1""",
                updates,
            )
            replaced += sum(1 for _, new in updates if new is not None)
    if replaced:
        log.info("replaced %d argon2id PIN verifiers by keyed ones", replaced)
    return replaced

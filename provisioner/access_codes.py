"""DECT access codes: the code a handset enters to subscribe to a DECT base.

An access code (AC) is a secret of its own, one per DECT system, and has nothing to do with a
user's PIN: the PIN is what a person logs in with, the access code only matters while a handset
subscribes. It is random (never derived from an extension, a slot or a MAC), as long as the
vendor's key takes (:class:`AccessCodeKey`), stored encrypted, shown to admins, and replaced only
when an admin asks for it.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from provisioner import store
from provisioner.db import Connection
from provisioner.devices import served
from provisioner.devices.base import AccessCodeKey
from provisioner.errors import unprocessable
from provisioner.vault import Vault, access_code_purpose


def generate(digits: int) -> str:
    """A random code of ``digits`` digits that is not a guessable pattern.

    Codes of one repeated digit (``0000`` is many bases' factory default) and straight runs
    (``1234``, ``9876``) are drawn again.
    """
    while True:
        code = "".join(secrets.choice("0123456789") for _ in range(digits))
        if not _is_pattern(code):
            return code


def _is_pattern(code: str) -> bool:
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(code)}
    return len(set(code)) == 1 or steps in ({1}, {9})


def check(code: str, key: AccessCodeKey) -> str:
    """``code`` when it has exactly the digits ``key`` takes; ``access_code_invalid`` (422)."""
    if not (
        isinstance(code, str) and code.isascii() and code.isdigit() and len(code) == key.digits
    ):
        raise unprocessable(
            "access_code_invalid", f"This device's access code is exactly {key.digits} digits."
        )
    return code


def key_of(device: Any) -> AccessCodeKey | None:
    """The access-code key of a device row's model, None when it has none (desk phones)."""
    found = served(device["vendor"], device["model"])
    return None if found is None else found[0].access_code_key(found[1])


async def ensure(vault: Vault, conn: Connection, device: Any) -> str | None:
    """The device's access code, created on first use; None for models without one.

    A stored code of another length than the model's key takes (the model changed) is replaced.
    Safe against a concurrent first use: the first stored code wins.
    """
    key = key_of(device)
    if key is None:
        return None
    mac = device["mac"]
    purpose = access_code_purpose(mac)
    stored = device["access_code_encrypted"]
    if stored is not None:
        code = vault.decrypt(stored, purpose)
        if len(code) == key.digits:
            return code
    fresh = vault.encrypt(generate(key.digits), purpose)
    current = await store.replace_device_access_code(conn, mac, expected=stored, new=fresh)
    return None if current is None else vault.decrypt(current, purpose)

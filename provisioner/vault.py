"""Encryption at rest for secrets that templates must carry in clear (PINs, SIP secrets), and
for the rendered configs that carry them.

AES-256-GCM with a key from the key file; each ciphertext is bound to its purpose (associated
data such as ``pin:42``), so a ciphertext copied into another row or column does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
_VERSION = b"\x01"


class VaultError(Exception):
    """The key file is unusable or a ciphertext does not decrypt with it."""


class Vault:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise VaultError("the secret key must be 32 bytes")
        self._key = key
        self._aead = AESGCM(key)

    @classmethod
    def from_key_file(cls, path: Path) -> Vault:
        """Load the key, creating it (mode 0600) on first start."""
        try:
            return cls(_read_key(path))
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place: a concurrent reader
        # sees no file or the complete key, never a partial one; a concurrent creator loses.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        finally:
            temporary.unlink()
        return cls(_read_key(path))

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (e.g. signing nonces) that every process derives alike."""
        return hmac.new(self._key, b"derive:" + purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, plaintext: str, purpose: str) -> bytes:
        return self.encrypt_bytes(plaintext.encode("utf-8"), purpose)

    def decrypt(self, ciphertext: bytes, purpose: str) -> str:
        return self.decrypt_bytes(ciphertext, purpose).decode("utf-8")

    def encrypt_bytes(self, plaintext: bytes, purpose: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode("utf-8"))

    def decrypt_bytes(self, ciphertext: bytes, purpose: str) -> bytes:
        if ciphertext[:1] != _VERSION:
            raise VaultError("unknown ciphertext version")
        nonce = ciphertext[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, ciphertext[1 + _NONCE_BYTES :], purpose.encode())
        except InvalidTag:
            raise VaultError(f"ciphertext for {purpose} does not decrypt with this key") from None


def _read_key(path: Path) -> bytes:
    raw = path.read_bytes().strip()
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise VaultError(f"{path}: not a base64-encoded key") from None


# Associated data for each kind of ciphertext, kept in one place so no two kinds can collide.


def pin_purpose(user_id: int) -> str:
    """A user's phone PIN (``users.pin_encrypted``)."""
    return f"pin:{user_id}"


def device_credential_purpose(mac: str) -> str:
    """A device's own provisioning password (``devices.credential_encrypted``)."""
    return f"device-credential:{mac}"


def sip_password_purpose(mac: str, slot: int) -> str:
    """The SIP password of one line or handset (``device_assignments``)."""
    return f"sip:{mac}:{slot}"


def device_api_password_purpose(mac: str) -> str:
    """The password of a device's management API (``device_api_access``)."""
    return f"device-api:{mac}"


def access_code_purpose(mac: str) -> str:
    """A DECT system's access code for subscribing handsets (``devices.access_code_encrypted``)."""
    return f"access-code:{mac}"


def rendered_file_purpose(mac: str, name: str) -> str:
    """One rendered file of a device (``device_files.body``): a file copied to another device's
    row, or under another name, does not decrypt."""
    return f"rendered-file:{mac}:{name}"

"""argon2id hashing of passwords, always off the event loop (PINs: :mod:`provisioner.pin_verifier`).

Hashing runs in a small dedicated thread pool, so a burst of password changes can neither stall
the event loop nor starve the default executor that other blocking work uses. Its threads run at
a lower scheduling priority (nice +10, on Linux where a thread has its own): on a small box a
burst of password changes would otherwise take every core from the phones' processes and
PostgreSQL, whose requests each take microseconds, not the ~50 ms of a hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from passlib.hash import argon2

from provisioner.errors import Kind, ProvisionerError

#: The longest password anyone may present (a login, a current password): longer ones are
#: refused before any hashing work, so a megabyte "password" costs nothing but its upload.
#: New passwords are held to the (shorter) password policy.
MAX_PASSWORD_INPUT = 1024

#: How much nicer than the process the hashing threads run (see the module's doc).
HASHING_NICENESS = 10

# OWASP's argon2id baseline (19 MiB, 2 passes): ~50 ms here.
_PASSWORD = argon2.using(type="ID", memory_cost=19456, rounds=2, parallelism=1)


def _lower_priority() -> None:
    """Make the calling thread nicer by :data:`HASHING_NICENESS` (Linux: per thread)."""
    with contextlib.suppress(AttributeError, OSError):  # no setpriority, or not allowed
        tid = threading.get_native_id()
        os.setpriority(
            os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + HASHING_NICENESS
        )


class Hasher:
    def __init__(self, max_workers: int = 2) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="argon2", initializer=_lower_priority
        )
        self._dummy_password_hash = _PASSWORD.hash("provisioner-dummy")

    async def _run(self, fn: Any, *args: str) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def hash_password(self, password: str) -> str:
        return str(await self._run(_PASSWORD.hash, password))

    async def verify_password(self, password: str, password_hash: str | None) -> bool:
        """Check ``password``; with no hash, burn the same time so timing reveals nothing.

        ``password_policy`` (422) for a password over :data:`MAX_PASSWORD_INPUT` characters.
        """
        if len(password) > MAX_PASSWORD_INPUT:
            raise ProvisionerError(
                Kind.UNPROCESSABLE,
                "password_policy",
                f"A password has at most {MAX_PASSWORD_INPUT} characters.",
                reason="length",
            )
        if password_hash is None:
            await self._run(_PASSWORD.verify, password, self._dummy_password_hash)
            return False
        return bool(await self._run(_PASSWORD.verify, password, password_hash))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

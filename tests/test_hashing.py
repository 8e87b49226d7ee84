"""The password hashing pool: off the event loop, and yielding the CPU to the phones' path."""

from __future__ import annotations

import asyncio
import os
import threading

from provisioner.hashing import HASHING_NICENESS, Hasher


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_hashing_threads_run_nicer_than_the_rest_of_the_service() -> None:
    """A burst of argon2id hashes (~50 ms each) must not take the cores from fetches and
    PostgreSQL: the pool's threads are niced, the event loop's thread is not."""
    hasher = Hasher(max_workers=2)
    before = niceness()
    try:
        hashed = await hasher.hash_password("correct horse battery")
        assert hashed.startswith("$argon2id$")
        assert await hasher.verify_password("correct horse battery", hashed)
        loop = asyncio.get_running_loop()
        theirs = await asyncio.gather(
            *(loop.run_in_executor(hasher._executor, niceness) for _ in range(4))
        )
    finally:
        hasher.close()
    assert set(theirs) == {min(19, before + HASHING_NICENESS)}
    assert niceness() == before

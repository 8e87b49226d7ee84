"""What a failed phones' request costs the failure limiter under a flood from many sources.

    python bench/limiter_cost.py [--failures 100000]

In-process, in seconds: :class:`provisioner.phoneauth.FailureLimiter` with its defaults (8 MiB,
10 failures a minute, 5 minutes' block) is fed failures from ever new IPv6 sources until it
holds as many as its bound allows, then ``--failures`` more are timed (each one evicting the
oldest counting source); a second run has sources fail ten times each, so blocks are made and
expire while new ones come (time is simulated: 10 ms a failure). Prints JSON: CPU µs a failure
in each run, and what the limiter holds at the end. The log lines (two ``WARNING``\\ s a
failure at most) are switched off: the figure is the limiter's own work.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

from provisioner.phoneauth import FailureLimiter


def at_the_bound(failures: int) -> dict[str, float | int]:
    limiter = FailureLimiter()
    count = 0

    def fail(n: int) -> float:
        nonlocal count
        started = time.process_time()
        for _ in range(n):
            count += 1
            limiter.fail(f"2001:db8::{count:x}", "bad_credentials", now=count * 1e-4)
        return (time.process_time() - started) / n * 1e6

    fail(limiter.max_bytes // (limiter.SOURCE_BYTES + 40))  # fill it up to its bound
    per_failure = fail(failures)
    assert limiter.bytes <= limiter.max_bytes
    return {
        "cpu_us_per_failure": round(per_failure, 2),
        "sources_counting": len(limiter._failures),
        "bytes": limiter.bytes,
    }


def blocks_churning(failures: int) -> dict[str, float | int]:
    limiter = FailureLimiter()
    started = time.process_time()
    for count in range(failures):
        source = count // limiter.threshold
        address = f"10.{source >> 16 & 255}.{source >> 8 & 255}.{source & 255}"
        limiter.fail(address, "bad_credentials", now=count * 0.01)
    per_failure = (time.process_time() - started) / failures * 1e6
    assert limiter.retry_after(address, now=failures * 0.01) is not None, "the last one blocked"
    return {"cpu_us_per_failure": round(per_failure, 2), "sources_blocked": len(limiter._blocked)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failures", type=int, default=100_000)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    print(
        json.dumps(
            {
                "at_the_bound": at_the_bound(args.failures),
                "blocks_churning": blocks_churning(2 * args.failures),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""What rendering costs the push worker per device: one transaction per device, or per batch.

    python bench/render_batch.py [--devices 100] [--rounds 5]

In-process, no service, no sipp: a throwaway database with N Yealink T54W desk phones, one user
on line 1 of each, everything rendered once. Then, ``--rounds`` times each:

- ``changed``: every user's PIN is replaced (stored as a PIN change stores it), then the devices
  are rendered: per device (``provisioning.render_device``, the worker's path before issue 14's
  decision) or as one batch (``provisioning.render_devices_in`` in one transaction, the
  worker's path since);
- ``unchanged``: the same devices rendered again with nothing changed (what the worker did
  after the background queue had rendered a change already).

Reported per device: CPU time of this process (every thread: rendering runs in one), CPU time
of the PostgreSQL backend (the pool has one connection; /proc counts it in 10 ms ticks, hence
the sum over all rounds), and wall time; each the total over the rounds divided by the devices
rendered. The result is printed as JSON; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import benchlib

sys.path.insert(0, str(benchlib.REPO_DIR))

from provisioner import devices_service, passwords, provisioning, sites
from provisioner.audit import Actor
from provisioner.core import Core, open_core
from provisioner.settings import Settings
from provisioner.vault import device_credential_purpose, pin_purpose, sip_password_purpose

ADMIN_PASSWORD = "Bench-Adm1n-Passw0rd"  # noqa: S105 (a throwaway database's)


async def seed(core: Core, devices: int) -> list[str]:
    actor = Actor.cli()
    await passwords.bootstrap_admin(core, ADMIN_PASSWORD)
    await sites.set_site(core, actor, "default", {"registrar_host": "pbx.example.net"})
    macs = [f"001565{i:06x}" for i in range(devices)]
    async with core.pool.acquire() as conn:
        await conn.copy_records_to_table(
            "users",
            records=[(f"user{i}", f"User {i}", str(2000 + i), "de") for i in range(devices)],
            columns=["username", "display_name", "extension", "language"],
        )
        ids = {
            r["username"]: r["id"]
            for r in await conn.fetch("SELECT id, username FROM users WHERE role = 'user'")
        }
        await conn.copy_records_to_table(
            "devices",
            records=[
                (
                    mac,
                    "yealink",
                    "T54W",
                    "desk",
                    "",
                    "default",
                    core.vault.encrypt(provisioning.new_secret(), device_credential_purpose(mac)),
                )
                for mac in macs
            ],
            columns=["mac", "vendor", "model", "kind", "label", "site", "credential_encrypted"],
        )
        rows = []
        for i, mac in enumerate(macs):
            account = devices_service.sip_account_name(str(2000 + i), mac, 1)
            secret = core.vault.encrypt(provisioning.new_secret(), sip_password_purpose(mac, 1))
            rows.append((mac, 1, ids[f"user{i}"], account, account, secret))
        await conn.copy_records_to_table(
            "device_assignments",
            records=rows,
            columns=[
                "mac",
                "slot",
                "user_id",
                "sip_user",
                "sip_auth_user",
                "sip_password_encrypted",
            ],
        )
    await per_device(core, macs)
    return macs


async def new_pins(core: Core, round_: int) -> None:
    async with core.pool.acquire() as conn:
        users = await conn.fetch("SELECT id FROM users WHERE role = 'user'")
        pin = f"{480913 + round_:06d}"
        await conn.executemany(
            "UPDATE users SET pin_hash = $2, pin_encrypted = $3 WHERE id = $1",
            [
                (
                    u["id"],
                    core.pin_verifier.make(u["id"], pin),
                    core.vault.encrypt(pin, pin_purpose(u["id"])),
                )
                for u in users
            ],
        )


async def per_device(core: Core, macs: list[str]) -> None:
    for mac in macs:
        await provisioning.render_device(core, mac)


async def one_batch(core: Core, macs: list[str]) -> None:
    async with core.pool.acquire() as conn, conn.transaction():
        await provisioning.render_devices_in(core, conn, macs)


async def measure(
    core: Core, backend: int, macs: list[str], render: Callable[[Core, list[str]], Awaitable[None]]
) -> dict[str, float]:
    cpu, pg, wall = time.process_time(), benchlib.cpu_seconds(backend), time.perf_counter()
    await render(core, macs)
    n = len(macs)
    return {
        "python_cpu_ms": (time.process_time() - cpu) * 1000 / n,
        "postgres_cpu_ms": (benchlib.cpu_seconds(backend) - pg) * 1000 / n,
        "wall_ms": (time.perf_counter() - wall) * 1000 / n,
    }


def means(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.fmean(s[k] for s in samples), 3) for k in samples[0]}


async def run(devices: int, rounds: int) -> dict[str, Any]:
    name, dsn = await benchlib.create_database("provisioner_bench_render")
    try:
        with tempfile.TemporaryDirectory() as data:
            env = {"PROVISIONER_DATABASE_URL": dsn, "PROVISIONER_DATA_DIR": str(Path(data))}
            async with open_core(Settings.from_env(env), pool_size=(1, 1)) as core:
                macs = await seed(core, devices)
                async with core.pool.acquire() as conn:
                    backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
                paths = {"per_device": per_device}
                if hasattr(provisioning, "render_devices_in"):
                    paths["batch"] = one_batch
                results: dict[str, Any] = {}
                for label, render in paths.items():
                    changed, unchanged = [], []
                    for r in range(rounds):
                        await new_pins(core, r + 1)
                        changed.append(await measure(core, backend, macs, render))
                        unchanged.append(await measure(core, backend, macs, render))
                    results[label] = {"changed": means(changed), "unchanged": means(unchanged)}
                return {"devices": devices, "rounds": rounds, "per_device_ms": results}
    finally:
        await benchlib.drop_database(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.devices, args.rounds)), indent=2))
    return 0


if __name__ == "__main__":
    benchlib.run_main(main)

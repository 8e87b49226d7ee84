"""``provisioner serve`` killed (SIGKILL) in the middle of a burst of PIN changes, then started
again: no acknowledged change is lost, every push job reaches a final state, and no phone is
told twice, except once for a push the killed process was in the middle of.

A second, in-process instance on the same database (no push worker) sets the phones up and plays
their fetches; the killed ``serve`` and its successor run the push worker, as in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from provisioner.app import create_app
from provisioner.devices_service import sip_account_name
from provisioner.errors import ProvisionerError
from provisioner.pins import check_pin_policy
from provisioner.settings import Settings
from provisioner.vault import Vault, pin_purpose
from provisioner.web.keys import CORE
from tests.conftest import bootstrap_admin
from tests.test_cli import Server, StartServer
from tests.test_push import (
    YEALINK,
    Client,
    Model,
    Pbx,
    StartSipp,
    eventually,
    fetch_config,
    provision,
    subprocess_env,
)

PHONES = 20
QUIET = 5
"""Users whose one change is pushed before the burst: their phones must not be told again."""
CHANGES = 14
"""PIN changes per other user, one after the other; the users' chains run side by side."""
KILL_AFTER = (PHONES - QUIET) * CHANGES // 2


def phone(index: int) -> Model:
    mac = f"001565c0{index:04x}"
    colons = ":".join(mac[i : i + 2] for i in range(0, 12, 2))
    return dataclasses.replace(
        YEALINK,
        mac=mac,
        user_agent=f"Yealink SIP-T54W 96.86.0.70 {colons}",
        line_file=f"{mac}.cfg",
    )


def extension(index: int) -> str:
    return str(4000 + index)


def valid_pins(rng: random.Random, count: int, ext: str) -> list[str]:
    """``count`` PINs the policy accepts, no two in a row alike."""
    pins: list[str] = []
    while len(pins) < count:
        pin = f"{rng.randrange(10**6):06d}"
        try:
            check_pin_policy(pin, min_length=6, extension=ext)
        except ProvisionerError:
            continue
        if not pins or pins[-1] != pin:
            pins.append(pin)
    return pins


@dataclasses.dataclass
class Chain:
    """One user's PIN changes as the client saw them."""

    username: str
    acknowledged: list[str] = dataclasses.field(default_factory=list)
    in_flight: str | None = None
    """Sent when the service died: it may or may not have been committed."""


async def put_pin(
    session: aiohttp.ClientSession, server: Server, token: str, username: str, pin: str
) -> None:
    async with session.put(
        f"{server.url}/api/v1/users/{username}/pin",
        json={"pin": pin},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.json()
    assert response.status == 200, body


async def pin_burst(
    session: aiohttp.ClientSession,
    server: Server,
    token: str,
    plan: dict[str, list[str]],
) -> list[Chain]:
    """Run every user's changes, SIGKILLing the service after ``KILL_AFTER`` acknowledgements."""
    acknowledged = 0
    enough = asyncio.Event()

    async def run(chain: Chain, pins: list[str]) -> None:
        nonlocal acknowledged
        for pin in pins:
            chain.in_flight = pin
            try:
                await put_pin(session, server, token, chain.username, pin)
            except (aiohttp.ClientError, OSError):
                return  # the service is gone; this change may or may not have committed
            chain.in_flight = None
            chain.acknowledged.append(pin)
            acknowledged += 1
            if acknowledged >= KILL_AFTER:
                enough.set()

    async def kill() -> None:
        await enough.wait()
        server.process.send_signal(signal.SIGKILL)

    chains = [Chain(username) for username in plan]
    killer = asyncio.create_task(kill())
    await asyncio.gather(*(run(chain, plan[chain.username]) for chain in chains))
    assert killer.done(), "the burst ended before the service was killed"
    assert await asyncio.to_thread(server.process.wait, 10) == -signal.SIGKILL
    return chains


async def job_states(db: asyncpg.Connection) -> dict[str, str]:
    rows = await db.fetch("SELECT mac, state FROM push_jobs ORDER BY id")
    return {row["mac"]: row["state"] for row in rows}  # the newest job of each device


async def test_sigkill_during_a_pin_burst_loses_nothing_and_notifies_once(
    db: asyncpg.Connection,
    push_env: dict[str, str],
    aiohttp_client: Any,
    start_sipp: StartSipp,
    start_server: StartServer,
    tmp_path: Path,
) -> None:
    helper: Client = await aiohttp_client(create_app(Settings.from_env(push_env)))
    api = await bootstrap_admin(helper)
    pbx = Pbx(helper)
    before = await start_sipp(YEALINK.scenario, calls=10_000)  # the phones until the crash
    models = [phone(i) for i in range(PHONES)]
    for i, model in enumerate(models):
        await provision(api, pbx, model, before.port, username=f"user{i}", extension=extension(i))
    env = subprocess_env(push_env, helper, tmp_path)
    server = start_server(env)
    await server.wait_healthy()

    rng = random.Random(20240610)
    token = str(api.token)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        quiet = [Chain(f"user{i}", valid_pins(rng, 1, extension(i))) for i in range(QUIET)]
        for chain in quiet:
            await put_pin(session, server, token, chain.username, chain.acknowledged[0])

        async def quiet_notified() -> bool:
            states = await job_states(db)
            return all(states[m.mac] == "notified" for m in models[:QUIET])

        await eventually(quiet_notified, "the quiet users' phones told")
        plan = {f"user{i}": valid_pins(rng, CHANGES, extension(i)) for i in range(QUIET, PHONES)}
        chains = await pin_burst(session, server, token, plan)
    acknowledged = sum(len(chain.acknowledged) for chain in chains)
    assert KILL_AFTER <= acknowledged < (PHONES - QUIET) * CHANGES  # killed in the middle
    chains += quiet

    # --- no acknowledged change is lost ----------------------------------------------------
    vault = Vault.from_key_file(helper.app[CORE].settings.secret_key_file)
    stored: dict[str, str] = {}
    for chain in chains:
        row = await db.fetchrow(
            "SELECT id, pin_encrypted FROM users WHERE username = $1", chain.username
        )
        assert row is not None
        stored[chain.username] = vault.decrypt(row["pin_encrypted"], pin_purpose(row["id"]))
        # The last acknowledged PIN, or the one that was on its way when the service died.
        possible = {chain.acknowledged[-1]} if chain.acknowledged else {"480913"}
        if chain.in_flight is not None:
            possible.add(chain.in_flight)
        assert stored[chain.username] in possible, (chain, stored[chain.username])
        audited = await db.fetchval(
            "SELECT count(*) FROM audit_log WHERE target_user = $1 AND action = 'pin.change'",
            chain.username,
        )
        # provision()'s PIN, the acknowledged ones, perhaps the one in flight.
        assert audited - 1 - len(chain.acknowledged) in (0, int(chain.in_flight is not None))

    # --- the successor takes over --------------------------------------------------------------
    at_crash = await job_states(db)
    assert set(at_crash) == {m.mac for m in models}
    assert [at_crash[m.mac] for m in models[:QUIET]] == ["notified"] * QUIET
    # The burst's are pending (one may have just been told, between two changes).
    burst = Counter(at_crash[m.mac] for m in models[QUIET:])
    assert set(burst) <= {"pending", "notified"}, at_crash
    assert burst["pending"] >= PHONES - QUIET - 2, at_crash
    # Leases of the killed worker run out after 60 s; moving them into the past is the state
    # of the table the clock would produce (as in tests/test_push.py), without the wait.
    await db.execute(
        "UPDATE push_jobs SET lease_until = now() - interval '1 second' "
        "WHERE lease_until IS NOT NULL"
    )
    # The phones are at another port now: what reaches them from here on came after the restart.
    after = await start_sipp(YEALINK.scenario, calls=10_000)
    await db.execute(
        "UPDATE devices SET sip_contact = replace(sip_contact, $1, $2)",
        f"@127.0.0.1:{before.port}",
        f"@127.0.0.1:{after.port}",
    )
    told_before = len(before.transactions())
    successor = start_server(env)
    await successor.wait_healthy()

    async def settled() -> dict[str, str] | None:
        states = await job_states(db)
        return states if set(states.values()) == {"notified"} else None

    await eventually(settled, "every job notified", within=30)
    # Told once: each phone whose change was not pushed yet (the one the killed process was in
    # the middle of included); none that had been told already.
    pending = {m.mac for m in models if at_crash[m.mac] == "pending"}
    told = Counter(message.request_user for message in after.transactions())
    accounts = {m.mac: sip_account_name(extension(i), m.mac, 1) for i, m in enumerate(models)}
    assert dict(told) == {accounts[mac]: 1 for mac in pending}

    # Every phone fetches and gets its user's PIN as stored; every job completes.
    for i, model in enumerate(models):
        pin = stored[f"user{i}"]

        async def current(model: Model = model, pin: str = pin) -> bool:
            return f"unlock_pin = {pin}\n" in await fetch_config(helper, model)

        await eventually(current, f"{model.mac} serves the stored PIN")

    async def completed() -> bool:
        return set((await job_states(db)).values()) == {"fetched"}

    await eventually(completed, "every job fetched")
    assert len(before.transactions()) == told_before  # nothing for the old address since
    assert await successor.terminate() == 0, successor.describe()
    # Both stored forms of the PIN agree: the verifier accepts what the config carries.
    for i in range(PHONES):
        status, body = await pbx.call(
            "verify-pin", {"extension": extension(i), "pin": stored[f"user{i}"]}
        )
        assert (status, body) == (200, {"valid": True})

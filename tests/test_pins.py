"""PIN changes through the API: admin, self-service, impersonation; storage and push jobs."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from provisioner.pin_verifier import SCHEME, PinVerifier
from provisioner.vault import Vault, pin_purpose
from provisioner.web.keys import CORE
from tests.conftest import Api


async def add_device(db: asyncpg.Connection, mac: str, username: str, slot: int = 1) -> None:
    """Put a device with the user on ``slot`` straight into the tables the device API will own."""
    await db.execute(
        "INSERT INTO devices (mac, vendor, model, kind) VALUES ($1, 'yealink', 'T54W', 'desk') "
        "ON CONFLICT DO NOTHING",
        mac,
    )
    await db.execute(
        "INSERT INTO device_assignments (mac, slot, user_id) "
        "SELECT $1, $2, id FROM users WHERE username = $3",
        mac,
        slot,
        username,
    )


def vault_of(api: Api) -> Vault:
    vault: Vault = api.client.app[CORE].vault
    return vault


async def verifies(
    db: asyncpg.Connection, api: Api, username: str, pin: str, verifier: str
) -> bool:
    """Whether ``verifier`` is the service's keyed verifier of the user's ``pin``."""
    user_id = await db.fetchval("SELECT id FROM users WHERE username = $1", username)
    return bool(api.client.app[CORE].pin_verifier.check(user_id, pin, verifier))


async def stored_pin(db: asyncpg.Connection, api: Api, username: str) -> tuple[str, str]:
    row = await db.fetchrow(
        "SELECT id, pin_hash, pin_encrypted FROM users WHERE username = $1", username
    )
    assert row is not None
    return row["pin_hash"], vault_of(api).decrypt(row["pin_encrypted"], pin_purpose(row["id"]))


async def test_admin_sets_pin_stored_as_verifier_and_ciphertext(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", extension="201")
    status, data = await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    assert status == 200, data
    pin_hash, clear = await stored_pin(db, admin, "alice")
    assert pin_hash.startswith(SCHEME)
    assert await verifies(db, admin, "alice", "480913", pin_hash)
    assert clear == "480913"
    raw = await db.fetchval("SELECT pin_encrypted FROM users WHERE username = 'alice'")
    assert b"480913" not in raw
    row = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'pin.change'")
    assert (row["actor"], row["target_user"], row["impersonator"]) == ("admin", "alice", None)


async def test_pin_change_queues_one_job_per_device_and_folds(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", extension="201")
    await make_user("bob", extension="202")
    await add_device(db, "001565000001", "alice")
    await add_device(db, "001565000002", "alice")
    await add_device(db, "001565000003", "bob")

    status, data = await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    assert status == 200
    assert len(data["push_jobs"]) == 2
    jobs = await db.fetch("SELECT mac, state, reason FROM push_jobs ORDER BY mac")
    assert [(j["mac"], j["state"], j["reason"]) for j in jobs] == [
        ("001565000001", "pending", "pin.change"),
        ("001565000002", "pending", "pin.change"),
    ]

    # A second change before the devices were pushed folds into the open jobs.
    await db.execute("UPDATE push_jobs SET state = 'notified', attempts = 2")
    status, data = await admin.call("PUT", "/users/alice/pin", {"pin": "592014"})
    assert status == 200
    jobs = await db.fetch("SELECT state, attempts FROM push_jobs")
    assert [(j["state"], j["attempts"]) for j in jobs] == [("pending", 0), ("pending", 0)]


async def test_pin_change_is_one_transaction(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    """If queueing the push fails, the PIN and the audit row are rolled back with it."""
    await make_user("alice", extension="201")
    await add_device(db, "001565000001", "alice")
    await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    await db.execute(
        """CREATE FUNCTION fail_push() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'push queue unavailable'; END $$;
           CREATE TRIGGER fail_push BEFORE INSERT OR UPDATE ON push_jobs
           FOR EACH ROW EXECUTE FUNCTION fail_push();"""
    )
    try:
        status, data = await admin.call("PUT", "/users/alice/pin", {"pin": "592014"})
    finally:
        await db.execute("DROP TRIGGER fail_push ON push_jobs; DROP FUNCTION fail_push();")
    assert status == 500
    assert data["error"]["code"] == "internal_error"
    assert (await stored_pin(db, admin, "alice"))[1] == "480913"
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'pin.change'") == 1


async def test_pin_change_waits_for_the_devices_open_job_only_in_its_last_statement(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    """A DECT base's open job is one row that the PIN changes of all its handsets' users
    update: a change waits for it (and then holds it until its commit) only when the rest of
    its transaction is done; the audit row, which names the job, goes in the same statement."""
    from tests.test_push import eventually

    await make_user("alice", extension="201")
    await add_device(db, "001565000001", "alice")
    status, first = await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    assert status == 200, first
    [job] = first["push_jobs"]
    async with db.transaction():
        await db.execute("SELECT 1 FROM push_jobs WHERE id = $1 FOR UPDATE", job)
        change = asyncio.create_task(admin.call("PUT", "/users/alice/pin", {"pin": "592014"}))

        async def waiting() -> int | None:
            pid: int | None = await db.fetchval(
                """SELECT pid FROM pg_stat_activity
                   WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"""
            )
            return pid

        blocked = await eventually(waiting, "the PIN change waits for the job row", within=10)
        holds = await db.fetchval(
            """SELECT array_agg(DISTINCT relation::regclass::text) FROM pg_locks
               WHERE pid = $1 AND locktype = 'relation' AND granted""",
            blocked,
        )
        # Everything else is written already: the user row, and the audit row in this statement.
        assert {"users", "audit_log"} <= set(holds), holds
    status, second = await change
    assert (status, second) == (200, {"push_jobs": [job]})
    audited = await db.fetch(
        "SELECT details -> 'push_jobs' AS jobs FROM audit_log WHERE action = 'pin.change' "
        "ORDER BY id"
    )
    assert [r["jobs"] for r in audited] == [f"[{job}]", f"[{job}]"]


async def test_user_changes_own_pin_but_not_others(admin: Api, make_user: Any) -> None:
    await make_user("alice", "alice-Secret-9", extension="201")
    await make_user("bob", extension="202")
    alice = await admin.as_user("alice", "alice-Secret-9")
    status, _ = await alice.call("PUT", "/me/pin", {"pin": "480913"})
    assert status == 200
    status, data = await alice.call("PUT", "/users/bob/pin", {"pin": "480913"})
    assert (status, data["error"]["code"]) == (403, "forbidden")
    status, me = await alice.call("GET", "/me")
    assert me["pin_set"] is True


async def test_impersonated_pin_change_names_both(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", extension="201")
    status, data = await admin.call("POST", "/users/alice/impersonate")
    assert status == 200
    as_alice = Api(admin.client, data["token"])
    status, me = await as_alice.call("GET", "/me")
    assert (me["username"], me["impersonator"]) == ("alice", "admin")
    status, _ = await as_alice.call("PUT", "/me/pin", {"pin": "480913"})
    assert status == 200
    row = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'pin.change'")
    assert (row["actor"], row["impersonator"], row["target_user"]) == ("alice", "admin", "alice")


@pytest.mark.parametrize(
    ("pin", "reason"),
    [("12a456", "not_digits"), ("480 913", "not_digits"), ("4809", "length"),
     ("111111", "repeated"), ("234567", "sequence"), ("000201", None), ("112233", "common")],
)  # fmt: skip
async def test_pin_policy_refusals_change_nothing(
    admin: Api, make_user: Any, db: asyncpg.Connection, pin: str, reason: str | None
) -> None:
    await make_user("alice", extension="000201")
    await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    status, data = await admin.call("PUT", "/users/alice/pin", {"pin": pin})
    if pin == "000201":  # the user's own extension
        reason = "extension"
    assert status == 422
    assert data["error"]["code"] == "pin_policy"
    assert data["error"]["reason"] == reason
    assert (await stored_pin(db, admin, "alice"))[1] == "480913"


async def test_min_length_setting_applies(make_client: Any) -> None:
    from tests.conftest import bootstrap_admin

    admin = await bootstrap_admin(await make_client(pin_min_length="8"))
    await admin.call("POST", "/users", {"username": "alice", "display_name": "Alice"})
    status, data = await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    assert (status, data["error"]["reason"]) == (422, "length")
    status, _ = await admin.call("PUT", "/users/alice/pin", {"pin": "48091357"})
    assert status == 200


async def test_pin_change_clears_lockout(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", extension="201")
    await db.execute(
        "UPDATE users SET pin_failures = 10, pin_lockouts = 2, "
        "pin_locked_until = now() + interval '1 hour' WHERE username = 'alice'"
    )
    status, _ = await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    assert status == 200
    row = await db.fetchrow("SELECT pin_failures, pin_lockouts, pin_locked_until FROM users")
    assert tuple(row) == (0, 0, None)


async def test_concurrent_pin_changes_end_consistent(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", extension="201")
    await add_device(db, "001565000001", "alice")
    candidates = ["480913", "592014", "603125", "714236", "825347", "936458"]
    results = await asyncio.gather(
        *(admin.call("PUT", "/users/alice/pin", {"pin": pin}) for pin in candidates)
    )
    assert [status for status, _ in results] == [200] * len(candidates)
    pin_hash, clear = await stored_pin(db, admin, "alice")
    assert clear in candidates
    assert await verifies(db, admin, "alice", clear, pin_hash), "verifier, ciphertext disagree"
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'pin.change'") == 6
    assert await db.fetchval("SELECT count(*) FROM push_jobs WHERE state = 'pending'") == 1


async def test_unknown_user(admin: Api) -> None:
    status, data = await admin.call("PUT", "/users/nobody/pin", {"pin": "480913"})
    assert (status, data["error"]["code"]) == (404, "user_not_found")


# --- the keyed verifier --------------------------------------------------------------------------


async def test_pin_verifiers_are_keyed_and_bound_to_the_user(
    admin: Api, make_user: Any, db: asyncpg.Connection, tmp_path: Any
) -> None:
    """Two users with one PIN get different verifiers; another key verifies neither."""
    await make_user("alice", extension="201")
    await make_user("bob", extension="202")
    for name in ("alice", "bob"):
        assert (await admin.call("PUT", f"/users/{name}/pin", {"pin": "480913"}))[0] == 200
    alice, _ = await stored_pin(db, admin, "alice")
    bob, _ = await stored_pin(db, admin, "bob")
    assert alice != bob
    assert "480913" not in alice
    alice_id = await db.fetchval("SELECT id FROM users WHERE username = 'alice'")
    other = PinVerifier(Vault.from_key_file(tmp_path / "other.key"))
    assert not other.check(alice_id, "480913", alice)
    assert await verifies(db, admin, "alice", "480913", alice)
    assert not await verifies(db, admin, "alice", "480914", alice)


async def test_argon2_verifiers_of_earlier_versions_are_replaced_from_the_copy(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    from passlib.hash import argon2

    from provisioner.pin_verifier import rekey_argon2_verifiers

    await make_user("alice", extension="201")
    await make_user("bob", extension="202")
    core = admin.client.app[CORE]
    ids = {r["username"]: r["id"] for r in await db.fetch("SELECT id, username FROM users")}
    # As an earlier version stored them: argon2id verifier, AES-GCM copy; bob's copy is broken.
    for name, pin in (("alice", "480913"), ("bob", "592014")):
        # Both copies under alice's purpose: bob's does not decrypt as his.
        copy = core.vault.encrypt(pin, pin_purpose(ids["alice"]))
        await db.execute(
            "UPDATE users SET pin_hash = $2, pin_encrypted = $3 WHERE username = $1",
            name,
            argon2.using(type="ID", memory_cost=4096, rounds=1).hash(pin),
            copy,
        )
    assert await rekey_argon2_verifiers(core.vault, core.pool) == 1
    alice, clear = await stored_pin(db, admin, "alice")
    assert clear == "480913"
    assert await verifies(db, admin, "alice", "480913", alice)
    bob = await db.fetchrow("SELECT pin_hash, pin_encrypted FROM users WHERE username = 'bob'")
    assert (bob["pin_hash"], bob["pin_encrypted"]) == (None, None)  # set it again
    assert await rekey_argon2_verifiers(core.vault, core.pool) == 0
    # The PBX checks the re-keyed verifier like any other.
    assert (await admin.call("GET", "/users/bob"))[1]["pin_set"] is False

"""The PBX hooks: signatures, PIN checks with lockout, hot-desk login/logout, registration."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner.web.hooks import SIGNATURE_HEADER, sign
from tests.conftest import Api, bootstrap_admin

SECRET = "pbx-shared-secret-for-tests"


class Pbx:
    """Signs requests the way the PBX does.

    Two identical requests signed in the same second carry the same signature, which the
    service refuses as a replay; so each call here is signed a distinct second in the past
    (all within the 300 s window), as a PBX repeating a request a second later would.
    """

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.calls = 0
        self.started = int(time.time())

    async def call(
        self, hook: str, body: Any, *, at: int | None = None, header: str | None = None
    ) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        self.calls += 1
        stamp = self.started - self.calls if at is None else at
        signature = header or sign(SECRET, stamp, raw)
        async with self.client.post(
            f"/hooks/pbx/{hook}", data=raw, headers={SIGNATURE_HEADER: signature}
        ) as response:
            return response.status, await response.json()


@pytest.fixture
async def setup(make_client: Any) -> tuple[Api, Pbx]:
    client = await make_client(hook_secret=SECRET)
    admin = await bootstrap_admin(client)
    await admin.call("PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
    for name, ext in (("alice", "201"), ("bob", "202")):
        await admin.call(
            "POST", "/users", {"username": name, "display_name": name, "extension": ext}
        )
        await admin.call(
            "PUT", f"/users/{name}/pin", {"pin": "480913" if name == "alice" else "592014"}
        )
    for mac in ("001565000001", "001565000002"):
        status, _ = await admin.call(
            "POST", "/devices", {"mac": mac, "vendor": "yealink", "model": "T54W"}
        )
        assert status == 201
    return admin, Pbx(client)


async def test_signature_checks(setup: tuple[Api, Pbx]) -> None:
    _, pbx = setup
    body = {"extension": "201", "pin": "480913"}
    status, data = await pbx.call("verify-pin", body)
    assert (status, data) == (200, {"valid": True})
    status, data = await pbx.call("verify-pin", body, header="t=1,v1=" + "0" * 64)
    assert (status, data["error"]["code"]) == (401, "signature_expired")
    status, data = await pbx.call("verify-pin", body, header=f"t={int(time.time())},v1=" + "0" * 64)
    assert (status, data["error"]["code"]) == (401, "signature_invalid")
    status, data = await pbx.call("verify-pin", body, at=int(time.time()) - 301)
    assert (status, data["error"]["code"]) == (401, "signature_expired")
    status, data = await pbx.call("verify-pin", body, header="garbage")
    assert (status, data["error"]["code"]) == (401, "signature_invalid")
    # The same signed request sent twice: the second is a replay.
    raw = json.dumps(body).encode()
    header = sign(SECRET, pbx.started + 1, raw)  # a second no other call uses
    answers = []
    for _ in range(2):
        async with pbx.client.post(
            "/hooks/pbx/verify-pin", data=raw, headers={SIGNATURE_HEADER: header}
        ) as response:
            answers.append((response.status, await response.json()))
    assert answers[0] == (200, {"valid": True})
    assert (answers[1][0], answers[1][1]["error"]["code"]) == (401, "signature_replayed")


async def test_hooks_without_secret_answer_503(make_client: Any) -> None:
    client = await make_client(hook_secret="")
    status, data = await Pbx(client).call("verify-pin", {"extension": "201", "pin": "480913"})
    assert (status, data["error"]["code"]) == (503, "hooks_not_configured")


async def test_verify_pin(setup: tuple[Api, Pbx]) -> None:
    _, pbx = setup
    assert (await pbx.call("verify-pin", {"extension": "201", "pin": "480913"}))[1] == {
        "valid": True
    }
    assert (await pbx.call("verify-pin", {"extension": "201", "pin": "000000"}))[1] == {
        "valid": False
    }
    assert (await pbx.call("verify-pin", {"extension": "999", "pin": "480913"}))[1] == {
        "valid": False
    }
    status, data = await pbx.call("verify-pin", {"extension": "201", "pin": 480913})
    assert (status, data["error"]["code"]) == (400, "field_type")


async def test_pin_lockout_and_admin_reset(setup: tuple[Api, Pbx], db: asyncpg.Connection) -> None:
    admin, pbx = setup
    login = {"extension": "201", "mac": "001565000001"}
    for attempt in range(1, 10):
        status, data = await pbx.call("pin-login", {**login, "pin": "111222"})
        assert (status, data["error"]["code"]) == (403, "pin_invalid"), attempt
    status, data = await pbx.call("pin-login", {**login, "pin": "111222"})
    assert (status, data["error"]["code"]) == (423, "pin_locked")
    # The right PIN is refused too until the cool-down ends.
    status, data = await pbx.call("pin-login", {**login, "pin": "480913"})
    assert (status, data["error"]["code"]) == (423, "pin_locked")
    status, data = await pbx.call("verify-pin", {"extension": "201", "pin": "480913"})
    assert status == 200
    assert data["valid"] is False
    assert data["locked_until"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'pin.locked'") == 1
    # An admin's PIN change lifts the lock.
    assert (await admin.call("PUT", "/users/alice/pin", {"pin": "603125"}))[0] == 200
    status, data = await pbx.call("pin-login", {**login, "pin": "603125"})
    assert (status, data) == (200, {"user": "alice", "device": "001565000001"})


async def test_lock_escalates(setup: tuple[Api, Pbx], db: asyncpg.Connection) -> None:
    _, pbx = setup
    for _ in range(10):
        await pbx.call("verify-pin", {"extension": "201", "pin": "111222"})
    first = await db.fetchval("SELECT pin_locked_until - now() FROM users WHERE username='alice'")
    await db.execute("UPDATE users SET pin_locked_until = now() - interval '1 s'")
    for _ in range(10):
        await pbx.call("verify-pin", {"extension": "201", "pin": "111222"})
    second = await db.fetchval("SELECT pin_locked_until - now() FROM users WHERE username='alice'")
    assert second.total_seconds() > first.total_seconds() * 1.5


async def test_pin_login_moves_the_user_and_logout(
    setup: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    admin, pbx = setup
    status, data = await pbx.call(
        "pin-login", {"extension": "201", "pin": "480913", "mac": "00:15:65:00:00:01"}
    )
    assert (status, data) == (200, {"user": "alice", "device": "001565000001"})
    first = await db.fetchval("SELECT revision FROM devices WHERE mac = '001565000001'")
    status, device = await admin.call("GET", "/devices/001565000001")
    assert [a["username"] for a in device["assignments"]] == ["alice"]

    status, data = await pbx.call(
        "pin-login", {"extension": "201", "pin": "480913", "mac": "001565000002"}
    )
    assert status == 200
    assert (await admin.call("GET", "/devices/001565000001"))[1]["assignments"] == []
    assert [
        a["username"] for a in (await admin.call("GET", "/devices/001565000002"))[1]["assignments"]
    ] == ["alice"]
    assert await db.fetchval("SELECT revision FROM devices WHERE mac = '001565000001'") > first
    jobs = {r["mac"] for r in await db.fetch("SELECT mac FROM push_jobs WHERE state = 'pending'")}
    assert jobs == {"001565000001", "001565000002"}
    row = await db.fetchrow(
        "SELECT * FROM audit_log WHERE action = 'hotdesk.login' ORDER BY id DESC LIMIT 1"
    )
    assert (row["actor"], row["target_user"]) == ("pbx", "alice")
    assert "480913" not in str(tuple(row))

    status, data = await pbx.call("logout", {"mac": "001565000002"})
    assert (status, data) == (200, {"logged_out": ["alice"]})
    assert (await admin.call("GET", "/devices/001565000002"))[1]["assignments"] == []


async def test_a_hot_desk_login_parks_the_phones_own_line_until_logout(
    setup: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    """bob's own phone: alice logs in there, bob's line waits (not deleted, not registrable)
    and comes back with the same SIP account and password when she leaves."""
    admin, pbx = setup
    bobs, other = "001565000001", "001565000002"
    status, _ = await admin.call(
        "PUT", f"/devices/{bobs}/assignments", [{"slot": 1, "username": "bob"}]
    )
    assert status == 200
    await admin.settled()
    line = "SELECT sip_auth_user, sip_password_encrypted FROM device_assignments WHERE mac = $1"
    own = await db.fetchrow(line, bobs)
    assert own is not None
    registrable = "SELECT username FROM pbx.subscriber ORDER BY username"
    assert await db.fetchval(registrable) == own["sip_auth_user"]

    status, _ = await pbx.call("pin-login", {"extension": "201", "pin": "480913", "mac": bobs})
    assert status == 200
    await admin.settled()
    device = (await admin.call("GET", f"/devices/{bobs}"))[1]
    assert [(a["username"], a["sip_user"]) for a in device["assignments"]] == [
        ("alice", f"201-{bobs}-1")
    ]
    assert [r["username"] for r in await db.fetch(registrable)] == [f"201-{bobs}-1"]

    # alice moves on to another phone: bob's phone is his again, same account, same password.
    status, _ = await pbx.call("pin-login", {"extension": "201", "pin": "480913", "mac": other})
    assert status == 200
    await admin.settled()
    assert tuple(await db.fetchrow(line, bobs)) == tuple(own)
    assert [r["username"] for r in await db.fetch(registrable)] == sorted(
        [own["sip_auth_user"], f"201-{other}-1"]
    )

    # And by logout: alice at bob's phone once more, then the PBX logs her out there.
    await pbx.call("pin-login", {"extension": "201", "pin": "480913", "mac": bobs})
    assert (await pbx.call("logout", {"mac": bobs}))[1] == {"logged_out": ["alice"]}
    await admin.settled()
    assert tuple(await db.fetchrow(line, bobs)) == tuple(own)
    assert await db.fetchval("SELECT count(*) FROM parked_assignments") == 0

    # An admin's new assignments are the truth: a parked line does not come back over them.
    await pbx.call("pin-login", {"extension": "201", "pin": "480913", "mac": bobs})
    status, _ = await admin.call("PUT", f"/devices/{bobs}/assignments", [])
    assert status == 200
    await pbx.call("logout", {"mac": bobs})
    assert (await admin.call("GET", f"/devices/{bobs}"))[1]["assignments"] == []


async def test_pin_login_refusals(setup: tuple[Api, Pbx]) -> None:
    _, pbx = setup
    status, data = await pbx.call(
        "pin-login", {"extension": "201", "pin": "480913", "mac": "0015650000ff"}
    )
    assert (status, data["error"]["code"]) == (404, "device_not_found")
    status, data = await pbx.call("pin-login", {"extension": "201", "pin": "480913", "mac": "nope"})
    assert (status, data["error"]["code"]) == (422, "mac_invalid")
    status, data = await pbx.call("pin-login", {"extension": "201", "pin": "480913"})
    assert (status, data["error"]["code"]) == (400, "field_missing")
    status, data = await pbx.call(
        "pin-login", {"extension": "777", "pin": "480913", "mac": "001565000001"}
    )
    assert (status, data["error"]["code"]) == (404, "user_not_found")


async def test_registered_stores_the_contact(
    setup: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    admin, pbx = setup
    await admin.call("PUT", "/devices/001565000001/assignments", [{"slot": 1, "username": "alice"}])
    ua = "Yealink SIP-T54W 96.86.0.70 00:15:65:00:00:01"
    status, data = await pbx.call(
        "registered", {"extension": "201", "contact": "sip:201@10.0.0.5:5060", "user_agent": ua}
    )
    assert (status, data) == (200, {"device": "001565000001"})
    row = await db.fetchrow(
        "SELECT sip_contact, sip_user_agent, registered_at FROM devices WHERE mac='001565000001'"
    )
    assert row["sip_contact"] == "sip:201@10.0.0.5:5060"
    assert row["sip_user_agent"] == ua
    assert row["registered_at"] is not None
    # Without a MAC anywhere, the extension's single device is meant.
    status, data = await pbx.call(
        "registered", {"extension": "201", "contact": "sip:201@10.0.0.6:5060", "user_agent": "x"}
    )
    assert (status, data) == (200, {"device": "001565000001"})
    status, data = await pbx.call(
        "registered", {"extension": "201", "contact": "not a uri", "user_agent": ua}
    )
    assert (status, data["error"]["code"]) == (422, "contact_invalid")


async def test_reprovision_hook(setup: tuple[Api, Pbx], db: asyncpg.Connection) -> None:
    admin, pbx = setup
    await admin.call("PUT", "/devices/001565000002/assignments", [{"slot": 1, "username": "bob"}])
    await db.execute("DELETE FROM push_jobs")
    status, data = await pbx.call("reprovision", {"extension": "202"})
    assert status == 202
    assert len(data["jobs"]) == 1
    status, data = await pbx.call("reprovision", {"mac": "001565000001"})
    assert status == 202
    status, data = await pbx.call("reprovision", {})
    assert (status, data["error"]["code"]) == (400, "field_missing")
    assert await db.fetchval("SELECT count(*) FROM push_jobs WHERE reason = 'reprovision'") == 2

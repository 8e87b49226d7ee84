"""Disabled users: kept with their devices, but no sign-in, no token and no PIN check.

An admin disables a user with ``PATCH /users/{username} {"disabled": true}``; the directory
sync disables users who left the directory the same way (``disabled_by`` says which).
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner.web.hooks import SIGNATURE_HEADER, sign
from tests.conftest import Api, bootstrap_admin

SECRET = "pbx-secret-for-disabled-users"
PW = "Alice-Passw0rd-1"
PIN = "480913"
MAC = "001565aabb72"


@pytest.fixture
async def service(make_client: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await make_client(hook_secret=SECRET)
    return client


@pytest.fixture
async def admin(service: TestClient[Any, Any]) -> Api:
    admin = await bootstrap_admin(service)
    body = {"username": "alice", "display_name": "Alice", "extension": "201"}
    assert (await admin.call("POST", "/users", body))[0] == 201
    password = {"mode": "set", "password": PW, "temporary": False}
    assert (await admin.call("POST", "/users/alice/password", password))[0] == 200
    assert (await admin.call("PUT", "/users/alice/pin", {"pin": PIN}))[0] == 200
    device = {"mac": MAC, "vendor": "yealink", "model": "T54W"}
    assert (await admin.call("POST", "/devices", device))[0] == 201
    lines = [{"slot": 1, "username": "alice"}]
    assert (await admin.call("PUT", f"/devices/{MAC}/assignments", lines))[0] == 200
    return admin


async def hook(service: TestClient[Any, Any], name: str, body: Any, stamp: int) -> tuple[int, Any]:
    raw = json.dumps(body).encode()
    headers = {SIGNATURE_HEADER: sign(SECRET, stamp, raw), "Content-Type": "application/json"}
    async with service.post(f"/hooks/pbx/{name}", data=raw, headers=headers) as response:
        return response.status, await response.json()


async def test_a_disabled_user_keeps_devices_but_cannot_sign_in_or_check_a_pin(
    service: TestClient[Any, Any], admin: Api, db: asyncpg.Connection
) -> None:
    alice = await admin.as_user("alice", PW)
    impersonating = (await admin.call("POST", "/users/alice/impersonate"))[1]["token"]
    stamp = int(time.time())
    status, data = await hook(service, "verify-pin", {"extension": "201", "pin": PIN}, stamp - 1)
    assert (status, data["valid"]) == (200, True)

    status, user = await admin.call("PATCH", "/users/alice", {"disabled": True})
    assert status == 200
    assert (user["disabled"], user["disabled_by"]) == (True, "admin")
    assert user["disabled_at"] is not None

    # Every token of the user is dead: their own and an admin's impersonation token.
    assert (await alice.call("GET", "/me"))[0] == 401
    assert (await admin.call("GET", "/me", token=impersonating))[0] == 401
    # The right password opens nothing; the refusal is audited without the password.
    status, data = await admin.login("alice", PW)
    assert (status, data["error"]["code"]) == (403, "user_disabled")
    status, data = await admin.login("alice", "wrong-" + PW)
    assert (status, data["error"]["code"]) == (401, "invalid_credentials")
    refused = await db.fetchrow(
        "SELECT actor, source, details FROM audit_log"
        " WHERE action = 'auth.login_refused' AND target_user = 'alice'"
    )
    assert json.loads(refused["details"]) == {"reason": "disabled"}
    assert (refused["actor"], refused["source"]) == ("alice", "127.0.0.1")
    # The PBX learns the PIN is not valid, and a hot-desk login is refused; no PIN is checked.
    failures_before = await db.fetchval("SELECT pin_failures FROM users WHERE username = 'alice'")
    status, data = await hook(service, "verify-pin", {"extension": "201", "pin": PIN}, stamp - 2)
    assert (status, data["valid"]) == (200, False)
    body = {"extension": "201", "pin": PIN, "mac": MAC}
    status, data = await hook(service, "pin-login", body, stamp - 3)
    assert (status, data["error"]["code"]) == (403, "user_disabled")
    assert (
        await db.fetchval("SELECT pin_failures FROM users WHERE username = 'alice'")
        == failures_before
    )
    # The device keeps the user's line.
    status, device = await admin.call("GET", f"/devices/{MAC}")
    assert [a["username"] for a in device["assignments"]] == ["alice"]

    # Enabled again: the password works, the PIN is valid.
    status, user = await admin.call("PATCH", "/users/alice", {"disabled": False})
    assert (status, user["disabled"], user["disabled_by"]) == (200, False, None)
    assert (await admin.as_user("alice", PW)).token
    status, data = await hook(service, "verify-pin", {"extension": "201", "pin": PIN}, stamp - 4)
    assert (status, data["valid"]) == (200, True)
    actions = await db.fetch(
        "SELECT details FROM audit_log WHERE action = 'user.update' AND target_user = 'alice'"
        " ORDER BY id"
    )
    assert [json.loads(a["details"]).get("disabled") for a in actions][-2:] == [True, False]


async def test_the_last_admin_cannot_be_disabled_nor_anyone_themselves(
    admin: Api, db: asyncpg.Connection
) -> None:
    status, data = await admin.call("PATCH", "/users/admin", {"disabled": True})
    assert (status, data["error"]["code"]) == (409, "cannot_disable_self")
    assert (await admin.call("PATCH", "/users/alice", {"role": "admin"}))[0] == 200
    alice = await admin.as_user("alice", PW)
    # Alice may disable the other admin once; then she is the last one and cannot be disabled.
    status, user = await alice.call("PATCH", "/users/admin", {"disabled": True})
    assert (status, user["disabled"]) == (200, True)
    assert (await admin.call("GET", "/me"))[0] == 401
    # A disabled admin does not count: demoting alice now would leave nobody.
    status, data = await alice.call("PATCH", "/users/alice", {"role": "user"})
    assert (status, data["error"]["code"]) == (409, "last_admin")
    assert (
        await db.fetchval("SELECT count(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL")
        == 1
    )


async def test_disabled_is_a_boolean(admin: Api) -> None:
    status, data = await admin.call("PATCH", "/users/alice", {"disabled": "yes"})
    assert (status, data["error"]["code"]) == (400, "field_type")

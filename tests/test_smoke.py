from __future__ import annotations

from typing import Any

from tests.conftest import Api


async def test_healthz(client: Any) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json()) == {
        "status": "ok",
        "parts": {
            "database": "up",
            "device_cache": "up",
            "fetch_recorder": "up",
        },
    }


async def test_admin_creates_user_and_sets_pin(admin: Api, make_user: Any) -> None:
    await make_user("alice", extension="201", email="alice@example.net")
    status, data = await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    assert status == 200, data
    status, user = await admin.call("GET", "/users/alice")
    assert user["pin_set"] is True

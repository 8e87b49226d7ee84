"""Users CRUD, logins, roles, throttling, impersonation and the audit log."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from provisioner import passwords
from provisioner.web.keys import CORE
from tests.conftest import ADMIN_PASSWORD, Api

PW = "Alice-Passw0rd-1"


async def test_create_user_defaults_and_view(admin: Api) -> None:
    status, user = await admin.call(
        "POST", "/users", {"username": "alice", "display_name": "Alice Ärger", "extension": "201"}
    )
    assert status == 201
    assert user["auth_backend"] == "local"
    assert user["language"] == "de"
    assert user["role"] == "user"
    assert user["pin_set"] is False
    assert user["password_set"] is False
    assert not {"pin_hash", "password_hash", "pin_encrypted"} & user.keys()
    status, again = await admin.call("GET", "/users/alice")
    assert (status, again["display_name"]) == (200, "Alice Ärger")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "Alice", "display_name": "A"}, "username_invalid"),
        ({"username": "a b", "display_name": "A"}, "username_invalid"),
        ({"username": "ä", "display_name": "A"}, "username_invalid"),
        ({"username": "x" * 65, "display_name": "A"}, "username_invalid"),
        ({"username": "alice", "display_name": ""}, "display_name_invalid"),
        ({"username": "alice", "display_name": "A\nB"}, "display_name_invalid"),
        ({"username": "alice", "display_name": "A", "extension": "20a"}, "extension_invalid"),
        ({"username": "alice", "display_name": "A", "email": "no-at-sign"}, "email_invalid"),
        ({"username": "alice", "display_name": "A", "auth_backend": "krb"}, "auth_backend_invalid"),
        ({"username": "alice", "display_name": "A", "language": "fr"}, "language_invalid"),
        ({"username": "alice", "display_name": "A", "role": "root"}, "role_invalid"),
    ],
)  # fmt: skip
async def test_create_user_refusals(
    admin: Api, db: asyncpg.Connection, body: dict[str, str], code: str
) -> None:
    status, data = await admin.call("POST", "/users", body)
    assert (status, data["error"]["code"]) == (400, code)
    assert await db.fetchval("SELECT count(*) FROM users") == 1  # the admin only


async def test_username_and_extension_are_unique(admin: Api, make_user: Any) -> None:
    await make_user("alice", extension="201")
    status, data = await admin.call("POST", "/users", {"username": "alice", "display_name": "A"})
    assert (status, data["error"]["code"]) == (409, "username_taken")
    status, data = await admin.call(
        "POST", "/users", {"username": "bob", "display_name": "B", "extension": "201"}
    )
    assert (status, data["error"]["code"]) == (409, "extension_taken")


async def test_update_user(admin: Api, make_user: Any, db: asyncpg.Connection) -> None:
    await make_user("alice", extension="201", email="alice@example.net")
    await make_user("bob", extension="202")
    status, user = await admin.call(
        "PATCH", "/users/alice", {"display_name": "Alice B.", "email": None, "language": "en"}
    )
    assert status == 200
    assert (user["display_name"], user["email"], user["language"]) == ("Alice B.", None, "en")
    status, data = await admin.call("PATCH", "/users/alice", {"extension": "202"})
    assert (status, data["error"]["code"]) == (409, "extension_taken")
    status, data = await admin.call("PATCH", "/users/alice", {"username": "eve"})
    assert (status, data["error"]["code"]) == (400, "field_unknown")
    status, data = await admin.call("PATCH", "/users/alice", {"display_name": None})
    assert (status, data["error"]["code"]) == (400, "field_type")
    row = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'user.update'")
    assert json.loads(row["details"])["fields"] == ["display_name", "email", "language"]


async def test_delete_user(admin: Api, make_user: Any) -> None:
    await make_user("alice")
    assert (await admin.call("DELETE", "/users/alice"))[0] == 204
    status, data = await admin.call("GET", "/users/alice")
    assert (status, data["error"]["code"]) == (404, "user_not_found")
    status, data = await admin.call("DELETE", "/users/admin")
    assert (status, data["error"]["code"]) == (409, "cannot_delete_self")


async def test_list_users_search_and_paging(admin: Api, make_user: Any) -> None:
    for i in range(12):
        await make_user(f"user{i:02d}", extension=f"3{i:02d}")
    status, page = await admin.call("GET", "/users?limit=5&offset=5")
    assert status == 200
    assert page["total"] == 13
    assert [u["username"] for u in page["users"]] == [f"user{i:02d}" for i in range(4, 9)]
    status, found = await admin.call("GET", "/users?search=307")
    assert [u["username"] for u in found["users"]] == ["user07"]
    status, data = await admin.call("GET", "/users?limit=0")
    assert (status, data["error"]["code"]) == (400, "query_invalid")


# --- login and tokens ---------------------------------------------------------------------------


async def test_login_failures_are_indistinguishable(admin: Api, make_user: Any) -> None:
    await make_user("alice", PW)
    await make_user("lena", auth_backend="ldap")
    for username, password in [("alice", "wrong-Passw0rd"), ("nobody", PW), ("lena", PW)]:
        status, data = await admin.login(username, password)
        assert (status, data["error"]["code"]) == (401, "invalid_credentials")


async def test_login_is_throttled_per_account(admin: Api, make_user: Any) -> None:
    await make_user("alice", PW)
    await make_user("bob", PW)
    for _ in range(5):
        assert (await admin.login("alice", "wrong-Passw0rd"))[0] == 401
    assert (await admin.login("alice", "wrong-Passw0rd"))[0] == 401
    async with admin.client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PW}
    ) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) > 0
        assert (await response.json())["error"]["code"] == "login_rate_limited"
    assert (await admin.login("bob", PW))[0] == 200, "other accounts are unaffected"


async def test_tokens(admin: Api, make_user: Any) -> None:
    await make_user("alice", PW)
    status, data = await Api(admin.client).call("GET", "/me")
    assert (status, data["error"]["code"]) == (401, "unauthenticated")
    status, data = await Api(admin.client, "made-up").call("GET", "/me")
    assert (status, data["error"]["code"]) == (401, "token_invalid")
    alice = await admin.as_user("alice", PW)
    assert (await alice.call("POST", "/auth/logout"))[0] == 204
    assert (await alice.call("GET", "/me"))[0] == 401


async def test_users_reach_only_me(admin: Api, make_user: Any) -> None:
    await make_user("alice", PW)
    alice = await admin.as_user("alice", PW)
    for method, path in [("GET", "/users"), ("GET", "/users/alice"), ("GET", "/audit"),
                         ("POST", "/users/admin/impersonate")]:  # fmt: skip
        status, data = await alice.call(method, path)
        assert (status, data["error"]["code"]) == (403, "forbidden"), path
    status, me = await alice.call("GET", "/me")
    assert (status, me["username"], me["impersonator"]) == (200, "alice", None)


async def test_impersonation_acts_with_the_users_rights(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", PW)
    status, session = await admin.call("POST", "/users/alice/impersonate")
    assert status == 200
    as_alice = Api(admin.client, session["token"])
    assert (await as_alice.call("GET", "/users"))[0] == 403
    row = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'auth.impersonate'")
    assert (row["actor"], row["target_user"]) == ("admin", "alice")
    # The impersonation dies with the admin's credentials.
    await admin.call(
        "POST", "/users/admin/password", {"mode": "set", "password": "Another-Adm1n-pw"}
    )
    assert (await as_alice.call("GET", "/me"))[0] == 401


async def test_bootstrap_admin(client: Any, db: asyncpg.Connection) -> None:
    core = client.app[CORE]
    generated = await passwords.bootstrap_admin(core, None)
    assert generated is not None
    assert len(generated) >= 16
    assert await passwords.bootstrap_admin(core, None) is None, "only on an empty database"
    status, session = await Api(client).login("admin", generated)
    assert (status, session["password_change_required"]) == (200, True)
    await db.execute("DELETE FROM users")
    assert await passwords.bootstrap_admin(core, ADMIN_PASSWORD) is None
    status, session = await Api(client).login("admin", ADMIN_PASSWORD)
    assert (status, session["password_change_required"]) == (200, False)


# --- audit --------------------------------------------------------------------------------------


async def test_audit_filters(admin: Api, make_user: Any) -> None:
    await make_user("alice", PW)
    await make_user("bob")
    await admin.call("PUT", "/users/bob/pin", {"pin": "480913"})
    status, data = await admin.call("GET", "/audit?user=bob")
    assert status == 200
    assert [e["action"] for e in data["entries"]] == ["pin.change", "user.create"]
    entry = data["entries"][0]
    assert (entry["actor"], entry["user"], entry["source"]) == ("admin", "bob", "127.0.0.1")
    status, data = await admin.call("GET", "/audit?action=password")
    assert {e["action"] for e in data["entries"]} == {"password.change"}
    status, data = await admin.call("GET", "/audit?since=2999-01-01T00:00:00Z")
    assert data["entries"] == []
    status, data = await admin.call("GET", "/audit?since=yesterday")
    assert (status, data["error"]["code"]) == (400, "query_invalid")
    status, first = await admin.call("GET", "/audit?limit=2")
    status, rest = await admin.call("GET", f"/audit?before={first['entries'][-1]['id']}")
    ids = [e["id"] for e in first["entries"] + rest["entries"]]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)

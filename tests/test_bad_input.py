"""Malformed requests get a clear 4xx with a code, never a 500, and change nothing."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
import pytest

from tests.conftest import Api, MailSink, mailed_password

PW = "Alice-Passw0rd-1"


@pytest.fixture
async def alice(admin: Api, make_user: Any, db: asyncpg.Connection) -> None:
    await make_user("alice", PW, extension="201", email="alice@example.net")
    await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})


async def snapshot(db: asyncpg.Connection) -> tuple[Any, ...]:
    users = await db.fetch("SELECT * FROM users ORDER BY id")
    audit = await db.fetchval("SELECT count(*) FROM audit_log WHERE action NOT LIKE 'auth.%'")
    jobs = await db.fetchval("SELECT count(*) FROM push_jobs")
    return tuple(tuple(u) for u in users), audit, jobs


RAW_CASES = [
    # (method, path, body bytes, content type, status, code)
    ("PUT", "/users/alice/pin", b"{not json", "application/json", 400, "json_invalid"),
    ("PUT", "/users/alice/pin", b"\xff\xfe", "application/json", 400, "json_invalid"),
    ("PUT", "/users/alice/pin", b'["480913"]', "application/json", 400, "body_invalid"),
    ("PUT", "/users/alice/pin", b'"480913"', "application/json", 400, "body_invalid"),
    ("PUT", "/users/alice/pin", b"pin=480913", "application/x-www-form-urlencoded", 400,
     "content_type_invalid"),
    ("PUT", "/users/alice/pin", b"{}", "application/json", 400, "field_missing"),
    ("PUT", "/users/alice/pin", b'{"pin": 592014}', "application/json", 400, "field_type"),
    ("PUT", "/users/alice/pin", b'{"pin": null}', "application/json", 400, "field_type"),
    ("PUT", "/users/alice/pin", b'{"pin": "592014", "x": 1}', "application/json", 400,
     "field_unknown"),
    ("PUT", "/users/alice/pin", b'{"pin": " 592014"}', "application/json", 422, "pin_policy"),
    ("PUT", "/users/alice/pin", b'{"pin": "59201\\u0034"}', "application/json", 200, None),
    ("PUT", "/users/nobody/pin", b'{"pin": "592014"}', "application/json", 404, "user_not_found"),
    ("POST", "/users/alice/password", b'{"mode": "set", "password": ["x"]}', "application/json",
     400, "field_type"),
    ("POST", "/users/alice/password", b'{"mode": "set", "password": "x", "temporary": "no"}',
     "application/json", 400, "field_type"),
    ("POST", "/users/alice/password", b'{"mode": "set", "password": "' + b"a" * 5000 + b'"}',
     "application/json", 422, "password_policy"),
    ("POST", "/users/alice/password",
     json.dumps({"mode": "set", "password": "Pässwörter-sind-gut"}).encode(),
     "application/json", 422, "password_policy"),
    ("POST", "/users/alice/password", b'{"mode": 1}', "application/json", 400, "field_type"),
    ("POST", "/users", b'{"username": "bob", "display_name": "B", "extension": 201}',
     "application/json", 400, "field_type"),
    ("POST", "/users", b'{"username": "bob", "display_name": "B", "role": true}',
     "application/json", 400, "field_type"),
    ("PATCH", "/users/alice", b'{"language": "xx"}', "application/json", 400, "language_invalid"),
    ("POST", "/auth/login", b'{"username": "alice"}', "application/json", 400, "field_missing"),
    ("POST", "/auth/login", b'{"username": "alice", "password": 1}', "application/json", 400,
     "field_type"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "ctype", "status", "code"), RAW_CASES)
@pytest.mark.usefixtures("alice")
async def test_bad_bodies(
    admin: Api,
    db: asyncpg.Connection,
    method: str,
    path: str,
    body: bytes,
    ctype: str,
    status: int,
    code: str | None,
) -> None:
    before = await snapshot(db)
    headers = {"Authorization": f"Bearer {admin.token}", "Content-Type": ctype}
    async with admin.client.request(method, f"/api/v1{path}", data=body, headers=headers) as r:
        data = await r.json()
        assert r.status == status, data
    if code is None:
        return
    assert data["error"]["code"] == code
    assert isinstance(data["error"]["message"], str)
    assert data["error"]["message"]
    assert await snapshot(db) == before


@pytest.mark.usefixtures("alice")
async def test_oversized_body_is_refused(admin: Api, db: asyncpg.Connection) -> None:
    before = await snapshot(db)
    huge = json.dumps({"mode": "set", "password": "x" * 200_000}).encode()
    headers = {"Authorization": f"Bearer {admin.token}", "Content-Type": "application/json"}
    async with admin.client.post("/api/v1/users/alice/password", data=huge, headers=headers) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "body_too_large"
    assert await snapshot(db) == before


async def test_unknown_paths_and_methods_answer_json(admin: Api) -> None:
    status, data = await admin.call("GET", "/nothing-here")
    assert (status, data["error"]["code"]) == (404, "not_found")
    status, data = await admin.call("DELETE", "/me")
    assert (status, data["error"]["code"]) == (405, "method_not_allowed")
    async with admin.client.get("/no/such/page") as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "not_found"


async def test_odd_usernames_in_paths(admin: Api) -> None:
    for name in ["%00", "a" * 5000, "%C3%A4", "..%2F..%2Fetc"]:
        status, data = await admin.call("GET", f"/users/{name}")
        assert status in (404, 400), (name, status)
        assert "error" in data


@pytest.mark.usefixtures("alice")
async def test_no_secret_in_logs_or_audit(
    admin: Api, mail_sink: MailSink, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Every credential flow, with logging at DEBUG: no PIN, password or token is ever written."""
    caplog.set_level(logging.DEBUG)
    secrets = ["592014", "Set-Passw0rd-77", "Own-Passw0rd-88", "Bad-Passw0rd-99", admin.token]
    await admin.call("PUT", "/users/alice/pin", {"pin": secrets[0]})
    await admin.call("PUT", "/users/alice/pin", {"pin": "1234"})  # refused by policy
    await admin.call(
        "POST", "/users/alice/password", {"mode": "set_and_email", "password": secrets[1]}
    )
    await admin.call("POST", "/users/alice/password", {"mode": "random_and_email"})
    random_password = mailed_password(mail_sink.bodies_to("alice@example.net")[-1])
    secrets.append(random_password)
    status, session = await admin.login("alice", random_password)
    assert status == 200
    secrets.append(session["token"])
    limited = Api(admin.client, session["token"])
    status, fresh = await limited.call(
        "PUT", "/me/password", {"current_password": random_password, "new_password": secrets[2]}
    )
    assert status == 200
    secrets.append(fresh["token"])
    await admin.login("alice", secrets[3])
    status, imp = await admin.call("POST", "/users/alice/impersonate")
    secrets.append(imp["token"])
    await Api(admin.client, imp["token"]).call("PUT", "/me/pin", {"pin": "603125"})
    secrets.append("603125")
    mail_sink.refuse = True
    await admin.call(
        "POST", "/users/alice/password", {"mode": "set_and_email", "password": "Failing-Passw0rd-5"}
    )
    secrets.append("Failing-Passw0rd-5")

    # aiosmtpd's own DEBUG log shows the mail it receives: that is the peer, not us.
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(r.name.startswith("provisioner") for r in ours), "logging was captured"
    log_text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in ours)
    audit_text = "\n".join(str(tuple(r)) for r in await db.fetch("SELECT * FROM audit_log"))
    for secret in secrets:
        assert secret not in log_text
        assert secret not in audit_text

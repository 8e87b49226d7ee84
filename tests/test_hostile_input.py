"""Input as attackers send it: huge secrets, deeply nested JSON, a hundred PIN guesses at once.

Each answer is a 4xx with its code (never a 500), the expensive work (hashing, parsing) is never
reached for input no valid request can carry, and the PIN lockout is a hard limit however many
guesses arrive together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from email import message_from_bytes, policy
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner.hotdesk import PIN_FAILURES_BEFORE_LOCK
from provisioner.web.hooks import SIGNATURE_HEADER, sign
from tests.conftest import Api, MailSink, bootstrap_admin

SECRET = "pbx-secret-for-hostile-input"
PW = "Alice-Passw0rd-1"
PIN = "480913"
DEEP = b"[" * 10_000 + b"]" * 10_000  # 20 KB, far under the body limit


@pytest.fixture
async def service(make_client: Any) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = await make_client(hook_secret=SECRET)
    return client


@pytest.fixture
async def admin_api(service: TestClient[Any, Any]) -> Api:
    admin = await bootstrap_admin(service)
    body = {"username": "alice", "display_name": "Alice", "extension": "201"}
    assert (await admin.call("POST", "/users", body))[0] == 201
    password = {"mode": "set", "password": PW, "temporary": False}
    assert (await admin.call("POST", "/users/alice/password", password))[0] == 200
    assert (await admin.call("PUT", "/users/alice/pin", {"pin": PIN}))[0] == 200
    assert (
        await admin.call(
            "POST", "/devices", {"mac": "001565aabb71", "vendor": "yealink", "model": "T54W"}
        )
    )[0] == 201
    return admin


async def hook(service: TestClient[Any, Any], name: str, raw: bytes, stamp: int) -> tuple[int, Any]:
    headers = {SIGNATURE_HEADER: sign(SECRET, stamp, raw), "Content-Type": "application/json"}
    async with service.post(f"/hooks/pbx/{name}", data=raw, headers=headers) as response:
        return response.status, await response.json()


async def test_secrets_longer_than_any_valid_one_are_refused_before_hashing(
    service: TestClient[Any, Any], admin_api: Api
) -> None:
    huge = "x" * 5000
    status, data = await admin_api.login("alice", huge)
    assert (status, data["error"]["code"], data["error"]["reason"]) == (
        422,
        "password_policy",
        "length",
    )
    # Up to the limit a wrong password is just wrong.
    status, data = await admin_api.login("alice", "x" * 1024)
    assert (status, data["error"]["code"]) == (401, "invalid_credentials")

    alice = await admin_api.as_user("alice", PW)
    status, data = await alice.call(
        "PUT", "/me/password", {"current_password": huge, "new_password": "Another-Passw0rd-2"}
    )
    assert (status, data["error"]["code"]) == (422, "password_policy")

    # The web page's sign-in form: a page with the error, not a 500.
    async with service.get("/me/login") as page:
        assert page.status == 200
    async with service.post(
        "/me/login", data={"username": "alice", "password": huge}, allow_redirects=False
    ) as page:
        assert 400 <= page.status < 500

    stamp = int(time.time())
    for name, body in [
        ("verify-pin", {"extension": "201", "pin": "4" * 5000}),
        ("pin-login", {"extension": "201", "pin": "4" * 5000, "mac": "001565aabb71"}),
        ("verify-pin", {"extension": "201", "pin": "4" * 13}),
    ]:
        stamp -= 1
        status, data = await hook(service, name, json.dumps(body).encode(), stamp)
        assert (status, data["error"]["code"]) == (422, "pin_policy"), (name, data)
    # Refused before counting: the user is not one step nearer a lockout.
    status, data = await hook(
        service, "verify-pin", json.dumps({"extension": "201", "pin": PIN}).encode(), stamp - 1
    )
    assert (status, data) == (200, {"valid": True})


@pytest.mark.parametrize(
    ("method", "path", "authenticated"),
    [
        ("POST", "/api/v1/auth/login", False),
        ("POST", "/api/v1/users", True),
        ("PUT", "/api/v1/devices/001565aabb71/assignments", True),
        ("PUT", "/api/v1/sites/default", True),
    ],
)
async def test_deeply_nested_json_is_refused_as_invalid(
    service: TestClient[Any, Any], admin_api: Api, method: str, path: str, authenticated: bool
) -> None:
    headers = {"Content-Type": "application/json"}
    if authenticated:
        headers["Authorization"] = f"Bearer {admin_api.token}"
    for body in (DEEP, b'{"a":' * 5000 + b"1" + b"}" * 5000):
        async with service.request(method, path, data=body, headers=headers) as response:
            data = await response.json()
            assert (response.status, data["error"]["code"]) == (400, "json_invalid"), data
    # Brackets inside strings are text, not nesting.
    text = json.dumps({"username": "[" * 100, "password": "{" * 100}).encode()
    async with service.post("/api/v1/auth/login", data=text, headers=headers) as response:
        assert response.status == 401


async def test_deeply_nested_json_to_a_hook(service: TestClient[Any, Any], admin_api: Api) -> None:
    status, data = await hook(service, "verify-pin", DEEP, int(time.time()))
    assert (status, data["error"]["code"]) == (400, "json_invalid")


async def wrong_pins_verified(service: TestClient[Any, Any]) -> float:
    async with service.get("/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith('provisioner_auth_failures_total{kind="pin"} '):
            return float(line.rpartition(" ")[2])
    return 0.0


async def test_a_hundred_parallel_guesses_check_at_most_the_limit(
    service: TestClient[Any, Any], admin_api: Api, db: asyncpg.Connection
) -> None:
    """99 wrong PINs and the right one, all at once: no more PINs are verified than the lockout
    allows, and the right one is not let through once the limit of wrong ones is reached."""
    stamp = int(time.time())
    guesses = [f"{n:06d}" for n in range(100_000, 100_099)] + [PIN]

    async def guess(i: int, pin: str) -> tuple[int, Any]:
        raw = json.dumps({"extension": "201", "pin": pin}).encode()
        return await hook(service, "verify-pin", raw, stamp - i)

    before = await wrong_pins_verified(service)
    answers = await asyncio.gather(*(guess(i, pin) for i, pin in enumerate(guesses)))
    # What was verified, not only what was answered: the counter of wrong PINs checked.
    assert await wrong_pins_verified(service) - before <= PIN_FAILURES_BEFORE_LOCK
    assert all(status == 200 for status, _ in answers), answers
    checked = [data for _, data in answers if "locked_until" not in data]
    assert len(checked) <= PIN_FAILURES_BEFORE_LOCK
    wrong_checked = [data for data in checked if not data["valid"]]
    assert len(wrong_checked) <= PIN_FAILURES_BEFORE_LOCK
    failed_audits = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE action IN ('pin.check_failed', 'pin.locked')"
    )
    assert failed_audits <= PIN_FAILURES_BEFORE_LOCK
    # The wrong ones used up the allowance: the user is locked now, for the right PIN too,
    # unless the right one was among the first checked (then it reset the count).
    right = answers[-1][1]
    if not right["valid"]:
        status, data = await hook(
            service,
            "verify-pin",
            json.dumps({"extension": "201", "pin": PIN}).encode(),
            stamp - 200,
        )
        assert status == 200
        assert data["valid"] is False
        assert "locked_until" in data


# --- the last administrator --------------------------------------------------------------------


async def test_the_last_local_admin_cannot_be_taken_away(
    service: TestClient[Any, Any], admin_api: Api, db: asyncpg.Connection
) -> None:
    from provisioner import users
    from provisioner.audit import Actor
    from provisioner.errors import ProvisionerError
    from provisioner.web.keys import CORE

    for change in ({"role": "user"}, {"auth_backend": "ldap"}, {"auth_backend": "saml"}):
        status, data = await admin_api.call("PATCH", "/users/admin", change)
        assert (status, data["error"]["code"]) == (409, "last_admin"), change
    with pytest.raises(ProvisionerError) as refused:
        await users.delete_user(service.app[CORE], Actor.cli(), "admin")
    assert refused.value.code == "last_admin"
    row = await db.fetchrow("SELECT role, auth_backend FROM users WHERE username = 'admin'")
    assert tuple(row) == ("admin", "local")

    # With a second local admin, either may go, but never both: two demotions at once leave one.
    assert (await admin_api.call("PATCH", "/users/alice", {"role": "admin"}))[0] == 200
    results = await asyncio.gather(
        admin_api.call("PATCH", "/users/alice", {"role": "user"}),
        admin_api.call("PATCH", "/users/admin", {"auth_backend": "ldap"}),
    )
    assert sorted(status for status, _ in results) == [200, 409]
    left = await db.fetchval(
        "SELECT count(*) FROM users WHERE role = 'admin' AND auth_backend = 'local'"
    )
    assert left == 1


async def test_a_backend_change_revokes_the_users_tokens(admin_api: Api) -> None:
    alice = await admin_api.as_user("alice", PW)
    assert (await alice.call("GET", "/me"))[0] == 200
    status, _ = await admin_api.call("PATCH", "/users/alice", {"auth_backend": "ldap"})
    assert status == 200
    status, data = await alice.call("GET", "/me")
    assert (status, data["error"]["code"]) == (401, "token_invalid")
    # Back to local: the old token stays dead.
    assert (await admin_api.call("PATCH", "/users/alice", {"auth_backend": "local"}))[0] == 200
    assert (await alice.call("GET", "/me"))[0] == 401


# --- smaller ones ------------------------------------------------------------------------------


async def test_malformed_requests_log_no_error_and_no_traceback(
    service: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    assert service.server.port is not None
    for junk in (
        b"GET /\x00bad HTTP/1.1\r\nHost: x\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.server.port)
        writer.write(junk)
        await writer.drain()
        answer = await reader.read(64)
        writer.close()
        await writer.wait_closed()
        assert answer.startswith(b"HTTP/1."), answer
        assert b" 400 " in answer[:20], answer
    noisy = [r for r in caplog.records if r.name == "aiohttp.server" and r.levelno >= 30]
    assert noisy == []
    assert not [r for r in caplog.records if r.name == "aiohttp.server" and r.exc_info]


@pytest.mark.parametrize("bad", ["Eve\x85Smith", "Eve\u2028Smith", "Eve\x9bSmith", "Eve\x00"])
async def test_control_characters_are_refused_in_names_and_labels(admin_api: Api, bad: str) -> None:
    status, data = await admin_api.call("PATCH", "/users/alice", {"display_name": bad})
    assert (status, data["error"]["code"]) == (400, "display_name_invalid")
    status, data = await admin_api.call("PATCH", "/devices/001565aabb71", {"label": bad})
    assert (status, data["error"]["code"]) == (400, "label_invalid")


@pytest.mark.parametrize(
    "name",
    [
        'Zoë "Z" O\'Neil, Jr.',
        "Mallory <mallory@evil.example>, Eve",
        "=?utf-8?q?forged?= <forged@evil.example>",
        "Ünïcödé; Bcc: eve@evil.example",
    ],
)
async def test_a_display_name_cannot_change_the_mails_recipients(
    admin_api: Api, mail_sink: MailSink, name: str
) -> None:
    email = "alice@example.net"
    status, data = await admin_api.call(
        "PATCH", "/users/alice", {"display_name": name, "email": email}
    )
    assert status == 200, data
    status, data = await admin_api.call(
        "POST", "/users/alice/password", {"mode": "random_and_email"}
    )
    assert (status, data) == (200, {"email_sent": True})
    [message] = mail_sink.messages
    parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
    assert [a.addr_spec for a in parsed["To"].addresses] == [email]
    if "=?" not in name:  # (a reader decodes a literal encoded word: only the name changes)
        assert parsed["To"].addresses[0].display_name == name
    assert parsed["Bcc"] is None
    assert parsed["Cc"] is None


async def test_a_hanging_mail_server_blocks_no_other_change_of_the_user(
    make_client: Any,
) -> None:
    """The "New password" mail is sent before the user's row is locked: while the mail server
    hangs, the same user's PIN can still be changed."""
    accepted = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # no greeting, ever
        accepted.set()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_client(smtp_url=f"smtp://127.0.0.1:{port}", mail_from="pbx@example.net")
        admin = await bootstrap_admin(client)
        body = {"username": "carol", "display_name": "Carol", "email": "carol@example.net"}
        assert (await admin.call("POST", "/users", body))[0] == 201
        mailing = asyncio.create_task(
            admin.call("POST", "/users/carol/password", {"mode": "random_and_email"})
        )
        async with asyncio.timeout(10):
            await accepted.wait()  # the service is talking to the hanging server now
        async with asyncio.timeout(5):
            status, data = await admin.call("PUT", "/users/carol/pin", {"pin": PIN})
        assert status == 200, data
        assert not mailing.done()
        mailing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await mailing
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()

"""A mail server that accepts the connection and then never says a word.

(A mail server that is down, or refuses the message, is covered in ``tests/test_passwords.py``:
``502 mail_failed`` and nothing changes.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from provisioner import mail
from tests.conftest import Api, AppFactory, bootstrap_admin
from tests.test_push import DEADLINE

OLD = "Old-Passw0rd-kept"
NEW = "New-Passw0rd-never"
SEND_TIMEOUT = 2.0
"""Instead of the product's 15 s: long enough for the other requests below to finish first."""


class SilentServer:
    """Accepts TCP connections and sends nothing: no greeting, no reply, ever."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        await reader.read()  # until the client gives up
        writer.close()

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._silent, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def silent_smtp() -> AsyncIterator[SilentServer]:
    async with SilentServer() as server:
        yield server


async def test_hanging_mail_server_fails_the_mail_and_holds_up_nothing_else(
    make_client: AppFactory,
    silent_smtp: SilentServer,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mail, "_SEND_TIMEOUT", SEND_TIMEOUT)
    client = await make_client(smtp_url=f"smtp://127.0.0.1:{silent_smtp.port}")
    admin = await bootstrap_admin(client)
    for username, extension in (("alice", "201"), ("bob", "202")):
        body = {"username": username, "display_name": username.title(), "extension": extension}
        status, data = await admin.call("POST", "/users", {**body, "email": "a@example.net"})
        assert status == 201, data
    status, data = await admin.call(
        "POST", "/users/alice/password", {"mode": "set", "password": OLD, "temporary": False}
    )
    assert status == 200, data
    alice = await admin.as_user("alice", OLD)

    mailing = asyncio.create_task(
        admin.call("POST", "/users/alice/password", {"mode": "set_and_email", "password": NEW})
    )
    async with asyncio.timeout(DEADLINE):
        await silent_smtp.connected.wait()

    # While the mail hangs: the service answers, and alice's own PIN change is not held up by
    # her password change (no lock is held while the mail is on its way).
    async def answered(*request: Any) -> None:
        status, data = await admin.call(*request)
        assert not mailing.done(), "answered only after the mail gave up"
        assert status == 200, data

    async with client.get("/healthz") as response:
        assert response.status == 200
    await answered("PUT", "/users/alice/pin", {"pin": "480913"})
    await answered("PUT", "/users/bob/pin", {"pin": "739251"})
    await answered("GET", "/users/alice")

    status, data = await mailing
    assert (status, data["error"]["code"]) == (502, "mail_failed")
    # Nothing changed: the old password and alice's token still work, the new one does not.
    assert (await admin.login("alice", OLD))[0] == 200
    assert (await admin.login("alice", NEW))[0] == 401
    assert (await Api(client, alice.token).call("GET", "/me"))[0] == 200
    emailed = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'password.change' "
        "AND (details->>'email_sent')::boolean"
    )
    assert emailed == 0

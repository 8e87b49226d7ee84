"""Real peers for the suite: a throwaway PostgreSQL database per run and an SMTP sink.

PostgreSQL: ``PROVISIONER_TEST_ADMIN_DSN`` (default: the local server as ``postgres``) is used to
create ``provisioner_test_<random>``, migrated once; every test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller

from provisioner.app import create_app
from provisioner.db import migrate
from provisioner.sealing import unseal
from provisioner.settings import Settings
from provisioner.vault import Vault

ADMIN_DSN = os.environ.get(
    "PROVISIONER_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ADMIN_PASSWORD = "Adm1n-Passw0rd!x"


class ManualClock:
    """A monotonic clock that moves only when a test says so.

    Given to :class:`provisioner.phonecache.FetchRecorder` (``recorder.clock``) before the
    device's first fetch, so a test decides when a minute of folded fetches is over instead of
    waiting for it. It starts at the real monotonic time and never goes back.
    """

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"provisioner_test_{secrets.token_hex(4)}"

    async def create() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    parts = urlsplit(ADMIN_DSN)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    asyncio.run(create())
    yield url
    asyncio.run(drop())


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test database, whose tables are emptied before the test."""
    conn = await asyncpg.connect(database_url)
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> 'schema_migrations'"
    )
    if tables:
        names = ", ".join(f'"{t["tablename"]}"' for t in tables)
        await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        # The row migration 002 creates.
        await conn.execute("INSERT INTO sites (name) VALUES ('default')")
    try:
        yield conn
    finally:
        await conn.close()


# --- SMTP --------------------------------------------------------------------------------------


def _text_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(message.get_content_charset() or "utf-8")


@dataclass
class MailSink:
    """An aiosmtpd server on loopback that keeps what it receives, or refuses on demand."""

    port: int
    messages: list[Message] = field(default_factory=list)
    refuse: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content)
        with self._lock:
            self.messages.append(message)
        return "250 Message accepted"

    def bodies_to(self, address: str) -> list[str]:
        with self._lock:
            return [_text_of(m) for m in self.messages if address in str(m["To"])]


def mailed_password(body: str) -> str:
    """The password line of a "New password" mail (indented by four spaces)."""
    match = re.search(r"^    (\S+)\r?$", body, re.MULTILINE)
    assert match, body
    return match.group(1)


@pytest.fixture
def mail_sink() -> Iterator[MailSink]:
    sink = MailSink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# --- the service -------------------------------------------------------------------------------


@pytest.fixture
def settings_env(database_url: str, tmp_path: Path, mail_sink: MailSink) -> dict[str, str]:
    return {
        "PROVISIONER_DATABASE_URL": database_url,
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_SMTP_URL": f"smtp://127.0.0.1:{mail_sink.port}",
        "PROVISIONER_MAIL_FROM": "provisioner@example.net",
        "PROVISIONER_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return Settings.from_env(settings_env)


@pytest.fixture
def vault(settings: Settings) -> Vault:
    """The service's vault (its key file, created by whichever comes first): to read secrets and
    stored configs the way the service does."""
    return Vault.from_key_file(settings.secret_key_file)


async def stored_files(db: asyncpg.Connection, vault: Vault, mac: str) -> dict[str, bytes]:
    """A device's stored files (``device_files``), decrypted: what its phone is served."""
    rows = await db.fetch("SELECT name, body, sealed FROM device_files WHERE mac = $1", mac)
    return {
        r["name"]: unseal(vault, mac, r["name"], bytes(r["body"]), sealed=r["sealed"]) for r in rows
    }


AppFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def make_client(
    db: asyncpg.Connection, settings_env: dict[str, str], aiohttp_client: Any
) -> AppFactory:
    """Start the real application; keyword arguments override environment settings."""

    async def factory(**env: str) -> TestClient[Any, Any]:
        merged = {**settings_env, **{f"PROVISIONER_{k.upper()}": v for k, v in env.items()}}
        merged = {k: v for k, v in merged.items() if v != ""}
        client: TestClient[Any, Any] = await aiohttp_client(create_app(Settings.from_env(merged)))
        return client

    return factory


@pytest.fixture
async def client(make_client: AppFactory) -> TestClient[Any, Any]:
    return await make_client()


@dataclass
class Api:
    """A thin JSON client over the test client, logged in as someone."""

    client: TestClient[Any, Any]
    token: str | None = None

    def _headers(self, token: str | None) -> dict[str, str]:
        use = token if token is not None else self.token
        return {"Authorization": f"Bearer {use}"} if use else {}

    async def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": self._headers(token)}
        if body is not None:
            kwargs["json"] = body
        async with self.client.request(method, f"/api/v1{path}", **kwargs) as response:
            data = await response.json() if response.status != 204 else None
        # A change's devices are rendered by the push worker; tests look at the outcome. (A 503:
        # the database is away, nothing changed.)
        if response.status != 503:
            await self.settled()
        return response.status, data

    async def settled(self) -> None:
        """In an app without a push worker: render now what the worker would render when the
        open push jobs fall due (their devices, through its batch path), so a test sees the
        configs a change leads to. An app with a worker renders by itself: tests wait for it."""
        from provisioner import provisioning
        from provisioner.web.keys import CORE, PUSH_WORKER

        app = self.client.app
        if PUSH_WORKER in app:
            return
        core = app[CORE]
        async with core.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT mac FROM push_jobs WHERE state IN ('pending', 'scheduled') ORDER BY mac"
            )
        await provisioning.render_devices(core, [row["mac"] for row in rows])

    async def login(self, username: str, password: str) -> tuple[int, Any]:
        return await self.call("POST", "/auth/login", {"username": username, "password": password})

    async def as_user(self, username: str, password: str) -> Api:
        status, data = await self.login(username, password)
        assert status == 200, data
        return Api(self.client, data["token"])


async def bootstrap_admin(client: TestClient[Any, Any]) -> Api:
    """Create the first admin the way ``serve`` does and log in as it."""
    from provisioner import passwords
    from provisioner.web.keys import CORE

    core = client.app[CORE]
    await passwords.bootstrap_admin(core, ADMIN_PASSWORD)
    return await Api(client).as_user("admin", ADMIN_PASSWORD)


@pytest.fixture
async def admin(client: TestClient[Any, Any]) -> Api:
    return await bootstrap_admin(client)


@pytest.fixture
def make_user(admin: Api) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Create a user through the API; with ``password`` also give it one (permanent)."""

    async def factory(username: str, password: str | None = None, **fields: Any) -> dict[str, Any]:
        body = {"username": username, "display_name": username.title(), **fields}
        status, user = await admin.call("POST", "/users", body)
        assert status == 201, user
        if password is not None:
            status, data = await admin.call(
                "POST",
                f"/users/{username}/password",
                {"mode": "set", "password": password, "temporary": False},
            )
            assert status == 200, data
        return dict(user)

    return factory

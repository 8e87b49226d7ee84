"""The API against its own document, the way schemathesis probes it: a few hundred generated
requests (fixed seed), valid and invalid, as an administrator.

The document's body schemas are what the server enforces (:func:`provisioner.web.inputs
.read_body`), so: no answer is a 5xx; every status, error code and body is documented; data the
document calls invalid is refused with a 4xx; and data it calls valid is never refused as
malformed (400) — only by a rule the document names (404 for what does not exist, 409/422 for
state and policy). The last-admin rule keeps the generated requests from locking the admin out;
each request carries a fresh admin token, since a generated password change revokes the old ones.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from provisioner import auth, store
from provisioner.app import create_app
from provisioner.settings import Settings
from provisioner.web.keys import CORE
from tests.conftest import ADMIN_PASSWORD, free_port

# Per operation, valid and invalid (about 30 operations): a few hundred requests. Deeper:
# PROVISIONER_SCHEMATHESIS_EXAMPLES=200 ./scripts/test tests/test_schemathesis.py
EXAMPLES_PER_OPERATION = int(os.environ.get("PROVISIONER_SCHEMATHESIS_EXAMPLES", "12"))


def no_internal_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx but the documented ones: 503 for a part not configured here (the directory), 502
    for a failing peer; an internal error (500) never."""
    assert response.status_code in (502, 503) or response.status_code < 500, response.text
    return None


CHECKS = [
    no_internal_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]


class Service:
    """The real application served on a loopback port from its own thread and event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.app = create_app(settings)
        self.runner = web.AppRunner(self.app)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=60)

    def start(self) -> None:
        self.thread.start()
        self.run(self.runner.setup())
        self.run(web.TCPSite(self.runner, "127.0.0.1", self.port).start())

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)

    def admin_headers(self) -> dict[str, str]:
        """A fresh token of the admin, under its current credentials."""

        async def issue() -> str:
            core = self.app[CORE]
            async with core.pool.acquire() as conn:
                admin = await store.get_user_by_username(conn, "admin")
                assert admin is not None
                return (await auth.issue_token(conn, admin)).token

        return {"Authorization": f"Bearer {self.run(issue())}"}

    def seed(self) -> None:
        """An admin, a second user, a site with a registrar and one device of each kind."""

        async def seed() -> None:
            from provisioner import passwords

            await passwords.bootstrap_admin(self.app[CORE], ADMIN_PASSWORD)

        self.run(seed())
        headers = {**self.admin_headers(), "Content-Type": "application/json"}
        import requests

        def call(method: str, path: str, body: Any) -> None:
            response = requests.request(
                method, f"{self.url}/api/v1{path}", json=body, headers=headers, timeout=30
            )
            assert response.status_code < 300, (path, response.text)

        call("PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
        call("POST", "/users", {"username": "alice", "display_name": "Alice", "extension": "201"})
        call("POST", "/devices", {"mac": "001565aabbcc", "vendor": "yealink", "model": "T54W"})
        call("POST", "/devices", {"mac": "7c2f80aabbcc", "vendor": "gigaset", "model": "N870"})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from tests.conftest import ADMIN_DSN

    name = f"provisioner_schemathesis_{threading.get_ident() % 100_000}"
    url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    data: Path = tmp_path_factory.mktemp("schemathesis")
    settings = Settings.from_env(
        {
            "PROVISIONER_DATABASE_URL": url,
            "PROVISIONER_DATA_DIR": str(data),
            "PROVISIONER_HOOK_SECRET": "schemathesis-hook-secret",
        }
    )
    running = Service(settings)
    running.start()
    try:
        running.seed()
        yield running
    finally:
        running.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def api_schema(service: Service) -> Any:
    schema = schemathesis.openapi.from_url(f"{service.url}/api/v1/openapi.json")
    schema.config.update(base_url=f"{service.url}/api/v1")
    schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
        max_examples=EXAMPLES_PER_OPERATION,
        deterministic=True,
        database="none",
        allow_extra_parameters=False,
    )
    # Valid data may meet a rule on state or policy the document names (a wrong password, a
    # taken username, a common PIN, a device that does not exist) — but never a 400: malformed
    # is the document's verdict, and the server must share it.
    schema.config.checks.positive_data_acceptance.expected_statuses = [
        "2XX",
        "401",
        "403",
        "404",
        "409",
        "422",
        "429",
        "502",
        "503",
    ]
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_api_does_what_its_document_says(case: Any, service: Service) -> None:
    case.call_and_validate(headers=service.admin_headers(), checks=CHECKS)

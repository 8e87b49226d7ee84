"""Mitel SIP-DECT: a PIN change reaches the OMM through OM AXI, pushed by the push worker.

The OMM is the protocol-level stand-in of ``tests/test_omaxi.py`` (no OMM can run here): it
speaks OM AXI over TLS and decrypts the RSA-encrypted PIN and SIP password it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from provisioner.push import Backoff, PushWorker
from provisioner.sip import SipNotifier
from provisioner.vault import sip_password_purpose
from provisioner.web.keys import CORE
from tests.conftest import Api
from tests.test_omaxi import (  # noqa: F401 -- fixtures used by name
    PASSWORD,
    USER,
    Certificate,
    FakeOmm,
    certificate,
    omm,
    omm_key,
)

MAC = "003042aabbcc"


@pytest.fixture
async def worker(admin: Api) -> AsyncIterator[None]:
    core = admin.client.app[CORE]
    notifier = SipNotifier(timeout=2)
    task = asyncio.create_task(
        PushWorker(
            core, notifier, backoff=Backoff(base=0.2, cap=0.5), max_attempts=2, poll_seconds=0.5
        ).run()
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await notifier.close()


async def job_of(db: asyncpg.Connection, within: float = 15.0) -> Any:
    """Wait until the device's newest job is finished (fetched or failed)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = await db.fetchrow(
            "SELECT * FROM push_jobs WHERE mac = $1 ORDER BY id DESC LIMIT 1", MAC
        )
        if row is not None and row["state"] in ("fetched", "failed"):
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"job not finished within {within} s: {row and dict(row)}")


@pytest.fixture
async def dect(admin: Api, make_user: Any) -> None:
    await admin.call("PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
    await make_user("alice", extension="101")
    await make_user("bob", extension="102")
    for name, pin in (("alice", "480913"), ("bob", "592014")):
        assert (await admin.call("PUT", f"/users/{name}/pin", {"pin": pin}))[0] == 200
    status, _ = await admin.call(
        "POST", "/devices", {"mac": MAC, "vendor": "mitel", "model": "SIP-DECT"}
    )
    assert status == 201
    body = [{"slot": 1, "username": "alice"}, {"slot": 2, "username": "bob"}]
    assert (await admin.call("PUT", f"/devices/{MAC}/assignments", body))[0] == 200


@pytest.mark.usefixtures("dect", "worker")
async def test_pin_change_is_pushed_to_the_omm(
    admin: Api,
    db: asyncpg.Connection,
    omm: FakeOmm,  # noqa: F811 -- the imported fixture
    certificate: Certificate,  # noqa: F811
) -> None:
    access = {
        "host": "127.0.0.1",
        "port": omm.port,
        "username": USER,
        "password": PASSWORD,
        "fingerprint": certificate.fingerprint,
    }
    status, data = await admin.call("PUT", f"/devices/{MAC}/api-access", access)
    assert status == 204, data
    assert (await admin.call("PUT", "/users/alice/pin", {"pin": "603125"}))[0] == 200

    job = await job_of(db)
    assert (job["state"], job["transport"]) == ("fetched", "mitel API"), dict(job)
    assert omm.users[1]["pin"] == "603125"
    assert omm.users[2]["pin"] == "592014"
    line = await db.fetchrow(
        "SELECT sip_user, sip_auth_user, sip_password_encrypted FROM device_assignments "
        "WHERE mac = $1 AND slot = 1",
        MAC,
    )
    assert line is not None
    # The number is the SIP account; the login id a user types with the PIN is the extension.
    assert omm.users[1]["num"] == line["sip_user"]
    assert omm.users[1]["num"] != "101"
    assert omm.users[1]["addId"] == "101"
    assert omm.users[2]["addId"] == "102"
    vault = admin.client.app[CORE].vault
    assert omm.users[1]["sipAuthId"] == line["sip_auth_user"]
    assert omm.users[1]["sipPw"] == vault.decrypt(
        line["sip_password_encrypted"], sip_password_purpose(MAC, 1)
    )
    result = await db.fetchval("SELECT last_notify_result FROM devices WHERE mac = $1", MAC)
    assert result.startswith("OM AXI: 2 user(s) updated")
    audit = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'device.api_access'")
    assert PASSWORD not in str(tuple(audit))


@pytest.mark.usefixtures("dect", "worker")
async def test_without_api_access_the_job_fails_readably(
    admin: Api, db: asyncpg.Connection
) -> None:
    assert (await admin.call("POST", f"/devices/{MAC}/reprovision"))[0] == 202
    job = await job_of(db)
    assert job["state"] == "failed"
    assert "no management API access" in job["last_error"]


@pytest.mark.usefixtures("dect")
async def test_api_access_is_validated(admin: Api, db: asyncpg.Connection) -> None:
    base = {"host": "127.0.0.1", "username": USER, "password": PASSWORD}
    for body, code in (
        ({**base, "host": "bad host"}, "host_invalid"),
        ({**base, "port": 0}, "port_invalid"),
        ({**base, "fingerprint": "abc"}, "fingerprint_invalid"),
        ({**base, "password": ""}, "credentials_invalid"),
    ):
        status, data = await admin.call("PUT", f"/devices/{MAC}/api-access", body)
        assert (status, data["error"]["code"]) == (400, code)
    await admin.call(
        "POST", "/devices", {"mac": "001565000001", "vendor": "yealink", "model": "T54W"}
    )
    status, data = await admin.call("PUT", "/devices/001565000001/api-access", base)
    assert (status, data["error"]["code"]) == (422, "api_access_unused")
    assert await db.fetchval("SELECT count(*) FROM device_api_access") == 0

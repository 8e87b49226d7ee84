"""The PBX side: registrar digests of every line account, the pbx views, rotation, export,
the signed extension lookup, and the PBX role's grant; real service, PostgreSQL and CLI.

(Kamailio registering phones with these accounts: tests/test_kamailio.py; Asterisk's realtime
schema and the hot-desk AGI: tests/test_pbx_asterisk.py.)
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner.vault import Vault, sip_password_purpose
from provisioner.web.hooks import SIGNATURE_HEADER, sign
from provisioner.web.keys import CORE
from tests.conftest import Api, bootstrap_admin, stored_files
from tests.test_device_cli import Cli, assert_exit, cli, key_file  # noqa: F401 (fixtures)

HOOK_SECRET = "pbx-secret-for-the-extension-lookup"
MAC = "001565aabb51"
OTHER = "001565aabb52"
PIN = "480913"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 -- SIP digest is MD5


async def call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, data = await api.call(method, path, body)
    assert status == expect, (method, path, data)
    return data


@pytest.fixture
async def service(
    make_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> TestClient[Any, Any]:
    return await make_client(hook_secret=HOOK_SECRET)


@pytest.fixture
async def api(service: TestClient[Any, Any]) -> Api:
    admin = await bootstrap_admin(service)
    await call(admin, "PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
    for username, extension in [("alice", "201"), ("bob", "202")]:
        body = {"username": username, "display_name": username.title(), "extension": extension}
        await call(admin, "POST", "/users", body, expect=201)
    await call(admin, "PUT", "/users/alice/pin", {"pin": PIN})
    for mac in (MAC, OTHER):
        body = {"mac": mac, "vendor": "yealink", "model": "T54W"}
        await call(admin, "POST", "/devices", body, expect=201)
    await call(
        admin,
        "PUT",
        f"/devices/{MAC}/assignments",
        [{"slot": 1, "username": "alice"}, {"slot": 2, "username": "bob"}],
    )
    return admin


async def line_password(service: TestClient[Any, Any], db: asyncpg.Connection, slot: int) -> str:
    encrypted = await db.fetchval(
        "SELECT sip_password_encrypted FROM device_assignments WHERE mac = $1 AND slot = $2",
        MAC,
        slot,
    )
    vault: Vault = service.app[CORE].vault
    return vault.decrypt(encrypted, sip_password_purpose(MAC, slot))


async def config(db: asyncpg.Connection, vault: Vault) -> str:
    return (await stored_files(db, vault, MAC))[f"{MAC}.cfg"].decode()


async def subscribers(db: asyncpg.Connection) -> dict[str, tuple[str, str, str]]:
    rows = await db.fetch("SELECT * FROM pbx.subscriber")
    return {r["username"]: (r["domain"], r["ha1"], r["ha1b"]) for r in rows}


async def test_every_line_account_is_in_the_registrar_view_as_digests(
    service: TestClient[Any, Any], api: Api, db: asyncpg.Connection, vault: Vault
) -> None:
    accounts = await subscribers(db)
    assert set(accounts) == {f"201-{MAC}-1", f"202-{MAC}-2"}
    for slot, user in [(1, f"201-{MAC}-1"), (2, f"202-{MAC}-2")]:
        password = await line_password(service, db, slot)
        # The config the phone fetches carries exactly the password the digests are made of.
        assert f"account.{slot}.password = {password}" in await config(db, vault)
        domain, ha1, ha1b = accounts[user]
        assert domain == "pbx.example.net"  # the realm defaults to the registrar host
        assert ha1 == md5(f"{user}:pbx.example.net:{password}")
        assert ha1b == md5(f"{user}@pbx.example.net:pbx.example.net:{password}")
        # Nothing in the views is the clear password.
        for view in ("subscriber", "ps_auths", "ps_endpoints", "ps_aors", "extension_accounts"):
            rows = await db.fetch(f"SELECT * FROM pbx.{view}")
            assert password not in json.dumps([dict(r) for r in rows], default=str)


async def test_the_sites_realm_changes_every_digest(
    service: TestClient[Any, Any], api: Api, db: asyncpg.Connection
) -> None:
    await call(api, "PUT", "/sites/default", {"sip_realm": "voice.example.org"})
    await api.settled()
    password = await line_password(service, db, 1)
    domain, ha1, _ = (await subscribers(db))[f"201-{MAC}-1"]
    assert domain == "voice.example.org"
    assert ha1 == md5(f"201-{MAC}-1:voice.example.org:{password}")

    status, error = await api.call("PUT", "/sites/default", {"sip_realm": "voice example"})
    assert (status, error["error"]["code"]) == (422, "sip_realm_invalid")
    assert (await subscribers(db))[f"201-{MAC}-1"][0] == "voice.example.org"  # unchanged

    await call(api, "PUT", "/sites/default", {"sip_realm": None, "registrar_host": "sip.example"})
    await api.settled()
    assert (await subscribers(db))[f"201-{MAC}-1"][0] == "sip.example"


async def test_rotation_changes_password_digest_and_config_together(
    service: TestClient[Any, Any], api: Api, db: asyncpg.Connection, vault: Vault
) -> None:
    before = await subscribers(db)
    old = await line_password(service, db, 1)
    revision = (await call(api, "GET", f"/devices/{MAC}"))["revision"]

    result = await call(
        api, "POST", f"/devices/{MAC}/reprovision", {"rotate_sip": True}, expect=202
    )
    assert len(result["jobs"]) == 1
    new = await line_password(service, db, 1)
    assert new != old
    after = await subscribers(db)
    assert set(after) == set(before)  # the same accounts, new secrets
    assert after[f"201-{MAC}-1"][1] == md5(f"201-{MAC}-1:pbx.example.net:{new}")
    text = await config(db, vault)
    assert f"account.1.password = {new}" in text
    assert old not in text
    assert (await call(api, "GET", f"/devices/{MAC}"))["revision"] == revision + 1
    entries = (await call(api, "GET", "/audit?action=device.reprovision"))["entries"]
    assert entries[0]["details"]["rotate_sip"] == [1, 2]
    assert old not in json.dumps(entries)
    assert new not in json.dumps(entries)


async def test_a_removed_line_leaves_the_registrar(api: Api, db: asyncpg.Connection) -> None:
    await call(api, "PUT", f"/devices/{MAC}/assignments", [{"slot": 1, "username": "alice"}])
    assert set(await subscribers(db)) == {f"201-{MAC}-1"}
    await call(api, "DELETE", f"/devices/{MAC}", expect=204)
    assert await subscribers(db) == {}


async def test_the_extension_lookup_is_signed_and_follows_hot_desking(
    service: TestClient[Any, Any], api: Api
) -> None:
    async def lookup(extension: str, secret: str = HOOK_SECRET, stamp: int | None = None) -> Any:
        headers = {SIGNATURE_HEADER: sign(secret, stamp or int(time.time()), b"")}
        async with service.get(f"/api/v1/pbx/extensions/{extension}", headers=headers) as r:
            return r.status, await r.json()

    status, data = await lookup("201")
    assert status == 200, data
    assert data == {
        "extension": "201",
        "accounts": [
            {
                "username": f"201-{MAC}-1",
                "domain": "pbx.example.net",
                "mac": MAC,
                "slot": 1,
                "hotdesk": False,
                "contact": None,
            }
        ],
    }
    # A read may be repeated with the same signature (no replay refusal for reads).
    assert (await lookup("201"))[0] == 200

    # Alice logs in at the other phone with her PIN: her extension is there now too, first.
    raw = json.dumps({"extension": "201", "pin": PIN, "mac": OTHER}).encode()
    headers = {SIGNATURE_HEADER: sign(HOOK_SECRET, int(time.time()) - 1, raw)}
    async with service.post("/hooks/pbx/pin-login", data=raw, headers=headers) as response:
        assert response.status == 200, await response.text()
    await api.settled()
    status, data = await lookup("201")
    assert [(a["mac"], a["hotdesk"]) for a in data["accounts"]] == [(OTHER, True), (MAC, False)]

    assert (await lookup("999"))[1]["accounts"] == []
    status, error = await lookup("20x1")
    assert (status, error["error"]["code"]) == (422, "extension_invalid")
    status, error = await lookup("201", secret="not-the-secret")
    assert (status, error["error"]["code"]) == (401, "signature_invalid")
    status, error = await lookup("201", stamp=int(time.time()) - 301)
    assert (status, error["error"]["code"]) == (401, "signature_expired")
    async with service.get("/api/v1/pbx/extensions/201") as response:
        assert (response.status, (await response.json())["error"]["code"]) == (
            401,
            "signature_invalid",
        )
    # A bearer token is no way in: the PBX signs.
    async with service.get(
        "/api/v1/pbx/extensions/201", headers={"Authorization": f"Bearer {api.token}"}
    ) as response:
        assert response.status == 401


# --- the CLI: export and grant ---------------------------------------------------------------


@pytest.fixture
async def provisioned(cli: Cli, db: asyncpg.Connection) -> Cli:  # noqa: F811
    """alice on line 1 of a phone, set up by the CLI as an operator would."""
    assert_exit(await cli("site", "set", "--registrar", "pbx.example.net"), 0)
    assert_exit(await cli("user", "add", "alice", "--extension", "201", "--name", "Alice"), 0)
    assert_exit(
        await cli(
            "device", "add", MAC, "--vendor", "yealink", "--model", "T54W", "--user", "alice"
        ),
        0,
    )
    return cli


async def test_pjsip_export_writes_digests_never_passwords(
    provisioned: Cli,
    db: asyncpg.Connection,
    key_file: Path,  # noqa: F811 -- the imported fixture
    tmp_path: Path,
) -> None:
    output = tmp_path / "pjsip_provisioner.conf"
    result = await provisioned("pbx", "export", "--format", "pjsip", "--output", str(output))
    assert_exit(result, 0)
    text = output.read_text()
    assert output.stat().st_mode & 0o777 == 0o640
    user = f"201-{MAC}-1"
    password = Vault.from_key_file(key_file).decrypt(
        await db.fetchval("SELECT sip_password_encrypted FROM device_assignments"),
        sip_password_purpose(MAC, 1),
    )
    assert password not in text
    assert f"[{user}]\ntype=endpoint\naors={user}\nauth={user}\n" in text
    assert f"md5_cred={md5(f'{user}:pbx.example.net:{password}')}\n" in text
    assert "auth_type=md5\n" in text
    assert 'callerid="Alice" <201>' in text

    # An existing file is kept unless --force.
    output.write_text("; the operator's own\n")
    refused = await provisioned("pbx", "export", "--format", "pjsip", "--output", str(output))
    assert_exit(refused, 2)
    assert "--force" in refused.stderr
    assert output.read_text() == "; the operator's own\n"
    forced = await provisioned(
        "pbx", "export", "--format", "pjsip", "--output", str(output), "--force"
    )
    assert_exit(forced, 0)
    assert "type=auth" in output.read_text()
    assert not list(tmp_path.glob(".pjsip_provisioner.conf.*"))  # noqa: ASYNC240 -- no temp file left


@pytest.fixture
async def role(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A fresh login role (roles are cluster-wide: a random name, dropped afterwards)."""
    name = f"pbx_test_{secrets.token_hex(4)}"
    await db.execute(f"CREATE ROLE {name} LOGIN")
    yield name
    database = await db.fetchval("SELECT current_database()")
    await db.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA pbx FROM {name}")
    await db.execute(f"REVOKE ALL ON SCHEMA pbx FROM {name}")
    await db.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA pbx REVOKE SELECT ON TABLES FROM {name}")
    await db.execute(f'REVOKE ALL ON DATABASE "{database}" FROM {name}')
    await db.execute(f"DROP ROLE {name}")


async def test_the_pbx_role_reads_the_views_and_nothing_else(
    provisioned: Cli, role: str, database_url: str
) -> None:
    result = await provisioned("pbx", "grant", role)
    assert_exit(result, 0)
    conn = await asyncpg.connect(database_url, user=role)
    try:
        # search_path pbx: the stock table names work.
        rows = await conn.fetch("SELECT username, domain, ha1 FROM subscriber")
        assert [r["username"] for r in rows] == [f"201-{MAC}-1"]
        assert await conn.fetchval("SELECT count(*) FROM ps_endpoints") == 1
        assert await conn.fetchval("SELECT count(*) FROM extension_accounts") == 1
        for table in ("users", "devices", "device_files", "device_assignments", "audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM public.{table}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM subscriber")
    finally:
        await conn.close()


async def test_grant_refuses_unknown_and_malformed_roles(provisioned: Cli) -> None:
    missing = await provisioned("pbx", "grant", "no_such_role_here")
    assert_exit(missing, 2)
    assert "create it first" in missing.stderr
    for bad in ['kamailio"; DROP TABLE users; --', "Kamailio", "1role"]:
        refused = await provisioned("pbx", "grant", bad)
        assert_exit(refused, 2)
        assert re.search(r"role_invalid|identifier", refused.stderr)

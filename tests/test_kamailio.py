"""Kamailio authenticates the phones against the service's view, end to end.

A real Kamailio 5.6 (``tests/kamailio.py``: ``contrib/kamailio/kamailio.cfg``, ``auth_db`` on
``pbx.subscriber``) connects as a PostgreSQL role that ``provisioner pbx grant`` (the CLI, in a
subprocess) let read schema ``pbx``. A Yealink is provisioned through the JSON API with the site's
registrar at Kamailio's loopback port, fetches its config as a phone does, and sipp registers
each line with the SIP user and password from that config: digest HA1s written at render time
must be what the phone's password gives. A rotation, and removing a line, reach the registrar at
once (Kamailio reads the view on every REGISTER, no cache).

Roles are cluster-wide: each test makes its own with a random name and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Api, AppFactory, bootstrap_admin
from tests.kamailio import Kamailio, Line, Registration, register, start_kamailio
from tests.test_phones import BOOTSTRAP, BY_ID, basic, call, fetch, in_sync, start_instance

Client = TestClient[Any, Any]

PHONE = BY_ID["yealink-T54W"]
#: The tables behind the views; the PBX role may read none of them.
PRIVATE_TABLES = ("users", "devices", "device_files", "device_assignments", "sites")
PBX_VIEWS = ("subscriber", "extension_accounts", "ps_endpoints", "ps_auths", "ps_aors")


# --- the PBX's database role -------------------------------------------------------------------


@dataclass(frozen=True)
class PbxRole:
    name: str
    url: str
    """The database URL the role logs in with (asyncpg's spelling)."""

    @property
    def kamailio_url(self) -> str:
        """The same for Kamailio: db_postgres registers the scheme ``postgres`` only."""
        return "postgres://" + self.url.split("://", 1)[1]


def _grant(settings_env: dict[str, str], role: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    return subprocess.run(
        [sys.executable, "-m", "provisioner", "pbx", "grant", role],
        capture_output=True,
        text=True,
        env={**env, **settings_env},
        timeout=60,
        check=False,
    )


@pytest.fixture
async def pbx_role(
    database_url: str, db: asyncpg.Connection, settings_env: dict[str, str]
) -> AsyncIterator[PbxRole]:
    """A login role created as the DBA does, then ``provisioner pbx grant ROLE`` as the CLI."""
    name = f"pbx_reader_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    await db.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    try:
        result = await asyncio.to_thread(_grant, settings_env, name)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert f"role {name} may read schema pbx" in result.stdout
        parts = urlsplit(database_url)
        netloc = f"{name}:{password}@{parts.hostname}:{parts.port or 5432}"
        yield PbxRole(name, urlunsplit(parts._replace(netloc=netloc)))
    finally:
        # Its grants and default privileges live in the test database, the role in the cluster.
        await db.execute(f"DROP OWNED BY {name}")
        await db.execute(f"DROP ROLE {name}")


@pytest.fixture
async def kamailio(tmp_path: Path, pbx_role: PbxRole) -> AsyncIterator[Kamailio]:
    started = await start_kamailio(tmp_path, pbx_role.kamailio_url)
    try:
        yield started
    finally:
        await started.stop()


# --- the phone ---------------------------------------------------------------------------------


_ACCOUNT_KEY = re.compile(r"^account\.(?P<slot>\d+)\.(?P<key>[\w.]+) = (?P<value>.*)$", re.M)
_OWN_CREDENTIAL = re.compile(
    r"^static\.auto_provision\.server\.username = (?P<user>\S+)\n"
    r"static\.auto_provision\.server\.password = (?P<password>\S+)$",
    re.M,
)


def lines_of(config: str) -> dict[int, Line]:
    """The enabled accounts of a Yealink ``<mac>.cfg``, by slot."""
    accounts: dict[int, dict[str, str]] = {}
    for match in _ACCOUNT_KEY.finditer(config):
        accounts.setdefault(int(match["slot"]), {})[match["key"]] = match["value"]
    return {
        slot: Line(
            user=keys["user_name"],
            auth_user=keys["auth_name"],
            password=keys["password"],
            registrar=keys["sip_server.1.address"],
            port=int(keys["sip_server.1.port"]),
        )
        for slot, keys in accounts.items()
        if keys["enable"] == "1"
    }


@dataclass
class Phone:
    """The Yealink as it behaves: fetches with the bootstrap credential, then with its own."""

    client: Client
    api: Api
    credential: str | None = None

    async def config(self) -> str:
        await in_sync(self.client, self.api, PHONE)  # the instance serves the stored revision
        got = await fetch(self.client, PHONE, auth=self.credential or BOOTSTRAP)
        assert got.status == 200, got
        own = _OWN_CREDENTIAL.search(got.text)
        assert own, got.text
        self.credential = basic(own["user"], own["password"])
        return got.text

    async def lines(self) -> dict[int, Line]:
        return lines_of(await self.config())


@pytest.fixture
async def service(make_client: AppFactory, db: asyncpg.Connection) -> Client:
    return await start_instance(make_client, db)


def registered(got: Registration) -> bool:
    return got.exit_code == 0 and got.answers[-1:] == ["SIP/2.0 200 OK"]


def refused(got: Registration) -> bool:
    return got.exit_code == 0 and got.answers[-1:] == ["SIP/2.0 403 Forbidden"]


class Registrar:
    """Registrations at the running Kamailio, each in a directory of its own."""

    def __init__(self, kamailio: Kamailio, directory: Path) -> None:
        self.kamailio = kamailio
        self.directory = directory
        self.runs = 0

    async def register(self, line: Line, *, password: str | None = None) -> Registration:
        return await self._run(line, "register.xml", password)

    async def refuse(self, line: Line, *, password: str | None = None) -> Registration:
        return await self._run(line, "register_refused.xml", password)

    async def _run(self, line: Line, scenario: str, password: str | None) -> Registration:
        self.kamailio.assert_running()
        self.runs += 1
        got = await register(
            self.directory / f"sipp{self.runs}", line, scenario=scenario, password=password
        )
        expected = registered if scenario == "register.xml" else refused
        assert expected(got), (
            f"{scenario} as {line.auth_user}: exit {got.exit_code}, answers {got.answers}, "
            f"sipp: {got.errors}\n{self.kamailio.tail()}"
        )
        assert got.answers[0].startswith("SIP/2.0 401 "), got.answers
        if expected is registered:
            # Saved in Kamailio's location table (usrloc): the 200 lists the phone's contact.
            ok = [m for m in got.messages if m.received and m.start_line == "SIP/2.0 200 OK"]
            contact = ok[-1].header("Contact")
            assert contact.startswith(f"<sip:{line.user}@127.0.0.1:"), contact
            assert "expires=" in contact, contact
        return got


# --- the tests ---------------------------------------------------------------------------------


async def test_phone_registers_with_its_provisioned_credentials(
    service: Client, kamailio: Kamailio, tmp_path: Path
) -> None:
    api = await bootstrap_admin(service)
    site = {"registrar_host": "127.0.0.1", "registrar_port": kamailio.port}
    await call(api, "PUT", "/sites/default", site)  # sip_realm unset: the realm is 127.0.0.1
    for username, extension in [("alice", "201"), ("bob", "202")]:
        body = {"username": username, "display_name": username.title(), "extension": extension}
        await call(api, "POST", "/users", body, expect=201)
    device = {"mac": PHONE.mac, "vendor": PHONE.vendor, "model": PHONE.model}
    await call(api, "POST", "/devices", device, expect=201)
    both = [{"slot": 1, "username": "alice"}, {"slot": 2, "username": "bob"}]
    await call(api, "PUT", f"/devices/{PHONE.mac}/assignments", both)

    phone = Phone(service, api)
    lines = await phone.lines()
    assert sorted(lines) == [1, 2]
    alice, bob = lines[1], lines[2]
    assert (alice.registrar, alice.port) == ("127.0.0.1", kamailio.port)
    assert alice.user == alice.auth_user == f"201-{PHONE.mac}-1"
    registrar = Registrar(kamailio, tmp_path)

    # Each line registers with what its config says: 401, then 200 with the digest.
    await registrar.register(alice)
    await registrar.register(bob)

    # A wrong password: challenged, then refused.
    await registrar.refuse(alice, password=alice.password + "x")

    # Rotation: new passwords in the config and at the registrar together; the old one fails.
    await call(api, "POST", f"/devices/{PHONE.mac}/reprovision", {"rotate_sip": True}, 202)
    rotated = await phone.lines()
    assert rotated[1].password != alice.password
    assert rotated[2].password != bob.password
    assert rotated[1].user == alice.user  # same accounts, new passwords
    await registrar.refuse(alice)
    await registrar.refuse(bob)
    await registrar.register(rotated[1])
    await registrar.register(rotated[2])

    # Bob's line is removed: its account no longer registers, with any password; Alice's does.
    only_alice = [{"slot": 1, "username": "alice"}]
    await call(api, "PUT", f"/devices/{PHONE.mac}/assignments", only_alice)
    assert sorted(await phone.lines()) == [1]
    await registrar.refuse(rotated[2])
    await registrar.register(rotated[1])

    # Kamailio said why: a wrong password (-2) and an account it does not know (-3).
    log = kamailio.log.read_text(errors="replace")
    assert re.search(rf"REGISTER sip:{alice.user}@127\.0\.0\.1 .* auth_check -2$", log, re.M)
    assert re.search(rf"REGISTER sip:{bob.user}@127\.0\.0\.1 .* auth_check -3$", log, re.M)


async def test_site_realm_other_than_the_registrar_host(
    service: Client, pbx_role: PbxRole, tmp_path: Path
) -> None:
    """With ``sip_realm`` set, the digests are made for it; Kamailio challenges with it."""
    kamailio = await start_kamailio(tmp_path, pbx_role.kamailio_url, realm="pbx.test")
    try:
        api = await bootstrap_admin(service)
        site = {"registrar_host": "127.0.0.1", "registrar_port": kamailio.port}
        await call(api, "PUT", "/sites/default", {**site, "sip_realm": "pbx.test"})
        user = {"username": "alice", "display_name": "Alice", "extension": "201"}
        await call(api, "POST", "/users", user, expect=201)
        device = {"mac": PHONE.mac, "vendor": PHONE.vendor, "model": PHONE.model}
        await call(api, "POST", "/devices", device, expect=201)
        alice = [{"slot": 1, "username": "alice"}]
        await call(api, "PUT", f"/devices/{PHONE.mac}/assignments", alice)

        [line] = (await Phone(service, api).lines()).values()
        registrar = Registrar(kamailio, tmp_path)
        got = await registrar.register(line)
        challenge = next(m for m in got.messages if m.received).header("WWW-Authenticate")
        assert 'realm="pbx.test"' in challenge, challenge
        await registrar.refuse(line, password=line.password + "x")
    finally:
        await kamailio.stop()


async def test_pbx_role_reads_the_views_and_nothing_else(
    service: Client, pbx_role: PbxRole
) -> None:
    api = await bootstrap_admin(service)
    await call(api, "PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
    user = {"username": "alice", "display_name": "Alice", "extension": "201"}
    await call(api, "POST", "/users", user, expect=201)
    device = {"mac": PHONE.mac, "vendor": PHONE.vendor, "model": PHONE.model}
    await call(api, "POST", "/devices", device, expect=201)
    await call(api, "PUT", f"/devices/{PHONE.mac}/assignments", [{"slot": 1, "username": "alice"}])

    conn = await asyncpg.connect(pbx_role.url)
    try:
        # search_path pbx: the stock table name of auth_db finds the view.
        assert await conn.fetchval("SHOW search_path") == "pbx"
        [row] = await conn.fetch("SELECT * FROM subscriber")
        assert (row["username"], row["domain"]) == (f"201-{PHONE.mac}-1", "pbx.example.net")
        assert re.fullmatch(r"[0-9a-f]{32}", row["ha1"])
        assert re.fullmatch(r"[0-9a-f]{32}", row["ha1b"])
        assert set(row.keys()) == {"username", "domain", "ha1", "ha1b"}  # no clear password
        for view in PBX_VIEWS:
            await conn.fetch(f"SELECT * FROM pbx.{view}")

        # Nothing behind the views, and nothing written through them.
        for table in PRIVATE_TABLES:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM public.{table}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM subscriber")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE subscriber SET ha1 = ha1b")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE VIEW pbx.mine AS SELECT 1 AS one")
    finally:
        await conn.close()

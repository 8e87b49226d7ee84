"""Contacts from Kamailio's ``location`` table, without any hook: end to end.

A real Kamailio 5.6 (``tests/kamailio.py``: ``contrib/kamailio/kamailio.cfg`` with ``-A
WITH_USRLOC_DB``) authenticates the phone's lines against the service's view ``pbx.subscriber``
(a role ``provisioner pbx grant`` let in) and writes their registrations (usrloc ``db_mode`` 1)
as a role of its own into the tables Debian's schema files create, in a schema of the test
database. The service reads them through ``PROVISIONER_KAMAILIO_LOCATION_URL`` (the test database
with ``?search_path=<that schema>``).

A sipp UAC registers a line with a Contact that points at a second sipp, which plays the phone's
side receiving NOTIFYs; a PIN change makes the push worker notify that contact. The PBX's
``registered`` hook is never called.

Roles are cluster-wide: each test makes its own with a random name and drops it at the end.
Nothing sleeps a fixed time: job states, log lines, sockets and process exits are awaited with
deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner.app import create_app
from provisioner.settings import Settings, SettingsError
from provisioner.usrloc import LocationLookup, Registration
from provisioner.web.keys import CORE
from tests import test_kamailio
from tests.conftest import Api, bootstrap_admin, free_port
from tests.kamailio import Kamailio, Line, register, start_kamailio
from tests.test_kamailio import PHONE, Phone, registered
from tests.test_phones import BOOT_PASSWORD, BOOT_USER, call
from tests.test_push import (  # noqa: F401 -- start_sipp: a fixture
    DEADLINE,
    SCENARIOS,
    Sipp,
    StartSipp,
    clean_environ,
    eventually,
    free_udp_port,
    start_sipp,
    udp_bound,
)

Client = TestClient[Any, Any]

#: The PBX role that Kamailio's auth_db reads the accounts with (``provisioner pbx grant``).
pbx_role = test_kamailio.pbx_role

KAMAILIO_SCHEMA = Path("/usr/share/kamailio/postgres")
"""Kamailio's PostgreSQL schema files (Debian package ``kamailio``)."""
PIN = "480913"
NEW_PIN = "739251"
NOTHING_REGISTERED = "no line of this device is in Kamailio's location table"
#: What the sipp phone sends as User-Agent (tests/sipp/register_contact.xml).
SIPP_USER_AGENT = "sipp playing a provisioned phone"


# --- Kamailio's location database -------------------------------------------------------------


@dataclass(frozen=True)
class LocationDb:
    """A schema for Kamailio's usrloc tables and the role Kamailio writes them as."""

    db: asyncpg.Connection
    schema: str
    role: str
    kamailio_url: str
    """The role's URL for Kamailio (db_postgres's ``postgres://``); its search_path: the schema."""
    reader_url: str
    """The service's ``PROVISIONER_KAMAILIO_LOCATION_URL``: the schema by ``?search_path=``."""

    async def create_tables(self) -> None:
        """What a DBA runs: Kamailio's ``version`` and usrloc tables, writable by the role."""
        script = "\n".join(
            (KAMAILIO_SCHEMA / name).read_text()
            for name in ("standard-create.sql", "usrloc-create.sql")
        )
        async with self.db.transaction():
            await self.db.execute(f"SET LOCAL search_path TO {self.schema}")
            await self.db.execute(script)
        await self.db.execute(
            f"""GRANT SELECT ON {self.schema}.version TO {self.role};
                GRANT SELECT, INSERT, UPDATE, DELETE
                    ON {self.schema}.location, {self.schema}.location_attrs TO {self.role};
                GRANT USAGE ON ALL SEQUENCES IN SCHEMA {self.schema} TO {self.role}"""
        )


@pytest.fixture
async def location(database_url: str, db: asyncpg.Connection) -> AsyncIterator[LocationDb]:
    """An empty schema and Kamailio's role for it (the tables: :meth:`LocationDb.create_tables`)."""
    suffix = secrets.token_hex(4)
    schema, role = f"kamailio_{suffix}", f"kamailio_usrloc_{suffix}"
    password = secrets.token_hex(16)
    database = await db.fetchval("SELECT current_database()")
    await db.execute(f"CREATE SCHEMA {schema}")
    await db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        await db.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        await db.execute(f'ALTER ROLE {role} IN DATABASE "{database}" SET search_path = {schema}')
        parts = urlsplit(database_url)
        netloc = f"{role}:{password}@{parts.hostname}:{parts.port or 5432}"
        yield LocationDb(
            db=db,
            schema=schema,
            role=role,
            kamailio_url=urlunsplit(parts._replace(scheme="postgres", netloc=netloc)),
            reader_url=f"{database_url}?search_path={schema}",
        )
    finally:
        await db.execute(f"DROP SCHEMA {schema} CASCADE")
        await db.execute(f"DROP OWNED BY {role}")
        await db.execute(f"DROP ROLE {role}")


@pytest.fixture
async def kamailio_with_location(
    tmp_path: Path, pbx_role: test_kamailio.PbxRole, location: LocationDb
) -> AsyncIterator[Kamailio]:
    await location.create_tables()
    directory = tmp_path / "kamailio"
    directory.mkdir()
    started = await start_kamailio(
        directory, pbx_role.kamailio_url, location_db_url=location.kamailio_url
    )
    try:
        yield started
    finally:
        await started.stop()


# --- the service and the phone ----------------------------------------------------------------


@pytest.fixture
def service_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {
        **settings_env,
        "PROVISIONER_PROVISIONING_USER": BOOT_USER,
        "PROVISIONER_PROVISIONING_PASSWORD": BOOT_PASSWORD,
    }


StartService = Callable[..., Awaitable[Client]]


@pytest.fixture
def start_service(
    db: asyncpg.Connection, service_env: dict[str, str], aiohttp_client: Any
) -> StartService:
    """The real application with ``location_url`` set; ``worker``: with the push worker."""

    async def start(location_url: str, *, worker: bool = True) -> Client:
        env = {**service_env, "PROVISIONER_KAMAILIO_LOCATION_URL": location_url}
        client: Client = await aiohttp_client(create_app(Settings.from_env(env), worker=worker))
        return client

    return start


async def register_at(kamailio: Kamailio, directory: Path, line: Line, contact_port: int) -> None:
    """The phone registers ``line`` at Kamailio with its Contact on ``contact_port``."""
    kamailio.assert_running()
    got = await register(
        directory,
        line,
        scenario="register_contact.xml",
        keys={"contact_port": str(contact_port)},
    )
    assert registered(got), (
        f"register as {line.auth_user}: exit {got.exit_code}, answers {got.answers}, "
        f"sipp: {got.errors}\n{kamailio.tail()}"
    )


async def set_up_phone(api: Api, kamailio_port: int, users: list[tuple[str, str]]) -> None:
    """The site's registrar is Kamailio; the Yealink with ``users`` (name, extension) on its
    lines 1, 2, ...; the first user has a PIN."""
    site = {"registrar_host": "127.0.0.1", "registrar_port": kamailio_port}
    await call(api, "PUT", "/sites/default", site)  # the realm: 127.0.0.1, as Kamailio's $fd
    for username, extension in users:
        body = {"username": username, "display_name": username.title(), "extension": extension}
        await call(api, "POST", "/users", body, expect=201)
    await call(api, "PUT", f"/users/{users[0][0]}/pin", {"pin": PIN})
    device = {"mac": PHONE.mac, "vendor": PHONE.vendor, "model": PHONE.model}
    await call(api, "POST", "/devices", device, expect=201)
    slots = [{"slot": n, "username": name} for n, (name, _) in enumerate(users, start=1)]
    await call(api, "PUT", f"/devices/{PHONE.mac}/assignments", slots)


async def job_row(
    db: asyncpg.Connection,
    what: str,
    accept: Callable[[asyncpg.Record], bool],
    *,
    job_id: int | None = None,
    within: float = DEADLINE,
) -> asyncpg.Record:
    """Poll the device's newest push job (or ``job_id``) until ``accept`` says yes."""

    async def probe() -> asyncpg.Record | None:
        row = await db.fetchrow(
            "SELECT * FROM push_jobs WHERE mac = $1 AND ($2::bigint IS NULL OR id = $2) "
            "ORDER BY id DESC LIMIT 1",
            PHONE.mac,
            job_id,
        )
        return row if row is not None and accept(row) else None

    return await eventually(probe, what, within=within)


def waiting_after(error: str, attempts: int = 1) -> Callable[[asyncpg.Record], bool]:
    """A job back in ``pending`` after ``attempts`` tries, the last failing with ``error``."""
    return lambda row: (
        row["state"] == "pending"
        and row["lease_until"] is None
        and row["attempts"] >= attempts
        and (row["last_error"] or "").startswith(error)
    )


# --- the tests --------------------------------------------------------------------------------


async def test_push_goes_to_the_line_kamailio_registered(
    start_service: StartService,
    kamailio_with_location: Kamailio,
    location: LocationDb,
    start_sipp: StartSipp,  # noqa: F811 -- the imported fixture
    db: asyncpg.Connection,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="provisioner.push")
    kamailio = kamailio_with_location
    service = await start_service(location.reader_url)  # the worker `serve` runs
    api = await bootstrap_admin(service)
    await set_up_phone(api, kamailio.port, [("alice", "201"), ("bob", "202")])

    # The worker read the table: reachable, but no line of the phone has registered yet.
    await job_row(db, "the set-up job waits for a registration", waiting_after(NOTHING_REGISTERED))

    # The phone fetches its config (which completes the set-up job) and registers line 2 only,
    # with a Contact where its NOTIFY side listens; that side challenges with line 2's digest.
    phone = Phone(service, api)
    lines = await phone.lines()
    alice, bob = lines[1], lines[2]
    assert bob.user == bob.auth_user == f"202-{PHONE.mac}-2"
    await job_row(db, "the set-up job is fetched", lambda row: row["state"] == "fetched")
    uas = await start_sipp(
        "notify_challenge_line.xml", {"line_user": bob.auth_user, "line_password": bob.password}
    )
    await register_at(kamailio, tmp_path / "register", bob, uas.port)
    contact = f"sip:{bob.user}@127.0.0.1:{uas.port}"

    # What Kamailio wrote: the freshest unexpired registration of the phone's accounts.
    lookup = LocationLookup(location.reader_url)
    try:
        found = await lookup.registration([alice.user, bob.user])
        assert found == Registration(bob.user, contact, SIPP_USER_AGENT)
        assert await lookup.registration([alice.user]) is None
    finally:
        await lookup.close()
    # Kamailio writes its local time (UTC here); read in a zone three hours ahead, the
    # registration (120 s) has expired: the URL must name Kamailio's zone where they differ.
    ahead = LocationLookup(f"{location.reader_url}&timezone=Etc/GMT-3")
    try:
        assert await ahead.registration([bob.user]) is None
    finally:
        await ahead.close()

    # Alice's PIN changes: the NOTIFY goes to line 2's contact and answers its digest challenge.
    changed = await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    [job_id] = changed["push_jobs"]
    job = await job_row(
        db, "the PIN job is notified", lambda row: row["state"] == "notified", job_id=job_id
    )
    assert (job["attempts"], job["last_error"]) == (1, None)
    assert await uas.exit_code() == 0, uas.errors()  # 200 only for line 2's credentials
    first, second = uas.transactions()  # challenged, then with line 2's credentials
    assert first.start_line == second.start_line == f"NOTIFY {contact} SIP/2.0"
    assert first.header("Event") == "check-sync;reboot=false"
    assert f'username="{bob.auth_user}"' in second.header("Authorization")
    # The worker's debug log names where it found the phone.
    assert (
        f"device {PHONE.mac}: registered as {bob.user} at {contact} ({SIPP_USER_AGENT})"
        in caplog.messages
    )

    config = await phone.config()
    assert NEW_PIN in config
    await job_row(db, "the PIN job is fetched", lambda r: r["state"] == "fetched", job_id=job_id)

    # No hook told the service anything: the device has no stored contact.
    stored = await db.fetchrow(
        "SELECT sip_contact, sip_contact_user FROM devices WHERE mac = $1", PHONE.mac
    )
    assert stored is not None
    assert (stored["sip_contact"], stored["sip_contact_user"]) == (None, None)


async def test_unreachable_location_database_makes_jobs_retry(
    start_service: StartService, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens here
    caplog.set_level(logging.INFO, logger="provisioner.usrloc")
    service = await start_service(f"postgresql://kamailio:secret@127.0.0.1:{port}/kamailio")
    api = await bootstrap_admin(service)
    await set_up_phone(api, 5060, [("alice", "201")])

    unreachable = f"cannot read Kamailio's location table: 127.0.0.1:{port}/kamailio unreachable"
    job = await job_row(
        db, "the job is retried and waits again", waiting_after(unreachable, attempts=2)
    )
    assert "secret" not in job["last_error"]
    # The worker lives on (it tried again) and the service answers.
    async with service.get("/healthz") as response:
        assert response.status == 200
    result = await db.fetchval("SELECT last_notify_result FROM devices WHERE mac = $1", PHONE.mac)
    assert result.startswith(f"failed: {unreachable}"), result
    # The state change is logged once, not per attempt.
    warnings = [r for r in caplog.records if r.name == "provisioner.usrloc"]
    assert [r.levelno for r in warnings] == [logging.WARNING], [r.message for r in warnings]
    assert warnings[0].getMessage().startswith(unreachable)


async def test_worker_command_waits_for_the_table_then_notifies(
    start_service: StartService,
    service_env: dict[str, str],
    location: LocationDb,
    pbx_role: test_kamailio.PbxRole,
    start_sipp: StartSipp,  # noqa: F811 -- the imported fixture
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """``provisioner worker`` with the table not there yet: the job retries; once Kamailio
    writes the table and the phone registers, the next push reaches it."""
    service = await start_service(location.reader_url, worker=False)
    api = await bootstrap_admin(service)
    log_path = tmp_path / "worker.log"
    env = {
        **clean_environ(),
        **service_env,
        "PROVISIONER_KAMAILIO_LOCATION_URL": location.reader_url,
        "PROVISIONER_DATA_DIR": str(tmp_path / "worker"),
        "PROVISIONER_SECRET_KEY_FILE": str(service.app[CORE].settings.secret_key_file),
    }
    with log_path.open("wb") as log:
        worker = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "provisioner", "worker"),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    kamailio: Kamailio | None = None
    try:
        await set_up_phone(api, 5060, [("alice", "201")])
        host = urlsplit(location.reader_url).hostname
        missing = f"Kamailio's location table is missing in {host}"
        await job_row(db, "the set-up job waits for the table", waiting_after(missing))
        assert worker.returncode is None, log_path.read_text()

        # The DBA creates the tables, Kamailio starts writing them, the phone registers.
        await location.create_tables()
        directory = tmp_path / "kamailio"
        directory.mkdir()
        kamailio = await start_kamailio(
            directory, pbx_role.kamailio_url, location_db_url=location.kamailio_url
        )
        site = {"registrar_host": "127.0.0.1", "registrar_port": kamailio.port}
        await call(api, "PUT", "/sites/default", site)
        [line] = (await Phone(service, api).lines()).values()
        uas = await start_sipp("notify_ok.xml")
        await register_at(kamailio, tmp_path / "register", line, uas.port)

        changed = await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
        [job_id] = changed["push_jobs"]
        await job_row(
            db, "the PIN job is notified", lambda row: row["state"] == "notified", job_id=job_id
        )
        assert await uas.exit_code() == 0, uas.errors()
        [notify] = uas.transactions()
        assert notify.start_line == f"NOTIFY sip:{line.user}@127.0.0.1:{uas.port} SIP/2.0"

        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            assert await worker.wait() == 0, log_path.read_text()
        # The state changes are logged once each, not per attempt.
        log = log_path.read_text()
        changes = [line for line in log.splitlines() if " provisioner.usrloc: " in line]
        assert len(changes) == 2, log
        assert f"WARNING provisioner.usrloc: {missing}" in changes[0]
        assert "INFO provisioner.usrloc: Kamailio location table: readable again" in changes[1]
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        if kamailio is not None:
            await kamailio.stop()


def test_setting_is_validated_and_masked() -> None:
    url = "postgresql://kamailio:loc-s3cret@db.example.net/kamailio?search_path=kamailio"
    settings = Settings.from_env({"PROVISIONER_KAMAILIO_LOCATION_URL": url})
    assert settings.kamailio_location_url == url
    shown = settings.describe()["kamailio_location"]
    assert shown == "postgresql://kamailio:***@db.example.net/kamailio?search_path=kamailio"
    assert Settings.from_env({}).kamailio_location_url is None
    for bad in ("mysql://db.example.net/kamailio", "postgresql://db.example.net:port/kamailio"):
        with pytest.raises(SettingsError, match=r"^PROVISIONER_KAMAILIO_LOCATION_URL: "):
            Settings.from_env({"PROVISIONER_KAMAILIO_LOCATION_URL": bad})

"""The AMI contact follower end to end: real service, real PostgreSQL, a stand-in for Asterisk.

Asterisk cannot run here (it is not packaged for this environment), so the peer is
:class:`tests.test_ami.FakeAsterisk`, a protocol-level stand-in for its manager interface: it
speaks the AMI wire format, sends ``ContactStatus`` events (class ``system``) to sessions whose
``Events`` mask includes them, and answers ``PJSIPShowRegistrationInboundContactStatuses`` with
``ContactStatusDetail`` events and ``ContactStatusDetailComplete``, as Asterisk's
``main/stasis_endpoints.c`` and ``res_pjsip_registrar.c`` do. It is not Asterisk: what it
proves is that the service understands those messages, not that a given Asterisk sends them.

The service runs with ``PROVISIONER_AMI_URL`` pointing at the stand-in and the push worker on
(the follower runs where the worker runs). A device's contact is read from the database and
awaited by polling with a deadline; "nothing changed" is checked after a later event that did
change something has been recorded (events are handled in order), never after a sleep. The
outage tests run a follower of their own with a back-off of milliseconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner import store
from provisioner.app import create_app
from provisioner.contacts import ContactFollower, contact_of
from provisioner.push import Backoff
from provisioner.settings import Settings
from provisioner.web.keys import CORE
from tests.conftest import Api, bootstrap_admin
from tests.test_ami import SECRET, Contact, FakeAsterisk
from tests.test_push import REGISTRAR, call, eventually

Client = TestClient[Any, Any]
StartService = Callable[..., Awaitable[Client]]

DESK = "001565c0ffee"
"""A Yealink T54W: alice on line 1, bob on line 2."""
BASE = "000413c0ffee"
"""A Snom D785: carol on line 1."""
YEALINK_UA = "Yealink SIP-T54W 96.86.0.70 00:15:65:c0:ff:ee"
SNOM_UA = "snomD785/10.1.33.33"
FOLLOWER = "provisioner.contacts"


@pytest.fixture
async def asterisk() -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def start_service(
    asterisk: FakeAsterisk,
    db: asyncpg.Connection,
    settings_env: dict[str, str],
    aiohttp_client: Any,
) -> StartService:
    """The real application with ``PROVISIONER_AMI_URL`` at the stand-in; ``worker=True`` runs
    the push worker and, with it, the contact follower, as ``provisioner serve`` does."""
    env = {**settings_env, "PROVISIONER_AMI_URL": asterisk.url()}

    async def start(*, worker: bool) -> Client:
        client: Client = await aiohttp_client(create_app(Settings.from_env(env), worker=worker))
        return client

    return start


async def set_up_lines(api: Api, asterisk: FakeAsterisk) -> dict[str, str]:
    """Alice and bob on the desk phone's lines 1 and 2, carol on the Snom; SIP account by user.
    The stand-in knows them all as PJSIP endpoints (its PJSIPNotify succeeds)."""
    await call(api, "PUT", "/sites/default", {"registrar_host": REGISTRAR})
    for username, extension in (("alice", "201"), ("bob", "202"), ("carol", "203")):
        user = {"username": username, "display_name": username.title(), "extension": extension}
        await call(api, "POST", "/users", user, expect=201)
    lines = []
    for mac, vendor, model, users in (
        (DESK, "yealink", "T54W", ["alice", "bob"]),
        (BASE, "snom", "D785", ["carol"]),
    ):
        await call(api, "POST", "/devices", {"mac": mac, "vendor": vendor, "model": model}, 201)
        slots = [{"slot": n, "username": u} for n, u in enumerate(users, start=1)]
        lines += await call(api, "PUT", f"/devices/{mac}/assignments", slots)
    accounts = {line["username"]: line["sip_user"] for line in lines}
    asterisk.endpoints = frozenset(accounts.values())
    return accounts


async def device(db: asyncpg.Connection, mac: str) -> asyncpg.Record:
    row = await db.fetchrow(
        """SELECT sip_contact, sip_contact_user, sip_user_agent, registered_at
           FROM devices WHERE mac = $1""",
        mac,
    )
    assert row is not None
    return row


async def registered_at(db: asyncpg.Connection, mac: str, uri: str) -> asyncpg.Record:
    """Wait until the device's recorded contact is ``uri``; its row."""

    async def probe() -> asyncpg.Record | None:
        row = await device(db, mac)
        return row if row["sip_contact"] == uri else None

    return await eventually(probe, f"{mac} has contact {uri}")


def follower_logs(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == FOLLOWER and text in r.getMessage()]


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    """:func:`follower_logs` for ``eventually``, which polls coroutines."""
    return follower_logs(caplog, text)


def contact_uri(sip_user: str, port: int) -> str:
    return f"sip:{sip_user}@192.0.2.10:{port};transport=udp"


# --- end to end --------------------------------------------------------------------------------


async def test_follows_contacts_pushes_to_the_registered_line_and_survives_a_restart(
    start_service: StartService,
    asterisk: FakeAsterisk,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service = await start_service(worker=True)
    api = await bootstrap_admin(service)
    await eventually(lambda: _value(asterisk.listings), "the follower listed the contacts")
    accounts = await set_up_lines(api, asterisk)
    alice, bob, carol = accounts["alice"], accounts["bob"], accounts["carol"]
    # The assignments' pushes went out (to line 1: no contact is known yet); let them settle.
    for mac in (DESK, BASE):
        await eventually(functools.partial(_jobs_in, api, mac, "notified"), f"{mac} notified")

    # Bob's phone registers on line 2: the desk phone's contact, and the line to notify.
    asterisk.contact_status(bob, contact_uri(bob, 5062))
    row = await registered_at(db, DESK, contact_uri(bob, 5062))
    assert row["sip_contact_user"] == "202"
    assert row["registered_at"] is not None
    assert row["sip_user_agent"] is None  # today's Asterisk sends no UserAgent in ContactStatus

    # A push now goes to the registered line's account, through Asterisk.
    before = len(asterisk.named("pjsipnotify"))
    status, _ = await api.call("POST", f"/devices/{DESK}/reprovision")
    assert status == 202

    async def notified() -> list[str | None] | None:
        endpoints = [a.get("Endpoint") for a in asterisk.named("pjsipnotify")[before:]]
        return endpoints or None

    assert await eventually(notified, "a PJSIPNotify after the reprovision") == [bob]

    # Bob's phone moves: with remove_existing Asterisk creates the new contact, then removes the
    # old one. The removal must not undo the move (see provisioner/contacts.py).
    asterisk.contact_status(bob, contact_uri(bob, 5072), "Created")
    asterisk.contact_status(bob, contact_uri(bob, 5062), "Removed")
    # Ignored: a qualify failure (says nothing new), an account that is no line's, unusable
    # URIs. Then carol's phone, which is recorded: everything before it was handled.
    asterisk.contact_status(bob, contact_uri(bob, 9999), "Unreachable")
    asterisk.contact_status("299-000000000000-1", "sip:299@192.0.2.99:5060")
    asterisk.contact_status(carol, "http://192.0.2.11/")
    asterisk.contact_status(carol, "sip:carol@192.0.2.11 ;lr")
    asterisk.contact_status(carol, "sip:" + "a" * 520 + "@192.0.2.11")
    asterisk.contact_status(carol, contact_uri(carol, 5063), "Reachable", SNOM_UA)
    row = await registered_at(db, BASE, contact_uri(carol, 5063))
    assert (row["sip_contact_user"], row["sip_user_agent"]) == ("203", SNOM_UA)
    assert (await device(db, DESK))["sip_contact"] == contact_uri(bob, 5072)
    assert await db.fetchval("SELECT count(*) FROM devices WHERE sip_contact IS NOT NULL") == 2

    # Asterisk goes away. While it is down carol's phone registers from elsewhere; when it is
    # back the follower reconnects by itself and the listing at connect brings the new contact.
    await asterisk.stop()
    await eventually(lambda: logged(caplog, "lost connection"), "the loss is logged")
    asterisk.contacts[carol] = Contact(carol, contact_uri(carol, 5073), SNOM_UA, "Reachable")
    await asterisk.start()
    await registered_at(db, BASE, contact_uri(carol, 5073))
    # And it follows changes again.
    asterisk.contact_status(alice, contact_uri(alice, 5061), "Created")
    row = await registered_at(db, DESK, contact_uri(alice, 5061))
    assert row["sip_contact_user"] == "201"

    assert len(follower_logs(caplog, "lost connection")) == 1
    assert len(follower_logs(caplog, "resumed")) == 1
    follower_logins = [a for a in asterisk.named("login") if a.get("Events") == "system"]
    assert len(follower_logins) == 2
    for text in (caplog.text, *(str(r.args) for r in caplog.records)):
        assert SECRET not in text
        assert quote(SECRET, safe="") not in text


async def test_contacts_registered_before_the_follower_connects_are_recorded(
    start_service: StartService,
    asterisk: FakeAsterisk,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FOLLOWER)
    # The lines exist (an API-only process made them) before any follower runs.
    api = await bootstrap_admin(await start_service(worker=False))
    accounts = await set_up_lines(api, asterisk)
    bob, carol = accounts["bob"], accounts["carol"]
    for contact in (
        Contact(bob, contact_uri(bob, 5062), YEALINK_UA, "Reachable"),
        Contact("299-000000000000-1", "sip:299@192.0.2.99:5060", "x", "Reachable"),
        Contact(carol, "sips:carol@192.0.2.11:5061 ;lr", SNOM_UA, "Unknown"),
    ):
        asterisk.contacts[contact.aor] = contact

    await start_service(worker=True)
    row = await registered_at(db, DESK, contact_uri(bob, 5062))
    assert (row["sip_contact_user"], row["sip_user_agent"]) == ("202", YEALINK_UA)
    await eventually(lambda: _value(asterisk.listings), "the listing was answered")
    assert (await device(db, BASE))["sip_contact"] is None  # its URI has a space: unusable

    (listing,) = asterisk.named("pjsipshowregistrationinboundcontactstatuses")
    assert listing.get("ActionID")
    (login,) = [a for a in asterisk.named("login") if a.get("Events") == "system"]
    assert login.get("Secret") == SECRET
    await eventually(lambda: logged(caplog, "following Asterisk at"), "start is logged")


async def test_an_asterisk_without_the_listing_is_still_followed(
    start_service: StartService,
    asterisk: FakeAsterisk,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FOLLOWER)
    asterisk.list_contacts = False  # "Invalid/unknown command", as before Asterisk 13.14
    api = await bootstrap_admin(await start_service(worker=True))
    accounts = await set_up_lines(api, asterisk)
    await eventually(lambda: _value(asterisk.event_sessions), "the follower listens")

    asterisk.contact_status(accounts["carol"], contact_uri(accounts["carol"], 5063))
    await registered_at(db, BASE, contact_uri(accounts["carol"], 5063))
    (refused,) = follower_logs(caplog, "refused PJSIPShowRegistrationInboundContactStatuses")
    assert "Invalid/unknown command" in refused.getMessage()


# --- outages, with a follower of the test's own (fast back-off) -------------------------------


@pytest.fixture
async def run_follower(
    start_service: StartService, asterisk: FakeAsterisk
) -> AsyncIterator[Callable[..., Awaitable[tuple[Api, dict[str, str]]]]]:
    """Start the service without a worker, set the lines up, run a follower with ``options``."""
    tasks: list[asyncio.Task[None]] = []

    async def run(**options: Any) -> tuple[Api, dict[str, str]]:
        service = await start_service(worker=False)
        api = await bootstrap_admin(service)
        accounts = await set_up_lines(api, asterisk)
        options = {"backoff": Backoff(base=0.05, cap=0.2), **options}
        follower = ContactFollower(service.app[CORE], asterisk.url(), **options)
        tasks.append(asyncio.create_task(follower.run()))
        return api, accounts

    yield run
    for task in tasks:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_database_outage_is_logged_once_and_repaired_by_the_next_listing(
    run_follower: Callable[..., Awaitable[tuple[Api, dict[str, str]]]],
    asterisk: FakeAsterisk,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger=FOLLOWER)
    real = store.set_contacts_by_sip_user
    calls = 0

    async def database_down_twice(conn: Any, contacts: Any) -> list[str]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionRefusedError(111, "Connection refused")
        return await real(conn, contacts)

    monkeypatch.setattr(store, "set_contacts_by_sip_user", database_down_twice)
    # Registered before the follower starts: only the listing at each connect reports it.
    asterisk.contacts["201-001565c0ffee-1"] = Contact(
        "201-001565c0ffee-1", contact_uri("201-001565c0ffee-1", 5061), YEALINK_UA, "Reachable"
    )
    _, accounts = await run_follower()
    assert accounts["alice"] == "201-001565c0ffee-1"

    await registered_at(db, DESK, contact_uri(accounts["alice"], 5061))
    assert calls == 3
    assert asterisk.listings == 3  # each reconnect listed the contacts again
    (lost,) = follower_logs(caplog, "lost connection")
    assert "the database failed: ConnectionRefusedError" in lost.getMessage()
    await eventually(lambda: logged(caplog, "resumed"), "the recovery is logged")
    assert len(follower_logs(caplog, "resumed")) == 1


async def test_a_silent_asterisk_is_noticed_by_ping_and_left(
    run_follower: Callable[..., Awaitable[tuple[Api, dict[str, str]]]],
    asterisk: FakeAsterisk,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FOLLOWER)
    _, accounts = await run_follower(ping_seconds=0.1, timeout=0.3)
    await eventually(lambda: logged(caplog, "following Asterisk at"), "the follower is up")

    asterisk.silent = True  # keeps the connection open but answers nothing, Ping included
    lost = await eventually(lambda: logged(caplog, "lost connection"), "the loss")
    assert "did not answer Ping within 0.3 s" in lost[0].getMessage()
    asterisk.silent = False
    await eventually(lambda: logged(caplog, "resumed"), "the follower resumed")

    asterisk.contact_status(accounts["carol"], contact_uri(accounts["carol"], 5063))
    await registered_at(db, BASE, contact_uri(accounts["carol"], 5063))


# --- which events are contacts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "recorded"),
    [
        ({"Event": "ContactStatus", "ContactStatus": "Created"}, True),
        ({"Event": "ContactStatus", "ContactStatus": "Reachable"}, True),
        ({"Event": "ContactStatus", "ContactStatus": "Updated"}, True),
        ({"Event": "ContactStatus", "ContactStatus": "Unknown"}, True),
        ({"Event": "ContactStatus", "ContactStatus": "NonQualified"}, True),
        ({"Event": "ContactStatus", "ContactStatus": "Unreachable"}, False),
        ({"Event": "ContactStatus", "ContactStatus": "Removed"}, False),
        ({"Event": "ContactStatusDetail", "Status": "Unreachable"}, True),
        ({"Event": "ContactStatusDetail", "Status": "Removed"}, False),
        ({"Event": "PeerStatus", "PeerStatus": "Reachable"}, False),
    ],
)
def test_which_events_report_a_registered_contact(fields: dict[str, str], recorded: bool) -> None:
    message = {k.lower(): v for k, v in fields.items()}
    message |= {"aor": "201-x-1", "uri": "sip:201-x-1@192.0.2.10:5060", "useragent": "UA"}
    contact = contact_of(message)
    assert (contact is not None) == recorded
    if contact is not None:
        assert (contact.sip_user, contact.uri, contact.user_agent) == (
            "201-x-1",
            "sip:201-x-1@192.0.2.10:5060",
            "UA",
        )


# --- helpers -----------------------------------------------------------------------------------


async def _value(value: Any) -> Any:
    """``eventually`` polls coroutines: a plain value, looked at again on every call."""
    return value


async def _jobs_in(api: Api, mac: str, state: str) -> bool:
    data = await call(api, "GET", f"/push-jobs?device={mac}")
    jobs = data["jobs"]
    return bool(jobs) and all(job["state"] == state for job in jobs)

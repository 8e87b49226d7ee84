"""Plug-and-play discovery end to end: the real app and PostgreSQL, phones over HTTP, sipp.

A phone nobody has added fetches with the bootstrap credential: it gets a minimal config of its
vendor's format (no SIP account, no secret of anyone) and is listed as discovered; adopting it
through the API gives it its full config on its next fetch, after a push.

Client addresses: the app trusts ``127.0.0.1`` as a proxy and the tests present the phones'
addresses in ``X-Forwarded-For`` (as ``tests/test_phones.py`` does). Everything asynchronous is
awaited by polling the real condition with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from provisioner.discovery import MAX_IN_FLIGHT, MAX_PER_SITE, WINDOW, contact_of
from provisioner.settings import Settings, SettingsError
from provisioner.vault import Vault, device_credential_purpose, sip_password_purpose
from provisioner.web.keys import CORE, PHONES
from provisioner.web.openapi import openapi_document
from tests.conftest import AppFactory, bootstrap_admin, free_port
from tests.test_cli import (
    SERVER_START_DEADLINE,
    StartServer,
    clean_environ,
    start_server,  # noqa: F401 (fixture)
)
from tests.test_device_cli import Cli, assert_exit, cli, key_file  # noqa: F401 (fixtures)
from tests.test_guards import metrics
from tests.test_openapi import schema_errors
from tests.test_push import (
    SCENARIOS,
    Sipp,
    Workers,
    eventually,
    job_reaches,
    jobs_of,
    notifies_received,
    udp_bound,
    workers,  # noqa: F401 (fixture)
)

Client = TestClient[Any, Any]

BOOT_USER = "boot"
BOOT_PASSWORD = "Discovery-Boot-5e1f"
REGISTRAR = "pbx.example.net"
PIN = "480913"

T54W_UA = "Yealink SIP-T54W 96.86.0.70"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


BOOTSTRAP = basic(BOOT_USER, BOOT_PASSWORD)


@dataclass(frozen=True)
class Fetched:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def code(self) -> str:
        return str(json.loads(self.body)["error"]["code"])


async def fetch(
    client: Client,
    file: str,
    user_agent: str,
    source: str,
    *,
    auth: str | None = BOOTSTRAP,
    headers: dict[str, str] | None = None,
) -> Fetched:
    sent = {"User-Agent": user_agent, "X-Forwarded-For": source, **(headers or {})}
    if auth is not None:
        sent["Authorization"] = auth
    async with client.get(f"/provisioning/{file}", headers=sent) as response:
        return Fetched(response.status, response.headers, await response.read())


def yealink_ua(mac: str, firmware: str = "96.86.0.70") -> str:
    return f"Yealink SIP-T54W {firmware} " + ":".join(mac[i : i + 2] for i in range(0, 12, 2))


async def discovered_rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM discovered_devices ORDER BY first_seen, mac")


async def start(make_client: AppFactory, **env: str) -> Client:
    return await make_client(
        provisioning_user=BOOT_USER,
        provisioning_password=BOOT_PASSWORD,
        trusted_proxies="127.0.0.1",
        **env,
    )


@pytest.fixture
async def service(make_client: AppFactory, db: asyncpg.Connection) -> Client:
    return await start(make_client)


async def call(api: Any, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, data = await api.call(method, path, body)
    assert status == expect, (method, path, data)
    return data


async def with_alice_on_a_phone(api: Any, db: asyncpg.Connection, vault: Vault) -> list[str]:
    """A site with a registrar, alice (PIN) on a provisioned phone: every secret that exists."""
    await call(api, "PUT", "/sites/default", {"registrar_host": REGISTRAR})
    alice = {"username": "alice", "display_name": "Alice Example", "extension": "48201"}
    await call(api, "POST", "/users", alice, expect=201)
    await call(api, "PUT", "/users/alice/pin", {"pin": PIN})
    device = {"mac": "001565000201", "vendor": "yealink", "model": "T54W"}
    await call(api, "POST", "/devices", device, expect=201)
    await call(api, "PUT", "/devices/001565000201/assignments", [{"slot": 1, "username": "alice"}])
    sip = await db.fetchrow(
        "SELECT sip_user, sip_password_encrypted FROM device_assignments WHERE mac = $1",
        "001565000201",
    )
    credential = await db.fetchval(
        "SELECT credential_encrypted FROM devices WHERE mac = $1", "001565000201"
    )
    assert sip is not None
    assert credential is not None
    return [
        PIN,
        sip["sip_user"],
        vault.decrypt(sip["sip_password_encrypted"], sip_password_purpose("001565000201", 1)),
        vault.decrypt(credential, device_credential_purpose("001565000201")),
        "Alice Example",
        "48201",
    ]


def loopback_address() -> str:
    """A random address of 127/8 (all of it is this host on Linux): the phone's own."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


@pytest.fixture
async def sipp_at_5060(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Sipp]]]:
    """sipp answering a check-sync NOTIFY on ``host``:5060, SIP's default port: where a phone
    that has no SIP account yet is notified."""
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp is not installed: install the Debian package sip-tester")
    started: list[Sipp] = []

    async def begin(host: str) -> Sipp:
        if udp_bound(5060):
            pytest.fail("UDP port 5060 is taken on this host; discovery's push test needs it")
        directory = tmp_path / "sipp"
        directory.mkdir()
        command = [
            *(sipp, "-sf", str(SCENARIOS / "notify_ok.xml"), "-i", host, "-p", "5060"),
            *("-t", "u1", "-m", "1", "-nostdin", "-timeout", "90s"),
            *("-trace_msg", "-message_file", str(directory / "messages.log")),
            *("-trace_err", "-error_file", str(directory / "errors.log")),
        ]
        with (directory / "stderr.log").open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        phone = Sipp(process, 5060, directory)
        started.append(phone)

        async def bound() -> bool:
            if process.returncode is not None:
                pytest.fail(f"sipp exited with {process.returncode}: {phone.errors()}")
            return udp_bound(5060)

        await eventually(bound, "sipp listens on UDP 5060", within=5, interval=0.01)
        return phone

    yield begin
    for phone in started:
        await phone.stop()


# --- end to end -----------------------------------------------------------------------------------


async def test_a_discovered_phone_is_adopted_and_gets_its_full_config(
    service: Client,
    db: asyncpg.Connection,
    vault: Vault,
    workers: Workers,  # noqa: F811
    sipp_at_5060: Callable[[str], Awaitable[Sipp]],
) -> None:
    api = await bootstrap_admin(service)
    others = await with_alice_on_a_phone(api, db, vault)
    bob = {"username": "bob", "display_name": "Bob Builder", "extension": "202"}
    await call(api, "POST", "/users", bob, expect=201)
    mac, address = "001565d15c01", loopback_address()
    ua = yealink_ua(mac)

    # 1. The phone nobody added fetches with the bootstrap credential: a minimal config.
    started = datetime.now(UTC)
    got = await fetch(service, f"{mac}.cfg", ua, address)
    assert got.status == 200, got
    minimal = got.text
    assert "static.auto_provision.server.username = boot\n" in minimal
    assert f"static.auto_provision.server.password = {BOOT_PASSWORD}\n" in minimal
    assert "lang.gui = German" in minimal  # the site's language
    assert "local_time.ntp_server1 = pool.ntp.org" in minimal
    assert re.findall(r"^account\.\d+\.enable = (\S+)$", minimal, re.MULTILINE) == ["0"] * 16
    assert not re.search(r"^account\.\d+\.(user_name|password) = (?!%NULL%)", minimal, re.M)
    for secret in others:
        assert secret not in minimal, secret
    boot = await fetch(service, f"{mac}.boot", ua, address)
    assert (boot.status, boot.text.count(f"{mac}.cfg")) == (200, 1)
    again = await fetch(
        service, f"{mac}.cfg", ua, address, headers={"If-None-Match": got.headers["ETag"]}
    )
    assert again.status == 304

    # 2. It is listed as discovered, as documented; the devices are not touched.
    listed = await call(api, "GET", "/devices/discovered")
    doc = openapi_document()
    schema = doc["components"]["schemas"]["DiscoveredDeviceList"]
    assert schema_errors(doc, schema, listed) == []
    [phone] = listed["devices"]
    assert {k: phone[k] for k in ("mac", "vendor", "model", "firmware", "source", "site")} == {
        "mac": mac,
        "vendor": "yealink",
        "model": "T54W",
        "firmware": "96.86.0.70",
        "source": address,
        "site": "default",
    }
    first_seen = datetime.fromisoformat(phone["first_seen"])
    assert started - timedelta(seconds=5) <= first_seen <= datetime.now(UTC)
    assert phone["last_seen"] >= phone["first_seen"]
    assert (await call(api, "GET", "/devices"))["total"] == 1

    # 3. Adopted through the API with bob on line 1: the row goes, a push is queued.
    created = await call(
        api, "POST", "/devices", {"mac": mac, "vendor": "yealink", "model": "T54W"}, expect=201
    )
    assert created["render_error"] is None, created
    await call(api, "PUT", f"/devices/{mac}/assignments", [{"slot": 1, "username": "bob"}])
    assert (await call(api, "GET", "/devices/discovered"))["devices"] == []
    [job] = await jobs_of(api, mac)
    audit = await db.fetchval(
        "SELECT details FROM audit_log WHERE action = 'device.create' AND details->>'mac' = $1",
        mac,
    )
    assert json.loads(audit)["discovered"] is True

    # 4. The push reaches the phone where it fetched from, on SIP's port (no registration yet).
    phone_sip = await sipp_at_5060(address)
    workers.start(service.app[CORE], "discovery-worker")
    [notify] = await notifies_received(phone_sip, 1)
    assert notify.start_line == f"NOTIFY sip:{address}:5060 SIP/2.0"
    assert notify.header("Event") == "check-sync;reboot=false"
    await job_reaches(api, mac, job["id"], "notified")

    # 5. The next fetch brings the full config: bob's line, the device's own credential.
    cache = service.app[PHONES].cache

    async def served() -> bool:
        device = cache.devices.get(mac)
        return device is not None and device.revision == created["revision"] + 1

    await eventually(served, "the adopted device is served at its latest revision")
    full = await fetch(service, f"{mac}.cfg", ua, address)
    assert full.status == 200, full
    sip_user = (await call(api, "GET", f"/devices/{mac}"))["assignments"][0]["sip_user"]
    assert f"account.1.user_name = {sip_user}\n" in full.text
    assert "account.1.enable = 1" in full.text
    assert f"static.auto_provision.server.username = {mac}\n" in full.text
    assert BOOT_PASSWORD not in full.text
    await job_reaches(api, mac, job["id"], "fetched")
    assert await phone_sip.exit_code() == 0, phone_sip.errors()


async def test_each_vendors_minimal_config_and_dect_systems_recorded_only(
    service: Client, db: asyncpg.Connection, vault: Vault
) -> None:
    api = await bootstrap_admin(service)
    others = await with_alice_on_a_phone(api, db, vault)
    desk = [  # (vendor, model, MAC, User-Agent, the file with the provisioning credential)
        ("yealink", "T54W", "001565d15c11", T54W_UA, "001565d15c11.cfg"),
        (
            "snom",
            "D785",
            "000413d15c12",
            "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IFX-05.01.12 000413D15C12)",
            "000413D15C12.xml",
        ),
        (
            "poly",
            "VVX450",
            "0004f2d15c13",
            "FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Application",
            "0004f2d15c13-user.cfg",
        ),
        (
            "grandstream",
            "GXP2170",
            "000b82d15c14",
            "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82d15c14",
            "cfg000b82d15c14.xml",
        ),
    ]
    for i, (vendor, _, _, ua, file) in enumerate(desk):
        got = await fetch(service, file, ua, f"198.51.100.{10 + i}")
        assert got.status == 200, (vendor, got)
        assert BOOT_PASSWORD in got.text, vendor
        for secret in others:
            assert secret not in got.text, (vendor, secret)
    # Recorded, never served: DECT systems (their configs are built around an access code), a
    # model the adapter recognises but does not serve, a request that names no model.
    dect = [
        (
            "gigaset",
            "N870",
            "7c2f80d15c15",
            "Gigaset N870 IP PRO/83.V2.11.0;7C2F80D15C15",
            "7C2F80D15C15.xml",
        ),
        (
            "yealink",
            "W70B",
            "805ec0d15c16",
            "Yealink W70B 146.85.0.20 80:5e:c0:d1:5c:16",
            "805ec0d15c16.cfg",
        ),
        (
            "gigaset",
            "N720",
            "7c2f80d15c17",
            "Gigaset N720 DM PRO/70.108.00.000.000;7C2F80D15C17",
            "7C2F80D15C17.xml",
        ),
        ("yealink", None, "001565d15c18", "", "001565d15c18.cfg"),
    ]
    for i, (vendor, _, _, ua, file) in enumerate(dect):
        got = await fetch(service, file, ua, f"198.51.100.{20 + i}")
        assert (got.status, got.code) == (404, "not_found"), (vendor, got)
    rows = {r["mac"]: r for r in await discovered_rows(db)}
    expected = {mac: (vendor, model) for vendor, model, mac, _, _ in desk + dect}
    assert {mac: (r["vendor"], r["model"]) for mac, r in rows.items()} == expected
    assert rows["7c2f80d15c15"]["firmware"] == "83.V2.11.0"
    assert rows["7c2f80d15c17"]["firmware"] == "70.108.00.000.000"
    assert rows["001565d15c18"]["firmware"] is None
    assert await db.fetchval("SELECT count(*) FROM devices") == 1  # alice's phone only
    assert rows["000b82d15c14"]["firmware"] == "1.0.11.3"


# --- limits and hostile input ---------------------------------------------------------------------


async def test_a_flood_of_new_macs_from_one_source_adds_one_row(
    service: Client, db: asyncpg.Connection
) -> None:
    flooder, bystander = "203.0.113.66", "203.0.113.67"
    macs = [f"0015650{i:05x}" for i in range(10_000)]
    slots = asyncio.Semaphore(50)

    async def one(mac: str) -> tuple[int, str | None]:
        async with slots:
            got = await fetch(service, f"{mac}.cfg", T54W_UA, flooder)
        return got.status, None if got.status == 200 else got.code

    answers = Counter(await asyncio.gather(*(one(mac) for mac in macs)))
    # One phone recorded and served. The others: refused (each refusal one transaction, counted
    # as a failure of the source), waved off while the process's admissions are all under way,
    # and, once the refusals reached the failure limit, blocked without any database work.
    assert answers[200, None] == 1, answers
    assert set(answers) <= {
        (200, None),
        (429, "discovery_limited"),
        (429, "discovery_busy"),
        (429, "too_many_failures"),
    }, answers
    assert 9 <= answers[429, "discovery_limited"] <= MAX_IN_FLIGHT + 10, answers
    assert answers[429, "too_many_failures"] >= 10_000 - 2_000, answers
    after = await fetch(service, "001565beef00.cfg", T54W_UA, flooder)
    assert (after.status, after.code) == (429, "too_many_failures")
    rows = await discovered_rows(db)
    assert [(r["source"], r["model"]) for r in rows] == [(flooder, "T54W")]
    # Another address is not held up by it.
    got = await fetch(service, "001565beef01.cfg", T54W_UA, bystander)
    assert got.status == 200, got
    assert len(await discovered_rows(db)) == 2


async def test_a_site_keeps_the_thousand_most_recently_seen(
    service: Client, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    await db.executemany(
        """INSERT INTO discovered_devices (mac, vendor, model, source, first_seen, last_seen)
           VALUES ($1, 'yealink', 'T54W', $2, $3, $3)""",
        [
            (f"0015651{i:05x}", f"10.0.{i // 250}.{i % 250}", now - timedelta(hours=1, seconds=i))
            for i in range(MAX_PER_SITE)
        ],
    )
    least_recent = f"0015651{MAX_PER_SITE - 1:05x}"

    # A phone that is listed fetches again: refreshed, nothing dropped.
    listed = "001565100003"
    assert (await fetch(service, f"{listed}.cfg", yealink_ua(listed), "10.0.0.3")).status == 200
    assert await db.fetchval("SELECT count(*) FROM discovered_devices") == MAX_PER_SITE
    # A new one: in, and the least recently seen out.
    assert (await fetch(service, "001565aa0001.cfg", T54W_UA, "10.9.9.9")).status == 200
    assert await db.fetchval("SELECT count(*) FROM discovered_devices") == MAX_PER_SITE
    macs = {r["mac"] for r in await db.fetch("SELECT mac FROM discovered_devices")}
    assert "001565aa0001" in macs
    assert least_recent not in macs
    assert listed in macs


@pytest.mark.parametrize(
    "user_agent",
    [
        "Yealink SIP-T54W 96.86.0.70 " + "A" * 8192,  # 8 KB
        "Yealink SIP-T54W\x01 96.86.0.70",
        "Yealink SIP-T54W 96.86.0.70\x1b[31m",
        "Yealink SIP-T54W 96.86.0.70\x7f",
        "Yealink SIP-GXP2170 1.0.11.3",  # a Grandstream model behind the Yealink file name
        "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 001565d15c21",  # another vendor's UA
        "\x00",
    ],
    ids=["8KB", "SOH", "escape", "DEL", "foreign-model", "foreign-vendor", "NUL"],
)
async def test_hostile_user_agents_are_refused_or_unknown_never_a_500(
    service: Client, db: asyncpg.Connection, user_agent: str
) -> None:
    assert service.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", service.server.port)
    request = (
        f"GET /provisioning/001565d15c21.cfg HTTP/1.1\r\nHost: x\r\n"
        f"User-Agent: {user_agent}\r\nX-Forwarded-For: 198.51.100.99\r\n"
        f"Authorization: {BOOTSTRAP}\r\nConnection: close\r\n\r\n"
    )
    writer.write(request.encode("latin-1"))
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    assert status in (200, 400, 404), answer[:200]
    for row in await discovered_rows(db):
        # What was recorded is what a phone would send, or nothing: the model is never another
        # vendor's, the firmware never carries a control character.
        assert row["model"] in (None, "T54W"), row
        assert row["firmware"] in (None, "96.86.0.70"), row
        if row["model"] is None or row["firmware"] is None:
            assert status == 404, answer[:200]  # not a model it serves: nothing served


async def test_discovery_off_keeps_unknown_macs_unknown(
    make_client: AppFactory, db: asyncpg.Connection
) -> None:
    service = await start(make_client, discovery="off")
    for i in range(10):
        got = await fetch(service, f"001565d15c{i:02x}.cfg", T54W_UA, "198.51.100.50")
        assert (got.status, got.code) == (404, "not_found"), got
    blocked = await fetch(service, "001565d15c99.cfg", T54W_UA, "198.51.100.50")
    assert (blocked.status, blocked.code) == (429, "too_many_failures")
    assert await discovered_rows(db) == []
    api = await bootstrap_admin(service)
    assert await call(api, "GET", "/devices/discovered") == {"devices": []}


def test_a_phone_without_registration_is_notified_on_sips_port() -> None:
    assert contact_of("198.51.100.7") == "sip:198.51.100.7:5060"
    assert contact_of("2001:db8::7") == "sip:[2001:db8::7]:5060"
    assert contact_of("unknown") is None


def test_the_setting_takes_on_and_off_only() -> None:
    assert Settings.from_env({}).discovery is True
    assert Settings.from_env({"PROVISIONER_DISCOVERY": "OFF"}).discovery is False
    with pytest.raises(SettingsError, match=r"^PROVISIONER_DISCOVERY: expected on or off"):
        Settings.from_env({"PROVISIONER_DISCOVERY": "maybe"})


async def test_last_seen_is_written_once_a_minute_not_per_fetch(
    service: Client, db: asyncpg.Connection
) -> None:
    mac = "001565d15c31"
    assert (await fetch(service, f"{mac}.cfg", yealink_ua(mac), "198.51.100.31")).status == 200
    [row] = await discovered_rows(db)
    for _ in range(50):
        assert (await fetch(service, f"{mac}.cfg", yealink_ua(mac), "198.51.100.32")).status == 200
    # Within the minute: no write at all (the source is still the first one).
    [same] = await discovered_rows(db)
    assert (same["last_seen"], same["source"]) == (row["last_seen"], "198.51.100.31")

    # Once the minute is over (made zero here), the next fetch refreshes the row, off its path.
    service.app[PHONES].discovery.refresh_after = 0.0
    upgraded = yealink_ua(mac, firmware="96.86.0.80")
    assert (await fetch(service, f"{mac}.cfg", upgraded, "198.51.100.33")).status == 200

    async def refreshed() -> asyncpg.Record | None:
        [now] = await discovered_rows(db)
        return now if now["firmware"] == "96.86.0.80" else None

    fresh = await eventually(refreshed, "the row carries the new firmware")
    assert fresh["last_seen"] > row["last_seen"]
    assert (fresh["source"], fresh["first_seen"]) == ("198.51.100.33", row["first_seen"])


async def test_without_the_bootstrap_credential_nothing_is_discovered(
    service: Client, db: asyncpg.Connection
) -> None:
    wrong = basic(BOOT_USER, "not-the-password")
    got = await fetch(service, "001565d15c41.cfg", T54W_UA, "198.51.100.41", auth=wrong)
    assert got.status == 401
    got = await fetch(service, "001565d15c41.cfg", T54W_UA, "198.51.100.41", auth=None)
    assert got.status == 401
    assert await discovered_rows(db) == []


async def test_discovery_on_the_phones_listener_in_several_processes(
    database_url: str,
    db: asyncpg.Connection,
    tmp_path: Path,
    start_server: StartServer,  # noqa: F811
) -> None:
    """The lean phones' server discovers too, and its processes share the limits: the
    database decides, whichever process a connection lands on."""
    phones_port = free_port()
    env = {
        **clean_environ(),
        "PROVISIONER_DATABASE_URL": database_url,
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_PHONES_LISTEN": f"127.0.0.1:{phones_port}",
        "PROVISIONER_PHONES_PROCESSES": "2",
        "PROVISIONER_PROVISIONING_USER": BOOT_USER,
        "PROVISIONER_PROVISIONING_PASSWORD": BOOT_PASSWORD,
        "PROVISIONER_ADMIN_PASSWORD": "Chosen-Adm1n-Pass!",
    }
    server = start_server(env)
    await server.wait_healthy()
    url = f"http://127.0.0.1:{phones_port}/provisioning"
    mac = "001565d15c71"
    # A fresh connection each time, so the kernel spreads them over the processes.
    headers = {"User-Agent": yealink_ua(mac), "Authorization": BOOTSTRAP, "Connection": "close"}
    statuses: list[int] = []
    deadline = time.monotonic() + SERVER_START_DEADLINE
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while len(statuses) < 40 and time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"{url}/{mac}.cfg", headers=headers) as response:
                    body = await response.read()
                    statuses.append(response.status)
                    assert f"password = {BOOT_PASSWORD}".encode() in body
        assert statuses == [200] * 40
        assert [r["mac"] for r in await discovered_rows(db)] == [mac]
        # Another new phone from the same address within the minute: refused by every process.
        other = {**headers, "User-Agent": T54W_UA}
        for _ in range(4):
            async with session.get(f"{url}/001565d15c72.cfg", headers=other) as response:
                assert response.status == 429
                assert (await response.json())["error"]["code"] == "discovery_limited"
    assert [r["mac"] for r in await discovered_rows(db)] == [mac]
    assert await server.terminate() == 0, server.describe()


# --- the CLI --------------------------------------------------------------------------------------


async def test_cli_lists_discovered_phones(cli: Cli, db: asyncpg.Connection) -> None:  # noqa: F811
    empty = await cli("device", "discovered")
    assert_exit(empty, 0)
    assert empty.stdout == "no phone discovered\n"
    await db.execute(
        """INSERT INTO discovered_devices (mac, vendor, model, firmware, source, first_seen,
                                          last_seen)
           VALUES ('001565d15c51', 'yealink', 'T54W', '96.86.0.70', '198.51.100.51',
                   '2026-01-02 03:04:05+00', '2026-01-02 03:05:00+00'),
                  ('7c2f80d15c52', 'gigaset', NULL, NULL, '2001:db8::52',
                   '2026-01-02 04:00:00+00', '2026-01-02 04:00:00+00')"""
    )
    listed = await cli("device", "discovered")
    assert_exit(listed, 0)
    lines = [line.split() for line in listed.stdout.splitlines()]
    assert lines[0] == [
        "MAC",
        "VENDOR",
        "MODEL",
        "FIRMWARE",
        "SOURCE",
        "FIRST",
        "SEEN",
        "LAST",
        "SEEN",
    ]
    assert lines[1:] == [
        [
            "7c2f80d15c52",
            "gigaset",
            "-",
            "-",
            "2001:db8::52",
            "2026-01-02",
            "04:00:00Z",
            "2026-01-02",
            "04:00:00Z",
        ],
        [
            "001565d15c51",
            "yealink",
            "T54W",
            "96.86.0.70",
            "198.51.100.51",
            "2026-01-02",
            "03:04:05Z",
            "2026-01-02",
            "03:05:00Z",
        ],
    ]


async def test_a_second_new_phone_of_a_source_is_refused_counted_and_told_when_to_retry(
    service: Client, caplog: pytest.LogCaptureFixture
) -> None:
    source = "198.51.100.31"
    assert (await fetch(service, "001565aa1001.cfg", T54W_UA, source)).status == 200
    before = await metrics(service)
    with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
        second = await fetch(service, "001565aa1002.cfg", T54W_UA, source)
    assert (second.status, second.code) == (429, "discovery_limited")
    assert second.headers["Retry-After"] == str(int(WINDOW))
    # In fail2ban's shape, and counted under its reason.
    assert f"provisioning auth failure from {source}: discovery_limited" in caplog.messages
    series = 'provisioner_fetch_refusals_total{reason="discovery_limited"}'
    assert (await metrics(service))[series] - before.get(series, 0) == 1


async def test_new_phones_beyond_the_admissions_under_way_wait_a_second(
    service: Client, db: asyncpg.Connection
) -> None:
    """While the database holds every admission (the discovery lock taken here), one phone
    more than the process admits at once is waved off at once, without database work; the
    others are recorded once the lock is gone. (Two at once here: the default, 32, would
    also wait for pool connections, which time out first.)"""
    discovery = service.app[PHONES].discovery
    assert discovery is not None
    discovery.max_in_flight = 2
    await db.execute("SELECT pg_advisory_lock(hashtext('provisioner.discovery'))")
    waiting = [
        asyncio.create_task(fetch(service, f"001565ab{i:04x}.cfg", T54W_UA, f"198.51.100.{i}"))
        for i in (1, 2)
    ]
    try:

        async def all_under_way() -> bool:
            return len(discovery._admitting) == 2

        await eventually(all_under_way, "both admissions under way")
        before = await metrics(service)
        busy = await fetch(service, "001565abffff.cfg", T54W_UA, "198.51.100.200")
        assert (busy.status, busy.code) == (429, "discovery_busy")
        assert busy.headers["Retry-After"] == "1"
        series = 'provisioner_fetch_refusals_total{reason="discovery_busy"}'
        assert (await metrics(service))[series] - before.get(series, 0) == 1
    finally:
        await db.execute("SELECT pg_advisory_unlock(hashtext('provisioner.discovery'))")
    assert [got.status for got in await asyncio.gather(*waiting)] == [200, 200]
    assert len(await discovered_rows(db)) == 2


async def test_a_discovered_phone_fetching_again_gets_304_with_its_etag(service: Client) -> None:
    mac = "001565aa2001"
    first = await fetch(service, f"{mac}.cfg", yealink_ua(mac), "198.51.100.41")
    assert first.status == 200
    etag = first.headers["ETag"]
    again = await fetch(
        service, f"{mac}.cfg", yealink_ua(mac), "198.51.100.41", headers={"If-None-Match": etag}
    )
    assert again.status == 304
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == "no-cache"


async def test_a_new_phone_whose_address_cannot_be_recorded_is_a_failure_of_its_source(
    service: Client, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """An IPv6 address with a zone id is an address (the trusted proxy saw it) but longer than
    a discovered row keeps: nothing is recorded, and the refusal counts like an unknown MAC."""
    source = "fe80::1%" + "z" * 80
    before = await metrics(service)
    with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
        got = await fetch(service, "001565aa3001.cfg", T54W_UA, source)
    assert (got.status, got.code) == (404, "not_found")
    assert f"provisioning auth failure from {source}: unknown_device" in caplog.messages
    series = 'provisioner_fetch_refusals_total{reason="unknown_device"}'
    assert (await metrics(service))[series] - before.get(series, 0) == 1
    assert await discovered_rows(db) == []

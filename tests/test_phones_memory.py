"""Bounded memory on the phones' endpoint: what unauthenticated clients send is not kept.

The flood test runs the real service (``provisioner serve``, both the main and the lean phones'
listener in one process) and measures its resident memory before and after 20,000 concurrent
unauthenticated requests with 8 KB paths and User-Agents, from as many addresses (behind the
trusted proxy, so each one gets past the limiter and into identification). The rest run the
app in process, where the caches and the limiter can be looked at.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import itertools
import logging
import os
import random
import re
import secrets
import signal
import string
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from provisioner.devices import ADAPTERS, MISS, IdentifyCache, identify
from provisioner.devices.base import DeviceInfo, Line, RenderContext, Site, Templates
from provisioner.phoneauth import FailureLimiter, client_address
from provisioner.phonecache import CachedDevice, DeviceCache, Verified, VerifiedFetches
from provisioner.sealing import seal
from provisioner.vault import Vault, device_credential_purpose
from provisioner.web.keys import PHONES
from tests.conftest import ADMIN_PASSWORD, AppFactory, bootstrap_admin, free_port
from tests.test_phones import (
    BOOT_PASSWORD,
    BOOT_USER,
    BOOTSTRAP,
    BY_ID,
    Client,
    fetch,
    provision,
    start_instance,
)

FLOOD = 20_000
WARM_UP = 2_000
#: Under aiohttp's 8,190-byte limit for the request line and each header, so every request
#: reaches the handler (longer ones the HTTP parser refuses before any handler runs).
BIG = 8_000
RSS_GROWTH_LIMIT = 20 * 1024 * 1024
DEADLINE = 60.0

_LETTERS = string.ascii_letters + string.digits
_COUNTER = itertools.count()


_FILLER = "".join(random.choices(_LETTERS, k=BIG))


def noise(length: int) -> str:
    """``length`` letters and digits, different on every call (a fresh key for any cache)."""
    unique = f"{next(_COUNTER):08x}{random.getrandbits(32):08x}"
    return (unique + _FILLER)[:length]


def random_source(index: int) -> str:
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"


def hostile(index: int) -> tuple[str, dict[str, str]]:
    """The ``index``-th request of the flood: path and headers, no credential.

    Four shapes in turn: an 8 KB file name; a Yealink file name (a new MAC each time) with an
    8 KB User-Agent; the same with a long but phone-sized User-Agent (answered with a challenge,
    as a phone's first request is); an unrecognised name of phone shape, the same way.
    """
    mac = f"001565{index:06x}"
    headers = {"X-Forwarded-For": random_source(index)}
    shape = index % 4
    if shape == 0:
        return f"/provisioning/{noise(BIG)}", {**headers, "User-Agent": "Yealink SIP-T54W"}
    if shape == 1:
        return f"/provisioning/{mac}.cfg", {**headers, "User-Agent": noise(BIG)}
    user_agent = f"Yealink SIP-T54W 96.86.0.70 {noise(400)}"
    if shape == 2:
        return f"/provisioning/{mac}.cfg", {**headers, "User-Agent": user_agent}
    return f"/provisioning/{noise(100)}.cfg", {**headers, "User-Agent": user_agent}


# --- the real service under a flood ------------------------------------------------------------


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    main_url: str
    phones_url: str
    stderr_path: Path

    def rss(self) -> int:
        """Resident memory of the service's process, in bytes (``VmRSS``)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    @property
    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_healthy(self) -> None:
        deadline = time.monotonic() + DEADLINE
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"serve exited with {self.process.returncode}\n{self.log}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(f"{self.main_url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        pytest.fail(f"serve not healthy within {DEADLINE} s\n{self.log}")


@pytest.fixture
def service(database_url: str, db: asyncpg.Connection, tmp_path: Path) -> Iterator[Service]:
    main, phones = free_port(), free_port()
    listen = f"127.0.0.1:{main}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=database_url,
        PROVISIONER_DATA_DIR=str(tmp_path / "data"),
        PROVISIONER_PHONES_LISTEN=f"127.0.0.1:{phones}",
        PROVISIONER_PHONES_PROCESSES="1",
        PROVISIONER_TRUSTED_PROXIES="127.0.0.1",
        PROVISIONER_PROVISIONING_USER=BOOT_USER,
        PROVISIONER_PROVISIONING_PASSWORD=BOOT_PASSWORD,
        PROVISIONER_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    stderr_path = tmp_path / "serve.err"
    with stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "serve", "--no-worker", "--listen", listen],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield Service(
            process, f"http://127.0.0.1:{main}", f"http://127.0.0.1:{phones}", stderr_path
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def send_all(url: str, requests: list[tuple[str, dict[str, str]]]) -> Counter[int]:
    """Send ``requests`` (path, headers) to ``url`` over 32 keep-alive connections; count the
    answers by status.

    A few lines of HTTP/1.1 rather than an HTTP client library: aiohttp's client costs more per
    request than the endpoint under test, and the flood is about the server.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    statuses: Counter[int] = Counter()
    queue = iter(requests)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for path, headers in queue:
                lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
                lines += [f"{name}: {value}" for name, value in headers.items()]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                statuses[int(head.split(None, 2)[1])] += 1
                length = re.search(r"^content-length: *(\d+)", head, re.MULTILINE)
                assert length, head
                await reader.readexactly(int(length.group(1)))
                if re.search(r"^connection: *close", head, re.MULTILINE):
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(connection() for _ in range(32))), DEADLINE)
    return statuses


async def test_a_flood_of_unauthenticated_requests_leaves_memory_flat(service: Service) -> None:
    await service.wait_healthy()
    # A device the bootstrap credential opens, to show the endpoint still serves afterwards.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        login = {"username": "admin", "password": ADMIN_PASSWORD}
        async with session.post(f"{service.main_url}/api/v1/auth/login", json=login) as response:
            assert response.status == 200, await response.text()
            token = (await response.json())["token"]
        api = {"Authorization": f"Bearer {token}"}
        site = {"registrar_host": "pbx.example.net"}
        async with session.put(
            f"{service.main_url}/api/v1/sites/default", json=site, headers=api
        ) as response:
            assert response.status == 200, await response.text()
        phone = BY_ID["yealink-T54W"]
        device = {"mac": phone.mac, "vendor": phone.vendor, "model": phone.model}
        async with session.post(
            f"{service.main_url}/api/v1/devices", json=device, headers=api
        ) as response:
            assert response.status == 201, await response.text()
        served = {"User-Agent": phone.user_agent, "Authorization": BOOTSTRAP}

        async def fetch_served(base: str) -> int:
            url = f"{base}/provisioning/{phone.line_file}"
            async with session.get(url, headers=served) as response:
                return response.status

        async def both_serve() -> bool:
            statuses = {await fetch_served(u) for u in (service.main_url, service.phones_url)}
            return statuses == {200}

        deadline = time.monotonic() + DEADLINE
        while not await both_serve():  # the cache follows the new device over LISTEN/NOTIFY
            assert time.monotonic() < deadline, service.log
            await asyncio.sleep(0.05)

        async def flood(count: int, offset: int) -> Counter[int]:
            """``count`` requests, half to each listener, and the lean listener also takes a
            path outside /provisioning/."""
            requests = [hostile(index) for index in range(offset, offset + count)]
            main, phones = await asyncio.gather(
                send_all(service.main_url, requests[0::2]),
                send_all(service.phones_url, [*requests[1::2], (f"/{noise(BIG)}", {})]),
            )
            return main + phones

        await flood(WARM_UP, 0)  # buffers, arenas, first-use imports
        before = service.rss()
        statuses = await flood(FLOOD, WARM_UP)
        after = service.rss()

        growth = after - before
        assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
        assert sum(statuses.values()) == FLOOD + 1
        assert set(statuses) <= {401, 404}, statuses
        assert statuses[401] == FLOOD // 2, statuses  # phone-shaped: challenged
        assert statuses[404] == FLOOD // 2 + 1, statuses  # 8 KB names and User-Agents: refused
        assert await both_serve()

        # One source sending names no phone asks for: 429 after ten, and the fail2ban lines.
        flooder = {"X-Forwarded-For": "203.0.113.77"}
        for _ in range(10):
            async with session.get(
                f"{service.phones_url}/provisioning/{noise(BIG)}", headers=flooder
            ) as response:
                assert response.status == 404
        async with session.get(
            f"{service.main_url}/provisioning/{phone.line_file}", headers={**served, **flooder}
        ) as response:
            assert response.status == 429
    assert "provisioning auth failure from 203.0.113.77: unknown_path" in service.log
    assert "provisioning source 203.0.113.77 blocked for 300s" in service.log


# --- in process: what is kept, and for whom ----------------------------------------------------


@pytest.fixture
async def phones_client(make_client: AppFactory, db: asyncpg.Connection) -> Client:
    return await start_instance(make_client, db, trusted_proxies="127.0.0.1")


async def test_only_authenticated_requests_are_remembered(phones_client: Client) -> None:
    api = await bootstrap_admin(phones_client)
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    identified = phones_client.app[PHONES].identified
    assert len(identified) == 0

    for index in range(200):
        path, headers = hostile(index)
        async with phones_client.get(path, headers=headers) as response:
            assert response.status in (401, 404), (index, response.status)
    wrong = "Basic " + "d3Jvbmc6Y3JlZGVudGlhbA=="  # wrong:credential
    got = await fetch(phones_client, phone, auth=wrong, source="198.51.100.60")
    assert got.status == 401
    assert (len(identified), identified.bytes) == (0, 0)
    verified = phones_client.app[PHONES].verified
    assert (len(verified), verified.bytes) == (0, 0)

    assert (await fetch(phones_client, phone)).status == 200
    assert len(identified) == 1
    assert len(verified) == 0, "a bootstrap credential's request is checked every time"
    cached = identified.get(phone.line_file, phone.user_agent)
    assert cached == identify(phone.line_file, phone.user_agent)
    assert (await fetch(phones_client, phone)).status == 200  # served from the cached answer
    assert len(identified) == 1


async def test_names_no_phone_asks_for_block_the_source(
    phones_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    api = await bootstrap_admin(phones_client)
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    caplog.set_level(logging.WARNING, logger="provisioner.phones")
    source = "198.51.100.50"
    for name in [noise(BIG), "a b.cfg", "..%00.cfg", "x" * 200, "a/b/c/d/e/f.cfg"]:
        got = await fetch(phones_client, phone, name, source=source, auth=None)
        assert got.status == 404, (name[:20], got.status)
    for _ in range(5):  # a phone's own file, but a User-Agent no phone sends
        got = await fetch(phones_client, phone, source=source, user_agent=noise(600))
        assert got.status == 404
    blocked = await fetch(phones_client, phone, source=source)
    assert blocked.status == 429
    messages = [r.getMessage() for r in caplog.records]
    assert f"provisioning auth failure from {source}: unknown_path" in messages
    assert f"provisioning source {source} blocked for 300s" in messages
    assert (await fetch(phones_client, phone, source="198.51.100.51")).status == 200


async def test_names_phones_ask_for_cost_a_booting_phone_nothing(phones_client: Client) -> None:
    """Files a phone asks for and nobody serves (Poly's firmware and overrides, Grandstream's
    binary config): challenged like any first request, 404 once authenticated, never counted,
    so a site of such phones booting behind one address is not blocked."""
    api = await bootstrap_admin(phones_client)
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    vvx, gxp = BY_ID["poly-VVX450"].user_agent, BY_ID["grandstream-GXP2170"].user_agent
    names = [
        ("sip.ld", vvx),
        ("0004f2a1b2c8-phone.cfg", vvx),
        ("0004f2a1b2c8-web.cfg", vvx),
        ("000000000000-license.cfg", vvx),
        ("0004f2a1b2c8-directory.xml", vvx),
        ("cfg000b82a1b2c9", gxp),
        ("cfg000b82a1b2c9.bin", gxp),
    ]
    source = "198.51.100.52"
    for _ in range(3):  # three phones' boots from one site address: 21 names, twice each
        for name, user_agent in names:
            bare = await fetch(
                phones_client, phone, name, source=source, user_agent=user_agent, auth=None
            )
            assert bare.status == 401, (name, bare.status)
            assert bare.digest_challenge()
            got = await fetch(phones_client, phone, name, source=source, user_agent=user_agent)
            assert got.status == 404, (name, got.status)
    assert (await fetch(phones_client, phone, source=source)).status == 200


# --- the device cache: bytes per device ---------------------------------------------------------

#: What one cached Yealink T54W (four files, ~4.3 KB of clear bytes) may cost a phones' process,
#: everything included: its files (packed), keys, ETags, credential, the device's entry. Measured
#: ~1,600 bytes here (300 devices), ~1,070 with 10,000; before issue 14's changes ~12,600
#: (bench/README.md). DESIGN.md's 400 MB for 100,000 devices in two processes leaves about
#: 1,300 bytes of RSS a device beside each interpreter's ~64 MiB (RSS runs ~200 above this count).
CACHED_DEVICE_BYTES = 2_000
CACHED_DEVICES = 300


def rendered_yealink(mac: str, index: int, password: str) -> dict[str, bytes]:
    """A T54W's files as the service renders them, with secrets as random as real ones."""
    adapter = ADAPTERS["yealink"]
    model = adapter.model("T54W")
    assert model is not None
    extension = str(2_000_000 + index)
    line = Line(
        slot=1,
        username=f"user{index}",
        display_name=f"Jürgen Müller {index}",
        extension=extension,
        sip_user=f"{extension}-{mac}-1",
        sip_auth_user=f"{extension}-{mac}-1",
        sip_password=secrets.token_urlsafe(18),
        pin=f"{index % 1_000_000:06d}",
        language="de",
    )
    context = RenderContext(
        device=DeviceInfo(mac=mac, model=model, label=""),
        lines=(line,),
        site=Site(registrar_host="pbx.example.net"),
        provisioning_url="https://prov.example.net/provisioning/",
        provisioning_user=mac,
        provisioning_password=password,
    )
    return adapter.render(context, Templates("yealink"))


async def test_a_cached_device_costs_a_few_hundred_bytes_beside_its_files(
    db: asyncpg.Connection, vault: Vault
) -> None:
    rendered: dict[str, dict[str, bytes]] = {}
    devices, files = [], []
    for index in range(CACHED_DEVICES):
        mac = f"805ec0{index:06x}"
        password = secrets.token_urlsafe(18)
        credential = vault.encrypt(password, device_credential_purpose(mac))
        devices.append((mac, "yealink", "T54W", "desk", credential))
        rendered[mac] = rendered_yealink(mac, index, password)
        files += [(mac, *stored, True) for stored in seal(vault, mac, rendered[mac])]
    columns = ["mac", "vendor", "model", "kind", "credential_encrypted"]
    await db.copy_records_to_table("devices", records=devices, columns=columns)
    await db.copy_records_to_table(
        "device_files", records=files, columns=["mac", "name", "body", "etag", "sealed"]
    )
    clear_bytes = sum(len(b) for f in rendered.values() for b in f.values()) / CACHED_DEVICES

    cache = DeviceCache(vault)
    await cache.load(db, ["805ec0000000"])  # first use: imports, the prepared statement
    cache.devices.clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await cache.load(db)
        per_device = (tracemalloc.get_traced_memory()[0] - before) / CACHED_DEVICES
    finally:
        tracemalloc.stop()

    assert len(cache.devices) == CACHED_DEVICES
    assert clear_bytes > 4_000  # what is packed is a real config
    assert per_device < CACHED_DEVICE_BYTES, f"{per_device:.0f} bytes a device"
    # Packed, shared or not: every device is served exactly its own bytes.
    for mac, clear in rendered.items():
        device = cache.devices[mac]
        assert len(device.files) == len(clear)
        for name, body in clear.items():
            served = device.file(name)
            assert served is not None, (mac, name)
            assert served.body == body, (mac, name)


# --- the bounded structures themselves ---------------------------------------------------------


def test_identify_cache_is_bounded_in_bytes_not_entries() -> None:
    cache = IdentifyCache(max_bytes=256 * 1024)
    user_agent = "Yealink SIP-T54W 96.86.0.70 00:15:65:a1:b2:c3"
    # Short keys fit many entries; long keys proportionally fewer; never more bytes.
    for index in range(10_000):
        cache.put(f"001565{index:06x}.cfg", user_agent, None)
        assert cache.bytes <= cache.max_bytes
    short_entries = len(cache)
    assert short_entries > 300
    for index in range(1_000):
        cache.put(f"{index:06x}{'x' * 4_000}.cfg", user_agent, None)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) < short_entries / 4
    assert cache.bytes == sum(cache.ENTRY_BYTES + len(p) + len(u) for p, u in cache._entries)
    assert list(cache._order) == list(cache._entries), "the eviction order is the insertion order"
    # The newest stay (their answer: None, no adapter claims them), the oldest went.
    assert cache.get(f"{999:06x}{'x' * 4_000}.cfg", user_agent) is None
    assert cache.get(f"001565{0:06x}.cfg", user_agent) is MISS
    # One key larger than the whole budget is not kept at all.
    cache.put("y" * (cache.max_bytes + 1), user_agent, None)
    assert cache.bytes <= cache.max_bytes


def test_verified_requests_are_bounded_in_bytes_not_entries() -> None:
    kept = VerifiedFetches(max_bytes=256 * 1024)
    device = CachedDevice("001565a1b2c3", "yealink", 1, {}, None, False)
    verified = Verified(device, "001565a1b2c3.cfg", True, None)
    user_agent = "Yealink SIP-T54W 96.86.0.70 00:15:65:a1:b2:c3"
    for index in range(10_000):
        kept.put(f"/provisioning/001565{index:06x}.cfg", user_agent, f"Basic {index}", verified)
        assert kept.bytes <= kept.max_bytes
    short_entries = len(kept)
    assert short_entries > 300
    for index in range(1_000):  # a long Authorization (a phone's is under 100 characters)
        kept.put("/provisioning/a.cfg", user_agent, f"Basic {index:06x}{'x' * 4_000}", verified)
        assert kept.bytes <= kept.max_bytes
    assert len(kept) < short_entries / 4
    assert kept.bytes == sum(kept.ENTRY_BYTES + sum(map(len, key)) for key in kept._entries)
    assert list(kept._order) == list(kept._entries), "the eviction order is the insertion order"
    assert kept.get("/provisioning/a.cfg", user_agent, f"Basic {999:06x}{'x' * 4_000}") is verified
    assert kept.get(f"/provisioning/001565{0:06x}.cfg", user_agent, "Basic 0") is None
    # The same request again is one entry, its cost counted once.
    before = (len(kept), kept.bytes)
    kept.put("/provisioning/a.cfg", user_agent, f"Basic {999:06x}{'x' * 4_000}", verified)
    assert (len(kept), kept.bytes) == before
    # One key larger than the whole budget is not kept at all.
    kept.put("/provisioning/a.cfg", user_agent, "y" * (kept.max_bytes + 1), verified)
    assert kept.bytes <= kept.max_bytes
    assert kept.get("/provisioning/a.cfg", user_agent, "y" * (kept.max_bytes + 1)) is None


def test_a_verified_entry_costs_what_it_counts() -> None:
    """``ENTRY_BYTES`` is what an entry really takes beside its key's characters (tracemalloc,
    the key's strings made as a request's are), within a tenth: the bound means what it says."""
    kept = VerifiedFetches(max_bytes=2**40)
    devices = [CachedDevice(f"001565{i:06x}", "yealink", 1, {}, None, False) for i in range(5_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index, device in enumerate(devices):
            mac = device.mac
            kept.put(
                f"/provisioning/{mac}.cfg",
                f"Yealink SIP-T54W 96.86.0.70 00:15:65:{mac[6:8]}:{mac[8:10]}:{mac[10:]}",
                "Basic " + base64.b64encode(f"{mac}:password{index:08d}".encode()).decode(),
                Verified(device, "{mac}.cfg", True, None),  # the adapter's string, shared
            )
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    characters = sum(sum(map(len, key)) for key in kept._entries)
    per_entry = (used - characters) / len(devices)
    assert 0.9 * kept.ENTRY_BYTES <= per_entry <= 1.1 * kept.ENTRY_BYTES, per_entry


def test_failure_limiter_is_bounded_in_bytes_and_forgets_expired_blocks() -> None:
    limiter = FailureLimiter(threshold=3, window=60, cooldown=300, max_bytes=64 * 1024)
    logging.getLogger("provisioner.phones").disabled = True
    try:
        for index in range(20_000):
            limiter.fail(f"2001:db8::{index:x}", "unknown_path", now=float(index % 50))
            assert limiter.bytes <= limiter.max_bytes
        # Blocks: three failures each, then the cool-down passes and they go by themselves.
        blocked = [f"192.0.2.{i}" for i in range(20)]
        for source in blocked:
            for _ in range(3):
                limiter.fail(source, "bad_credentials", now=100.0)
        assert all(limiter.retry_after(s, now=101.0) == 299 for s in blocked)
        limiter.fail("198.51.100.1", "bad_credentials", now=401.0)
        assert not limiter._blocked
        assert limiter.bytes == sum(
            limiter._counting_cost(s, f) for s, f in limiter._failures.items()
        )
    finally:
        logging.getLogger("provisioner.phones").disabled = False


def test_the_source_is_never_client_text() -> None:
    trusted = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    # A client inside a trusted network writing its own X-Forwarded-For: its address counts.
    assert client_address("127.0.0.1", f"{'x' * 8000}, 10.1.2.3", trusted) == "10.1.2.3"
    assert client_address("127.0.0.1", "1.2.3.4 x, 10.1.2.3", trusted) == "10.1.2.3"
    assert client_address("127.0.0.1", "garbage", trusted) == "127.0.0.1"
    # Unchanged: the last untrusted hop, or the leftmost when every hop is trusted.
    assert client_address("127.0.0.1", "192.0.2.9, 198.51.100.7", trusted) == "198.51.100.7"
    assert client_address("127.0.0.1", "10.9.9.9, 10.1.2.3", trusted) == "10.9.9.9"

"""The phones' endpoint ``/provisioning/`` end to end: the real app, real PostgreSQL, HTTP.

Every device is set up through the JSON API the way an admin does it (site registrar, user with
extension and PIN, device, assignment) and fetched with the User-Agent its vendor's firmware sends
(recorded strings, as in ``tests/devices/``).

Client addresses: the app runs with ``PROVISIONER_TRUSTED_PROXIES=127.0.0.1`` and the tests
present different phones' addresses in ``X-Forwarded-For``, as a reverse proxy on the same host
would. This exercises the proxy handling the throttling depends on, gives any number of distinct
addresses, and needs no extra loopback addresses (binding client sockets to 127.0.0.2 works on
Linux but not on macOS without configuring an alias).

Everything asynchronous (fetch records written by the batching recorder, caches refreshed over
LISTEN/NOTIFY) is awaited by polling the real condition with a deadline, never by sleeping a fixed
time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from provisioner import store
from provisioner.devices import identify
from provisioner.phonecache import LAST_SEEN_INTERVAL
from provisioner.web import phones as web_phones
from provisioner.web.keys import PHONES
from tests.conftest import Api, AppFactory, ManualClock, bootstrap_admin

T = TypeVar("T")

BOOT_USER = "boot"
BOOT_PASSWORD = "Bootstrap-Secret-7f3a"
REGISTRAR = "pbx.example.net"
PIN = "480913"
NEW_PIN = "739251"
DEADLINE = 10.0

#: Addresses the phones appear to come from (behind the trusted proxy 127.0.0.1).
PHONE_NET_A = "198.51.100.7"
PHONE_NET_B = "198.51.100.8"

Client = TestClient[Any, Any]


@dataclass(frozen=True)
class Phone:
    id: str
    vendor: str
    model: str
    mac: str
    user_agent: str
    line_file: str
    """The per-device file carrying the user's line (and the PIN where the vendor carries it)."""
    credential_file: str
    """The per-device file carrying the device's own provisioning credential."""
    credential: re.Pattern[str]
    """Finds the credential in ``credential_file``: groups ``user`` and ``password``."""
    shared_file: str | None
    """A file without secrets the device fetches too (the bootstrap credential keeps opening it)."""
    carries_pin: bool
    mismatch_user_agent: str | None
    """The same firmware's User-Agent naming another MAC (None: the UA carries no MAC)."""


_URL_USERINFO = re.compile(r"://(?P<user>[0-9a-f]{12}):(?P<password>[^@\"<]+)@")

PHONES_UNDER_TEST = [
    Phone(
        id="yealink-T54W",
        vendor="yealink",
        model="T54W",
        mac="001565a1b2c3",
        user_agent="Yealink SIP-T54W 96.86.0.70 00:15:65:a1:b2:c3",
        line_file="001565a1b2c3.cfg",
        credential_file="001565a1b2c3.cfg",
        credential=re.compile(
            r"^static\.auto_provision\.server\.username = (?P<user>\S+)\n"
            r"static\.auto_provision\.server\.password = (?P<password>\S+)$",
            re.MULTILINE,
        ),
        shared_file="y000000000096.cfg",
        carries_pin=True,
        mismatch_user_agent="Yealink SIP-T54W 96.86.0.70 00:15:65:99:88:77",
    ),
    Phone(
        id="yealink-W70B",
        vendor="yealink",
        model="W70B",
        mac="805ec0a1b2c4",
        user_agent="Yealink W70B 146.85.0.20 80:5e:c0:a1:b2:c4",
        line_file="805ec0a1b2c4.cfg",
        credential_file="805ec0a1b2c4.cfg",
        credential=re.compile(
            r"^static\.auto_provision\.server\.username = (?P<user>\S+)\n"
            r"static\.auto_provision\.server\.password = (?P<password>\S+)$",
            re.MULTILINE,
        ),
        shared_file="y000000000146.cfg",
        carries_pin=False,  # Yealink DECT: no per-handset PIN
        mismatch_user_agent="Yealink W70B 146.85.0.20 80:5e:c0:99:88:77",
    ),
    Phone(
        id="snom-D785",
        vendor="snom",
        model="D785",
        mac="000413a1b2c5",
        user_agent=(
            "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IFX-05.01.12 000413A1B2C5)"
        ),
        line_file="000413A1B2C5.xml",
        credential_file="000413A1B2C5.xml",
        credential=_URL_USERINFO,
        shared_file="snomD785.htm",
        carries_pin=True,
        mismatch_user_agent=(
            "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IFX-05.01.12 000413998877)"
        ),
    ),
    Phone(
        id="snom-M900",
        vendor="snom",
        model="M900",
        mac="000413a1b2c6",
        user_agent="Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413a1b2c6)",
        line_file="000413A1B2C6.xml",
        credential_file="000413A1B2C6.xml",
        credential=_URL_USERINFO,
        shared_file="snomM900.htm",
        carries_pin=False,  # Snom M-series: no per-handset user PIN
        mismatch_user_agent="Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413998877)",
    ),
    Phone(
        id="gigaset-N870",
        vendor="gigaset",
        model="N870",
        mac="7c2f80a1b2c7",
        user_agent="Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80A1B2C7",
        line_file="7C2F80A1B2C7.xml",
        credential_file="7C2F80A1B2C7.xml",
        credential=_URL_USERINFO,
        shared_file=None,  # one file per system, with secrets
        carries_pin=False,  # Gigaset Nx70: no user PIN key; DECT_AC is the access code
        mismatch_user_agent="Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80998877",
    ),
    Phone(
        id="poly-VVX450",
        vendor="poly",
        model="VVX450",
        mac="0004f2a1b2c8",
        user_agent="FileTransport PolycomVVX-VVX_450-UA/6.4.0.1234 Type/Application",
        line_file="0004f2a1b2c8-user.cfg",
        credential_file="0004f2a1b2c8-user.cfg",
        credential=re.compile(
            r'device\.prov\.user="(?P<user>[^"]*)".*?device\.prov\.password="(?P<password>[^"]*)"',
            re.DOTALL,
        ),
        shared_file="0004f2a1b2c8.cfg",
        carries_pin=False,  # Poly: the lock PIN key is a device.* key (restarts)
        mismatch_user_agent=None,  # no MAC unless device.prov.tagSerialNo is set
    ),
    Phone(
        id="grandstream-GXP2170",
        vendor="grandstream",
        model="GXP2170",
        mac="000b82a1b2c9",
        user_agent="Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82a1b2c9",
        line_file="cfg000b82a1b2c9.xml",
        credential_file="cfg000b82a1b2c9.xml",
        credential=re.compile(
            r"<P1360>(?P<user>[^<]*)</P1360>\s*<P1361>(?P<password>[^<]*)</P1361>"
        ),
        shared_file="cfggxp2170.xml",
        carries_pin=True,  # P1383, the keypad lock's password
        mismatch_user_agent="Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82998877",
    ),
    Phone(
        id="mitel-SIP-DECT",
        vendor="mitel",
        model="SIP-DECT",
        mac="003042a1b2ca",
        user_agent="SIP-DECT OMM 8.3SP1",
        # After its <MAC>.cfg the OMM fetches from its own folder <mac>/; the user records
        # are in <MAC>.cfg.
        line_file="003042a1b2ca/003042A1B2CA.cfg",
        credential_file="003042A1B2CA.cfg",
        credential=re.compile(r'username="(?P<user>[^"]*)" password="(?P<password>[^"]*)"'),
        shared_file="003042a1b2ca/ipdect.cfg",
        carries_pin=True,
        mismatch_user_agent=None,  # the OMM's User-Agent carries no MAC
    ),
]
BY_ID = {phone.id: phone for phone in PHONES_UNDER_TEST}
WITH_UA_MAC = [phone for phone in PHONES_UNDER_TEST if phone.mismatch_user_agent]


# --- helpers -----------------------------------------------------------------------------------


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


BOOTSTRAP = basic(BOOT_USER, BOOT_PASSWORD)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


_CHALLENGE_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


def challenge_params(challenge: str) -> dict[str, str]:
    scheme, _, rest = challenge.partition(" ")
    assert scheme == "Digest", challenge
    return {m[0]: m[1] or m[2] for m in _CHALLENGE_PARAM.findall(rest)}


def digest(
    challenge: str, username: str, password: str, method: str, uri: str, *, nonce: str = ""
) -> str:
    """An RFC 7616 ``Authorization: Digest`` answer (MD5, ``qop=auth``), as a phone computes it."""
    params = challenge_params(challenge)
    assert params["qop"] == "auth"
    assert params.get("algorithm", "MD5") == "MD5"
    realm, nonce = params["realm"], nonce or params["nonce"]
    nc, cnonce = "00000001", secrets.token_hex(8)
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}"'
    )


@dataclass
class Fetched:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def digest_challenge(self) -> str:
        found = [c for c in self.headers.getall("WWW-Authenticate", []) if c.startswith("Digest")]
        assert len(found) == 1, self.headers
        return found[0]


async def fetch(
    client: Client,
    phone: Phone,
    file: str | None = None,
    *,
    auth: str | None = BOOTSTRAP,
    method: str = "GET",
    source: str | None = None,
    user_agent: str | None = None,
    headers: dict[str, str] | None = None,
) -> Fetched:
    """Request ``/provisioning/<file>`` as ``phone`` (by default its line file, bootstrap Basic)."""
    sent = {"User-Agent": user_agent if user_agent is not None else phone.user_agent}
    if auth is not None:
        sent["Authorization"] = auth
    if source is not None:
        sent["X-Forwarded-For"] = source
    sent.update(headers or {})
    path = f"/provisioning/{file or phone.line_file}"
    async with client.request(method, path, headers=sent, allow_redirects=False) as response:
        return Fetched(response.status, response.headers, await response.read())


def error_code(got: Fetched) -> str:
    return str(json.loads(got.body)["error"]["code"])


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, *, within: float = DEADLINE
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.0f} s: {what} (last: {result!r})")
        await asyncio.sleep(0.05)


async def start_instance(make_client: AppFactory, db: asyncpg.Connection, **env: str) -> Client:
    """Start an app instance; its start-up completes once its device listener is LISTENing
    and its cache is loaded, so changes committed afterwards reach it."""
    return await make_client(
        provisioning_user=BOOT_USER, provisioning_password=BOOT_PASSWORD, **env
    )


@pytest.fixture
async def phones_client(make_client: AppFactory, db: asyncpg.Connection) -> Client:
    return await start_instance(make_client, db, trusted_proxies="127.0.0.1")


@pytest.fixture
async def api(phones_client: Client) -> Api:
    return await bootstrap_admin(phones_client)


async def call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, data = await api.call(method, path, body)
    assert status == expect, (method, path, data)
    return data


async def provision(
    api: Api,
    phone: Phone,
    username: str = "alice",
    *,
    extension: str = "201",
    pin: str | None = PIN,
) -> str:
    """Set ``phone`` up with ``username`` on slot 1 (creating the user if needed); its SIP user."""
    await call(api, "PUT", "/sites/default", {"registrar_host": REGISTRAR})
    status, _ = await api.call("GET", f"/users/{username}")
    if status == 404:
        user = {"username": username, "display_name": username.title(), "extension": extension}
        await call(api, "POST", "/users", user, expect=201)
        if pin is not None:
            await call(api, "PUT", f"/users/{username}/pin", {"pin": pin})
    device = {"mac": phone.mac, "vendor": phone.vendor, "model": phone.model}
    created = await call(api, "POST", "/devices", device, expect=201)
    assert created["render_error"] is None, created
    assert created["revision"] >= 1, created
    assignments = await call(
        api, "PUT", f"/devices/{phone.mac}/assignments", [{"slot": 1, "username": username}]
    )
    sip_user = assignments[0]["sip_user"]
    assert sip_user
    await in_sync(api.client, api, phone)
    return str(sip_user)


async def in_sync(client: Client, api: Api, *phones: Phone) -> None:
    """Wait until ``client``'s instance serves the revision stored for each of ``phones``.

    The API answers once the new revision is committed; each instance's cache follows over
    LISTEN/NOTIFY a moment later.
    """
    cache = client.app[PHONES].cache
    for phone in phones:

        async def current(mac: str = phone.mac) -> bool:
            stored = await revision_of(api, mac)
            cached = cache.devices.get(mac)
            return cached is not None and cached.revision == stored

        await eventually(current, f"{phone.id} is served at its stored revision")


async def revision_of(api: Api, mac: str) -> int:
    device = await call(api, "GET", f"/devices/{mac}")
    assert device["render_error"] is None, device
    return int(device["revision"])


async def own_credential(
    client: Client, phone: Phone, *, source: str | None = None
) -> tuple[str, str]:
    """The device's credential, read from the file that hands it to the device."""
    got = await fetch(client, phone, phone.credential_file, source=source)
    assert got.status == 200, got
    match = phone.credential.search(got.text)
    assert match, got.text
    assert match["user"] == phone.mac
    assert match["password"]
    assert match["password"] != BOOT_PASSWORD
    return match["user"], match["password"]


# --- per vendor: a phone's first boot with the bootstrap credential, then its own -------------


@pytest.mark.parametrize("phone", PHONES_UNDER_TEST, ids=lambda p: p.id)
async def test_phone_boots_with_bootstrap_then_rolls_over(
    phones_client: Client, api: Api, db: asyncpg.Connection, phone: Phone
) -> None:
    sip_user = await provision(api, phone)

    # No credential: a challenge for both schemes, Digest first (Gigaset takes the first).
    anonymous = await fetch(phones_client, phone, auth=None)
    assert anonymous.status == 401
    challenges = anonymous.headers.getall("WWW-Authenticate")
    assert [c.split()[0] for c in challenges] == ["Digest", "Basic"]
    params = challenge_params(anonymous.digest_challenge())
    assert params["qop"] == "auth"
    assert params["nonce"]
    assert params["realm"]
    assert sip_user.encode() not in anonymous.body
    assert PIN.encode() not in anonymous.body

    # The site-wide bootstrap credential over Basic.
    got = await fetch(phones_client, phone)
    assert got.status == 200, got
    assert sip_user in got.text
    assert REGISTRAR in got.text or phone.vendor == "mitel"  # the OMM's registrar: ipdect.cfg
    assert (PIN in got.text) is phone.carries_pin
    etag = got.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{16,}"', etag), etag  # strong
    assert got.headers["Cache-Control"] == "no-cache"
    assert int(got.headers["Content-Length"]) == len(got.body)

    again = await fetch(phones_client, phone, headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.body == b""
    assert again.headers["ETag"] == etag
    other = await fetch(phones_client, phone, headers={"If-None-Match": '"0123456789abcdef"'})
    assert other.status == 200
    assert other.body == got.body

    head = await fetch(phones_client, phone, method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["ETag"] == etag
    assert int(head.headers["Content-Length"]) == len(got.body)
    assert head.headers["Content-Type"] == got.headers["Content-Type"]

    # The same over Digest, answered from the challenge.
    uri = f"/provisioning/{phone.line_file}"
    answer = digest(anonymous.digest_challenge(), BOOT_USER, BOOT_PASSWORD, "GET", uri)
    by_digest = await fetch(phones_client, phone, auth=answer)
    assert by_digest.status == 200, by_digest
    assert by_digest.body == got.body
    assert by_digest.headers["ETag"] == etag
    wrong = digest(anonymous.digest_challenge(), BOOT_USER, "not-the-password", "GET", uri)
    assert (await fetch(phones_client, phone, auth=wrong)).status == 401
    refused = await fetch(phones_client, phone, auth=basic(BOOT_USER, "not-the-password"))
    assert refused.status == 401
    assert sip_user.encode() not in refused.body

    # Rollover: the config hands the device its own credential (username = MAC) ...
    username, password = await own_credential(phones_client, phone)
    own = basic(username, password)
    mine = await fetch(phones_client, phone, auth=own)
    assert mine.status == 200, mine
    assert sip_user in mine.text
    challenge = (
        await fetch(phones_client, phone, phone.credential_file, auth=None)
    ).digest_challenge()
    uri = f"/provisioning/{phone.credential_file}"
    answer = digest(challenge, username, password, "GET", uri)
    by_digest = await fetch(phones_client, phone, phone.credential_file, auth=answer)
    assert by_digest.status == 200
    assert password in by_digest.text

    # ... and once the device used it, the bootstrap credential no longer opens the device's own
    # files, immediately in the serving process ...
    for name in {phone.line_file, phone.credential_file}:
        refused = await fetch(phones_client, phone, name)
        assert refused.status == 401, (name, refused)
        assert password.encode() not in refused.body
        assert sip_user.encode() not in refused.body
        refused.digest_challenge()
    # ... while the files without secrets every device of the model fetches first still open.
    if phone.shared_file is not None:
        shared = await fetch(phones_client, phone, phone.shared_file)
        assert shared.status == 200, shared
        assert password not in shared.text
        assert sip_user not in shared.text
        assert (await fetch(phones_client, phone, phone.shared_file, auth=own)).status == 200
    assert (await fetch(phones_client, phone, auth=own)).status == 200

    # In the database within about a second (the fetch recorder's batch).
    async def retired() -> bool:
        value = await db.fetchval("SELECT bootstrap_allowed FROM devices WHERE mac = $1", phone.mac)
        return value is False

    await eventually(retired, "devices.bootstrap_allowed becomes false")
    assert (await call(api, "GET", f"/devices/{phone.mac}"))["bootstrap_allowed"] is False


async def test_digest_stale_and_forged_nonces(phones_client: Client, api: Api) -> None:
    phone = BY_ID["gigaset-N870"]  # Gigaset answers the Digest challenge
    await provision(api, phone)
    uri = f"/provisioning/{phone.line_file}"
    challenge = (await fetch(phones_client, phone, auth=None)).digest_challenge()

    # A nonce this installation issued an hour ago: a correct answer is refused as stale, and the
    # phone answers the fresh challenge without asking anyone for the password again.
    old_nonce = phones_client.app[PHONES].nonces.issue(now=time.time() - 3600)
    stale = await fetch(
        phones_client,
        phone,
        auth=digest(challenge, BOOT_USER, BOOT_PASSWORD, "GET", uri, nonce=old_nonce),
    )
    assert stale.status == 401
    fresh = stale.digest_challenge()
    assert challenge_params(fresh)["stale"] == "true"
    assert challenge_params(fresh)["nonce"] != old_nonce
    retried = await fetch(
        phones_client, phone, auth=digest(fresh, BOOT_USER, BOOT_PASSWORD, "GET", uri)
    )
    assert retried.status == 200

    # A nonce the server never signed is no stale nonce.
    stamp = f"{int(time.time()):x}"
    forged = await fetch(
        phones_client,
        phone,
        auth=digest(challenge, BOOT_USER, BOOT_PASSWORD, "GET", uri, nonce=f"{stamp}.{'0' * 32}"),
    )
    assert forged.status == 401
    assert "stale" not in challenge_params(forged.digest_challenge())


# --- one device's credential, several instances -------------------------------------------


async def test_own_credential_opens_only_its_own_device(phones_client: Client, api: Api) -> None:
    first, second = BY_ID["yealink-T54W"], BY_ID["snom-D785"]
    await provision(api, first, "alice")
    await provision(api, second, "bob", extension="202")
    user, password = await own_credential(phones_client, first)

    # The first device's credential, presented for the second device's files.
    other = await fetch(phones_client, second, auth=basic(user, password))
    assert other.status == 404
    assert password.encode() not in other.body
    assert (await fetch(phones_client, second)).status == 200  # still the bootstrap's to open


async def test_retired_bootstrap_is_refused_by_every_instance(
    make_client: AppFactory, db: asyncpg.Connection, phones_client: Client, api: Api
) -> None:
    """Instances share nothing but PostgreSQL: a rollover seen by one is honoured by all."""
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    other = await start_instance(make_client, db)
    assert (await fetch(other, phone)).status == 200

    user, password = await own_credential(phones_client, phone)
    assert (await fetch(phones_client, phone, auth=basic(user, password))).status == 200

    async def retired_in_db() -> bool:
        value = await db.fetchval("SELECT bootstrap_allowed FROM devices WHERE mac = $1", phone.mac)
        return value is False

    await eventually(retired_in_db, "devices.bootstrap_allowed becomes false")

    async def refused_by_other() -> bool:
        return (await fetch(other, phone)).status == 401

    await eventually(refused_by_other, "the other instance refuses the bootstrap credential")


# --- a repeated request: answered from what was verified, while that holds --------------------


def verified_of(client: Client) -> int:
    """How many requests the instance keeps as verified (``phonecache.VerifiedFetches``)."""
    return len(client.app[PHONES].verified)


@pytest.mark.parametrize("phone", PHONES_UNDER_TEST, ids=lambda p: p.id)
async def test_a_repeated_request_is_answered_as_the_first_was(
    phones_client: Client,
    api: Api,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    phone: Phone,
) -> None:
    """Each vendor's files fetched with the device's own credential, again and again: the
    same bytes, headers, HEAD and 304 as the checked first answer, without parsing or
    verifying the credential again, and every fetch recorded."""
    await provision(api, phone)
    user, password = await own_credential(phones_client, phone)
    own = basic(user, password)
    files = [phone.line_file, phone.credential_file, *filter(None, [phone.shared_file])]
    recorder = phones_client.app[PHONES].recorder
    recorder.clock = ManualClock()  # what is written, is written at once
    kept = verified_of(phones_client)
    for file in dict.fromkeys(files):
        first = await fetch(phones_client, phone, file, auth=own, source=PHONE_NET_A)
        assert first.status == 200, (file, first)
        # Kept once it repeats: the credential file was asked for (with the bootstrap) already.
        repeated = file == phone.credential_file
        assert verified_of(phones_client) == kept + repeated, file
        again = await fetch(phones_client, phone, file, auth=own, source=PHONE_NET_A)
        assert (again.status, again.body) == (200, first.body), file
        assert verified_of(phones_client) == kept + 1, file
        kept += 1
        with monkeypatch.context() as checks:
            for check in ("parse_authorization", "verify", "identify"):
                checks.setattr(web_phones, check, not_again)
            again = await fetch(phones_client, phone, file, auth=own, source=PHONE_NET_A)
            assert (again.status, again.body) == (200, first.body), file
            assert [again.headers[h] for h in ("ETag", "Content-Type", "Cache-Control")] == [
                first.headers[h] for h in ("ETag", "Content-Type", "Cache-Control")
            ]
            head = await fetch(phones_client, phone, file, auth=own, method="HEAD")
            assert (head.status, head.body) == (200, b"")
            assert head.headers["Content-Length"] == str(len(first.body))
            unchanged = {"If-None-Match": first.headers["ETag"]}
            conditional = await fetch(phones_client, phone, file, auth=own, headers=unchanged)
            assert conditional.status == 304
        assert verified_of(phones_client) == kept, "the same request is one entry"

    # Fetches answered this way are recorded as any: a new source is written at once, and the
    # device's own file counts as the revision it fetched (a shared one would not).
    revision = await revision_of(api, phone.mac)
    identified = identify(phone.line_file, phone.user_agent)
    assert identified is not None
    recorded_name = identified[1].file  # as the adapter names it (Mitel: without the folder)
    with monkeypatch.context() as checks:
        checks.setattr(web_phones, "verify", not_again)
        got = await fetch(phones_client, phone, phone.line_file, auth=own, source=PHONE_NET_B)
    assert got.status == 200
    last = recorder.written[phone.mac]
    assert (last.file, last.revision, last.source, last.personal) == (
        recorded_name,
        revision,
        PHONE_NET_B,
        True,
    )

    async def recorded() -> Any:
        row = await last_fetch(db, phone.mac)
        wanted = (recorded_name, revision, PHONE_NET_B)
        seen = (row["last_fetch_file"], row["last_fetch_revision"], row["last_fetch_source"])
        return row if seen == wanted else None

    await eventually(recorded, "the repeated fetch is recorded")


def not_again(*_: Any) -> Any:
    """Stands in for a check a kept request must not make again."""
    raise AssertionError("a kept request was checked again")


async def test_only_basic_answers_with_the_devices_own_credential_are_kept(
    phones_client: Client, api: Api
) -> None:
    phone = BY_ID["gigaset-N870"]  # answers Digest too
    await provision(api, phone)
    user, password = await own_credential(phones_client, phone)  # with the bootstrap: not kept
    assert verified_of(phones_client) == 0
    uri = f"/provisioning/{phone.line_file}"
    challenge = (await fetch(phones_client, phone, auth=None)).digest_challenge()
    for _ in range(2):  # each Digest answer has its own nonce count and client nonce
        answered = digest(challenge, user, password, "GET", uri)
        assert (await fetch(phones_client, phone, auth=answered)).status == 200
    wrong = basic(user, password + "x")
    assert (await fetch(phones_client, phone, auth=wrong, source=PHONE_NET_A)).status == 401
    assert (await fetch(phones_client, phone, auth=basic(user, password))).status == 200
    assert verified_of(phones_client) == 1
    # The same credential and path with a User-Agent naming another MAC is another request,
    # refused as before.
    assert phone.mismatch_user_agent is not None
    other = await fetch(
        phones_client,
        phone,
        auth=basic(user, password),
        user_agent=phone.mismatch_user_agent,
        source=PHONE_NET_A,
    )
    assert (other.status, error_code(other)) == (404, "not_found")
    assert verified_of(phones_client) == 1


async def test_a_kept_request_is_still_throttled(phones_client: Client, api: Api) -> None:
    """The failure limiter looks at every request, kept or not (the allowlist too:
    ``test_site_allowlist_refuses_other_sources``)."""
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    own = basic(*await own_credential(phones_client, phone))
    assert (await fetch(phones_client, phone, auth=own, source=PHONE_NET_A)).status == 200
    assert verified_of(phones_client) == 1
    for index in range(10):
        guess = basic(BOOT_USER, f"guess-{index}")
        assert (await fetch(phones_client, phone, auth=guess, source=PHONE_NET_A)).status == 401
    blocked = await fetch(phones_client, phone, auth=own, source=PHONE_NET_A)
    assert (blocked.status, error_code(blocked)) == (429, "too_many_failures")
    assert (await fetch(phones_client, phone, auth=own, source=PHONE_NET_B)).status == 200


async def test_a_kept_request_follows_the_devices_changes(
    phones_client: Client, api: Api, db: asyncpg.Connection
) -> None:
    """A new revision is served to the same request; a deleted device's credential opens
    nothing, nor does it once the MAC is added again (with a new credential)."""
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    user, password = await own_credential(phones_client, phone)
    own = basic(user, password)
    first = await fetch(phones_client, phone, auth=own)
    assert PIN in first.text
    assert verified_of(phones_client) == 1
    # Held here, as anything in the process might hold it: a replaced device must not be
    # served just because it is still alive.
    cache = phones_client.app[PHONES].cache
    held = cache.devices[phone.mac]

    await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    await in_sync(phones_client, api, phone)
    changed = await fetch(phones_client, phone, auth=own)
    assert (changed.status, NEW_PIN in changed.text, PIN in changed.text) == (200, True, False)
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert cache.devices[phone.mac].revision == held.revision + 1  # replaced, alive: held

    # Deleted, the device the request was kept for is gone from memory too (nothing holds it).
    await call(api, "DELETE", f"/devices/{phone.mac}", expect=204)

    async def dropped() -> bool:
        return phone.mac not in cache.devices

    await eventually(dropped, "the instance drops the deleted device")
    gone = await fetch(phones_client, phone, auth=own, source=PHONE_NET_A)
    assert gone.status == 401
    assert NEW_PIN.encode() not in gone.body

    await call(
        api,
        "POST",
        "/devices",
        {"mac": phone.mac, "vendor": phone.vendor, "model": phone.model},
        expect=201,
    )
    await call(api, "PUT", f"/devices/{phone.mac}/assignments", [{"slot": 1, "username": "alice"}])
    await in_sync(phones_client, api, phone)
    refused = await fetch(phones_client, phone, auth=own, source=PHONE_NET_A)
    assert refused.status == 401
    assert NEW_PIN.encode() not in refused.body
    new_user, new_password = await own_credential(phones_client, phone)
    assert new_password != password
    assert (await fetch(phones_client, phone, auth=basic(new_user, new_password))).status == 200


async def test_a_kept_request_is_checked_again_when_the_bootstrap_changes(
    phones_client: Client, api: Api
) -> None:
    """In process: what the cache holds is changed under the kept request, as a reload would."""
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    user, password = await own_credential(phones_client, phone)
    own = basic(user, password)
    assert (await fetch(phones_client, phone, auth=own)).status == 200  # retires the bootstrap
    phones = phones_client.app[PHONES]
    device = phones.cache.devices[phone.mac]
    assert device.bootstrap_allowed is False
    phones.recorder.retired.clear()
    assert (await fetch(phones_client, phone, auth=own)).status == 200
    assert phones.recorder.retired == set()

    # The bootstrap right back on the device: the own credential's fetch retires it again.
    device.bootstrap_allowed = True
    assert (await fetch(phones_client, phone, auth=own)).status == 200
    assert (device.bootstrap_allowed, phones.recorder.retired) == (False, {phone.mac})

    # A bootstrap credential under the device's name now decides, as it would for any request.
    phones.cache.set_bootstrap(user, "another-bootstrap-password")
    assert (await fetch(phones_client, phone, auth=own, source=PHONE_NET_A)).status == 401
    assert phone.shared_file is not None  # what a bootstrap credential opens on a retired device
    shared = await fetch(
        phones_client, phone, phone.shared_file, auth=basic(user, "another-bootstrap-password")
    )
    assert shared.status == 200


# --- failures: MAC mismatch, throttling, unknown names, allowlist ------------------------------


async def test_mac_mismatch_is_not_found_and_counted(phones_client: Client, api: Api) -> None:
    """A User-Agent naming another MAC than the path: 404, and a failure of that source."""
    for index, phone in enumerate(WITH_UA_MAC):
        sip_user = await provision(api, phone, f"user{index}", extension=f"30{index}")
        assert phone.mismatch_user_agent is not None
        source = f"198.51.100.{100 + index}"  # each phone's own address
        for _ in range(10):
            got = await fetch(
                phones_client, phone, source=source, user_agent=phone.mismatch_user_agent
            )
            assert got.status == 404, (phone.id, got)
            assert sip_user.encode() not in got.body
            assert PIN.encode() not in got.body

        # Ten failures block the source, even for the right device with the right credential.
        blocked = await fetch(phones_client, phone, source=source)
        assert blocked.status == 429, (phone.id, blocked)
        assert (await fetch(phones_client, phone, source=PHONE_NET_B)).status == 200


async def test_unknown_macs_block_the_source_not_others(phones_client: Client, api: Api) -> None:
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)

    # A scanner walking Yealink MACs with the (leaked) site-wide credential. Discovery records
    # the first unknown MAC (one new phone per source address a minute) and serves it a minimal
    # config; each further one is refused and counts as a failure, as unknown MACs always did.
    for i in range(11):
        mac = f"001565ff{i:04x}"
        ua = "Yealink SIP-T54W 96.86.0.70 " + ":".join(mac[j : j + 2] for j in range(0, 12, 2))
        got = await fetch(phones_client, phone, f"{mac}.cfg", source=PHONE_NET_A, user_agent=ua)
        if i == 0:
            assert got.status == 200, (i, got)
        else:
            assert (got.status, error_code(got)) == (429, "discovery_limited"), (i, got)

    blocked = await fetch(phones_client, phone, source=PHONE_NET_A)
    assert blocked.status == 429
    assert 250 <= int(blocked.headers["Retry-After"]) <= 300
    assert error_code(blocked) == "too_many_failures"
    assert b"a1b2c3" not in blocked.body
    # Even before authenticating.
    assert (await fetch(phones_client, phone, source=PHONE_NET_A, auth=None)).status == 429

    assert (await fetch(phones_client, phone, source=PHONE_NET_B)).status == 200
    assert (await fetch(phones_client, phone)).status == 200  # the proxy itself, 127.0.0.1

    # Guessing passwords counts the same way.
    guesser = "198.51.100.9"
    for i in range(10):
        wrong = basic(BOOT_USER, f"guess-{i}")
        assert (await fetch(phones_client, phone, source=guesser, auth=wrong)).status == 401
    assert (await fetch(phones_client, phone, source=guesser)).status == 429
    assert (await fetch(phones_client, phone, source=PHONE_NET_B)).status == 200


async def test_unknown_file_names_are_not_found_and_not_counted(
    phones_client: Client, api: Api
) -> None:
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    t54w, vvx = phone.user_agent, BY_ID["poly-VVX450"].user_agent
    gxp = BY_ID["grandstream-GXP2170"].user_agent
    names = [
        ("favicon.ico", t54w),
        ("index.html", ""),
        ("001565a1b2c3.bin", t54w),
        ("001565a1b2c3-contact.xml", t54w),
        ("y000000000000.cfg", t54w),  # no model has the number 0
        ("sub/001565a1b2c3.cfg", t54w),
        ("sip.ld", vvx),  # Poly firmware: not hosted
        ("0004f2a1b2c8-phone.cfg", vvx),
        ("0004f2a1b2c8-app.log", vvx),
        ("cfg000b82a1b2c9", gxp),  # Grandstream's binary format
        ("cfg000b82a1b2c9.bin", gxp),
        ("cfgunknown9999.xml", gxp),
    ]
    for name, user_agent in names:
        got = await fetch(phones_client, phone, name, source=PHONE_NET_A, user_agent=user_agent)
        assert got.status == 404, (name, got)
    assert len(names) > 10  # more than the failure threshold
    got = await fetch(phones_client, phone, source=PHONE_NET_A)
    assert got.status == 200, got


async def test_site_allowlist_refuses_other_sources(
    make_client: AppFactory, db: asyncpg.Connection
) -> None:
    client = await start_instance(
        make_client, db, phones_allow="10.0.0.0/8", trusted_proxies="127.0.0.1"
    )
    api = await bootstrap_admin(client)
    phone = BY_ID["yealink-T54W"]
    sip_user = await provision(api, phone)

    refused = await fetch(client, phone)  # from 127.0.0.1 itself
    assert refused.status == 403
    assert error_code(refused) == "source_not_allowed"
    assert sip_user.encode() not in refused.body
    assert (await fetch(client, phone, source="192.0.2.10")).status == 403

    allowed = await fetch(client, phone, source="10.1.2.3")  # a phone behind the proxy
    assert allowed.status == 200
    assert sip_user in allowed.text

    # Its own credential's request, kept once repeated, is refused from elsewhere all the same.
    own = basic(*await own_credential(client, phone, source="10.1.2.3"))
    for _ in range(2):
        assert (await fetch(client, phone, auth=own, source="10.1.2.3")).status == 200
    assert verified_of(client) == 1
    outside = await fetch(client, phone, auth=own, source="192.0.2.10")
    assert (outside.status, error_code(outside)) == (403, "source_not_allowed")


# --- fetch records -----------------------------------------------------------------------------


async def test_fetches_are_recorded(
    phones_client: Client, api: Api, db: asyncpg.Connection
) -> None:
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    revision = await revision_of(api, phone.mac)
    assert phone.shared_file is not None

    assert (await fetch(phones_client, phone, source=PHONE_NET_A, auth=None)).status == 401
    first = await fetch(phones_client, phone, phone.shared_file, source=PHONE_NET_A)
    assert first.status == 200
    got = await fetch(phones_client, phone, source=PHONE_NET_A)
    assert got.status == 200
    conditional = await fetch(
        phones_client, phone, source=PHONE_NET_A, headers={"If-None-Match": got.headers["ETag"]}
    )
    assert conditional.status == 304

    async def recorded() -> Any:
        row = await last_fetch(db, phone.mac)
        return row if row["last_fetch_file"] == phone.line_file else None

    row = await eventually(recorded, "the fetches reach the database")
    assert row["last_fetch_revision"] == revision
    assert row["last_fetch_source"] == PHONE_NET_A
    assert row["fetched_revision"] == revision  # the device's own file, not the shared one
    shown = (await call(api, "GET", f"/devices/{phone.mac}"))["last_fetch"]
    assert shown["revision"] == revision
    assert shown["source"] == PHONE_NET_A
    assert shown["file"] == phone.line_file


async def test_fetch_records_aborted_by_a_deadlock_are_written_with_the_next_flush(
    phones_client: Client,
    api: Api,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL aborts one of two deadlocked transactions; nothing of it was written, so the
    records are kept, not dropped as records the database refuses would be."""
    caplog.set_level(logging.INFO, logger="provisioner.phonecache")
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    tries: list[int] = []
    write = store.record_fetches

    async def deadlocked_once(conn: Any, fetches: Any) -> None:
        tries.append(len(fetches))
        if len(tries) == 1:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        await write(conn, fetches)

    monkeypatch.setattr(store, "record_fetches", deadlocked_once)
    assert (await fetch(phones_client, phone, source=PHONE_NET_A)).status == 200

    async def recorded() -> Any:
        row = await last_fetch(db, phone.mac)
        return row if row["last_fetch_file"] == phone.line_file else None

    await eventually(recorded, "the fetch reaches the database after the deadlock")
    assert tries[:2] == [1, 1]
    said = [r.getMessage() for r in caplog.records if r.name == "provisioner.phonecache"]
    assert "fetch records met a deadlock; written with the next flush" in said
    assert not any("dropped" in line for line in said), said


async def last_fetch(db: asyncpg.Connection, mac: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT last_fetch_at, last_fetch_file, last_fetch_revision, last_fetch_source, "
        "fetched_revision FROM devices WHERE mac = $1",
        mac,
    )
    assert row is not None
    return row


class WrittenFetches:
    """Counts the fetch records each device gets written (wraps ``store.record_fetches``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count: Counter[str] = Counter()
        write = store.record_fetches

        async def counting(conn: Any, fetches: Any) -> None:
            await write(conn, fetches)
            self.count.update(fetch[0] for fetch in fetches)

        monkeypatch.setattr(store, "record_fetches", counting)


async def test_identical_fetches_are_written_once_a_minute(
    phones_client: Client, api: Api, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone polling its file within a minute costs one write; the last-seen time follows
    when the minute is over, and then a minute later again (the clock is the test's)."""
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    recorder = phones_client.app[PHONES].recorder
    clock = recorder.clock = ManualClock()
    written = WrittenFetches(monkeypatch)

    assert (await fetch(phones_client, phone, source=PHONE_NET_A)).status == 200

    async def seen_after(moment: datetime) -> Any:
        row = await last_fetch(db, phone.mac)
        at = row["last_fetch_at"]
        return row if at is not None and at > moment else None

    first = await eventually(lambda: seen_after(datetime.min.replace(tzinfo=UTC)), "a write")
    for headers in ({}, {"If-None-Match": '"stale"'}, {}):
        got = await fetch(phones_client, phone, source=PHONE_NET_A, headers=headers)
        assert got.status == 200
    before_last = datetime.now(UTC)
    assert (await fetch(phones_client, phone, source=PHONE_NET_A)).status == 200

    # Folded: nothing is queued or in flight, so this is what the database keeps for now.
    assert recorder.fetches == []
    assert written.count[phone.mac] == 1
    assert (await last_fetch(db, phone.mac))["last_fetch_at"] == first["last_fetch_at"]

    # The minute is over: the newest folded fetch is written, once, and a new minute begins.
    clock.advance(LAST_SEEN_INTERVAL)
    row = await eventually(lambda: seen_after(before_last), "the last-seen time advances")
    assert (row["last_fetch_file"], row["last_fetch_source"]) == (phone.line_file, PHONE_NET_A)
    assert written.count[phone.mac] == 2
    assert (await fetch(phones_client, phone, source=PHONE_NET_A)).status == 200
    assert recorder.fetches == []  # folded into the new minute

    # Bounded: a device that stops fetching leaves the recorder's memory a minute later.
    clock.advance(LAST_SEEN_INTERVAL)
    await eventually(lambda: seen_after(row["last_fetch_at"]), "the last fold is written")
    clock.advance(LAST_SEEN_INTERVAL)

    async def forgotten() -> bool:
        return phone.mac not in recorder.written

    await eventually(forgotten, "the device's entry is dropped")
    assert written.count[phone.mac] == 3


async def test_a_new_source_file_or_revision_is_written_at_once(
    phones_client: Client, api: Api, db: asyncpg.Connection
) -> None:
    """The clock never moves here: whatever reaches the database was written at once."""
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    assert phone.shared_file is not None
    phones_client.app[PHONES].recorder.clock = ManualClock()
    revision = await revision_of(api, phone.mac)

    async def shows(file: str, revision: int, source: str) -> Any:
        async def probe() -> Any:
            row = await last_fetch(db, phone.mac)
            got = (row["last_fetch_file"], row["last_fetch_revision"], row["last_fetch_source"])
            return row if got == (file, revision, source) else None

        return await eventually(probe, f"last fetch {file} {revision} from {source}")

    assert (await fetch(phones_client, phone, source=PHONE_NET_A)).status == 200
    await shows(phone.line_file, revision, PHONE_NET_A)
    assert (await fetch(phones_client, phone, source=PHONE_NET_B)).status == 200  # it moved
    await shows(phone.line_file, revision, PHONE_NET_B)
    assert (await fetch(phones_client, phone, phone.shared_file, source=PHONE_NET_B)).status == 200
    await shows(phone.shared_file, revision, PHONE_NET_B)

    await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    await in_sync(phones_client, api, phone)
    assert await revision_of(api, phone.mac) == revision + 1
    assert NEW_PIN in (await fetch(phones_client, phone, source=PHONE_NET_B)).text
    row = await shows(phone.line_file, revision + 1, PHONE_NET_B)
    assert row["fetched_revision"] == revision + 1


# --- PIN change: re-render, unchanged devices keep their revision, caches follow ---------------


async def test_pin_change_rerenders_and_is_served_without_restart(
    make_client: AppFactory, db: asyncpg.Connection, phones_client: Client, api: Api
) -> None:
    desk, base, bobs = (
        BY_ID["yealink-T54W"],
        BY_ID["gigaset-N870"],
        BY_ID["snom-D785"],
    )
    await provision(api, desk, "alice")
    await provision(api, base, "alice")  # a DECT base: carries no PIN
    await provision(api, bobs, "bob", extension="202")
    # A second instance (another process or host behind the balancer): only NOTIFY tells it.
    other = await start_instance(make_client, db)

    before = {p.mac: await revision_of(api, p.mac) for p in (desk, base, bobs)}
    served = {p.mac: await fetch(phones_client, p) for p in (desk, base, bobs)}
    assert PIN in served[desk.mac].text
    assert (await fetch(other, desk)).body == served[desk.mac].body

    await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})

    assert await revision_of(api, desk.mac) == before[desk.mac] + 1
    assert await revision_of(api, base.mac) == before[base.mac]
    assert await revision_of(api, bobs.mac) == before[bobs.mac]

    for client in (phones_client, other):

        async def new_pin_served(client: Client = client) -> Fetched | None:
            got = await fetch(client, desk)
            return got if got.status == 200 and NEW_PIN in got.text else None

        got = await eventually(new_pin_served, "the new PIN is served")
        assert PIN not in got.text
        assert got.headers["ETag"] != served[desk.mac].headers["ETag"]
        stale_etag = {"If-None-Match": served[desk.mac].headers["ETag"]}
        assert (await fetch(client, desk, headers=stale_etag)).status == 200

        for unchanged in (base, bobs):
            same = await fetch(client, unchanged)
            assert same.status == 200
            assert same.body == served[unchanged.mac].body
            assert same.headers["ETag"] == served[unchanged.mac].headers["ETag"]

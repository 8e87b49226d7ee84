"""Secrets at rest: a dump of the database holds none of the secrets a run sets.

The service is set up the way an admin does it (users with passwords and PINs, a device of every
model kind with two users on it, an OMM's management password, tokens, the generated bootstrap
credential), then the whole database is dumped with ``pg_dump``, every ``bytea`` value decoded
from its hex form, and every secret searched for, in clear, in the dump and in the decoded
bytes. Rendered configs are the place they all meet, so the same search first proves it finds
them when configs are stored in clear (the form rows had before migration 009), and that the
start-up pass seals such rows without changing what phones are served.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner import provisioning
from provisioner.auth import hash_token
from provisioner.sealing import content_hash, etag_of, seal_clear_files
from provisioner.vault import (
    Vault,
    access_code_purpose,
    device_credential_purpose,
    sip_password_purpose,
)
from provisioner.web.keys import CORE, PHONES
from tests.conftest import ADMIN_PASSWORD, Api, AppFactory, bootstrap_admin, stored_files

Client = TestClient[Any, Any]

REGISTRAR = "pbx.example.net"
#: PINs of the policy's longest length: twelve digits do not turn up by chance in a dump.
PINS = {"alice": "740291836517", "bob": "902746153880"}
PASSWORDS = {"alice": "Alice-at-rest-Passw0rd-71", "bob": "Bob-at-rest-Passw0rd-93"}
OMM_PASSWORD = "omm-axi-Secret-5bd0e1"

#: One device of every model kind the adapters have: (vendor, model, MAC).
DEVICES = [
    ("yealink", "T54W", "001565ab0001"),
    ("yealink", "W70B", "001565ab0002"),
    ("snom", "D785", "000413ab0003"),
    ("snom", "M700", "000413ab0004"),
    ("gigaset", "N870", "7c2f80ab0005"),
    ("poly", "VVX450", "0004f2ab0006"),
    ("grandstream", "GXP2170", "000b82ab0007"),
    ("mitel", "SIP-DECT", "003042ab0008"),
]
YEALINK = DEVICES[0][2]
YEALINK_UA = "Yealink SIP-T54W 96.86.0.70 00:15:65:ab:00:01"


@dataclass
class Secrets:
    """Every secret the run set, by kind."""

    strong: dict[str, list[str]] = field(default_factory=dict)
    """High-entropy secrets and 12-digit PINs: searched for anywhere."""
    access_codes: list[str] = field(default_factory=list)
    """4-digit codes: searched for in decoded ``bytea`` (text columns are full of digits) and,
    like every secret, in the lines of the configs that carry them."""
    config_lines: list[str] = field(default_factory=list)
    """Every line of a rendered config that carries a secret."""

    def add(self, kind: str, values: Iterable[str]) -> None:
        self.strong.setdefault(kind, []).extend(values)


async def call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, data = await api.call(method, path, body)
    assert status == expect, (method, path, data)
    return data


@pytest.fixture
async def service(make_client: AppFactory) -> Client:
    """The app with a generated (hence stored) bootstrap credential."""
    return await make_client()


@pytest.fixture
async def fleet(service: Client) -> Api:
    admin = await bootstrap_admin(service)
    await call(admin, "PUT", "/sites/default", {"registrar_host": REGISTRAR})
    for index, username in enumerate(PINS):
        user = {"username": username, "display_name": username.title(), "extension": f"20{index}"}
        await call(admin, "POST", "/users", user, expect=201)
        await call(admin, "PUT", f"/users/{username}/pin", {"pin": PINS[username]})
        body = {"mode": "set", "password": PASSWORDS[username], "temporary": False}
        await call(admin, "POST", f"/users/{username}/password", body)
    for vendor, model, mac in DEVICES:
        body = {"mac": mac, "vendor": vendor, "model": model}
        await call(admin, "POST", "/devices", body, expect=201)
        assignments = [{"slot": 1, "username": "alice"}, {"slot": 2, "username": "bob"}]
        await call(admin, "PUT", f"/devices/{mac}/assignments", assignments)
        device = await call(admin, "GET", f"/devices/{mac}")
        assert device["render_error"] is None, device
    mitel = DEVICES[-1][2]
    access = {"host": "omm.example.net", "username": "omm", "password": OMM_PASSWORD}
    await call(admin, "PUT", f"/devices/{mitel}/api-access", access, expect=204)
    return admin


async def collect_secrets(service: Client, admin: Api, db: asyncpg.Connection) -> Secrets:
    """What the run set, read back the way only the key holder can."""
    vault: Vault = service.app[CORE].vault
    found = Secrets()
    found.add("password", [ADMIN_PASSWORD, *PASSWORDS.values()])
    found.add("pin", PINS.values())
    tokens = [str(admin.token)]
    for username, password in PASSWORDS.items():
        tokens.append(str((await admin.as_user(username, password)).token))
    tokens.append((await call(admin, "POST", "/users/bob/impersonate"))["token"])
    found.add("token", tokens)
    found.add("omm password", [OMM_PASSWORD])
    _, bootstrap = await provisioning.bootstrap_credential(service.app[CORE])
    found.add("bootstrap password", [bootstrap])

    for row in await db.fetch("SELECT mac, slot, sip_password_encrypted FROM device_assignments"):
        purpose = sip_password_purpose(row["mac"], row["slot"])
        found.add("sip password", [vault.decrypt(row["sip_password_encrypted"], purpose)])
    for row in await db.fetch(
        "SELECT mac, credential_encrypted, access_code_encrypted FROM devices"
    ):
        mac = row["mac"]
        purpose = device_credential_purpose(mac)
        found.add("device credential", [vault.decrypt(row["credential_encrypted"], purpose)])
        if row["access_code_encrypted"] is not None:
            code = vault.decrypt(row["access_code_encrypted"], access_code_purpose(mac))
            found.access_codes.append(code)
    assert len(found.access_codes) >= 3, found.access_codes  # the DECT systems have codes

    # The configs carry every kind: a dump search that found nothing in clear configs would
    # prove nothing.
    everything = [s for values in found.strong.values() for s in values] + found.access_codes
    rendered = b""
    for _, _, mac in DEVICES:
        for body in (await stored_files(db, vault, mac)).values():
            rendered += body + b"\n"
            for line in body.decode().splitlines():
                if any(secret in line for secret in everything):
                    found.config_lines.append(line.strip())
    for kind in ("sip password", "device credential", "pin"):
        assert all(s.encode() in rendered for s in found.strong[kind]), kind
    assert all(code.encode() in rendered for code in found.access_codes)
    assert len(found.config_lines) > 40, found.config_lines
    return found


@dataclass
class Dump:
    text: bytes
    """The whole ``pg_dump`` output."""
    decoded: bytes
    """Every ``bytea`` value in it, decoded from hex, one per line."""


# COPY's text format doubles the backslash of bytea's hex output: \\x0a1b...
_BYTEA = re.compile(rb"\\\\x([0-9a-f]+)")


async def dump(database_url: str) -> Dump:
    result = await asyncio.to_thread(
        subprocess.run, ["pg_dump", "--no-owner", database_url], capture_output=True, check=True
    )
    decoded = b"\n".join(bytes.fromhex(m.decode()) for m in _BYTEA.findall(result.stdout))
    return Dump(result.stdout, decoded)


def leaks(found: Secrets, dumped: Dump) -> list[str]:
    """Every secret (kind and value) the dump holds in clear."""
    everywhere = dumped.text + b"\n" + dumped.decoded
    leaked = [
        f"{kind}: {secret}"
        for kind, values in found.strong.items()
        for secret in values
        if secret.encode() in everywhere
    ]
    leaked += [f"access code: {c}" for c in found.access_codes if c.encode() in dumped.decoded]
    leaked += [f"config line: {line}" for line in found.config_lines if line.encode() in everywhere]
    return leaked


async def test_a_dump_of_the_database_holds_no_secret(
    service: Client, fleet: Api, db: asyncpg.Connection, database_url: str
) -> None:
    found = await collect_secrets(service, fleet, db)
    dumped = await dump(database_url)

    # The search reads what it must: clear columns, and bytea decoded (a token's stored hash).
    assert REGISTRAR.encode() in dumped.text
    assert b"device_files" in dumped.text
    assert hash_token(found.strong["token"][0]) in dumped.decoded
    assert leaks(found, dumped) == []

    # Nor does it hold plain digests of the configs (ETags, revision hashes), which would let
    # whoever holds it confirm a guess: a DECT base's 4-digit access code in 10,000 tries.
    vault: Vault = service.app[CORE].vault
    for _, _, mac in DEVICES:
        files = await stored_files(db, vault, mac)
        assert plain_hash(files).encode() not in dumped.text, mac
        for name, body in files.items():
            assert hashlib.sha256(body).hexdigest()[:32].encode() not in dumped.text, name


async def test_configs_stored_in_clear_are_sealed_at_start(
    service: Client,
    fleet: Api,
    db: asyncpg.Connection,
    database_url: str,
    make_client: AppFactory,
    vault: Vault,
) -> None:
    """Rows as migration 009 finds them: in clear, with plain SHA-256 ETags and hashes."""
    found = await collect_secrets(service, fleet, db)
    before = await db.fetch("SELECT mac, revision, revision_hash FROM devices ORDER BY mac")
    served = await fetch(service, bootstrap=await bootstrap_auth(service))
    assert served.status == 200
    plain = {mac: await stored_files(db, vault, mac) for _, _, mac in DEVICES}
    await make_clear(db, plain)

    # The dump search finds what configs in clear give away: the check above can fail.
    in_clear = leaks(found, await dump(database_url))
    for kind in ("sip password", "device credential", "pin", "config line"):
        assert any(leak.startswith(f"{kind}: ") for leak in in_clear), (kind, in_clear)

    # A running process serves rows in clear as they are (here after its cache reloads them).
    await db.execute("SELECT pg_notify($1, $2)", provisioning.DEVICE_CHANNEL, YEALINK)
    cache = service.app[PHONES].cache
    old_etag = plain_etag(plain[YEALINK][f"{YEALINK}.cfg"])
    await eventually(lambda: cache.devices[YEALINK].file(f"{YEALINK}.cfg").etag == old_etag)
    clear_served = await fetch(service, bootstrap=await bootstrap_auth(service))
    assert (clear_served.status, clear_served.body) == (200, served.body)

    # The next start seals them: same bytes, keyed ETags equal to what a render gives.
    restarted = await make_client()
    assert await db.fetchval("SELECT count(*) FROM device_files WHERE NOT sealed") == 0
    for _, _, mac in DEVICES:
        assert await stored_files(db, vault, mac) == plain[mac], mac
        for name, body in plain[mac].items():
            etag = await db.fetchval(
                "SELECT etag FROM device_files WHERE mac = $1 AND name = $2", mac, name
            )
            assert etag == etag_of(vault, body), (mac, name)
    after = await db.fetch("SELECT mac, revision, revision_hash FROM devices ORDER BY mac")
    assert [(r["mac"], r["revision"]) for r in after] == [(r["mac"], r["revision"]) for r in before]
    for row in after:
        assert row["revision_hash"] == content_hash(vault, plain[row["mac"]]), row["mac"]
    assert [tuple(r) for r in after] == [tuple(r) for r in before]  # as the render stored it
    assert leaks(found, await dump(database_url)) == []

    again = await fetch(restarted, bootstrap=await bootstrap_auth(restarted))
    assert (again.status, again.body) == (200, served.body)
    assert again.etag == served.etag  # the ETag the render gave, stable across processes
    assert (await fetch(restarted, etag=served.etag, bootstrap=again.auth)).status == 304
    # An identical render keeps the revision: the recomputed hash is the render's.
    outcome = await provisioning.render_device(restarted.app[CORE], YEALINK)
    assert not outcome.changed
    assert outcome.revision == before[[r["mac"] for r in before].index(YEALINK)]["revision"]

    # Nothing left to do: a second pass changes no byte.
    sealed = await db.fetch("SELECT mac, name, body, etag FROM device_files ORDER BY mac, name")
    assert await seal_clear_files(vault, restarted.app[CORE].pool) == 0
    unchanged = await db.fetch("SELECT mac, name, body, etag FROM device_files ORDER BY mac, name")
    assert [tuple(r) for r in unchanged] == [tuple(r) for r in sealed]


async def test_concurrent_passes_seal_each_device_once(
    service: Client, fleet: Api, db: asyncpg.Connection, vault: Vault
) -> None:
    plain = {mac: await stored_files(db, vault, mac) for _, _, mac in DEVICES}
    await make_clear(db, plain)
    pool = service.app[CORE].pool
    counts = await asyncio.gather(*(seal_clear_files(vault, pool, batch=3) for _ in range(4)))
    assert sum(counts) == len(DEVICES), counts
    assert await db.fetchval("SELECT count(*) FROM device_files WHERE NOT sealed") == 0
    for _, _, mac in DEVICES:
        assert await stored_files(db, vault, mac) == plain[mac], mac


async def test_a_config_moved_to_another_device_is_not_served(
    service: Client, fleet: Api, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Sealed configs are bound to device and name: one device's config copied into another
    device's row (a database writer's swap) does not decrypt there, and is not served."""
    other = "001565ab0009"
    await call(fleet, "POST", "/devices", {"mac": other, "vendor": "yealink", "model": "T54W"}, 201)
    await call(fleet, "PUT", f"/devices/{other}/assignments", [{"slot": 1, "username": "bob"}])
    auth = await bootstrap_auth(service)
    assert (await fetch(service, bootstrap=auth)).status == 200
    await db.execute(
        """UPDATE device_files SET body = (SELECT body FROM device_files
                                           WHERE mac = $2 AND name = $2 || '.cfg')
           WHERE mac = $1 AND name = $1 || '.cfg'""",
        YEALINK,
        other,
    )
    await db.execute("SELECT pg_notify($1, $2)", provisioning.DEVICE_CHANNEL, YEALINK)
    cache = service.app[PHONES].cache
    await eventually(lambda: cache.devices[YEALINK].file(f"{YEALINK}.cfg") is None)
    refused = await fetch(service, bootstrap=auth)
    assert refused.status == 404
    assert any(
        r.levelname == "ERROR" and YEALINK in r.getMessage() and "decrypt" in r.getMessage()
        for r in caplog.records
    )


# --- helpers -----------------------------------------------------------------------------------


def plain_etag(body: bytes) -> str:
    """The ETag before migration 009: unkeyed SHA-256."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def plain_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{len(files[name])}\0".encode())
        digest.update(files[name])
    return digest.hexdigest()


async def make_clear(db: asyncpg.Connection, plain: dict[str, dict[str, bytes]]) -> None:
    """Store every device's files as they were stored before migration 009."""
    for mac, files in plain.items():
        for name, body in files.items():
            await db.execute(
                """UPDATE device_files SET body = $3, etag = $4, sealed = false
                   WHERE mac = $1 AND name = $2""",
                mac,
                name,
                body,
                plain_etag(body),
            )
        await db.execute(
            "UPDATE devices SET revision_hash = $2 WHERE mac = $1", mac, plain_hash(files)
        )
    assert await db.fetchval("SELECT count(*) FROM device_files WHERE sealed") == 0


@dataclass
class Fetched:
    status: int
    body: bytes
    etag: str | None
    auth: str


async def bootstrap_auth(client: Client) -> str:
    user, password = await provisioning.bootstrap_credential(client.app[CORE])
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def fetch(client: Client, *, bootstrap: str, etag: str | None = None) -> Fetched:
    """The Yealink's own file, as the phone fetches it on its first boot."""
    headers = {"User-Agent": YEALINK_UA, "Authorization": bootstrap}
    if etag:
        headers["If-None-Match"] = etag
    async with client.get(f"/provisioning/{YEALINK}.cfg", headers=headers) as response:
        return Fetched(
            response.status, await response.read(), response.headers.get("ETag"), bootstrap
        )


async def eventually(probe: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``probe`` (a plain predicate) until it holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not probe():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.02)

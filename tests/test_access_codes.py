"""DECT access codes and where a PIN goes, through the real API, database and templates.

One user on a line or handset of a device of every family: a PIN change queues a push only for
devices whose vendor documents a user-PIN key, never changes a base's access code, and the
access code (random, encrypted at rest) reaches the files of the bases that carry one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from provisioner import access_codes
from provisioner.devices import ADAPTERS
from provisioner.devices.base import AccessCodeKey
from provisioner.errors import ProvisionerError
from provisioner.vault import Vault
from tests.conftest import Api, stored_files
from tests.test_device_cli import Cli, assert_exit, cli, key_file  # noqa: F401 (fixtures)

PIN = "480913"
NEW_PIN = "739251"

#: One device of every model kind the adapters have: (vendor, model, MAC).
DEVICES = [
    ("yealink", "T54W", "001565aa0001"),
    ("yealink", "W70B", "001565aa0002"),
    ("snom", "D785", "000413aa0003"),
    ("snom", "M700", "000413aa0004"),
    ("gigaset", "N870", "7c2f80aa0005"),
    ("poly", "VVX450", "0004f2aa0006"),
    ("grandstream", "GXP2170", "000b82aa0007"),
    ("mitel", "SIP-DECT", "003042aa0008"),
]


def keys(vendor: str, model_name: str) -> tuple[Any, AccessCodeKey | None]:
    adapter = ADAPTERS[vendor]
    model = adapter.model(model_name)
    assert model is not None
    return adapter.pin_key(model), adapter.access_code_key(model)


async def call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, data = await api.call(method, path, body)
    assert status == expect, (method, path, data)
    return data


async def files_of(db: asyncpg.Connection, vault: Vault, mac: str) -> str:
    files = await stored_files(db, vault, mac)
    assert files, mac
    return "\n".join(body.decode() for body in files.values())


@pytest.fixture
async def fleet(
    admin: Api, make_user: Callable[..., Awaitable[dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Alice on slot 1 of one device of every family; the devices as the API shows them."""
    await call(admin, "PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
    await make_user("alice", extension="201")
    await call(admin, "PUT", "/users/alice/pin", {"pin": PIN})
    shown = {}
    for vendor, model, mac in DEVICES:
        await call(
            admin, "POST", "/devices", {"mac": mac, "vendor": vendor, "model": model}, expect=201
        )
        await call(admin, "PUT", f"/devices/{mac}/assignments", [{"slot": 1, "username": "alice"}])
        device = await call(admin, "GET", f"/devices/{mac}")
        assert device["render_error"] is None, device
        shown[mac] = device
    return shown


async def test_access_codes_are_random_encrypted_and_rendered(
    fleet: dict[str, dict[str, Any]], db: asyncpg.Connection, vault: Vault
) -> None:
    codes = {}
    for vendor, model, mac in DEVICES:
        _, code_key = keys(vendor, model)
        device = fleet[mac]
        stored = await db.fetchval("SELECT access_code_encrypted FROM devices WHERE mac = $1", mac)
        if code_key is None:
            assert "access_code" not in device
            assert stored is None
            continue
        code = device["access_code"]
        assert re.fullmatch(rf"[0-9]{{{code_key.digits}}}", code), (mac, code)
        assert code != PIN[: len(code)]
        assert code not in ("201", "0000", "1234")
        # Encrypted at rest: the column holds neither the code nor anything readable.
        assert code.encode() not in bytes(stored)
        # The base's files carry it (in the vendor's key).
        assert code in await files_of(db, vault, mac), (vendor, model)
        codes[mac] = code
    assert codes, "no adapter declares a DECT access code"
    # Random, not derived from the (identical) assignments: not all the same.
    if len(codes) > 2:
        assert len(set(codes.values())) > 1


async def test_a_pin_change_reaches_only_devices_that_carry_the_pin(
    admin: Api, fleet: dict[str, dict[str, Any]], db: asyncpg.Connection, vault: Vault
) -> None:
    revisions = {mac: device["revision"] for mac, device in fleet.items()}
    changed = await call(admin, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    jobs = await db.fetch(
        "SELECT mac FROM push_jobs WHERE id = ANY($1::bigint[])", changed["push_jobs"]
    )
    pushed = {r["mac"] for r in jobs}
    carriers = {mac for vendor, model, mac in DEVICES if keys(vendor, model)[0] is not None}
    assert pushed == carriers
    assert carriers, "no adapter carries the PIN"

    for vendor, model, mac in DEVICES:
        await admin.settled()
        device = await call(admin, "GET", f"/devices/{mac}")
        text = await files_of(db, vault, mac)
        pin_key, code_key = keys(vendor, model)
        # The access code never changes with a PIN, and never is the PIN.
        assert device.get("access_code") == fleet[mac].get("access_code")
        if code_key is not None:
            assert device["access_code"] not in (PIN, NEW_PIN)
        if pin_key is None:
            assert PIN not in text, (vendor, model)
            assert NEW_PIN not in text, (vendor, model)
            assert device["revision"] == revisions[mac], "re-rendered for a PIN it does not carry"
        else:
            assert NEW_PIN in text, (vendor, model)
            assert PIN not in text, (vendor, model)


async def test_an_admin_replaces_the_access_code(
    admin: Api, fleet: dict[str, dict[str, Any]], db: asyncpg.Connection, vault: Vault
) -> None:
    bases = [(v, m, mac) for v, m, mac in DEVICES if keys(v, m)[1] is not None]
    for vendor, model, mac in bases:
        _, code_key = keys(vendor, model)
        assert code_key is not None
        before = fleet[mac]["access_code"]
        chosen = "".join(str((int(d) + 3) % 10) for d in before)  # differs in every digit
        result = await call(admin, "POST", f"/devices/{mac}/access-code", {"access_code": chosen})
        assert result["access_code"] == chosen
        [job] = result["push_jobs"]
        text = await files_of(db, vault, mac)
        assert chosen in text, (vendor, model)
        assert before not in text, (vendor, model)
        assert (await call(admin, "GET", f"/devices/{mac}"))["access_code"] == chosen
        reason = await db.fetchval("SELECT reason FROM push_jobs WHERE id = $1", job)
        assert reason == "device.access_code"

        fresh = await call(admin, "POST", f"/devices/{mac}/access-code")
        assert re.fullmatch(rf"[0-9]{{{code_key.digits}}}", fresh["access_code"])
        wrong = "1" * (code_key.digits + 1)
        status, error = await admin.call(
            "POST", f"/devices/{mac}/access-code", {"access_code": wrong}
        )
        assert (status, error["error"]["code"]) == (422, "access_code_invalid")
        # Refused: nothing changed.
        assert (await call(admin, "GET", f"/devices/{mac}"))["access_code"] == fresh["access_code"]

    audit = await call(admin, "GET", "/audit?action=device.access_code")
    entries = audit["entries"] if isinstance(audit, dict) else audit
    assert len(entries) == 2 * len(bases)
    for entry in entries:
        assert not re.search(
            r"\b[0-9]{4,8}\b", str(entry["details"]).replace(entry["details"]["mac"], "")
        )


def test_generated_codes_are_never_patterns() -> None:
    seen = set()
    for _ in range(3000):
        code = access_codes.generate(4)
        assert re.fullmatch(r"[0-9]{4}", code)
        assert len(set(code)) > 1
        assert code not in ("0123", "1234", "9876", "8901")
        seen.add(code)
    assert len(seen) > 2000  # spread over the space, not a short list


def test_a_code_must_have_exactly_the_vendors_digits() -> None:
    key = AccessCodeKey("x", "test", digits=4)
    assert access_codes.check("0815", key) == "0815"
    for bad in ["815", "08150", "08a5", "\uff10\uff18\uff11\uff15", " 0815"]:
        with pytest.raises(ProvisionerError) as caught:
            access_codes.check(bad, key)
        assert caught.value.code == "access_code_invalid"


async def test_cli_shows_and_replaces_the_access_code(cli: Cli, db: asyncpg.Connection) -> None:  # noqa: F811
    vendor, model, mac = next((v, m, mac) for v, m, mac in DEVICES if keys(v, m)[1] is not None)
    assert_exit(await cli("site", "set", "--registrar", "pbx.example.net"), 0)
    assert_exit(await cli("device", "add", mac, "--vendor", vendor, "--model", model), 0)
    shown = await cli("device", "access-code", mac)
    assert_exit(shown, 0)
    code = shown.stdout.strip()
    assert re.fullmatch(r"[0-9]{4,8}", code)

    chosen = "".join(str((int(d) + 5) % 10) for d in code)
    assert_exit(await cli("device", "access-code", mac, "--set", chosen), 0)
    assert (await cli("device", "access-code", mac)).stdout.strip() == chosen
    renewed = await cli("device", "access-code", mac, "--new")
    assert_exit(renewed, 0)
    assert re.fullmatch(r"[0-9]{4,8}", renewed.stdout.strip())

    refused = await cli("device", "access-code", mac, "--set", "12")
    assert_exit(refused, 2)
    assert "access_code_invalid" in refused.stderr
    assert (await cli("device", "access-code", mac)).stdout.strip() == renewed.stdout.strip()

    assert_exit(
        await cli("device", "add", "001565aa00ff", "--vendor", "yealink", "--model", "T54W"), 0
    )
    desk = await cli("device", "access-code", "001565aa00ff")
    assert_exit(desk, 2)
    assert "no access code" in desk.stderr

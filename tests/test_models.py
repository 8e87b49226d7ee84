"""The model tables and models they do not list yet: GET /models, generic service, refusals."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from provisioner.devices import ADAPTERS
from tests.conftest import Api

#: (vendor, a model name the table does not list but the family's naming fits, MAC).
GENERIC = [
    ("yealink", "T99W", "001565aabb81"),
    ("snom", "D799", "000413aabb82"),
    ("poly", "VVX999", "0004f2aabb83"),
    ("grandstream", "GRP2699", "000b82aabb84"),
    ("gigaset", "N990", "7c2f80aabb85"),
]


async def call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, data = await api.call(method, path, body)
    assert status == expect, (method, path, data)
    return data


def test_generic_names_are_not_in_the_tables() -> None:
    for vendor, name, _ in GENERIC:
        assert ADAPTERS[vendor].model(name) is None, (vendor, name)
        assert ADAPTERS[vendor].generic_model(name) is not None, (vendor, name)


async def test_the_models_list_is_every_table(admin: Api) -> None:
    listed = (await call(admin, "GET", "/models"))["models"]
    expected = {(a.vendor, m.name) for a in ADAPTERS.values() for m in a.models.values()}
    assert {(m["vendor"], m["model"]) for m in listed} == expected
    assert len(listed) == len(expected)
    assert all(m["kind"] in ("desk", "dect") and m["slots"] >= 1 for m in listed)


@pytest.mark.parametrize(("vendor", "model", "mac"), GENERIC)
async def test_an_unlisted_model_of_a_known_family_is_added_and_served(
    admin: Api, make_user: Any, db: asyncpg.Connection, vendor: str, model: str, mac: str
) -> None:
    await call(admin, "PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
    await make_user("alice", extension="201")
    created = await call(
        admin, "POST", "/devices", {"mac": mac, "vendor": vendor, "model": model}, expect=201
    )
    assert created["model_known"] is False
    assert model in created["warning"]
    assert created["render_error"] is None, created
    await call(admin, "PUT", f"/devices/{mac}/assignments", [{"slot": 1, "username": "alice"}])
    shown = await call(admin, "GET", f"/devices/{mac}")
    assert (shown["model"], shown["model_known"]) == (model, False)
    assert shown["render_error"] is None
    assert shown["revision"] >= 1
    files = await db.fetch("SELECT name FROM device_files WHERE mac = $1", mac)
    assert files
    audit = (await call(admin, "GET", "/audit?action=device.create"))["entries"]
    assert audit[0]["details"]["model_known"] is False


async def test_names_no_family_has_are_refused(admin: Api) -> None:
    for vendor, name in [("yealink", "GXP2170"), ("snom", "T54W"), ("gigaset", "VVX450")]:
        status, data = await admin.call(
            "POST", "/devices", {"mac": "001565aabb90", "vendor": vendor, "model": name}
        )
        assert (status, data["error"]["code"]) == (422, "model_unknown"), (vendor, name)

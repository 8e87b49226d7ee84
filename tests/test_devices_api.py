"""The device, site and push-job routes of the JSON API against the real app and PostgreSQL.

Every test starts from empty tables (the ``db`` fixture) with the ``default`` site, which has no
SIP registrar until a test sets one: devices added before that cannot be rendered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from provisioner.vault import Vault
from tests.conftest import Api, AppFactory, bootstrap_admin, stored_files

MakeUser = Callable[..., Awaitable[dict[str, Any]]]

REGISTRAR = "pbx.example.net"
YEALINK = "001565aabb01"
YEALINK_2 = "001565aabb02"
DECT = "001565dec701"
GRANDSTREAM = "000b82aabb01"
PIN = "730519"


# --- helpers -----------------------------------------------------------------------------------


async def set_registrar(admin: Api, site: str = "default", **fields: Any) -> dict[str, Any]:
    status, data = await admin.call(
        "PUT", f"/sites/{site}", {"registrar_host": REGISTRAR, **fields}
    )
    assert status == 200, data
    return dict(data)


async def add_device(
    admin: Api, mac: str, vendor: str = "yealink", model: str = "T54W", **fields: Any
) -> dict[str, Any]:
    status, data = await admin.call(
        "POST", "/devices", {"mac": mac, "vendor": vendor, "model": model, **fields}
    )
    assert status == 201, data
    return dict(data)


async def get_device(admin: Api, mac: str) -> dict[str, Any]:
    status, data = await admin.call("GET", f"/devices/{mac}")
    assert status == 200, data
    return dict(data)


async def assign(admin: Api, mac: str, *items: tuple[int, str]) -> list[dict[str, Any]]:
    body = [{"slot": slot, "username": username} for slot, username in items]
    status, data = await admin.call("PUT", f"/devices/{mac}/assignments", body)
    assert status == 200, data
    return list(data)


async def revision(db: asyncpg.Connection, mac: str) -> int:
    value = await db.fetchval("SELECT revision FROM devices WHERE mac = $1", mac)
    assert value is not None, mac
    return int(value)


async def device_file(db: asyncpg.Connection, vault: Vault, mac: str, name: str) -> str:
    files = await stored_files(db, vault, mac)
    assert name in files, (mac, name)
    return files[name].decode()


async def sip_secrets(db: asyncpg.Connection, mac: str) -> dict[int, bytes]:
    rows = await db.fetch(
        "SELECT slot, sip_password_encrypted FROM device_assignments WHERE mac = $1", mac
    )
    return {r["slot"]: bytes(r["sip_password_encrypted"]) for r in rows}


async def jobs_of(db: asyncpg.Connection, mac: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM push_jobs WHERE mac = $1 ORDER BY id", mac)


async def snapshot(db: asyncpg.Connection, mac: str) -> tuple[Any, ...]:
    """What a refused request must leave alone: assignments, revision, files, push jobs."""
    assignments = await db.fetch(
        "SELECT slot, user_id, ipui, sip_user, sip_password_encrypted FROM device_assignments "
        "WHERE mac = $1 ORDER BY slot",
        mac,
    )
    device = await db.fetchrow(
        "SELECT model, label, site, revision, revision_hash FROM devices WHERE mac = $1", mac
    )
    files = await db.fetch("SELECT name, body FROM device_files WHERE mac = $1 ORDER BY name", mac)
    jobs = await db.fetch("SELECT id, state, reason FROM push_jobs WHERE mac = $1", mac)
    return (
        [tuple(r) for r in assignments],
        tuple(device) if device else None,
        [tuple(r) for r in files],
        [tuple(r) for r in jobs],
    )


def error_code(data: Any) -> str:
    return str(data["error"]["code"])


# --- adding devices ----------------------------------------------------------------------------


async def test_mac_forms_are_accepted_and_stored_canonical(
    admin: Api, db: asyncpg.Connection
) -> None:
    forms = {
        "00:15:65:aa:bb:01": "001565aabb01",
        "00-15-65-AA-BB-02": "001565aabb02",
        "001565aabb03": "001565aabb03",
        "00:15:65:AA:BB:04": "001565aabb04",
        "001565AABB05": "001565aabb05",
        " 0015.65aa.bb06 ": "001565aabb06",
    }
    for given, canonical in forms.items():
        device = await add_device(admin, given)
        assert device["mac"] == canonical
    stored = await db.fetch("SELECT mac FROM devices ORDER BY mac")
    assert [r["mac"] for r in stored] == sorted(forms.values())
    # Any form finds the device.
    assert (await get_device(admin, "00-15-65-AA-BB-01"))["mac"] == "001565aabb01"
    # The same device in another form is a duplicate.
    status, data = await admin.call(
        "POST", "/devices", {"mac": "00:15:65:AA:BB:03", "vendor": "yealink", "model": "T54W"}
    )
    assert (status, error_code(data)) == (409, "device_exists")
    assert await db.fetchval("SELECT count(*) FROM devices") == len(forms)


async def test_bad_macs_vendors_and_models_are_refused(admin: Api, db: asyncpg.Connection) -> None:
    bad_macs = [
        "zz:zz:zz:zz:zz:zz",
        "zzzzzzzzzzzz",
        "001565aabbc",  # 11 digits
        "001565aabbccd",  # 13 digits
        "aa:bb-cc:dd-ee:ff",  # mixed separators
        "aa:bb:cc:dd:ee:ff:00",
        "aa:bbc:cd:de:eff",  # unequal groups
        "",
    ]
    for mac in bad_macs:
        status, data = await admin.call(
            "POST", "/devices", {"mac": mac, "vendor": "yealink", "model": "T54W"}
        )
        assert (status, error_code(data)) == (422, "mac_invalid"), mac
    refused: list[tuple[dict[str, Any], str]] = [
        ({"vendor": "cisco", "model": "T54W"}, "vendor_unknown"),
        ({"vendor": "yealink", "model": "ZX99"}, "model_unknown"),  # no Yealink name
        ({"vendor": "snom", "model": "T54W"}, "model_unknown"),  # another vendor's model
    ]
    for body, code in refused:
        status, data = await admin.call("POST", "/devices", {"mac": YEALINK, **body})
        assert (status, error_code(data)) == (422, code), body
    malformed: list[tuple[dict[str, Any], str]] = [
        ({"mac": YEALINK, "vendor": "yealink"}, "field_missing"),
        ({"mac": YEALINK, "vendor": "yealink", "model": 54}, "field_type"),
        ({"mac": YEALINK, "vendor": "yealink", "model": "T54W", "kind": "dect"}, "field_unknown"),
        ({"mac": YEALINK, "vendor": "yealink", "model": "T54W", "label": "a\nb"}, "label_invalid"),
    ]
    for body, code in malformed:
        status, data = await admin.call("POST", "/devices", body)
        assert (status, error_code(data)) == (400, code), body
    status, data = await admin.call(
        "POST", "/devices", {"mac": YEALINK, "vendor": "yealink", "model": "T54W", "site": "nope"}
    )
    assert (status, error_code(data)) == (422, "site_unknown")
    assert await db.fetchval("SELECT count(*) FROM devices") == 0
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'device.%'") == 0

    status, data = await admin.call("GET", "/devices/zz:zz:zz:zz:zz:zz")
    assert (status, error_code(data)) == (422, "mac_invalid")
    status, data = await admin.call("GET", f"/devices/{YEALINK}")
    assert (status, error_code(data)) == (404, "device_not_found")


async def test_model_is_matched_case_insensitively_and_gives_the_kind(
    admin: Api, db: asyncpg.Connection
) -> None:
    desk = await add_device(admin, YEALINK, vendor="Yealink", model=" t54w ")
    assert (desk["vendor"], desk["model"], desk["kind"]) == ("yealink", "T54W", "desk")
    dect = await add_device(admin, DECT, model="w70b", label="  Lager  ")
    assert (dect["model"], dect["kind"], dect["label"]) == ("W70B", "dect", "Lager")
    assert dect["site"] == "default"
    assert dect["assignments"] == []
    rows = await db.fetch("SELECT mac, model, kind FROM devices ORDER BY mac")
    assert [tuple(r) for r in rows] == [(YEALINK, "T54W", "desk"), (DECT, "W70B", "dect")]
    audit = await db.fetch("SELECT details FROM audit_log WHERE action = 'device.create'")
    assert len(audit) == 2


# --- assignments -------------------------------------------------------------------------------


async def test_assignment_rules_and_refusals_change_nothing(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection, vault: Vault
) -> None:
    await make_user("alice", extension="201")
    await make_user("bob", extension="202")
    await make_user("nox")  # no extension
    await set_registrar(admin)
    await add_device(admin, YEALINK, model="T54W")  # 16 lines
    await add_device(admin, DECT, model="W70B")  # 10 handsets
    await assign(admin, YEALINK, (1, "alice"))
    await assign(admin, DECT, (1, "alice"))
    before = {mac: await snapshot(db, mac) for mac in (YEALINK, DECT)}
    assert before[YEALINK][1][3] == 2  # created (1), assigned (2)

    def item(slot: Any, username: str = "bob", **extra: Any) -> dict[str, Any]:
        return {"slot": slot, "username": username, **extra}

    refused: list[tuple[str, Any, int, str]] = [
        (YEALINK, [item(0)], 422, "slot_invalid"),
        (YEALINK, [item(-1)], 422, "slot_invalid"),
        (YEALINK, [item(17)], 422, "slot_invalid"),
        (DECT, [item(11)], 422, "slot_invalid"),
        (YEALINK, [item(1, "alice"), item(1)], 422, "slot_duplicate"),
        (YEALINK, [item(1, "alice"), item(2, "ghost")], 404, "user_not_found"),
        (YEALINK, [item(1, "Not A User!")], 404, "user_not_found"),
        (YEALINK, [item(2, "nox")], 422, "extension_missing"),
        (YEALINK, [item(1, "alice"), item(2, ipui="0328D3C918")], 422, "ipui_not_dect"),
        (DECT, [item(2, ipui="12345")], 422, "ipui_invalid"),
        (DECT, [item(2, ipui="0328D3C91G")], 422, "ipui_invalid"),
        (YEALINK, [item("1")], 400, "field_type"),
        (YEALINK, [item(True)], 400, "field_type"),
        (YEALINK, [{"slot": 1}], 400, "field_missing"),
        (YEALINK, [item(1, line=2)], 400, "body_invalid"),
        (YEALINK, ["alice"], 400, "body_invalid"),
        (YEALINK, {"slot": 1, "username": "bob"}, 400, "body_invalid"),
    ]
    for mac, body, status_expected, code in refused:
        status, data = await admin.call("PUT", f"/devices/{mac}/assignments", body)
        assert (status, error_code(data)) == (status_expected, code), body
    status, data = await admin.call("PUT", "/devices/001565ffffff/assignments", [item(1)])
    assert (status, error_code(data)) == (404, "device_not_found")
    for mac in (YEALINK, DECT):
        assert await snapshot(db, mac) == before[mac], mac

    # The edges are fine: the last slot of each model; an IPUI in any case on DECT.
    rows = await assign(admin, YEALINK, (1, "alice"), (16, "bob"))
    assert [(r["slot"], r["username"], r["extension"]) for r in rows] == [
        (1, "alice", "201"),
        (16, "bob", "202"),
    ]
    status, rows = await admin.call(
        "PUT",
        f"/devices/{DECT}/assignments",
        [item(10, "bob", ipui=" 0328d3c918 "), item(1, "alice", ipui=None)],
    )
    assert status == 200, rows
    assert [(r["slot"], r["username"], r["ipui"]) for r in rows] == [
        (1, "alice", None),
        (10, "bob", "0328D3C918"),
    ]
    dect = await get_device(admin, DECT)
    assert [a["ipui"] for a in dect["assignments"]] == [None, "0328D3C918"]
    assert dect["revision"] == 3
    assert "handset.10.name = Bob" in await device_file(db, vault, DECT, f"{DECT}.cfg")


async def test_replacing_assignments_keeps_the_sip_account_of_unchanged_slots(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection, vault: Vault
) -> None:
    for name, extension in [("alice", "201"), ("bob", "202"), ("carol", "203")]:
        await make_user(name, extension=extension)
    await set_registrar(admin)
    await add_device(admin, YEALINK)
    assert await revision(db, YEALINK) == 1
    assert await jobs_of(db, YEALINK) == []  # adding a device queues no push

    first = await assign(admin, YEALINK, (1, "alice"), (2, "bob"))
    assert await revision(db, YEALINK) == 2
    jobs = await jobs_of(db, YEALINK)
    assert [(j["state"], j["reason"]) for j in jobs] == [("pending", "device.assign")]
    accounts = {r["slot"]: r["sip_user"] for r in first}
    assert accounts[1] != accounts[2]
    passwords = await sip_secrets(db, YEALINK)
    cfg = await device_file(db, vault, YEALINK, f"{YEALINK}.cfg")
    assert f"account.1.user_name = {accounts[1]}" in cfg
    assert f"account.2.user_name = {accounts[2]}" in cfg
    assert f"account.1.sip_server.1.address = {REGISTRAR}" in cfg

    # Slot 2 changes hands, slot 1 does not.
    second = await assign(admin, YEALINK, (1, "alice"), (2, "carol"))
    after = {r["slot"]: r["sip_user"] for r in second}
    assert after[1] == accounts[1]
    assert after[2] != accounts[2]
    new_passwords = await sip_secrets(db, YEALINK)
    assert new_passwords[1] == passwords[1]
    assert new_passwords[2] != passwords[2]
    assert await revision(db, YEALINK) == 3
    # The change folded into the device's open job: still one job.
    jobs = await jobs_of(db, YEALINK)
    assert [(j["id"], j["state"]) for j in jobs] == [(jobs[0]["id"], "pending")]

    # The same assignments again: the output is identical, so the revision stays.
    await assign(admin, YEALINK, (1, "alice"), (2, "carol"))
    assert await revision(db, YEALINK) == 3
    # A user moving to another slot gets a new account there.
    moved = await assign(admin, YEALINK, (3, "alice"))
    assert [(r["slot"], r["username"]) for r in moved] == [(3, "alice")]
    assert moved[0]["sip_user"] not in (accounts[1], after[2])
    assert await revision(db, YEALINK) == 4
    # Clearing.
    assert await assign(admin, YEALINK) == []
    assert await db.fetchval("SELECT count(*) FROM device_assignments") == 0
    assert await revision(db, YEALINK) == 5
    assert "account.3.enable = 0" in await device_file(db, vault, YEALINK, f"{YEALINK}.cfg")
    audit = await db.fetch("SELECT details FROM audit_log WHERE action = 'device.assign'")
    assert len(audit) == 5


async def test_one_user_on_devices_whose_macs_share_the_last_six_digits(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    """SIP account names are unique per device and slot, whatever the MACs look like."""
    await make_user("alice", extension="201")
    await set_registrar(admin)
    await add_device(admin, "001565aabbcc", model="T54W")
    await add_device(admin, "000413aabbcc", vendor="snom", model="D785")
    first = await assign(admin, "001565aabbcc", (1, "alice"))
    second = await assign(admin, "000413aabbcc", (1, "alice"))
    assert first[0]["sip_user"] != second[0]["sip_user"]
    assert await db.fetchval("SELECT count(*) FROM device_assignments") == 2


# --- rendering ---------------------------------------------------------------------------------


async def test_render_error_until_the_site_has_a_registrar(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection, vault: Vault
) -> None:
    await make_user("alice", extension="201")
    await add_device(admin, YEALINK)
    await add_device(admin, GRANDSTREAM, vendor="grandstream", model="GXP2170")
    await assign(admin, YEALINK, (1, "alice"))
    device = await get_device(admin, YEALINK)
    assert device["revision"] == 0
    assert device["rendered_at"] is None
    assert "registrar" in device["render_error"]
    assert await db.fetchval("SELECT count(*) FROM device_files") == 0

    site = await set_registrar(admin, registrar_port=5070, transport="tcp")
    assert site == {
        "name": "default",
        "registrar_host": REGISTRAR,
        "registrar_port": 5070,
        "transport": "tcp",
        "timezone": "Europe/Berlin",
        "language": "de",
        "ntp_server": "pool.ntp.org",
        "maintenance_window": "02:00-04:00",
        "sip_realm": None,
    }
    for mac in (YEALINK, GRANDSTREAM):
        device = await get_device(admin, mac)
        assert device["revision"] >= 1, device
        assert device["render_error"] is None
        assert device["rendered_at"] is not None
        assert [j["reason"] for j in await jobs_of(db, mac)] == ["site.update"]
    cfg = await device_file(db, vault, YEALINK, f"{YEALINK}.cfg")
    assert "account.1.sip_server.1.port = 5070" in cfg
    assert "account.1.sip_server.1.transport_type = 1" in cfg
    files = await db.fetch("SELECT name FROM device_files WHERE mac = $1 ORDER BY name", YEALINK)
    assert [r["name"] for r in files] == sorted(
        [f"{YEALINK}.boot", f"{YEALINK}.cfg", "y000000000000.boot", "y000000000096.cfg"]
    )

    # A later failure (the device moves to a site without registrar) keeps the last good
    # revision in service and records the error.
    status, data = await admin.call("PUT", "/sites/branch", {"timezone": "Europe/Vienna"})
    assert status == 200, data
    good = await snapshot(db, YEALINK)
    status, data = await admin.call("PATCH", f"/devices/{YEALINK}", {"site": "branch"})
    assert status == 200, data
    assert data["site"] == "branch"
    assert "registrar" in data["render_error"]
    assert data["revision"] == good[1][3]
    files = await db.fetch(
        "SELECT name, body FROM device_files WHERE mac = $1 ORDER BY name", YEALINK
    )
    assert [tuple(r) for r in files] == good[2]
    # Configuring the branch renders it again.
    await set_registrar(admin, "branch")
    device = await get_device(admin, YEALINK)
    assert device["render_error"] is None
    assert device["revision"] == good[1][3] + 1
    assert "Austria(Vienna)" in await device_file(db, vault, YEALINK, f"{YEALINK}.cfg")


async def test_site_template_overrides(
    make_client: AppFactory, db: asyncpg.Connection, tmp_path: Path, vault: Vault
) -> None:
    overrides = tmp_path / "templates"
    (overrides / "yealink").mkdir(parents=True)
    desk = overrides / "yealink" / "desk.cfg"
    desk.write_text("{% if %}broken\n")
    admin = await bootstrap_admin(await make_client(template_dir=str(overrides)))
    await set_registrar(admin)

    # A broken override: the built-in template serves, the device says why.
    device = await add_device(admin, YEALINK)
    assert device["revision"] == 1
    assert "override template yealink/desk.cfg" in device["render_error"]
    cfg = await device_file(db, vault, YEALINK, f"{YEALINK}.cfg")
    assert "phone_setting.phone_lock.enable = 0" in cfg  # built-in desk.cfg
    assert f"static.auto_provision.server.username = {YEALINK}" in cfg

    # A valid override wins.
    desk.write_text(
        "#!version:1.0.0.1\n# site override\nregistrar = {{ site.registrar_host }}\n"
        "user = {{ provisioning_user }}\n"
    )
    status, data = await admin.call("POST", f"/devices/{YEALINK}/reprovision")
    assert status == 202, data
    device = await get_device(admin, YEALINK)
    assert device["render_error"] is None
    assert device["revision"] == 2
    cfg = await device_file(db, vault, YEALINK, f"{YEALINK}.cfg")
    assert cfg == f"#!version:1.0.0.1\n# site override\nregistrar = {REGISTRAR}\nuser = {YEALINK}\n"
    # Files the folder does not override are still the built-in ones.
    assert "include:config" in await device_file(db, vault, YEALINK, f"{YEALINK}.boot")


async def test_pin_change_re_renders_exactly_the_users_devices(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection, vault: Vault
) -> None:
    await make_user("alice", extension="201")
    await make_user("bob", extension="202")
    await set_registrar(admin)
    await add_device(admin, YEALINK)
    await add_device(admin, DECT, model="W70B")
    await add_device(admin, GRANDSTREAM, vendor="grandstream", model="GXP2170")
    await add_device(admin, YEALINK_2)
    await assign(admin, YEALINK, (1, "alice"))
    await assign(admin, DECT, (3, "alice"))
    await assign(admin, GRANDSTREAM, (1, "alice"))
    await assign(admin, YEALINK_2, (1, "bob"))
    macs = (YEALINK, DECT, GRANDSTREAM, YEALINK_2)
    # Close every job so the PIN change's own jobs are visible.
    await db.execute("UPDATE push_jobs SET state = 'fetched'")
    before = {mac: await revision(db, mac) for mac in macs}
    bob_before = await snapshot(db, YEALINK_2)

    status, data = await admin.call("PUT", "/users/alice/pin", {"pin": PIN})
    assert status == 200, data
    # The desk phones carry the PIN (their keypad-lock PIN); the DECT base has no user-PIN key.
    assert len(data["push_jobs"]) == 2
    after = {mac: await revision(db, mac) for mac in macs}
    assert after[YEALINK] == before[YEALINK] + 1  # the desk phone's unlock PIN
    assert after[GRANDSTREAM] == before[GRANDSTREAM] + 1  # the keypad lock's password
    assert after[DECT] == before[DECT]  # not even re-rendered
    assert after[YEALINK_2] == before[YEALINK_2]
    assert await snapshot(db, YEALINK_2) == bob_before
    pending = await db.fetch("SELECT mac, reason FROM push_jobs WHERE state = 'pending'")
    assert sorted(tuple(r) for r in pending) == sorted(
        (mac, "pin.change") for mac in (YEALINK, GRANDSTREAM)
    )
    assert f"phone_setting.phone_lock.unlock_pin = {PIN}" in await device_file(
        db, vault, YEALINK, f"{YEALINK}.cfg"
    )
    assert f"<P1383>{PIN}</P1383>" in await device_file(
        db, vault, GRANDSTREAM, f"cfg{GRANDSTREAM}.xml"
    )
    assert PIN not in await device_file(db, vault, DECT, f"{DECT}.cfg")


# --- device changes, listing, re-provisioning --------------------------------------------------


async def test_patch_and_delete_device(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    await make_user("alice", extension="201")
    await set_registrar(admin)
    await add_device(admin, YEALINK)
    await assign(admin, YEALINK, (1, "alice"), (3, "alice"))
    await db.execute("UPDATE push_jobs SET state = 'fetched'")

    status, data = await admin.call("PATCH", f"/devices/{YEALINK}", {"label": " Empfang "})
    assert status == 200, data
    assert data["label"] == "Empfang"
    assert data["revision"] == 2  # the label is not in Yealink's files
    assert [a["slot"] for a in data["assignments"]] == [1, 3]

    status, data = await admin.call("PATCH", f"/devices/{YEALINK}", {"model": "t46u"})
    assert status == 200, data
    assert (data["model"], data["kind"], data["revision"]) == ("T46U", "desk", 3)
    assert await db.fetchval(
        "SELECT count(*) FROM device_files WHERE mac = $1 AND name = 'y000000000108.cfg'", YEALINK
    )
    pending = await db.fetch(
        "SELECT reason FROM push_jobs WHERE mac = $1 AND state = 'pending'", YEALINK
    )
    assert [r["reason"] for r in pending] == ["device.update"]

    before = await snapshot(db, YEALINK)
    for body, status_expected, code in [
        ({"model": "T31G"}, 422, "model_incompatible"),  # 2 lines, slot 3 is taken
        ({"model": "W70B"}, 422, "model_incompatible"),  # a DECT base
        ({"model": "GXP2170"}, 422, "model_unknown"),  # another vendor's
        ({"site": "nowhere"}, 422, "site_unknown"),
        ({"site": "Bad Site"}, 422, "site_unknown"),
        ({"label": "x" * 129}, 400, "label_invalid"),
        ({"label": None}, 400, "field_type"),
        ({"vendor": "snom"}, 400, "field_unknown"),
        ({"mac": "001565aabbff"}, 400, "field_unknown"),
    ]:
        status, data = await admin.call("PATCH", f"/devices/{YEALINK}", body)
        assert (status, error_code(data)) == (status_expected, code), body
    assert await snapshot(db, YEALINK) == before
    # No change at all: nothing happens.
    status, data = await admin.call("PATCH", f"/devices/{YEALINK}", {"model": "T46U"})
    assert status == 200, data
    assert await snapshot(db, YEALINK) == before
    status, data = await admin.call("PATCH", "/devices/001565ffffff", {"label": "x"})
    assert (status, error_code(data)) == (404, "device_not_found")

    status, _ = await admin.call("DELETE", f"/devices/{YEALINK.upper()}")
    assert status == 204
    status, data = await admin.call("GET", f"/devices/{YEALINK}")
    assert (status, error_code(data)) == (404, "device_not_found")
    status, data = await admin.call("DELETE", f"/devices/{YEALINK}")
    assert (status, error_code(data)) == (404, "device_not_found")
    for table in ("devices", "device_assignments", "device_files", "push_jobs"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'alice'") == 1
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'device.delete'") == 1


async def test_list_devices_with_search_and_paging(admin: Api, db: asyncpg.Connection) -> None:
    await add_device(admin, "001565000003", label="Empfang")
    await add_device(admin, "001565000001", label="Lager 1")
    await add_device(admin, "001565000002", model="W70B", label="Lager 2")
    await add_device(admin, "000413000001", vendor="snom", model="D785", label="Chef_in")
    await add_device(admin, "000b82000001", vendor="grandstream", model="GXP2170")
    await admin.call("POST", "/devices/001565000001/reprovision")

    status, data = await admin.call("GET", "/devices")
    assert status == 200, data
    assert data["total"] == 5
    macs = [d["mac"] for d in data["devices"]]
    assert macs == sorted(macs)
    by_mac = {d["mac"]: d for d in data["devices"]}
    assert by_mac["001565000001"]["push_state"] == "pending"
    assert by_mac["001565000002"]["push_state"] is None
    assert "assignments" not in by_mac["001565000001"]

    status, page = await admin.call("GET", "/devices?limit=2&offset=2")
    assert status == 200, page
    assert [d["mac"] for d in page["devices"]] == macs[2:4]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
    status, page = await admin.call("GET", "/devices?limit=2&offset=4")
    assert [d["mac"] for d in page["devices"]] == macs[4:]
    status, page = await admin.call("GET", "/devices?offset=10")
    assert (page["devices"], page["total"]) == ([], 5)

    for search, expected in [
        ("lager", ["001565000001", "001565000002"]),
        ("W70", ["001565000002"]),
        ("snom", ["000413000001"]),
        ("000b82", ["000b82000001"]),
        ("_", ["000413000001"]),  # a literal underscore, not a wildcard
        ("%", []),
    ]:
        status, page = await admin.call("GET", f"/devices?search={search}")
        assert status == 200, page
        assert [d["mac"] for d in page["devices"]] == expected, search
        assert page["total"] == len(expected)
    for query in ("limit=0", "limit=1001", "offset=-1", "limit=two"):
        status, data = await admin.call("GET", f"/devices?{query}")
        assert (status, error_code(data)) == (400, "query_invalid"), query


async def test_reprovision_and_push_jobs(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    await make_user("alice", extension="201")
    await make_user("bob", extension="202")
    await set_registrar(admin)
    await add_device(admin, YEALINK)
    await add_device(admin, DECT, model="W70B")
    await add_device(admin, YEALINK_2)
    await assign(admin, YEALINK, (1, "alice"))
    await assign(admin, DECT, (2, "alice"), (3, "bob"))
    await db.execute("UPDATE push_jobs SET state = 'fetched'")
    revisions = {mac: await revision(db, mac) for mac in (YEALINK, DECT, YEALINK_2)}

    status, first = await admin.call("POST", f"/devices/{YEALINK}/reprovision")
    assert status == 202, first
    assert len(first["jobs"]) == 1
    # A second request folds into the open job.
    status, second = await admin.call("POST", "/devices/00-15-65-AA-BB-01/reprovision")
    assert (status, second) == (202, first)
    pending = await db.fetch(
        "SELECT id FROM push_jobs WHERE mac = $1 AND state = 'pending'", YEALINK
    )
    assert [r["id"] for r in pending] == first["jobs"]
    # Nothing changed, so nothing was re-rendered into a new revision.
    assert await revision(db, YEALINK) == revisions[YEALINK]

    status, data = await admin.call("POST", "/users/alice/reprovision")
    assert status == 202, data
    assert len(data["jobs"]) == 2
    assert first["jobs"][0] in data["jobs"]
    status, data = await admin.call("POST", "/users/alice/reprovision")
    assert status == 202, data
    assert len(data["jobs"]) == 2
    open_jobs = await db.fetch(
        "SELECT mac, count(*) AS n FROM push_jobs WHERE state IN ('pending', 'notified') "
        "GROUP BY mac ORDER BY mac"
    )
    assert [tuple(r) for r in open_jobs] == sorted([(YEALINK, 1), (DECT, 1)])

    status, data = await admin.call("POST", "/users/nobody/reprovision")
    assert (status, error_code(data)) == (404, "user_not_found")
    await make_user("carol", extension="203")
    status, data = await admin.call("POST", "/users/carol/reprovision")
    assert (status, data) == (202, {"jobs": []})
    status, data = await admin.call("POST", "/devices/001565ffffff/reprovision")
    assert (status, error_code(data)) == (404, "device_not_found")
    status, data = await admin.call("POST", "/devices/nonsense/reprovision")
    assert (status, error_code(data)) == (422, "mac_invalid")

    status, data = await admin.call("GET", "/push-jobs?state=pending&device=00:15:65:AA:BB:01")
    assert status == 200, data
    assert [(j["id"], j["device"], j["state"], j["reason"]) for j in data["jobs"]] == [
        (first["jobs"][0], YEALINK, "pending", "reprovision")
    ]
    assert set(data["jobs"][0]) == {
        "id", "device", "state", "reason", "attempts", "last_error", "created_at", "updated_at",
    }  # fmt: skip
    status, data = await admin.call("GET", f"/push-jobs?state=fetched&device={YEALINK}")
    assert status == 200, data
    assert [j["state"] for j in data["jobs"]] == ["fetched"]
    status, data = await admin.call("GET", "/push-jobs?state=pending")
    assert sorted(j["device"] for j in data["jobs"]) == sorted([YEALINK, DECT])
    status, data = await admin.call("GET", "/push-jobs?limit=1")
    assert status == 200
    assert len(data["jobs"]) == 1
    for query, status_expected, code in [
        ("state=done", 400, "query_invalid"),
        ("device=xyz", 422, "mac_invalid"),
        ("limit=0", 400, "query_invalid"),
    ]:
        status, data = await admin.call("GET", f"/push-jobs?{query}")
        assert (status, error_code(data)) == (status_expected, code), query


# --- sites -------------------------------------------------------------------------------------


async def test_site_validation_and_re_rendering(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection, vault: Vault
) -> None:
    await make_user("alice", extension="201")
    await set_registrar(admin)
    await set_registrar(admin, "branch")
    await add_device(admin, YEALINK)
    await add_device(admin, GRANDSTREAM, vendor="grandstream", model="GXP2170")
    await add_device(admin, YEALINK_2, site="branch")
    await assign(admin, YEALINK, (1, "alice"))
    await db.execute("UPDATE push_jobs SET state = 'fetched'")
    sites_before = await db.fetch("SELECT * FROM sites ORDER BY name")
    devices_before = {mac: await snapshot(db, mac) for mac in (YEALINK, GRANDSTREAM, YEALINK_2)}

    for body, code in [
        ({"registrar_host": "bad host"}, "registrar_host_invalid"),
        ({"registrar_host": "pbx.example.net/x"}, "registrar_host_invalid"),
        ({"registrar_host": ""}, "registrar_host_invalid"),
        ({"registrar_host": "-pbx"}, "registrar_host_invalid"),
        ({"ntp_server": "ntp server"}, "ntp_server_invalid"),
        ({"registrar_port": 0}, "registrar_port_invalid"),
        ({"registrar_port": 65536}, "registrar_port_invalid"),
        ({"registrar_port": "5060"}, "field_type"),
        ({"transport": "sctp"}, "transport_invalid"),
        ({"transport": "UDP"}, "transport_invalid"),
        ({"timezone": "Mars/Base"}, "timezone_invalid"),
        ({"language": "fr"}, "language_invalid"),
        ({"name": "default"}, "field_unknown"),
        ({"registrar_host": REGISTRAR, "transport": "sctp"}, "transport_invalid"),
    ]:
        status, data = await admin.call("PUT", "/sites/default", body)
        assert (status, error_code(data)) == (400, code), body
    for name in ("Default", "bad site", "-x", "a" * 65):
        status, data = await admin.call("PUT", f"/sites/{name}", {"timezone": "Europe/Berlin"})
        assert (status, error_code(data)) == (400, "site_invalid"), name
    assert await db.fetch("SELECT * FROM sites ORDER BY name") == sites_before
    for mac, snap in devices_before.items():
        assert await snapshot(db, mac) == snap, mac

    status, site = await admin.call(
        "PUT",
        "/sites/default",
        {
            "registrar_host": "[2001:db8::1]",
            "registrar_port": 5061,
            "transport": "tls",
            "timezone": "America/New_York",
            "language": "en",
            "ntp_server": "192.0.2.123",
        },
    )
    assert status == 200, site
    assert site["registrar_host"] == "[2001:db8::1]"
    for mac in (YEALINK, GRANDSTREAM):
        assert await revision(db, mac) == devices_before[mac][1][3] + 1, mac
        assert [j["reason"] for j in await jobs_of(db, mac) if j["state"] == "pending"] == [
            "site.update"
        ]
    # The device of the other site is left alone.
    assert await snapshot(db, YEALINK_2) == devices_before[YEALINK_2]
    cfg = await device_file(db, vault, YEALINK, f"{YEALINK}.cfg")
    assert "account.1.sip_server.1.address = [2001:db8::1]" in cfg
    assert "United States-Eastern Time" in cfg

    status, data = await admin.call("GET", "/sites")
    assert status == 200, data
    assert [s["name"] for s in data["sites"]] == ["branch", "default"]
    assert data["sites"][1]["ntp_server"] == "192.0.2.123"
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'site.update'") == 3


# --- authorisation -----------------------------------------------------------------------------


async def test_non_admins_get_403_on_every_device_route(
    admin: Api, make_user: MakeUser, db: asyncpg.Connection
) -> None:
    await make_user("alice", password="Tr0ub4dor-Kiwi-93", extension="201")
    await add_device(admin, YEALINK)
    alice = await admin.as_user("alice", "Tr0ub4dor-Kiwi-93")
    before = await snapshot(db, YEALINK)
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/devices", None),
        ("POST", "/devices", {"mac": YEALINK_2, "vendor": "yealink", "model": "T54W"}),
        ("GET", f"/devices/{YEALINK}", None),
        ("PATCH", f"/devices/{YEALINK}", {"label": "mine"}),
        ("DELETE", f"/devices/{YEALINK}", None),
        ("PUT", f"/devices/{YEALINK}/assignments", [{"slot": 1, "username": "alice"}]),
        ("POST", f"/devices/{YEALINK}/reprovision", None),
        ("POST", "/users/alice/reprovision", None),
        ("GET", "/push-jobs", None),
        ("GET", "/sites", None),
        ("PUT", "/sites/default", {"registrar_host": "evil.example.net"}),
    ]
    for method, path, body in calls:
        status, data = await alice.call(method, path, body)
        assert (status, error_code(data)) == (403, "forbidden"), (method, path)
        status, data = await Api(admin.client).call(method, path, body)
        assert status == 401, (method, path)
    assert await snapshot(db, YEALINK) == before
    assert await db.fetchval("SELECT count(*) FROM devices") == 1
    assert await db.fetchval("SELECT registrar_host FROM sites WHERE name = 'default'") == ""


async def test_device_view_shape(admin: Api) -> None:
    device = await add_device(admin, YEALINK, label="Empfang")
    assert set(device) == {
        "mac", "vendor", "model", "kind", "label", "site", "revision", "fetched_revision",
        "rendered_at", "render_error", "bootstrap_allowed", "last_fetch", "created_at",
        "assignments", "model_known",
    }  # fmt: skip
    assert device["model_known"] is True
    assert device["bootstrap_allowed"] is True
    assert device["last_fetch"] is None

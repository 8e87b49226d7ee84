"""The directory sync against a real slapd, changed during the tests with ldap-utils."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest

from provisioner import passwords, users
from provisioner.audit import Actor
from provisioner.web.keys import CORE, DIRECTORY_SYNC
from tests.conftest import ADMIN_PASSWORD, Api, AppFactory, bootstrap_admin
from tests.directory.conftest import ldap_env
from tests.slapd import ALICE_PASSWORD, JUERGEN_NAME, SEEDED_PEOPLE, Slapd, person
from tests.test_cli import Cli, assert_exit
from tests.test_hooks import SECRET, Pbx

PIN = "480913"
#: Seconds a test waits at most for the interval sync to do something.
DEADLINE = 30.0


async def sync(admin: Api, **body: Any) -> dict[str, Any]:
    status, report = await admin.call("POST", "/directory/sync", body)
    assert status == 200, report
    return dict(report)


def counts(report: dict[str, Any]) -> tuple[int, int, int, int, int]:
    keys = ("created", "updated", "enabled", "disabled", "unchanged")
    return tuple(report[k] for k in keys)  # type: ignore[return-value]


async def test_a_sync_pages_through_the_directory_and_creates_its_users(
    make_client: AppFactory, slapd: Slapd, db: asyncpg.Connection
) -> None:
    admin = await bootstrap_admin(await make_client(**ldap_env(slapd)))
    dry = await sync(admin, dry_run=True)
    assert dry["created"] == SEEDED_PEOPLE + 2
    assert dry["dry_run"] is True
    assert await db.fetchval("SELECT count(*) FROM users WHERE auth_backend = 'ldap'") == 0

    report = await sync(admin)
    assert report["entries"] == SEEDED_PEOPLE + 2
    assert counts(report) == (SEEDED_PEOPLE + 2, 0, 0, 0, 0)
    juergen = await db.fetchrow("SELECT * FROM users WHERE username = 'juergen'")
    assert juergen["display_name"] == JUERGEN_NAME
    assert (juergen["extension"], juergen["email"]) == ("2002", "juergen@example.org")
    assert juergen["auth_backend"] == "ldap"
    assert juergen["directory_dn"] == "uid=juergen,ou=people,dc=example,dc=org"
    roles = dict(
        await db.fetch(
            "SELECT username, role FROM users WHERE username IN ('alice', 'juergen', 'p120')"
        )
    )
    assert roles == {"alice": "admin", "juergen": "user", "p120": "user"}
    # The admin group's member signs in as an admin, with the directory's password.
    alice = await Api(admin.client).as_user("alice", ALICE_PASSWORD)
    status, _ = await alice.call("GET", "/users?backend=ldap&limit=5")
    assert status == 200

    again = await sync(admin)
    assert counts(again) == (0, 0, 0, 0, SEEDED_PEOPLE + 2)
    summary = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'directory.sync' AND actor = 'admin'"
    )
    assert summary == 3


async def test_the_sync_follows_the_directory_as_it_changes(
    make_client: AppFactory, slapd: Slapd, subtree: str, db: asyncpg.Connection
) -> None:
    slapd.add(
        "\n".join(
            [
                person("anna", "Anna Alt", base=subtree, extension="3001", password="Anna-Pw-1"),
                person("bert", "Bert Berg", base=subtree, extension="3002", password="Bert-Pw-2"),
                person("cleo", "Cleo Cole", base=subtree, extension="3003"),
            ]
        )
    )
    client = await make_client(**ldap_env(slapd, subtree), hook_secret=SECRET)
    admin = await bootstrap_admin(client)
    assert counts(await sync(admin)) == (3, 0, 0, 0, 0)
    for mac, who in (("001565aa0001", "anna"), ("001565aa0002", "bert")):
        status, _ = await admin.call(
            "POST", "/devices", {"mac": mac, "vendor": "yealink", "model": "T54W"}
        )
        assert status == 201
        status, _ = await admin.call(
            "PUT", f"/devices/{mac}/assignments", [{"slot": 1, "username": who}]
        )
        assert status == 200
    bert = await Api(client).as_user("bert", "Bert-Pw-2")
    assert (await bert.call("PUT", "/me/pin", {"pin": PIN}))[0] == 200
    pbx = Pbx(client)
    assert (await pbx.call("verify-pin", {"extension": "3002", "pin": PIN}))[1]["valid"] is True

    # Changed in the directory: name and extension follow, and reach anna's phone.
    slapd.modify(
        f"dn: uid=anna,{subtree}\nchangetype: modify\nreplace: cn\ncn: Anna Neu\n-\n"
        "replace: telephoneNumber\ntelephoneNumber: 3011\n"
    )
    await db.execute("UPDATE push_jobs SET state = 'fetched'")
    report = await sync(admin)
    assert counts(report) == (0, 1, 0, 0, 2)
    status, anna = await admin.call("GET", "/users/anna")
    assert (anna["display_name"], anna["extension"]) == ("Anna Neu", "3011")
    assert (
        await db.fetchval(
            "SELECT count(*) FROM push_jobs WHERE mac = '001565aa0001' AND state = 'pending'"
        )
        == 1
    )
    # What the directory owns is not an admin's to change; the rest is.
    status, refused = await admin.call("PATCH", "/users/anna", {"display_name": "Other"})
    assert (status, refused["error"]["code"]) == (409, "field_from_directory")
    status, _ = await admin.call("PATCH", "/users/anna", {"language": "en"})
    assert status == 200

    # Gone from the directory: disabled, never deleted; tokens, sign-in, PIN checks refused.
    slapd.delete(f"uid=bert,{subtree}")
    assert counts(await sync(admin)) == (0, 0, 0, 1, 2)
    assert (await bert.call("GET", "/me"))[0] == 401
    status, gone = await admin.call("GET", "/users/bert")
    assert (gone["disabled"], gone["disabled_by"]) == (True, "directory")
    assert (await pbx.call("verify-pin", {"extension": "3002", "pin": PIN}))[1]["valid"] is False
    status, device = await admin.call("GET", "/devices/001565aa0002")
    assert [a["username"] for a in device["assignments"]] == ["bert"]
    assert device["assignments"][0]["user_disabled"] is True
    status, listed = await admin.call("GET", "/users?backend=ldap&disabled=true")
    assert [u["username"] for u in listed["users"]] == ["bert"]
    status, listed = await admin.call("GET", "/users?disabled=false")
    assert "bert" not in [u["username"] for u in listed["users"]]

    # An admin's disabling stands, even while the directory lists the user.
    assert (await admin.call("PATCH", "/users/cleo", {"disabled": True}))[0] == 200

    # Back in the directory: enabled again, signs in with the old devices and PIN.
    slapd.add(person("bert", "Bert Berg", base=subtree, extension="3002", password="Bert-Pw-3"))
    assert counts(await sync(admin)) == (0, 0, 1, 0, 2)
    await Api(client).as_user("bert", "Bert-Pw-3")
    assert (await pbx.call("verify-pin", {"extension": "3002", "pin": PIN}))[1]["valid"] is True
    status, cleo = await admin.call("GET", "/users/cleo")
    assert (cleo["disabled"], cleo["disabled_by"]) == (True, "admin")

    actions = await db.fetch(
        "SELECT actor, action, details FROM audit_log WHERE target_user = 'bert' "
        "AND action = 'user.update' ORDER BY id"
    )
    assert [r["actor"] for r in actions] == ["admin", "admin"]
    assert ['"disabled": true' in r["details"] for r in actions] == [True, False]


async def test_a_username_a_local_user_has_is_reported_and_skipped(
    make_client: AppFactory, slapd: Slapd, subtree: str, db: asyncpg.Connection
) -> None:
    slapd.add(person("admin", "Directory Admin", base=subtree, extension="3999"))
    slapd.add(person("dora", "Dora Dir", base=subtree))
    slapd.add(person("Bad Name", "Bad Name", base=subtree))
    admin = await bootstrap_admin(await make_client(**ldap_env(slapd, subtree)))
    report = await sync(admin)
    assert counts(report) == (1, 0, 0, 0, 0)
    assert report["conflicts"] == [
        {"username": "admin", "dn": f"uid=admin,{subtree}", "reason": "local_user"}
    ]
    assert report["skipped"] == [{"dn": f"uid=Bad Name,{subtree}", "reason": "username_invalid"}]
    local = await db.fetchrow("SELECT * FROM users WHERE username = 'admin'")
    assert (local["auth_backend"], local["display_name"], local["extension"]) == (
        "local",
        "Administrator",
        None,
    )
    await Api(admin.client).as_user("admin", ADMIN_PASSWORD)


async def test_the_interval_sync_rides_out_a_directory_outage(
    make_client: AppFactory,
    slapd: Slapd,
    subtree: str,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="provisioner")
    slapd.add(person("erik", "Erik Eck", base=subtree, password="Erik-Pw-1"))
    client = await make_client(**ldap_env(slapd, subtree, ldap_sync_interval="1"))
    core, operator = client.app[CORE], Actor.cli()
    await users.create_user(core, operator, users.NewUser("root", "Root", role="admin"))
    await passwords.admin_set_password(
        core, operator, "root", mode="set", password=ADMIN_PASSWORD, temporary=False
    )
    syncing = client.app[DIRECTORY_SYNC]
    async with asyncio.timeout(DEADLINE):
        await syncing.wait(lambda s: s.last is not None and s.last.created == 1)
    api = Api(client)

    slapd.stop()
    async with asyncio.timeout(DEADLINE):
        # Two failed runs in a row: the loss is logged once, not per attempt.
        await syncing.wait(lambda s: s.directory._failures >= 2)
    status, body = await api.login("erik", "Erik-Pw-1")
    assert (status, body["error"]["code"]) == (503, "directory_unavailable")
    await api.as_user("root", ADMIN_PASSWORD)  # a local admin signs in meanwhile
    syncing.last = None

    slapd.start()
    slapd.add(person("fay", "Fay Fox", base=subtree))
    async with asyncio.timeout(DEADLINE):
        await syncing.wait(lambda s: s.last is not None and s.last.created == 1)
    assert await db.fetchval("SELECT auth_backend FROM users WHERE username = 'fay'") == "ldap"
    assert (await api.login("erik", "Erik-Pw-1"))[0] == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings  # the directory's cause, the sync's back-off
    assert "Can't contact LDAP server" in warnings[0]
    back = [r for r in caplog.records if "directory reachable again" in r.getMessage()]
    assert len(back) == 1


async def test_provisioner_directory_sync_on_the_command_line(
    cli: Cli, slapd: Slapd, subtree: str, db: asyncpg.Connection
) -> None:
    slapd.add(person("gus", "Gus Gray", base=subtree, extension="3100"))
    env = {f"PROVISIONER_{k.upper()}": v for k, v in ldap_env(slapd, subtree).items()}
    result = await cli("directory", "sync", "--dry-run", env=env)
    assert_exit(result, 0)
    assert "would have created 1, updated 0" in result.stdout
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'gus'") == 0
    result = await cli("directory", "sync", env=env)
    assert_exit(result, 0)
    assert "page 1: 1 entries read, 1 created" in result.stderr
    assert "created 1, updated 0, enabled 0, disabled 0, unchanged 0" in result.stdout
    assert await db.fetchval("SELECT extension FROM users WHERE username = 'gus'") == "3100"
    result = await cli("directory", "sync")
    assert_exit(result, 1)
    assert "directory_not_configured" in result.stderr

"""LDAP sign-in against a real slapd: API and ``/me/`` form, throttling, TLS, the directory down."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner.attribute_map import parse_attribute_map
from provisioner.directory import Directory
from provisioner.settings import Settings, SettingsError
from tests.conftest import ADMIN_PASSWORD, Api, AppFactory, bootstrap_admin
from tests.directory.conftest import ldap_env
from tests.slapd import ALICE_PASSWORD, READER_PASSWORD, SEEDED_PEOPLE, Slapd
from tests.web.conftest import Forms, base_url

PIN = "480913"


async def ldap_user(admin: Api, username: str = "alice", **fields: Any) -> None:
    body = {"username": username, "display_name": username.title(), "auth_backend": "ldap"}
    status, data = await admin.call("POST", "/users", {**body, **fields})
    assert status == 201, data


async def test_an_ldap_user_signs_in_changes_the_pin_and_has_no_password_here(
    ldap_client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    admin = await bootstrap_admin(ldap_client)
    await ldap_user(admin, extension="2001")
    status, _ = await admin.call(
        "POST", "/devices", {"mac": "001565aabb01", "vendor": "yealink", "model": "T54W"}
    )
    assert status == 201
    status, _ = await admin.call(
        "PUT", "/devices/001565aabb01/assignments", [{"slot": 1, "username": "alice"}]
    )
    assert status == 200

    status, session = await admin.login("alice", ALICE_PASSWORD)
    assert status == 200, session
    alice = Api(ldap_client, session["token"])
    status, me = await alice.call("GET", "/me")
    assert (status, me["username"], me["auth_backend"]) == (200, "alice", "ldap")

    status, change = await alice.call("PUT", "/me/pin", {"pin": PIN})
    assert status == 200, change
    assert len(change["push_jobs"]) == 1
    job = await db.fetchrow(
        "SELECT mac, state FROM push_jobs WHERE id = $1", change["push_jobs"][0]
    )
    assert job["mac"] == "001565aabb01"

    status, refused = await alice.call(
        "PUT", "/me/password", {"current_password": ALICE_PASSWORD, "new_password": "N3w-Pw-xx!"}
    )
    assert (status, refused["error"]["code"]) == (409, "auth_backend_external")

    login = await db.fetchrow(
        "SELECT details FROM audit_log WHERE action = 'auth.login' AND target_user = 'alice'"
    )
    assert json.loads(login["details"])["via"] == "ldap"


async def test_wrong_directory_password_is_401_and_throttled_like_a_local_one(
    ldap_client: TestClient[Any, Any], db: asyncpg.Connection
) -> None:
    admin = await bootstrap_admin(ldap_client)
    await ldap_user(admin)
    status, unknown = await admin.login("nobody-here", "Whatever-1")
    assert status == 401
    # An empty password would be an unauthenticated bind, which slapd answers with success.
    status, empty = await admin.login("alice", "")
    assert (status, empty) == (401, unknown)
    for _ in range(5):  # five free attempts, the sixth failure locks
        status, wrong = await admin.login("alice", "Not-Her-Password-1")
        assert (status, wrong) == (401, unknown)
    # Locked: even the right password waits, and the directory is not asked.
    status, locked = await admin.login("alice", ALICE_PASSWORD)
    assert (status, locked["error"]["code"]) == (429, "login_rate_limited")
    failures = await db.fetchval(
        "SELECT count(*) FROM audit_log"
        " WHERE action = 'auth.login_failed' AND target_user = 'alice'"
    )
    assert failures == 6


async def test_the_me_form_signs_an_ldap_user_in(
    ldap_client: TestClient[Any, Any],
) -> None:
    admin = await bootstrap_admin(ldap_client)
    await ldap_user(admin, "juergen")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        forms = Forms(session, base_url(ldap_client))
        refused = await forms.post(
            "/me/login", {"username": "juergen", "password": "wrong-1"}, csrf_from="/me/login"
        )
        assert refused.status == 401
        page = await forms.login("juergen", "Juergen-Pw-2")
        assert page.location is not None
        assert page.location.startswith("/me/")
        me = await forms.get("/me/")
        assert me.status == 200
        assert "juergen" in me.text
        changed = await forms.post("/me/pin", {"pin": PIN}, csrf_from="/me/")
        assert changed.status == 303, changed.text


async def test_the_directory_down_answers_503_for_ldap_users_and_local_users_still_sign_in(
    ldap_client: TestClient[Any, Any], slapd: Slapd
) -> None:
    admin = await bootstrap_admin(ldap_client)
    await ldap_user(admin)
    slapd.stop()
    status, body = await admin.login("alice", ALICE_PASSWORD)
    assert (status, body["error"]["code"]) == (503, "directory_unavailable")
    status, body = await admin.login("admin", ADMIN_PASSWORD)
    assert status == 200, body
    slapd.start()
    status, body = await admin.login("alice", ALICE_PASSWORD)
    assert status == 200, body


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
async def test_tls_verifies_the_directory_certificate_against_the_ca_file(
    make_client: AppFactory, slapd: Slapd, mode: str
) -> None:
    url = slapd.ldaps_url if mode == "ldaps" else slapd.url
    tls = {"ldap_url": url, "ldap_starttls": "on" if mode == "starttls" else ""}
    client = await make_client(**ldap_env(slapd, ldap_ca_file=str(slapd.pki.ca_file), **tls))
    admin = await bootstrap_admin(client)
    await ldap_user(admin)
    status, body = await admin.login("alice", ALICE_PASSWORD)
    assert status == 200, body

    wrong = await make_client(**ldap_env(slapd, ldap_ca_file=str(slapd.pki.other_ca_file), **tls))
    status, body = await Api(wrong).login("alice", ALICE_PASSWORD)
    assert (status, body["error"]["code"]) == (503, "directory_unavailable")


async def test_the_directory_reads_every_page_past_the_size_limit(
    settings: Settings, slapd: Slapd
) -> None:
    ldap = Settings.from_env(
        {f"PROVISIONER_{k.upper()}": v for k, v in ldap_env(slapd).items()}
    ).ldap
    assert ldap is not None
    directory = Directory(ldap)
    try:
        pages = [page async for page in directory.pages()]
    finally:
        directory.close()
    assert len(pages) >= 3  # size.pr=50: the first page size asked for is halved until taken
    entries = [e for page in pages for e in page.entries]
    assert len(entries) == SEEDED_PEOPLE + 2
    juergen = next(e for e in entries if e.fields["username"] == "juergen")
    assert juergen.fields["display_name"] == "Jürgen Müller-Åström"
    assert juergen.fields["extension"] == "2002"


async def test_no_password_reaches_a_log_or_the_audit_log(
    make_client: AppFactory, slapd: Slapd, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await make_client(**ldap_env(slapd))
    admin = await bootstrap_admin(client)
    await ldap_user(admin)
    assert (await admin.login("alice", ALICE_PASSWORD))[0] == 200
    assert (await admin.login("alice", "Wrong-Secret-777"))[0] == 401
    status, _ = await admin.call("POST", "/directory/sync", {})
    assert status == 200
    # A service account the directory refuses: logged as such, without its password.
    refused = await make_client(**ldap_env(slapd, ldap_bind_password="Bad-Bind-Secret-55"))
    assert (await Api(refused).login("alice", ALICE_PASSWORD))[0] == 503
    slapd.stop()
    assert (await admin.login("alice", ALICE_PASSWORD))[0] == 503
    audit = "\n".join(str(dict(r)) for r in await db.fetch("SELECT * FROM audit_log"))
    for secret in (READER_PASSWORD, ALICE_PASSWORD, "Wrong-Secret-777", "Bad-Bind-Secret-55"):
        assert secret not in caplog.text
        assert secret not in audit
    assert "service account" in caplog.text


# --- settings ----------------------------------------------------------------------------------


def _settings(**env: str) -> Settings:
    return Settings.from_env({f"PROVISIONER_{k.upper()}": v for k, v in env.items()})


BASE = {"ldap_url": "ldap://dc.example.net", "ldap_base_dn": "dc=example,dc=net"}


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ldap_url": "http://dc.example.net", "ldap_base_dn": "dc=x"}, "PROVISIONER_LDAP_URL"),
        ({"ldap_url": "ldap://dc.example.net"}, "PROVISIONER_LDAP_BASE_DN"),
        ({"ldap_base_dn": "dc=x"}, "PROVISIONER_LDAP_URL"),
        ({**BASE, "ldap_bind_dn": "cn=svc"}, "PROVISIONER_LDAP_BIND_PASSWORD"),
        ({**BASE, "ldap_user_filter": "objectClass=person"}, "PROVISIONER_LDAP_USER_FILTER"),
        ({**BASE, "ldap_attributes": "display_name=cn"}, "PROVISIONER_LDAP_ATTRIBUTES"),
        ({**BASE, "ldap_attributes": "username=uid,shoe=size"}, "PROVISIONER_LDAP_ATTRIBUTES"),
        ({**BASE, "ldap_sync_interval": "soon"}, "PROVISIONER_LDAP_SYNC_INTERVAL"),
        ({**BASE, "ldap_starttls": "maybe"}, "PROVISIONER_LDAP_STARTTLS"),
        ({**BASE, "ldap_url": "ldaps://dc", "ldap_starttls": "on"}, "PROVISIONER_LDAP_STARTTLS"),
        ({**BASE, "ldap_ca_file": "/nonexistent/ca.pem"}, "PROVISIONER_LDAP_CA_FILE"),
    ],
)
def test_bad_directory_settings_stop_with_one_line_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        _settings(**env)
    assert str(refused.value).startswith(f"{variable}:")
    assert "\n" not in str(refused.value)


def test_the_bind_password_comes_from_a_file_and_info_masks_it(tmp_path: Any) -> None:
    secret = tmp_path / "bind"
    secret.write_text("From-A-File-Secret-1\n")
    settings = _settings(
        **BASE,
        ldap_bind_dn="CN=svc,DC=example,DC=net",
        ldap_bind_password_file=str(secret),
        ldap_attributes="username=sAMAccountName,display_name=displayName,extension=ipPhone",
    )
    assert settings.ldap is not None
    assert settings.ldap.bind_password == "From-A-File-Secret-1"
    assert settings.ldap.attributes.attribute("extension") == "ipPhone"
    assert settings.ldap.sync_interval == 900
    described = settings.describe()["ldap"]
    assert "CN=svc,DC=example,DC=net / ***" in described
    assert "From-A-File-Secret-1" not in described + repr(settings)
    both = {**BASE, "ldap_bind_dn": "cn=s", "ldap_bind_password": "x"}
    with pytest.raises(SettingsError, match=r"^PROVISIONER_LDAP_BIND_PASSWORD_FILE:"):
        _settings(**both, ldap_bind_password_file=str(secret))


def test_the_attribute_map_parser() -> None:
    mapped = parse_attribute_map(" username = uid , email=mail,display_name=cn ")
    assert mapped.pairs == (("username", "uid"), ("email", "mail"), ("display_name", "cn"))
    assert mapped.fields == {"username", "email", "display_name"}
    assert mapped.apply({"UID": [b"Bob"], "mail": [b"  "], "cn": "B\u00f6b"}) == {
        "username": "Bob",
        "email": None,
        "display_name": "B\u00f6b",
    }
    oid = parse_attribute_map("username=urn:oid:0.9.2342.19200300.100.1.1")
    assert oid.attribute("username") == "urn:oid:0.9.2342.19200300.100.1.1"
    for bad in ("username", "username=uid,username=cn", "email=mail", "username=u id"):
        with pytest.raises(ValueError):  # noqa: PT011 (the message is checked via settings)
            parse_attribute_map(bad)
    assert dataclasses.is_dataclass(mapped)

"""The web pages over plain HTTP: access rules, CSRF, headers, forms, both languages."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner.web import i18n
from provisioner.web.admin_render import CONTENT_SECURITY_POLICY
from provisioner.web.i18n_catalog import CATALOG, ERRORS
from tests.conftest import ADMIN_PASSWORD, Api
from tests.web.conftest import DESK_PHONE, PIN, Forms, Visitors, seed

TEMPLATES = Path(__file__).resolve().parents[2] / "provisioner" / "templates" / "admin"
USER_PASSWORD = "Quiet-Harbour-42"
DASH = "\u2013"  # the en dash of ranges on the pages ("1-50 of 120")


async def make_local_user(api: Api, username: str, password: str = USER_PASSWORD) -> None:
    status, data = await api.call(
        "POST",
        f"/users/{username}/password",
        {"mode": "set", "password": password, "temporary": False},
    )
    assert status == 200, data


# --- access ------------------------------------------------------------------------------------


async def test_pages_need_a_session(visitor: Visitors, admin_api: Api) -> None:
    forms = visitor()
    for path in ("/admin/users", "/admin/devices", "/me/", "/me/password"):
        page = await forms.get(path)
        assert page.status == 303
        assert page.location is not None
        assert page.location.startswith("/me/login?next=")
    page = await forms.post("/admin/users/admin/pin", {"pin": PIN})
    assert (page.status, page.location) == (303, "/me/login")


async def test_a_plain_user_cannot_open_admin_pages(
    visitor: Visitors, admin_api: Api, db: asyncpg.Connection
) -> None:
    await seed(admin_api)
    await make_local_user(admin_api, "alice")
    forms = visitor()
    page = await forms.login("alice", USER_PASSWORD)
    assert page.location == "/me/"
    for path in ("/admin/", "/admin/users", "/admin/users/alice", "/admin/devices", "/admin/audit"):
        page = await forms.get(path)
        assert page.status == 403, path
        assert "Access denied" in page.text
        assert "<html" in page.text, "an HTML page, not JSON"
    # Even with a valid CSRF token of her own session, an admin action is refused.
    page = await forms.post("/admin/users/carol/pin", {"pin": PIN}, csrf_from="/me/")
    assert page.status == 403
    assert await db.fetchval("SELECT pin_hash FROM users WHERE username = 'carol'") is None
    page = await forms.get("/me/")
    assert page.status == 200
    assert "Alice Example" in page.text


async def test_a_post_without_the_csrf_token_is_refused(
    visitor: Visitors, admin_forms: Forms, admin_api: Api, db: asyncpg.Connection
) -> None:
    await seed(admin_api)
    page = await admin_forms.post("/admin/users/alice/pin", {"pin": PIN})
    assert page.status == 403
    assert "Form refused" in page.text
    page = await admin_forms.post("/admin/users/alice/pin", {"pin": PIN, "csrf": "0" * 64})
    assert page.status == 403
    # A right token, but the browser says the form was on another site's page.
    page = await admin_forms.post(
        "/admin/users/alice/pin",
        {"pin": PIN},
        csrf_from="/admin/users/alice",
        **{"Sec-Fetch-Site": "cross-site"},
    )
    assert page.status == 403
    # A right token, but the page the form was on belongs to another origin (or to none).
    for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example"):
        page = await admin_forms.post(
            "/admin/users/alice/pin",
            {"pin": PIN},
            csrf_from="/admin/users/alice",
            Origin=origin,
        )
        assert page.status == 403, origin
    assert await db.fetchval("SELECT pin_hash FROM users WHERE username = 'alice'") is None
    assert await db.fetchval("SELECT count(*) FROM push_jobs WHERE reason = 'pin.change'") == 0
    # The sign-in form is protected too (login CSRF).
    page = await visitor().post("/me/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert page.status == 403
    # And with the token the same post goes through, from this origin too.
    own_origin = admin_forms.base.rstrip("/")
    page = await admin_forms.post(
        "/admin/users/alice/pin", {"pin": PIN}, csrf_from="/admin/users/alice", Origin=own_origin
    )
    assert page.status == 303


async def test_security_headers_and_cookie_flags(
    client: TestClient[Any, Any], admin_api: Api
) -> None:
    async with client.get("/me/login") as response:
        assert response.status == 200
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.text()
    for link in re.findall(r'(?:href|src)="(/static/[^"]+)"', body):
        async with client.get(link) as response:
            assert response.status == 200, link
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    data = {"username": "admin", "password": ADMIN_PASSWORD}
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', body)
    assert csrf
    data["csrf"] = csrf.group(1)
    async with client.post("/me/login", data=data, allow_redirects=False) as response:
        assert response.status == 303
        cookie = response.cookies["prov_session"]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/"
        assert not cookie["secure"], "plain HTTP in the test; Secure follows the request's scheme"


def test_templates_have_no_inline_script_or_style() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert "<style" not in text, template.name
        assert " style=" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text), f"{template.name}: inline event handler"


# --- sessions ----------------------------------------------------------------------------------


async def test_a_temporary_password_reaches_only_the_password_page(
    visitor: Visitors, admin_api: Api
) -> None:
    await seed(admin_api)
    status, _ = await admin_api.call(
        "POST", "/users/carol/password", {"mode": "set", "password": "Temp-Passw0rd-9"}
    )
    assert status == 200
    forms = visitor()
    await forms.get("/me/language?lang=en")
    page = await forms.login("carol", "Temp-Passw0rd-9")
    assert page.location == "/me/password"
    page = await forms.get("/me/")
    assert (page.status, page.location) == (303, "/me/password")
    page = await forms.post("/me/pin", {"pin": PIN}, csrf_from="/me/password")
    assert (page.status, page.location) == (303, "/me/password")
    page = await forms.get("/me/password")
    assert page.status == 200
    assert "Your password is temporary" in page.text
    new = {"current_password": "Temp-Passw0rd-9", "new_password": "Own-Passw0rd-77"}
    page = await forms.post(
        "/me/password", {**new, "repeat_password": "Other-Passw0rd-7"}, csrf_from="/me/password"
    )
    assert page.status == 422
    assert "The two new passwords differ." in page.text
    assert "Own-Passw0rd-77" not in page.text
    assert "Temp-Passw0rd-9" not in page.text
    page = await forms.post(
        "/me/password", {**new, "repeat_password": "Own-Passw0rd-77"}, csrf_from="/me/password"
    )
    assert (page.status, page.location) == (303, "/me/")
    page = await forms.get("/me/")
    assert page.status == 200
    assert "Your password has been changed." in page.text


async def test_a_password_change_ends_the_browser_session(
    visitor: Visitors, admin_api: Api
) -> None:
    await seed(admin_api)
    await make_local_user(admin_api, "alice")
    forms = visitor()
    await forms.login("alice", USER_PASSWORD)
    assert (await forms.get("/me/")).status == 200
    await make_local_user(admin_api, "alice", "Fresh-Passw0rd-55")
    page = await forms.get("/me/")
    assert page.status == 303
    assert page.location is not None
    assert page.location.startswith("/me/login")


async def test_sign_out_revokes_the_token(admin_forms: Forms, admin_api: Api) -> None:
    token = admin_forms.cookie("prov_session")
    assert token
    page = await admin_forms.post("/me/logout", {}, csrf_from="/admin/users")
    assert (page.status, page.location) == (303, "/me/login")
    api = Api(admin_api.client, token)
    status, _ = await api.call("GET", "/me")
    assert status == 401
    page = await admin_forms.get("/me/login")
    assert "You have been signed out." in page.text


async def test_next_is_kept_through_sign_in_but_never_leaves_the_site(
    visitor: Visitors, admin_api: Api
) -> None:
    forms = visitor()
    page = await forms.get("/admin/audit?action=auth")
    assert page.location == "/me/login?next=/admin/audit%3Faction%3Dauth"
    csrf = await forms.csrf(page.location)
    body = {"username": "admin", "password": ADMIN_PASSWORD, "csrf": csrf}
    page = await forms.post("/me/login", {**body, "next": "/admin/audit?action=auth"})
    assert page.location == "/admin/audit?action=auth"
    for evil in ("https://evil.example/", "//evil.example/admin", "/\\evil.example"):
        page = await forms.get(f"/me/language?lang=de&next={evil}")
        assert page.location == "/admin/users", evil


# --- forms -------------------------------------------------------------------------------------


async def test_policy_errors_show_next_to_the_field_without_echoing_secrets(
    admin_forms: Forms, admin_api: Api, db: asyncpg.Connection
) -> None:
    await seed(admin_api)
    page = await admin_forms.post(
        "/admin/users/alice/pin", {"pin": "201201"}, csrf_from="/admin/users/alice"
    )
    assert page.status == 303
    page = await admin_forms.post(
        "/admin/users/alice/pin", {"pin": "123456"}, csrf_from="/admin/users/alice"
    )
    assert page.status == 422
    assert re.search(r'<p class="error" id="f-pin-error">A PIN must not be a run', page.text)
    assert 'aria-describedby="f-pin-help f-pin-error"' in page.text
    assert "123456" not in page.text.replace("such as 123456", "")
    assert '<details class="widget" id="credentials" open>' in page.text
    weak = "password"
    page = await admin_forms.post(
        "/admin/users/alice/password",
        {"mode": "set", "password": weak, "temporary": "1"},
        csrf_from="/admin/users/alice",
    )
    assert page.status == 422
    assert "This password is too common" in page.text
    assert 'value="password"' not in page.text
    page = await admin_forms.post(
        "/admin/users/alice/password",
        {"mode": "random_and_email", "password": "Typed-Passw0rd-1"},
        csrf_from="/admin/users/alice",
    )
    assert page.status == 400
    assert "leave the password field empty" in page.text
    assert "Typed-Passw0rd-1" not in page.text
    page = await admin_forms.post(
        "/admin/users/bob/password",
        {"mode": "set", "password": "Some-Passw0rd-3"},
        csrf_from="/admin/users/bob",
    )
    assert page.status == 409
    assert "external directory" in page.text
    assert await db.fetchval("SELECT password_hash FROM users WHERE username = 'bob'") is None


async def test_create_user_form(admin_forms: Forms, db: asyncpg.Connection) -> None:
    base = {
        "display_name": "Dora",
        "extension": "",
        "email": "",
        "auth_backend": "local",
        "language": "de",
        "role": "user",
    }
    page = await admin_forms.post(
        "/admin/users/new", {**base, "username": "Not Valid"}, csrf_from="/admin/users/new"
    )
    assert page.status == 400
    assert 'id="f-username-error"' in page.text
    assert 'value="Dora"' in page.text
    page = await admin_forms.post(
        "/admin/users/new", {**base, "username": "dora"}, csrf_from="/admin/users/new"
    )
    assert (page.status, page.location) == (303, "/admin/users/dora")
    page = await admin_forms.get("/admin/users/dora")
    assert "User dora has been created." in page.text
    assert await db.fetchval("SELECT extension FROM users WHERE username = 'dora'") is None


async def test_the_users_list_pages_through_ten_thousand_users(
    admin_forms: Forms, db: asyncpg.Connection
) -> None:
    await db.execute(
        """INSERT INTO users (username, display_name, extension, email)
           SELECT 'user' || lpad(n::text, 5, '0'), 'User ' || n, (10000 + n)::text,
                  'user' || n || '@example.net'
           FROM generate_series(1, 10000) AS n"""
    )
    page = await admin_forms.get("/admin/users?page=101")
    assert page.status == 200
    assert f"5001{DASH}5050 of 10001" in page.text
    assert 'href="/admin/users?page=100" rel="prev"' in page.text
    page = await admin_forms.get("/admin/users?q=User+777")
    assert f"1{DASH}11 of 11" in page.text
    assert ">user00777<" in page.text
    page = await admin_forms.get("/admin/users?page=0")
    assert page.status == 400


async def test_device_pages_show_push_state_and_mask_secrets(
    admin_forms: Forms, admin_api: Api, db: asyncpg.Connection
) -> None:
    await seed(admin_api)
    status, _ = await admin_api.call("PUT", "/users/alice/pin", {"pin": PIN})
    assert status == 200
    page = await admin_forms.get("/admin/devices")
    assert page.status == 200
    assert DESK_PHONE in page.text
    assert "badge-pending" in page.text
    page = await admin_forms.get(f"/admin/devices/{DESK_PHONE}")
    assert page.status == 200
    assert "Alice Example" in page.text
    assert "pbx.example.net" in page.text
    assert "********" in page.text
    assert PIN not in page.text
    secret = await db.fetchval(
        "SELECT sip_password_encrypted FROM device_assignments WHERE mac = $1", DESK_PHONE
    )
    assert secret is not None
    before = await db.fetchval("SELECT count(*) FROM push_jobs WHERE mac = $1", DESK_PHONE)
    page = await admin_forms.post(
        f"/admin/devices/{DESK_PHONE}/reprovision", {}, csrf_from=f"/admin/devices/{DESK_PHONE}"
    )
    assert (page.status, page.location) == (303, f"/admin/devices/{DESK_PHONE}")
    assert await db.fetchval("SELECT count(*) FROM push_jobs WHERE mac = $1", DESK_PHONE) >= before
    page = await admin_forms.get(f"/admin/devices/{DESK_PHONE}")
    assert "Re-provisioning started." in page.text
    assert (await admin_forms.get("/admin/devices/nonsense")).status == 422
    assert (await admin_forms.get("/admin/devices/001565ffffff")).status == 404


async def test_a_dect_systems_access_code_is_shown_and_replaced(
    admin_forms: Forms, admin_api: Api, db: asyncpg.Connection
) -> None:
    await seed(admin_api)
    base = "7c2f80aabb01"
    status, data = await admin_api.call(
        "POST", "/devices", {"mac": base, "vendor": "gigaset", "model": "N870"}
    )
    assert status == 201, data
    assert re.fullmatch(r"[0-9]{4}", data["access_code"])
    code = "4739"  # a known code, so the page can be searched for it
    status, data = await admin_api.call(
        "POST", f"/devices/{base}/access-code", {"access_code": code}
    )
    assert status == 200, data
    page = await admin_forms.get(f"/admin/devices/{base}")
    assert f'data-testid="access-code">{code}<' in page.text
    # The code is shown, but the preview masks it like every other secret.
    assert page.text.count(code) == 1
    # Desk phones have none.
    assert "access-code" not in (await admin_forms.get(f"/admin/devices/{DESK_PHONE}")).text

    url = f"/admin/devices/{base}/access-code"
    page = await admin_forms.post(url, {"access_code": "12"}, csrf_from=f"/admin/devices/{base}")
    assert page.status == 422
    assert 'aria-invalid="true"' in page.text
    assert "exactly the number of digits" in page.text
    assert (await admin_api.call("GET", f"/devices/{base}"))[1]["access_code"] == code

    page = await admin_forms.post(url, {"access_code": "8150"}, csrf_from=f"/admin/devices/{base}")
    assert (page.status, page.location) == (303, f"/admin/devices/{base}#access-code")
    assert (await admin_api.call("GET", f"/devices/{base}"))[1]["access_code"] == "8150"
    page = await admin_forms.post(url, {"access_code": ""}, csrf_from=f"/admin/devices/{base}")
    assert page.status == 303
    fresh = (await admin_api.call("GET", f"/devices/{base}"))[1]["access_code"]
    assert re.fullmatch(r"[0-9]{4}", fresh)
    assert (
        await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'device.access_code'") == 3
    )


async def test_new_phones_are_listed_and_added_with_one_click(
    admin_forms: Forms, admin_api: Api, db: asyncpg.Connection
) -> None:
    await seed(admin_api)
    desk, base = "001565d15c61", "7c2f80d15c62"
    await db.execute(
        """INSERT INTO discovered_devices (mac, vendor, model, firmware, source)
           VALUES ($1, 'yealink', 'T54W', '96.86.0.70', '198.51.100.61'),
                  ($2, 'gigaset', 'N870', '83.V2.11.0', '198.51.100.62')""",
        desk,
        base,
    )
    page = await admin_forms.get("/admin/devices")
    assert page.status == 200
    assert "New phones" in page.text
    assert page.text.count('data-testid="new-phone"') == 2
    assert "Firmware 96.86.0.70 · from 198.51.100.61" in page.text
    assert f'id="user-{desk}"' in page.text
    assert f'id="user-{base}"' not in page.text  # handsets go on the device page
    assert '<option value="alice">Alice Example</option>' in page.text

    # A user that does not exist: the page again, with the reason, and nothing added.
    form = {"mac": desk, "vendor": "yealink", "model": "T54W", "username": "nobody"}
    page = await admin_forms.post("/admin/devices/adopt", form, csrf_from="/admin/devices")
    assert page.status == 404
    assert 'role="alert">There is no such user.<' in page.text
    assert 'value="nobody"' in page.text
    assert await db.fetchval("SELECT count(*) FROM devices WHERE mac = $1", desk) == 0
    assert await db.fetchval("SELECT count(*) FROM discovered_devices") == 2

    # One click: the device, alice on line 1, a push to where it fetched from; the row goes.
    form["username"] = "alice"
    page = await admin_forms.post("/admin/devices/adopt", form, csrf_from="/admin/devices")
    assert (page.status, page.location) == (303, f"/admin/devices/{desk}")
    page = await admin_forms.get(f"/admin/devices/{desk}")
    assert f"Device {desk} has been added" in page.text
    assert "Alice Example" in page.text
    device = await db.fetchrow("SELECT model, sip_contact FROM devices WHERE mac = $1", desk)
    assert device is not None
    assert (device["model"], device["sip_contact"]) == ("T54W", "sip:198.51.100.61:5060")
    jobs = await db.fetch("SELECT reason, state FROM push_jobs WHERE mac = $1", desk)
    assert [(j["reason"], j["state"]) for j in jobs] == [("device.adopt", "pending")]
    assert await db.fetchval("SELECT array_agg(mac) FROM discovered_devices") == [base]
    page = await admin_forms.get("/admin/devices")
    assert page.text.count('data-testid="new-phone"') == 1

    # The page shows the most recently seen hundred; the rest are a command away.
    await db.executemany(
        """INSERT INTO discovered_devices (mac, vendor, source, last_seen)
           VALUES ($1, 'yealink', '198.51.100.63', now() - interval '1 day')""",
        [(f"0015650{i:05x}",) for i in range(150)],
    )
    page = await admin_forms.get("/admin/devices")
    assert page.text.count('data-testid="new-phone"') == 100
    assert f"<code>{base}</code>" in page.text  # seen last: shown
    assert "The 100 most recently seen of 151 are shown" in page.text


async def test_audit_filters(admin_forms: Forms, admin_api: Api) -> None:
    await seed(admin_api)
    await admin_api.call("PUT", "/users/alice/pin", {"pin": PIN})
    page = await admin_forms.get("/admin/audit?user=alice&action=pin&since=2020-01-01")
    assert page.status == 200
    assert "<code>pin.change</code>" in page.text
    assert "<code>user.create</code>" not in page.text
    page = await admin_forms.get("/admin/audit?since=yesterday")
    assert page.status == 400
    assert "Enter a date such as 2026-01-31." in page.text


# --- languages ---------------------------------------------------------------------------------


def test_the_catalog_is_complete() -> None:
    placeholder = re.compile(r"\{(\w+)\}")
    for table in (CATALOG, ERRORS):
        for key, (english, german) in table.items():
            assert english.strip(), key
            assert german.strip(), key
            assert set(placeholder.findall(english)) == set(placeholder.findall(german)), key


def test_templates_use_only_catalog_keys() -> None:
    used: set[str] = set()
    prefixes: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        used |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_.]+)["']""", text))
        prefixes |= set(re.findall(r"""\bt\(\s*["']([a-z0-9_.]+\.)["']\s*~""", text))
    assert used, "no t() calls found"
    assert sorted(used - prefixes - set(CATALOG)) == []
    for prefix in prefixes:
        assert any(key.startswith(prefix) for key in CATALOG), prefix


def test_unknown_keys_are_marked_and_errors_fall_back_to_english() -> None:
    assert i18n.t("de", "no.such.key").startswith(i18n.MISSING_MARK)
    from provisioner.errors import unprocessable

    assert i18n.error_text("de", unprocessable("brand_new", "A new rule.")) == "A new rule."
    assert i18n.from_accept_language("fr-CH, de;q=0.8, en;q=0.9") == "en"
    assert i18n.from_accept_language("de-AT") == "de"
    assert i18n.from_accept_language("fr") is None


def _visible_text(page: str) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def _other_language_only(lang: str) -> list[str]:
    """Catalog texts that exist only in the other language: seeing one means a mix-up."""
    mine, other = (1, 0) if lang == "de" else (0, 1)
    own = {texts[mine] for texts in CATALOG.values()}
    return [
        texts[other]
        for texts in CATALOG.values()
        if texts[other] != texts[mine]
        and len(texts[other]) >= 6
        and texts[other] not in own
        and "{" not in texts[other]
    ]


def assert_translated(page: str, lang: str, where: str) -> None:
    assert f'<html lang="{lang}">' in page, where
    assert i18n.MISSING_MARK not in page, f"{where}: untranslated key"
    text = _visible_text(page)
    assert not re.search(r"\{[a-z_]+\}", text), f"{where}: placeholder left unfilled"
    for foreign in _other_language_only(lang):
        assert not re.search(rf"(?<!\w){re.escape(foreign)}(?!\w)", text), (where, foreign)


@pytest.mark.parametrize("lang", ["de", "en"])
async def test_every_page_in_both_languages(visitor: Visitors, admin_api: Api, lang: str) -> None:
    await seed(admin_api)
    await admin_api.call("PUT", "/users/alice/pin", {"pin": PIN})
    await make_local_user(admin_api, "alice")

    anonymous = visitor()
    await anonymous.get(f"/me/language?lang={lang}")
    page = await anonymous.get("/me/login")
    assert_translated(page.text, lang, "login")
    page = await anonymous.post(
        "/me/login", {"username": "admin", "password": "wrong-password"}, csrf_from="/me/login"
    )
    assert page.status == 401
    assert_translated(page.text, lang, "login refused")

    admin = visitor()
    await admin.get(f"/me/language?lang={lang}")
    await admin.login("admin", ADMIN_PASSWORD)
    pages = [
        "/admin/users",
        "/admin/users?q=zzz",
        "/admin/users/new",
        "/admin/users/alice",
        "/admin/users/bob",
        "/admin/users/carol",
        "/admin/users/nobody",
        "/admin/devices",
        f"/admin/devices/{DESK_PHONE}",
        "/admin/devices/001565ffffff",
        "/admin/audit",
        "/admin/audit?since=bogus",
        "/admin/nothing-here",
        "/me/",
        "/me/password",
    ]
    for path in pages:
        page = await admin.get(path)
        assert page.status in (200, 400, 404), (path, page.status)
        assert_translated(page.text, lang, path)
    posts = [
        ("/admin/users/alice/pin", {"pin": "12"}),
        ("/admin/users/alice/pin", {"pin": "111111"}),
        ("/admin/users/alice/password", {"mode": "set", "password": "short"}),
        ("/admin/users/alice/password", {"mode": "set", "password": ""}),
        ("/admin/users/carol/password", {"mode": "set", "password": "carol"}),
        ("/admin/users/bob/password", {"mode": "set", "password": "Long-Enough-77"}),
        ("/admin/users/admin/impersonate", {}),
        ("/admin/users/new", {"username": "alice", "display_name": "Dup"}),
        (
            "/me/password",
            {"current_password": "wrong", "new_password": "x", "repeat_password": "x"},
        ),
    ]
    for path, data in posts:
        source = "/me/" if path.startswith("/me/") else "/admin/users/alice"
        page = await admin.post(path, data, csrf_from=source)
        assert page.status >= 400, (path, page.status)
        assert_translated(page.text, lang, f"POST {path}")
    page = await admin.post("/admin/users/alice/pin", {"pin": "999"})
    assert_translated(page.text, lang, "CSRF refusal")
    page = await admin.post(
        "/admin/users/alice/pin", {"pin": "604281"}, csrf_from="/admin/users/alice"
    )
    assert page.status == 303
    page = await admin.get("/admin/users/alice")
    assert_translated(page.text, lang, "flash")

    # As alice (her own language is English; the switch's cookie wins), then impersonated.
    user = visitor()
    await user.get(f"/me/language?lang={lang}")
    await user.login("alice", USER_PASSWORD)
    for path in ("/me/", "/me/password", "/admin/users"):
        page = await user.get(path)
        assert_translated(page.text, lang, f"alice {path}")
    page = await admin.post("/admin/users/carol/impersonate", {}, csrf_from="/admin/users/carol")
    assert page.location == "/me/"
    page = await admin.get("/me/")
    assert_translated(page.text, lang, "impersonating")
    assert 'class="banner"' in page.text


async def test_the_language_follows_user_then_browser(visitor: Visitors, admin_api: Api) -> None:
    await seed(admin_api)
    await make_local_user(admin_api, "alice")
    forms = visitor()
    page = await forms.get("/me/login", **{"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert '<html lang="de">' in page.text
    page = await forms.get("/me/login", **{"Accept-Language": "en-US"})
    assert '<html lang="en">' in page.text
    await forms.login("alice", USER_PASSWORD)
    page = await forms.get("/me/", **{"Accept-Language": "de"})
    assert '<html lang="en">' in page.text, "alice's own language is English"
    await forms.get("/me/language?lang=de&next=/me/")
    page = await forms.get("/me/")
    assert '<html lang="de">' in page.text
    assert "Mein Konto" in page.text

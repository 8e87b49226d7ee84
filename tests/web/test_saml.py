"""SAML single sign-on against a real identity provider (``tests/saml_idp.py``: pysaml2's IdP
side with its own key, signing with xmlsec1): the browser's way from the sign-in page to the
IdP and back to ``/saml/acs``, the self-service a SAML session opens, and every forged or
stale answer refused with a 4xx and an audit row.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from saml2.saml import NAMEID_FORMAT_TRANSIENT

from provisioner.settings import Settings, SettingsError
from tests.conftest import Api, AppFactory
from tests.saml_idp import Request, TestIdP
from tests.web.conftest import Browser, Forms, Page, Visitors, base_url

PUBLIC = "https://prov.example.test"
ACS = f"{PUBLIC}/saml/acs"
DESK_PHONE = "001565aabb31"
ATTRIBUTES = {"displayName": ["Alice Saml"], "mail": ["alice@example.net"]}


@pytest.fixture
def idp(tmp_path: Path) -> TestIdP:
    return TestIdP(tmp_path / "idp")


async def start(make_client: AppFactory, idp: TestIdP, **env: str) -> TestClient[Any, Any]:
    """The service with SSO through ``idp``, whose administrator imported its metadata."""
    client = await make_client(public_url=PUBLIC, saml_idp_metadata=str(idp.metadata_file), **env)
    async with client.get("/saml/metadata") as response:
        assert response.status == 200
        idp.trust(await response.text())
    return client


@pytest.fixture
async def client(make_client: AppFactory, idp: TestIdP) -> TestClient[Any, Any]:
    return await start(make_client, idp)


@pytest.fixture
async def alice(admin_api: Api) -> dict[str, Any]:
    """A SAML user with a line on a desk phone."""
    body = {
        "username": "alice",
        "display_name": "Alice Saml",
        "extension": "201",
        "auth_backend": "saml",
        "language": "en",
    }
    status, user = await admin_api.call("POST", "/users", body)
    assert status == 201, user
    device = {"mac": DESK_PHONE, "vendor": "yealink", "model": "T54W"}
    assert (await admin_api.call("POST", "/devices", device))[0] == 201
    lines = [{"slot": 1, "username": "alice"}]
    assert (await admin_api.call("PUT", f"/devices/{DESK_PHONE}/assignments", lines))[0] == 200
    return dict(user)


async def go_to_idp(forms: Forms, idp: TestIdP, next_path: str = "/me/") -> Request:
    """Follow the sign-in page's SSO link to the IdP; what the IdP received."""
    page = await forms.get(f"/saml/login?next={quote(next_path)}")
    assert page.status == 302, page.text
    assert page.location is not None
    return idp.receive(page.location)


async def post_answer(forms: Forms, answer: str, relay_state: str = "/me/", **headers: str) -> Page:
    """What the IdP's auto-submitting form does: a cross-site POST to the ACS."""
    return await forms.post(
        "/saml/acs",
        {"SAMLResponse": answer, "RelayState": relay_state},
        **{"Sec-Fetch-Site": "cross-site", **headers},
    )


async def refusals(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT target_user, details FROM audit_log WHERE action = 'auth.login_refused' ORDER BY id"
    )
    return [{"user": r["target_user"], **json.loads(r["details"])} for r in rows]


async def assert_refused(page: Page, reason: str, db: asyncpg.Connection) -> None:
    """A JSON refusal ``saml_invalid`` with ``reason``, audited as such."""
    assert page.status == 400, page.text
    error = json.loads(page.text)["error"]
    assert (error["code"], error["reason"]) == ("saml_invalid", reason)
    assert (await refusals(db))[-1]["reason"] == reason


# --- metadata and the way to the IdP -------------------------------------------------------------


async def test_metadata_describes_this_sp_with_a_key_made_once(
    client: TestClient[Any, Any], make_client: AppFactory, idp: TestIdP, settings: Settings
) -> None:
    async with client.get("/saml/metadata") as response:
        assert response.status == 200
        assert response.content_type == "application/samlmetadata+xml"
        metadata = await response.text()
    assert f'entityID="{PUBLIC}/saml/metadata"' in metadata
    assert re.search(
        rf'AssertionConsumerService [^>]*Binding="urn:oasis:names:tc:SAML:2.0:bindings:'
        rf'HTTP-POST" Location="{re.escape(ACS)}"',
        metadata,
    ), metadata
    assert 'WantAssertionsSigned="true"' in metadata
    assert 'AuthnRequestsSigned="true"' in metadata
    key = settings.data_dir / "saml-sp.key"
    assert key.stat().st_mode & 0o777 == 0o600
    certificate = re.search(r"X509Certificate>([^<]+)<", metadata)
    assert certificate

    # A restart keeps the key and certificate the IdP was given.
    again = await start(make_client, idp)
    async with again.get("/saml/metadata") as response:
        assert certificate.group(1) in await response.text()


async def test_login_sends_a_signed_request_for_this_sp_with_a_local_next_only(
    visitor: Visitors, idp: TestIdP, db: asyncpg.Connection
) -> None:
    forms = visitor()
    request = await go_to_idp(forms, idp, "/admin/users?page=2")
    assert (request.acs_url, request.issuer) == (ACS, f"{PUBLIC}/saml/metadata")
    assert request.relay_state == "/admin/users?page=2"
    stored = await db.fetchrow("SELECT next_path FROM saml_requests WHERE id = $1", request.id)
    assert stored is not None
    assert stored["next_path"] == "/admin/users?page=2"
    page = await forms.get("/saml/login")
    assert page.location is not None
    assert "Signature=" in page.location
    assert "SigAlg=" in page.location

    for hostile in ("https://evil.example/", "//evil.example/me/", "/\\evil.example"):
        request = await go_to_idp(forms, idp, hostile)
        assert request.relay_state == ""


async def test_sign_in_page_offers_single_sign_on_in_both_languages(visitor: Visitors) -> None:
    forms = visitor()
    page = await forms.get("/me/login?next=/me/")
    assert "Sign in with single sign-on" in page.text
    assert 'href="/saml/login?next=/me/"' in page.text
    forms.accept_language = "de"
    assert "Mit Single Sign-on anmelden" in (await forms.get("/me/login")).text


async def test_without_saml_settings_there_is_no_single_sign_on(
    make_client: AppFactory, visitor: Visitors
) -> None:
    plain = await make_client()
    async with plain.get("/me/login") as response:
        assert "single sign-on" not in await response.text()
    for method, path in (("GET", "/saml/metadata"), ("GET", "/saml/login"), ("POST", "/saml/acs")):
        async with plain.request(method, path, headers={"Accept": "application/json"}) as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "saml_not_configured"


# --- signing in --------------------------------------------------------------------------------


async def test_a_saml_user_signs_in_and_changes_their_own_pin(
    visitor: Visitors,
    idp: TestIdP,
    alice: dict[str, Any],
    db: asyncpg.Connection,
    client: TestClient[Any, Any],
) -> None:
    forms = visitor()
    request = await go_to_idp(forms, idp, "/me/")
    page = await post_answer(forms, idp.answer(request, attributes=ATTRIBUTES))
    assert page.status == 200, page.text
    assert '<meta http-equiv="refresh" content="0; url=/me/">' in page.text
    token = forms.cookie("prov_session")
    assert token

    me = await forms.get("/me/")
    assert me.status == 200
    assert "Alice Saml" in me.text
    assert 'action="/me/password"' not in me.text  # no password functions for SAML users
    pin = await forms.post("/me/pin", {"pin": "480913"}, csrf_from="/me/")
    assert pin.status == 303, pin.text
    jobs = await db.fetch("SELECT mac FROM push_jobs WHERE reason = 'pin.change'")
    assert [j["mac"] for j in jobs] == [DESK_PHONE]

    # The same session on the JSON API: PIN yes, password no.
    api = Api(client, token)
    status, data = await api.call(
        "PUT", "/me/password", {"current_password": "x", "new_password": "Another-Passw0rd-9"}
    )
    assert (status, data["error"]["code"]) == (409, "auth_backend_external")
    login = await db.fetchrow(
        "SELECT actor, details FROM audit_log WHERE action = 'auth.login' AND target_user = 'alice'"
    )
    assert login["actor"] == "alice"
    assert json.loads(login["details"])["via"] == "saml"


async def test_the_assertion_updates_name_and_email_and_pushes_the_new_name(
    visitor: Visitors, idp: TestIdP, alice: dict[str, Any], db: asyncpg.Connection
) -> None:
    forms = visitor()
    request = await go_to_idp(forms, idp)
    renamed = {"displayName": ["Alice Renamed"], "mail": ["alice@example.org"]}
    assert (await post_answer(forms, idp.answer(request, attributes=renamed))).status == 200
    user = await db.fetchrow(
        "SELECT display_name, email, extension FROM users WHERE username = 'alice'"
    )
    assert dict(user) == {
        "display_name": "Alice Renamed",
        "email": "alice@example.org",
        "extension": "201",
    }
    assert await db.fetchval("SELECT count(*) FROM push_jobs WHERE mac = $1", DESK_PHONE) == 1
    update = await db.fetchrow(
        "SELECT details FROM audit_log WHERE action = 'user.update' AND target_user = 'alice'"
    )
    assert json.loads(update["details"])["fields"] == ["display_name", "email"]


async def test_an_unknown_user_is_created_only_when_allowed(
    make_client: AppFactory, idp: TestIdP, visitor: Visitors, db: asyncpg.Connection
) -> None:
    attributes = {
        "displayName": ["Dave Neu"],
        "mail": ["dave@example.net"],
        "telephoneNumber": ["240"],
    }
    forms = visitor()
    request = await go_to_idp(forms, idp)
    page = await post_answer(forms, idp.answer(request, username="Dave", attributes=attributes))
    assert page.status == 403
    assert "saml_user_unknown" in page.text
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'dave'") == 0
    assert (await refusals(db))[-1] == {
        "user": "dave",
        "via": "saml",
        "code": "saml_user_unknown",
        "reason": None,
    }

    jit = await start(make_client, idp, saml_create_users="on")
    forms = Forms(forms.session, str(jit.make_url("")).rstrip("/"))
    forms.session.cookie_jar.clear()
    request = await go_to_idp(forms, idp)
    page = await post_answer(forms, idp.answer(request, username="Dave", attributes=attributes))
    assert page.status == 200, page.text
    user = await db.fetchrow("SELECT * FROM users WHERE username = 'dave'")
    assert (user["auth_backend"], user["display_name"], user["email"], user["extension"]) == (
        "saml",
        "Dave Neu",
        "dave@example.net",
        "240",
    )
    assert user["role"] == "user"
    created = await db.fetchrow("SELECT actor, details FROM audit_log WHERE action = 'user.create'")
    assert created["actor"] == "dave"
    assert json.loads(created["details"])["via"] == "saml"
    assert (await forms.get("/me/")).status == 200


async def test_users_of_other_backends_and_disabled_users_are_refused(
    visitor: Visitors, idp: TestIdP, admin_api: Api, alice: dict[str, Any], db: asyncpg.Connection
) -> None:
    body = {"username": "carol", "display_name": "Carol Local"}
    assert (await admin_api.call("POST", "/users", body))[0] == 201
    forms = visitor()
    request = await go_to_idp(forms, idp)
    page = await post_answer(forms, idp.answer(request, username="carol"))
    assert page.status == 403
    assert "auth_backend_mismatch" in page.text
    # The admin is local too: an IdP that names "admin" opens nothing.
    request = await go_to_idp(forms, idp)
    page = await post_answer(forms, idp.answer(request, username="admin"))
    assert page.status == 403

    assert (await admin_api.call("PATCH", "/users/alice", {"disabled": True}))[0] == 200
    request = await go_to_idp(forms, idp)
    page = await post_answer(forms, idp.answer(request, attributes=ATTRIBUTES))
    assert page.status == 403
    assert "user_disabled" in page.text
    assert forms.cookie("prov_session") is None
    assert [(r["user"], r["code"]) for r in await refusals(db)] == [
        ("carol", "auth_backend_mismatch"),
        ("admin", "auth_backend_mismatch"),
        ("alice", "user_disabled"),
    ]


# --- forged and stale answers ------------------------------------------------------------------


def _tampered(answer: str) -> str:
    """The signed answer with an attribute value changed."""
    xml = base64.b64decode(answer).decode()
    assert "Alice Saml" in xml
    return base64.b64encode(xml.replace("Alice Saml", "Mallory").encode()).decode()


def _wrapped(answer: str) -> str:
    """Signature wrapping: a copy of the signed assertion naming another user, with the
    signature, and the genuine assertion hidden in its Advice (same ID in both)."""
    xml = base64.b64decode(answer).decode()
    match = re.search(r"<ns1:Assertion .*</ns1:Assertion>", xml, re.S)
    assert match
    genuine = match.group(0)
    forged = genuine.replace(">alice<", ">carol<").replace(
        "<ns1:AuthnStatement", f"<ns1:Advice>{genuine}</ns1:Advice><ns1:AuthnStatement", 1
    )
    assert ">carol<" in forged
    return base64.b64encode(xml.replace(genuine, forged).encode()).decode()


def _without_audience(xml: str) -> str:
    """The conditions without their AudienceRestriction (which pysaml2 alone would accept)."""
    edited = re.sub(r"<ns\d:AudienceRestriction>.*?</ns\d:AudienceRestriction>", "", xml)
    assert edited != xml
    return edited


def _elsewhere(attribute: str) -> Any:
    """An edit that points ``attribute`` (now the ACS URL) at another address."""
    return lambda xml: xml.replace(f'{attribute}="{ACS}"', f'{attribute}="https://x.test/"')


# What the IdP is asked for (``after``: done to the answer once signed), and the reason.
FORGERIES: dict[str, tuple[dict[str, Any], str]] = {
    "tampered": ({"attributes": ATTRIBUTES, "after": _tampered}, "signature"),
    "wrapped": ({"after": _wrapped}, "signature"),
    "unsigned": ({"sign_assertion": False}, "signature"),
    "only the response signed": ({"sign_assertion": False, "sign_response": True}, "signature"),
    "expired": ({"issued_ago": timedelta(minutes=6, seconds=30)}, "expired"),
    "not yet valid": ({"issued_ago": timedelta(minutes=-2)}, "not_yet_valid"),
    "for another service": ({"audience": "https://other.example.test/sp"}, "audience"),
    "without an audience": ({"edit": _without_audience}, "audience"),
    "for another recipient": ({"edit": _elsewhere("Recipient")}, "recipient"),
    "sent to another destination": ({"edit": _elsewhere("Destination")}, "destination"),
    "to no request of ours": ({"in_response_to": "id-never-sent"}, "unsolicited"),
    "transient name id": ({"name_id_format": NAMEID_FORMAT_TRANSIENT}, "nameid_transient"),
}


async def test_an_idp_clock_a_little_off_is_tolerated(
    visitor: Visitors, idp: TestIdP, alice: dict[str, Any]
) -> None:
    """60 s of skew either way: an answer whose window closed 30 s ago, or opens in 30 s."""
    for issued_ago in (timedelta(minutes=5, seconds=30), timedelta(seconds=-30)):
        forms = visitor()
        request = await go_to_idp(forms, idp)
        page = await post_answer(forms, idp.answer(request, issued_ago=issued_ago))
        assert page.status == 200, (issued_ago, page.text)


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_forged_and_stale_answers_are_refused_and_audited(
    forgery: str, visitor: Visitors, idp: TestIdP, alice: dict[str, Any], db: asyncpg.Connection
) -> None:
    asked, reason = FORGERIES[forgery]
    after = asked.get("after", lambda answer: answer)
    forms = visitor()
    request = await go_to_idp(forms, idp)
    answer = idp.answer(request, **{k: v for k, v in asked.items() if k != "after"})
    page = await post_answer(forms, after(answer))
    assert page.status == 400, page.text
    assert f'<code id="error-code">saml_invalid.{reason}</code>' in page.text
    assert forms.cookie("prov_session") is None
    audited = await refusals(db)
    assert audited[-1]["code"] == "saml_invalid"
    assert audited[-1]["reason"] == reason
    assert await db.fetchval("SELECT count(*) FROM sessions") == 1  # the admin's only


async def test_an_answer_signed_by_another_key_is_refused(
    visitor: Visitors, idp: TestIdP, alice: dict[str, Any], tmp_path: Path, db: asyncpg.Connection
) -> None:
    impostor = TestIdP(tmp_path / "impostor", name="impostor")  # same entity id, its own key
    impostor.trust(idp.sp_metadata_file.read_text() if idp.sp_metadata_file else "")
    forms = visitor()
    request = await go_to_idp(forms, idp)
    answer = impostor.answer(request, attributes=ATTRIBUTES)
    page = await post_answer(forms, answer, Accept="application/json")
    await assert_refused(page, "signature", db)


async def test_an_answer_posted_twice_is_refused_the_second_time(
    visitor: Visitors, idp: TestIdP, alice: dict[str, Any], db: asyncpg.Connection
) -> None:
    forms = visitor()
    request = await go_to_idp(forms, idp)
    answer = idp.answer(request, attributes=ATTRIBUTES)
    assert (await post_answer(forms, answer)).status == 200
    stored = await db.fetchrow("SELECT expires_at > now() AS alive FROM saml_assertions")
    assert stored["alive"]

    other = visitor()
    page = await post_answer(other, answer, Accept="application/json")
    await assert_refused(page, "replayed", db)
    assert other.cookie("prov_session") is None


async def test_one_answer_posted_twice_at_once_signs_in_once(
    visitor: Visitors, idp: TestIdP, alice: dict[str, Any], db: asyncpg.Connection
) -> None:
    forms = visitor()
    request = await go_to_idp(forms, idp)
    answer = idp.answer(request, attributes=ATTRIBUTES)
    pages = await asyncio.gather(post_answer(visitor(), answer), post_answer(visitor(), answer))
    assert sorted(page.status for page in pages) == [200, 400]
    assert "saml_invalid.replayed" in next(p.text for p in pages if p.status == 400)
    logins = "SELECT count(*) FROM audit_log WHERE action = 'auth.login' AND target_user = 'alice'"
    assert await db.fetchval(logins) == 1


async def test_garbage_is_refused_without_a_server_error(
    visitor: Visitors, db: asyncpg.Connection
) -> None:
    forms = visitor()
    for body in (
        "",
        "%%%",
        base64.b64encode(b"<not-saml/>").decode(),
        base64.b64encode(b'<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>').decode(),
    ):
        page = await post_answer(forms, body)
        assert page.status == 400, (body, page.status)
        assert "saml_invalid.malformed" in page.text
    assert len(await refusals(db)) == 4


async def test_expired_requests_and_assertions_are_purged(
    visitor: Visitors, idp: TestIdP, db: asyncpg.Connection
) -> None:
    await db.execute(
        "INSERT INTO saml_requests VALUES ('id-old', '/me/', now() - interval '1 second')"
    )
    await db.execute(
        "INSERT INTO saml_assertions VALUES ($1, 'id-old', now() - interval '1 second')",
        "https://idp.example.test/idp",
    )
    await go_to_idp(visitor(), idp)
    assert await db.fetchval("SELECT count(*) FROM saml_requests") == 1
    assert await db.fetchval("SELECT count(*) FROM saml_assertions") == 0


# --- settings ----------------------------------------------------------------------------------


def test_settings_name_the_bad_variable(tmp_path: Path, idp: TestIdP) -> None:
    base = {"PROVISIONER_DATA_DIR": str(tmp_path / "data")}
    metadata = {"PROVISIONER_SAML_IDP_METADATA": str(idp.metadata_file)}
    saml = Settings.from_env({**base, **metadata}).saml
    assert saml is not None
    assert saml.create_users is False
    assert saml.idp_entity_id == "https://idp.example.test/idp"
    assert saml.attributes.attribute("username") == "NameID"
    described = Settings.from_env({**base, **metadata}).describe()["saml"]
    assert described.startswith("IdP https://idp.example.test/idp (")

    not_metadata = tmp_path / "not-metadata.xml"
    not_metadata.write_text("<html/>")
    cases = {
        "PROVISIONER_SAML_IDP_METADATA": {"PROVISIONER_SAML_IDP_METADATA": str(not_metadata)},
        "PROVISIONER_SAML_CREATE_USERS": {**metadata, "PROVISIONER_SAML_CREATE_USERS": "maybe"},
        "PROVISIONER_SAML_ATTRIBUTES": {
            **metadata,
            "PROVISIONER_SAML_ATTRIBUTES": "display_name=cn",
        },
        "PROVISIONER_SAML_SP_KEY_FILE": {
            **metadata,
            "PROVISIONER_SAML_SP_KEY_FILE": str(idp.key_file),
        },
    }
    for variable, env in cases.items():
        with pytest.raises(SettingsError, match=f"^{variable}: "):
            Settings.from_env({**base, **env})
    with pytest.raises(SettingsError, match=r"^PROVISIONER_SAML_IDP_METADATA: needed by"):
        Settings.from_env({**base, "PROVISIONER_SAML_CREATE_USERS": "on"})


# --- in a browser ------------------------------------------------------------------------------


async def test_single_sign_on_in_a_browser(
    browser: Browser,
    client: TestClient[Any, Any],
    idp: TestIdP,
    alice: dict[str, Any],
    db: asyncpg.Connection,
) -> None:
    """Chromium from the sign-in page to the IdP (whose pages the test serves) and back: the
    IdP's form posts cross-site to the ACS, and the SameSite=Strict session cookie must still
    reach ``/me/`` after it."""
    acs = f"{base_url(client)}/saml/acs"

    async def identity_provider(route: Any) -> None:
        request = idp.receive(route.request.url)
        answer = await asyncio.to_thread(idp.answer, request, attributes=ATTRIBUTES)
        relay_state = html.escape(request.relay_state)
        await route.fulfill(
            content_type="text/html",
            body=(
                f'<form method="post" action="{acs}">'
                f'<input type="hidden" name="SAMLResponse" value="{answer}">'
                f'<input type="hidden" name="RelayState" value="{relay_state}">'
                "</form><script>document.forms[0].submit()</script>"
            ),
        )

    page = await browser.new_page()
    await page.route("http://idp.example.test/**", identity_provider)
    await page.goto("/me/")
    assert "/me/login" in page.url
    await page.get_by_role("link", name="Sign in with single sign-on").click()
    await page.wait_for_url(re.compile(r"/me/$"))
    await page.wait_for_load_state()
    assert page.url.endswith("/me/"), "the session cookie did not come along"
    await page.get_by_label("New PIN").fill("480913")
    await page.get_by_role("button", name="Apply PIN").click()
    flash = page.get_by_role("status")
    await flash.wait_for()
    assert "Your PIN has been changed. Push jobs queued: 1." in await flash.inner_text()
    assert await db.fetchval("SELECT pin_hash IS NOT NULL FROM users WHERE username = 'alice'")

"""Password changes: the three admin modes, self-service, mail, revocation, external backends."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.conftest import Api, MailSink, bootstrap_admin, free_port, mailed_password

OLD = "Old-Passw0rd-1"
NEW = "New-Passw0rd-2"


async def test_set_is_temporary_by_default_and_forces_a_change(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", email="alice@example.net")
    status, data = await admin.call(
        "POST", "/users/alice/password", {"mode": "set", "password": NEW}
    )
    assert (status, data) == (200, {"email_sent": False})
    assert (await db.fetchval("SELECT password_hash FROM users WHERE username='alice'")).startswith(
        "$argon2id$"
    )

    status, session = await admin.login("alice", NEW)
    assert status == 200
    assert session["password_change_required"] is True
    limited = Api(admin.client, session["token"])
    status, data = await limited.call("PUT", "/me/pin", {"pin": "480913"})
    assert (status, data["error"]["code"]) == (403, "password_change_required")
    status, me = await limited.call("GET", "/me")
    assert (status, me["must_change_password"]) == (200, True)

    status, fresh = await limited.call(
        "PUT", "/me/password", {"current_password": NEW, "new_password": "Mine-Passw0rd-3"}
    )
    assert status == 200, fresh
    assert fresh["password_change_required"] is False
    status, _ = await limited.call("GET", "/me")
    assert status == 401, "the token from before the change must be dead"
    status, _ = await Api(admin.client, fresh["token"]).call("PUT", "/me/pin", {"pin": "480913"})
    assert status == 200
    status, session = await admin.login("alice", "Mine-Passw0rd-3")
    assert (status, session["password_change_required"]) == (200, False)


async def test_set_permanent(admin: Api, make_user: Any) -> None:
    await make_user("alice")
    await admin.call(
        "POST", "/users/alice/password", {"mode": "set", "password": NEW, "temporary": False}
    )
    status, session = await admin.login("alice", NEW)
    assert (status, session["password_change_required"]) == (200, False)


@pytest.mark.parametrize(
    ("language", "subject", "phrase"),
    [("de", "Ihr neues Passwort", "vorläufig"), ("en", "Your new password", "temporary")],
)
async def test_set_and_email_sends_new_password_mail(
    admin: Api, make_user: Any, mail_sink: MailSink, language: str, subject: str, phrase: str
) -> None:
    await make_user("alice", email="alice@example.net", language=language, display_name="Älice Ü")
    status, data = await admin.call(
        "POST", "/users/alice/password", {"mode": "set_and_email", "password": NEW}
    )
    assert (status, data) == (200, {"email_sent": True})
    assert len(mail_sink.messages) == 1
    message = mail_sink.messages[0]
    assert message["Subject"] == subject
    assert message["From"] == "provisioner@example.net"
    body = mail_sink.bodies_to("alice@example.net")[0]
    assert mailed_password(body) == NEW
    assert phrase in body
    assert "Älice Ü" in body


async def test_random_and_email(admin: Api, make_user: Any, mail_sink: MailSink) -> None:
    await make_user("alice", "Old-Passw0rd-1", email="alice@example.net")
    status, data = await admin.call(
        "POST", "/users/alice/password", {"mode": "random_and_email", "temporary": False}
    )
    assert (status, data) == (200, {"email_sent": True})
    password = mailed_password(mail_sink.bodies_to("alice@example.net")[0])
    assert len(password) >= 16
    status, session = await admin.login("alice", password)
    assert status == 200
    assert session["password_change_required"] is True, "random passwords are always temporary"
    assert (await admin.login("alice", OLD))[0] == 401


async def test_random_refuses_a_given_password(admin: Api, make_user: Any) -> None:
    await make_user("alice", email="alice@example.net")
    status, data = await admin.call(
        "POST", "/users/alice/password", {"mode": "random_and_email", "password": NEW}
    )
    assert (status, data["error"]["code"]) == (400, "password_not_expected")


@pytest.mark.parametrize("mode", ["set_and_email", "random_and_email"])
async def test_email_modes_need_an_email(
    admin: Api, make_user: Any, db: asyncpg.Connection, mode: str
) -> None:
    await make_user("alice", OLD)
    body: dict[str, Any] = {"mode": mode} | ({"password": NEW} if mode == "set_and_email" else {})
    status, data = await admin.call("POST", "/users/alice/password", body)
    assert (status, data["error"]["code"]) == (422, "email_missing")
    # An address that predates validation (imported data) is refused, not attempted.
    await db.execute("UPDATE users SET email = 'alice at example' WHERE username = 'alice'")
    status, data = await admin.call("POST", "/users/alice/password", body)
    assert (status, data["error"]["code"]) == (422, "email_invalid")
    assert (await admin.login("alice", OLD))[0] == 200


async def test_mail_refused_changes_nothing(
    admin: Api, make_user: Any, mail_sink: MailSink, db: asyncpg.Connection
) -> None:
    await make_user("alice", OLD, email="alice@example.net")
    old_token = (await admin.login("alice", OLD))[1]["token"]
    mail_sink.refuse = True
    status, data = await admin.call(
        "POST", "/users/alice/password", {"mode": "set_and_email", "password": NEW}
    )
    assert (status, data["error"]["code"]) == (502, "mail_failed")
    assert (await admin.login("alice", OLD))[0] == 200
    assert (await admin.login("alice", NEW))[0] == 401
    assert (await Api(admin.client, old_token).call("GET", "/me"))[0] == 200
    changes = await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'password.change'")
    assert changes == 1  # only make_user's


async def test_smtp_down_leaves_old_password_working(make_client: Any) -> None:
    client = await make_client(smtp_url=f"smtp://127.0.0.1:{free_port()}")
    admin = await bootstrap_admin(client)
    await admin.call(
        "POST", "/users", {"username": "alice", "display_name": "A", "email": "a@example.net"}
    )
    await admin.call(
        "POST", "/users/alice/password", {"mode": "set", "password": OLD, "temporary": False}
    )
    status, data = await admin.call("POST", "/users/alice/password", {"mode": "random_and_email"})
    assert (status, data["error"]["code"]) == (502, "mail_failed")
    assert (await admin.login("alice", OLD))[0] == 200


async def test_mail_not_configured(make_client: Any) -> None:
    admin = await bootstrap_admin(await make_client(smtp_url=""))
    await admin.call(
        "POST", "/users", {"username": "alice", "display_name": "A", "email": "a@example.net"}
    )
    status, data = await admin.call("POST", "/users/alice/password", {"mode": "random_and_email"})
    assert (status, data["error"]["code"]) == (503, "mail_not_configured")
    status, _ = await admin.call("POST", "/users/alice/password", {"mode": "set", "password": NEW})
    assert status == 200


async def test_password_change_revokes_older_tokens(admin: Api, make_user: Any) -> None:
    await make_user("alice", OLD)
    tokens = [(await admin.login("alice", OLD))[1]["token"] for _ in range(2)]
    for token in tokens:
        assert (await Api(admin.client, token).call("GET", "/me"))[0] == 200
    await admin.call("POST", "/users/alice/password", {"mode": "set", "password": NEW})
    for token in tokens:
        status, data = await Api(admin.client, token).call("GET", "/me")
        assert (status, data["error"]["code"]) == (401, "token_invalid")


@pytest.mark.parametrize("backend", ["ldap", "saml"])
async def test_external_backends_refuse_password_functions(
    admin: Api, make_user: Any, backend: str
) -> None:
    await make_user("eve", auth_backend=backend, email="eve@example.net")
    for body in (
        {"mode": "set", "password": NEW},
        {"mode": "set_and_email", "password": NEW},
        {"mode": "random_and_email"},
    ):
        status, data = await admin.call("POST", "/users/eve/password", body)
        assert (status, data["error"]["code"]) == (409, "auth_backend_external")
        assert backend.upper() in data["error"]["message"]
    token = (await admin.call("POST", "/users/eve/impersonate"))[1]["token"]
    status, data = await Api(admin.client, token).call("PUT", "/me/password", {"new_password": NEW})
    assert (status, data["error"]["code"]) == (409, "auth_backend_external")
    # The PIN is theirs to change all the same.
    assert (await Api(admin.client, token).call("PUT", "/me/pin", {"pin": "480913"}))[0] == 200


async def test_self_service_needs_the_current_password(admin: Api, make_user: Any) -> None:
    await make_user("alice", OLD)
    alice = await admin.as_user("alice", OLD)
    status, data = await alice.call("PUT", "/me/password", {"new_password": NEW})
    assert (status, data["error"]["code"]) == (422, "current_password_missing")
    status, data = await alice.call(
        "PUT", "/me/password", {"current_password": "wrong-one-1", "new_password": NEW}
    )
    assert (status, data["error"]["code"]) == (403, "current_password_wrong")
    status, data = await alice.call(
        "PUT", "/me/password", {"current_password": OLD, "new_password": OLD}
    )
    assert (status, data["error"]["reason"]) == (422, "unchanged")
    status, _ = await alice.call(
        "PUT", "/me/password", {"current_password": OLD, "new_password": NEW}
    )
    assert status == 200
    assert (await admin.login("alice", NEW))[0] == 200


async def test_impersonating_admin_needs_no_current_password(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", OLD)
    token = (await admin.call("POST", "/users/alice/impersonate"))[1]["token"]
    status, fresh = await Api(admin.client, token).call(
        "PUT", "/me/password", {"new_password": NEW}
    )
    assert status == 200
    status, me = await Api(admin.client, fresh["token"]).call("GET", "/me")
    assert (status, me["impersonator"]) == (200, "admin")
    assert (await admin.login("alice", NEW))[0] == 200
    row = await db.fetchrow(
        "SELECT * FROM audit_log WHERE action = 'password.change' ORDER BY id DESC LIMIT 1"
    )
    assert (row["actor"], row["impersonator"]) == ("alice", "admin")


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short", "length"), ("x" * 300, "length"), ("Pässwörter-2024", "characters"),
     ("password123", "common"), ("alice", "length"), ("alice@example.net", "personal")],
)  # fmt: skip
async def test_policy_refusals_change_nothing(
    admin: Api, make_user: Any, password: str, reason: str
) -> None:
    await make_user("alice", OLD, email="alice@example.net")
    status, data = await admin.call(
        "POST", "/users/alice/password", {"mode": "set", "password": password}
    )
    assert (status, data["error"]["code"], data["error"]["reason"]) == (
        422,
        "password_policy",
        reason,
    )
    assert (await admin.login("alice", OLD))[0] == 200


async def test_user_cannot_set_others_password(admin: Api, make_user: Any) -> None:
    await make_user("alice", OLD)
    await make_user("bob", OLD)
    alice = await admin.as_user("alice", OLD)
    status, data = await alice.call("POST", "/users/bob/password", {"mode": "set", "password": NEW})
    assert (status, data["error"]["code"]) == (403, "forbidden")
    assert (await admin.login("bob", OLD))[0] == 200


async def test_mode_must_be_known(admin: Api, make_user: Any) -> None:
    await make_user("alice")
    status, data = await admin.call(
        "POST", "/users/alice/password", {"mode": "mail", "password": NEW}
    )
    assert (status, data["error"]["code"]) == (400, "mode_invalid")
    status, data = await admin.call("POST", "/users/alice/password", {"mode": "set"})
    assert (status, data["error"]["code"]) == (400, "password_missing")

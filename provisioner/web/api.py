"""The JSON API under ``/api/v1``: thin handlers that parse, call the domain and render."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from provisioner import audit, auth, directory_sync, passwords, pins, users
from provisioner.audit import Actor
from provisioner.errors import forbidden, unauthenticated
from provisioner.web import devices_api
from provisioner.web.errors import json_errors
from provisioner.web.inputs import field, json_body, query_bool, query_datetime, query_int
from provisioner.web.keys import ACTOR, CORE, TOKEN
from provisioner.web.openapi import openapi_document

routes = web.RouteTableDef()

_PUBLIC = frozenset({"/api/v1/auth/login", "/api/v1/openapi.json"})
# What a token from a temporary password may do: read itself, choose a password, log out.
_PASSWORD_CHANGE_ONLY = frozenset(
    {("GET", "/api/v1/me"), ("PUT", "/api/v1/me/password"), ("POST", "/api/v1/auth/logout")}
)


def source_of(request: web.Request) -> str:
    return request.remote or "unknown"


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the bearer token to an :class:`Actor`; users reach only ``/me`` and ``/auth``."""
    if request.path in _PUBLIC:
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("unauthenticated", "Send Authorization: Bearer <token>.")
    actor = await auth.authenticate(request.config_dict[CORE], token.strip(), source_of(request))
    if actor is None:
        raise unauthenticated("token_invalid", "The token is unknown, expired or revoked.")
    if actor.password_change_only and (request.method, request.path) not in _PASSWORD_CHANGE_ONLY:
        raise forbidden(
            "password_change_required", "Choose a new password first (PUT /api/v1/me/password)."
        )
    own = request.path == "/api/v1/me" or request.path.startswith(("/api/v1/me/", "/api/v1/auth/"))
    if not actor.is_admin and not own:
        raise forbidden("forbidden", "This needs an administrator.")
    request[ACTOR] = actor
    request[TOKEN] = token.strip()
    return await handler(request)


def _actor(request: web.Request) -> Actor:
    actor: Actor = request[ACTOR]
    return actor


def _session_json(session: auth.Session) -> dict[str, Any]:
    return {
        "token": session.token,
        "expires_at": session.expires_at.isoformat(),
        "password_change_required": session.password_change_required,
    }


# --- auth --------------------------------------------------------------------------------------


@routes.post("/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await json_body(request, {"username", "password"})
    session = await auth.login(
        request.config_dict[CORE],
        field(body, "username", str),
        field(body, "password", str),
        source_of(request),
    )
    return web.json_response(_session_json(session))


@routes.post("/auth/logout")
async def logout(request: web.Request) -> web.Response:
    await auth.logout(request.config_dict[CORE], request[TOKEN])
    return web.Response(status=204)


@routes.post("/users/{username}/impersonate")
async def impersonate(request: web.Request) -> web.Response:
    session = await auth.impersonate(
        request.config_dict[CORE], _actor(request), request.match_info["username"]
    )
    return web.json_response(_session_json(session))


# --- users -------------------------------------------------------------------------------------

_USER_FIELDS = {
    "username": str,
    "display_name": str,
    "extension": str,
    "email": str,
    "auth_backend": str,
    "language": str,
    "role": str,
}


@routes.get("/users")
async def list_users(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    offset = query_int(request, "offset", 0, 0, 10_000_000)
    rows, total = await users.list_users(
        request.config_dict[CORE],
        _actor(request),
        search=request.query.get("search") or None,
        limit=limit,
        offset=offset,
        backend=request.query.get("backend") or None,
        disabled=query_bool(request, "disabled"),
    )
    return web.json_response(
        {
            "users": [users.public_view(r) for r in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


@routes.post("/users")
async def create_user(request: web.Request) -> web.Response:
    body = await json_body(request, _USER_FIELDS)
    new = users.NewUser(
        username=field(body, "username", str),
        display_name=field(body, "display_name", str),
        extension=field(body, "extension", str, None),
        email=field(body, "email", str, None),
        auth_backend=field(body, "auth_backend", str, "local"),
        language=field(body, "language", str, "de"),
        role=field(body, "role", str, "user"),
    )
    row = await users.create_user(request.config_dict[CORE], _actor(request), new)
    return web.json_response(users.public_view(row), status=201)


@routes.get("/users/{username}")
async def get_user(request: web.Request) -> web.Response:
    row = await users.find_user(
        request.config_dict[CORE], _actor(request), request.match_info["username"]
    )
    return web.json_response(users.public_view(row))


@routes.patch("/users/{username}")
async def update_user(request: web.Request) -> web.Response:
    editable = {k: v for k, v in _USER_FIELDS.items() if k != "username"} | {"disabled": bool}
    body = await json_body(request, editable)
    nullable = {"extension", "email"}
    changes = {
        name: field(body, name, kind, None) if name in nullable else field(body, name, kind)
        for name, kind in editable.items()
        if name in body
    }
    row = await users.update_user(
        request.config_dict[CORE], _actor(request), request.match_info["username"], changes
    )
    return web.json_response(users.public_view(row))


@routes.delete("/users/{username}")
async def delete_user(request: web.Request) -> web.Response:
    await users.delete_user(
        request.config_dict[CORE], _actor(request), request.match_info["username"]
    )
    return web.Response(status=204)


@routes.put("/users/{username}/pin")
async def set_user_pin(request: web.Request) -> web.Response:
    body = await json_body(request, {"pin"})
    change = await pins.change_pin(
        request.config_dict[CORE],
        _actor(request),
        request.match_info["username"],
        field(body, "pin", str),
    )
    return web.json_response({"push_jobs": change.push_jobs})


@routes.post("/users/{username}/password")
async def set_user_password(request: web.Request) -> web.Response:
    body = await json_body(request, {"mode", "password", "temporary"})
    change = await passwords.admin_set_password(
        request.config_dict[CORE],
        _actor(request),
        request.match_info["username"],
        mode=field(body, "mode", str),
        password=field(body, "password", str, None),
        temporary=field(body, "temporary", bool, True),
    )
    return web.json_response({"email_sent": change.email_sent})


# --- self-service ------------------------------------------------------------------------------


@routes.get("/me")
async def me(request: web.Request) -> web.Response:
    actor = _actor(request)
    row = await users.find_user(request.config_dict[CORE], actor, actor.username)
    return web.json_response({**users.public_view(row), "impersonator": actor.impersonator})


@routes.put("/me/pin")
async def set_my_pin(request: web.Request) -> web.Response:
    body = await json_body(request, {"pin"})
    actor = _actor(request)
    change = await pins.change_pin(
        request.config_dict[CORE], actor, actor.username, field(body, "pin", str)
    )
    return web.json_response({"push_jobs": change.push_jobs})


@routes.put("/me/password")
async def set_my_password(request: web.Request) -> web.Response:
    body = await json_body(request, {"current_password", "new_password"})
    session = await passwords.change_own_password(
        request.config_dict[CORE],
        _actor(request),
        field(body, "current_password", str, None),
        field(body, "new_password", str),
    )
    return web.json_response(_session_json(session))


# --- directory ---------------------------------------------------------------------------------


@routes.post("/directory/sync")
async def sync_directory(request: web.Request) -> web.Response:
    body = await json_body(request, {"dry_run"}) if request.can_read_body else {}
    report = await directory_sync.sync(
        request.config_dict[CORE], _actor(request), dry_run=field(body, "dry_run", bool, False)
    )
    return web.json_response(report.view())


# --- audit -------------------------------------------------------------------------------------


@routes.get("/audit")
async def list_audit(request: web.Request) -> web.Response:
    entries = await audit.search(
        request.config_dict[CORE],
        _actor(request),
        user=request.query.get("user") or None,
        action=request.query.get("action") or None,
        since=query_datetime(request, "since"),
        limit=query_int(request, "limit", 100, 1, 1000),
        before_id=query_int(request, "before", 0, 0, 2**62) or None,
    )
    return web.json_response({"entries": entries})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def create_api_app() -> web.Application:
    app = web.Application(middlewares=[json_errors, bearer_auth])
    app.add_routes(routes)
    app.add_routes(devices_api.routes)
    return app

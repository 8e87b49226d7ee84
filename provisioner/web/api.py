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
from provisioner.web.inputs import query_bool, query_datetime, query_int, read_body
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
    body = await read_body(request, "LoginBody")
    session = await auth.login(
        request.config_dict[CORE], body["username"], body["password"], source_of(request)
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
        backend=request.query.get("backend"),
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
    new = users.NewUser(**await read_body(request, "UserCreate"))
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
    changes = await read_body(request, "UserUpdate")
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
    body = await read_body(request, "PinBody")
    change = await pins.change_pin(
        request.config_dict[CORE], _actor(request), request.match_info["username"], body["pin"]
    )
    return web.json_response({"push_jobs": change.push_jobs})


@routes.post("/users/{username}/password")
async def set_user_password(request: web.Request) -> web.Response:
    body = await read_body(request, "PasswordBody")
    change = await passwords.admin_set_password(
        request.config_dict[CORE],
        _actor(request),
        request.match_info["username"],
        mode=body["mode"],
        password=body.get("password"),
        temporary=body["temporary"],
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
    body = await read_body(request, "PinBody")
    actor = _actor(request)
    change = await pins.change_pin(request.config_dict[CORE], actor, actor.username, body["pin"])
    return web.json_response({"push_jobs": change.push_jobs})


@routes.put("/me/password")
async def set_my_password(request: web.Request) -> web.Response:
    body = await read_body(request, "OwnPasswordBody")
    session = await passwords.change_own_password(
        request.config_dict[CORE],
        _actor(request),
        body.get("current_password"),
        body["new_password"],
    )
    return web.json_response(_session_json(session))


# --- directory ---------------------------------------------------------------------------------


@routes.post("/directory/sync")
async def sync_directory(request: web.Request) -> web.Response:
    body = await read_body(request, "DirectorySyncBody") if request.can_read_body else {}
    report = await directory_sync.sync(
        request.config_dict[CORE], _actor(request), dry_run=body.get("dry_run", False)
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
    settings = request.config_dict[CORE].settings
    return web.json_response(openapi_document(settings.pin_min_length))


def create_api_app() -> web.Application:
    app = web.Application(middlewares=[json_errors, bearer_auth])
    app.add_routes(routes)
    app.add_routes(devices_api.routes)
    return app

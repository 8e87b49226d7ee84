"""``POST /hooks/pbx/*``: calls from the PBX, signed with the shared HMAC secret.

``X-Provisioner-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.
A signature older (or newer) than 300 s, wrong, or seen before is refused with 401; replays are
remembered in the database so every process refuses them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from provisioner import hotdesk, store
from provisioner.errors import Kind, ProvisionerError, invalid, unauthenticated
from provisioner.web.errors import json_errors
from provisioner.web.inputs import field, load_json
from provisioner.web.keys import CORE

SIGNATURE_HEADER = "X-Provisioner-Signature"
#: The hooks a PBX calls, ``POST /hooks/pbx/<name>``.
HOOKS = ("pin-login", "logout", "verify-pin", "registered", "reprovision")
MAX_SKEW = 300
BODY = web.RequestKey("hook_body", dict[str, Any])

routes = web.RouteTableDef()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for ``body`` at ``timestamp`` (what the PBX computes)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _parse(header: str) -> tuple[int, str] | None:
    parts = dict(p.strip().partition("=")[::2] for p in header.split(","))
    stamp, signature = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isascii() or not stamp.isdigit() or len(signature) != 64:
        return None
    return int(stamp), signature.lower()


async def verify_signature(request: web.Request, *, refuse_replays: bool) -> bytes:
    """The request's raw body once its signature is checked; 401 (503 without a secret).

    ``refuse_replays``: remember the signature (in the database, for every process) and refuse
    it a second time; for changes. A read (``GET``) may be repeated within the 300 s.
    """
    core = request.config_dict[CORE]
    secret = core.settings.hook_secret
    if not secret:
        raise ProvisionerError(
            Kind.UNAVAILABLE, "hooks_not_configured", "Set PROVISIONER_HOOK_SECRET to use hooks."
        )
    parsed = _parse(request.headers.get(SIGNATURE_HEADER, ""))
    if parsed is None:
        raise unauthenticated("signature_invalid", f"Send a valid {SIGNATURE_HEADER} header.")
    stamp, signature = parsed
    if abs(time.time() - stamp) > MAX_SKEW:
        raise unauthenticated("signature_expired", "The signature is older than 300 seconds.")
    body = await request.read()
    expected = sign(secret, stamp, body).partition("v1=")[2]
    if not hmac.compare_digest(expected, signature):
        raise unauthenticated("signature_invalid", "The signature does not match.")
    if refuse_replays:
        async with core.pool.acquire() as conn:
            fresh = await store.remember_hook_signature(conn, signature, stamp + MAX_SKEW)
        if not fresh:
            raise unauthenticated("signature_replayed", "This signature was used before.")
    return body


@web.middleware
async def signed(request: web.Request, handler: Handler) -> web.StreamResponse:
    body = await verify_signature(request, refuse_replays=True)
    request[BODY] = _json_object(body)
    return await handler(request)


def _json_object(body: bytes) -> dict[str, Any]:
    data = load_json(body)
    if not isinstance(data, dict):
        raise invalid("body_invalid", "The body must be a JSON object.")
    return data


def _body(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    body: dict[str, Any] = request[BODY]
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid("field_unknown", f"Unknown field(s): {', '.join(unknown)}.")
    return body


def _source(request: web.Request) -> str:
    return request.remote or "pbx"


@routes.post("/pin-login")
async def pin_login(request: web.Request) -> web.Response:
    body = _body(request, {"extension", "pin", "mac"})
    user, device = await hotdesk.pin_login(
        request.config_dict[CORE],
        field(body, "extension", str),
        field(body, "pin", str),
        field(body, "mac", str),
        _source(request),
    )
    return web.json_response({"user": user, "device": device})


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    body = _body(request, {"mac"})
    users = await hotdesk.logout(
        request.config_dict[CORE], field(body, "mac", str), _source(request)
    )
    return web.json_response({"logged_out": users})


@routes.post("/verify-pin")
async def verify_pin(request: web.Request) -> web.Response:
    body = _body(request, {"extension", "pin"})
    result = await hotdesk.verify_pin(
        request.config_dict[CORE],
        field(body, "extension", str),
        field(body, "pin", str),
        _source(request),
    )
    answer: dict[str, Any] = {"valid": result.valid}
    if result.locked_until is not None:
        answer["locked_until"] = result.locked_until.isoformat()
    return web.json_response(answer)


@routes.post("/registered")
async def registered(request: web.Request) -> web.Response:
    body = _body(request, {"extension", "contact", "user_agent", "mac"})
    mac = await hotdesk.registered(
        request.config_dict[CORE],
        field(body, "extension", str),
        field(body, "contact", str),
        field(body, "user_agent", str, ""),
        field(body, "mac", str, None),
    )
    return web.json_response({"device": mac})


@routes.post("/reprovision")
async def reprovision(request: web.Request) -> web.Response:
    body = _body(request, {"mac", "extension"})
    mac = field(body, "mac", str, None)
    extension = field(body, "extension", str, None)
    if (mac is None) == (extension is None):
        raise invalid("field_missing", "Send either mac or extension.")
    jobs = await hotdesk.reprovision(request.config_dict[CORE], mac, extension, _source(request))
    return web.json_response({"jobs": jobs}, status=202)


def create_hooks_app() -> web.Application:
    app = web.Application(middlewares=[json_errors, signed])
    app.add_routes(routes)
    return app

"""``GET /api/v1/pbx/*``: what the PBX reads, signed with the hooks' shared secret.

The PBX has no bearer token: it signs like the hooks, ``X-Provisioner-Signature: t=<unix
seconds>,v1=<hex HMAC-SHA256(secret, "<t>.")>`` (the body is empty). Reads may be repeated
within the signature's 300 s, so they are not refused as replays.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from provisioner import pbx
from provisioner.web.errors import json_errors
from provisioner.web.hooks import verify_signature
from provisioner.web.keys import CORE

routes = web.RouteTableDef()


@web.middleware
async def signed_reads(request: web.Request, handler: Handler) -> web.StreamResponse:
    await verify_signature(request, refuse_replays=False)
    return await handler(request)


@routes.get("/extensions/{extension}")
async def extension_accounts(request: web.Request) -> web.Response:
    extension = request.match_info["extension"]
    accounts = await pbx.extension_accounts(request.config_dict[CORE], extension)
    return web.json_response(
        {
            "extension": extension,
            "accounts": [
                {
                    "username": a.username,
                    "domain": a.domain,
                    "mac": a.mac,
                    "slot": a.slot,
                    "hotdesk": a.hotdesk,
                    "contact": a.contact,
                }
                for a in accounts
            ],
        }
    )


def create_pbx_app() -> web.Application:
    app = web.Application(middlewares=[json_errors, signed_reads])
    app.add_routes(routes)
    return app

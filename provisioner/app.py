"""The aiohttp application factory: one root app, one sub-application per audience."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web

from provisioner.core import open_core
from provisioner.settings import Settings
from provisioner.web.api import create_api_app
from provisioner.web.errors import error_response, json_errors
from provisioner.web.keys import CORE, SETTINGS

log = logging.getLogger(__name__)

# JSON bodies are small; phones never upload. Caps what an unauthenticated client can make us read.
MAX_BODY_BYTES = 64 * 1024


async def _core_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_core(app[SETTINGS]) as core:
        app[CORE] = core
        yield


async def healthz(request: web.Request) -> web.Response:
    try:
        async with request.config_dict[CORE].pool.acquire(timeout=5) as conn:
            await conn.fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("health check failed: %s", type(exc).__name__)
        return error_response(503, "database_unreachable", "The database is not reachable.")
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    """Build the whole service; ``settings.database_url`` must already be resolved."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_core_ctx)
    app.router.add_get("/healthz", healthz)
    app.add_subapp("/api/v1", create_api_app())
    return app

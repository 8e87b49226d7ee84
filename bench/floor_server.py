"""Calibration for ``fetch.py``: the cheapest aiohttp app of the same shape as the phones' endpoint.

One process, uvloop, a ``web.Application`` with one route that answers the file's bytes from a
dict; no authentication, no access log, no fetch records. Whatever the service spends above this
is the service's own work; this itself is what one aiohttp process costs on the machine now.

    python bench/floor_server.py PORT FILES_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    files = {path.name: path.read_bytes() for path in directory.iterdir()}

    async def fetch(request: web.Request) -> web.Response:
        body = files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body, headers={"Content-Type": "text/plain; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/provisioning/{name}", fetch)
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()

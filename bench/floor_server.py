"""Calibration for ``fetch.py``: the cheapest servers of the same shape as the phones' endpoint.

Default: one process, uvloop, a ``web.Application`` with one route that answers the file's bytes
from a dict; no authentication, no access log, no fetch records. Whatever the service spends
above this is the service's own work; this itself is what one aiohttp process costs here.

``--protocol N``: the floor of the lean phones' server's design (``web/phoneserver.py``), in N
processes sharing the port as the service's phones' processes do: an ``asyncio.Protocol`` on
uvloop feeding aiohttp's C parser, answering each request with the file's bytes and the same
header lines, written in one ``transport.write``. No authentication, no identification, no fetch
record: the throughput the service would reach if ``answer()`` cost nothing.

    python bench/floor_server.py PORT FILES_DIR [--protocol N]
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    files = {path.name: path.read_bytes() for path in directory.iterdir()}
    if len(sys.argv) > 4 and sys.argv[3] == "--protocol":
        serve_protocol(port, files, int(sys.argv[4]))
        return

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


def serve_protocol(port: int, files: dict[str, bytes], processes: int) -> None:
    import asyncio
    import ctypes
    import os
    import signal
    import socket
    import time
    from email.utils import formatdate

    import uvloop
    from aiohttp.http import SERVER_SOFTWARE
    from aiohttp.http_parser import HttpRequestParser

    children: list[int] = []
    for _ in range(processes - 1):
        child = os.fork()
        if child == 0:
            # A child serves too, on its own socket bound with SO_REUSEPORT, until the parent
            # is gone (PR_SET_PDEATHSIG = 1).
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)
            children.clear()
            break
        children.append(child)

    def stop(*_: object) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = HttpRequestParser(
                self,  # type: ignore[arg-type]
                asyncio.get_running_loop(),
                2**20,
                max_line_size=8190,
                max_field_size=8190,
                max_headers=128,
            )

        def data_received(self, data: bytes) -> None:
            messages, _, _ = self.parser.feed_data(data)
            for message, _payload in messages:
                name = message.url.path.rpartition("/")[2]
                body = files.get(name)
                if body is None:
                    self.transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                head = (
                    "HTTP/1.1 200 OK\r\n"
                    'ETag: "0123456789abcdef"\r\nCache-Control: no-cache\r\n'
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"Date: {formatdate(int(time.time()), usegmt=True)}\r\n"
                    f"Server: {SERVER_SOFTWARE}\r\n\r\n"
                )
                self.transport.write(head.encode() + body)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        server = await loop.create_server(Protocol, sock=sock, backlog=1024)
        await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main()

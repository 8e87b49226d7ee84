"""The lean phones' server: ``/provisioning/`` only, on ``PROVISIONER_PHONES_LISTEN``.

A boot storm must not need a bigger box, so this listener has no framework on its hot path: an
:class:`asyncio.Protocol` feeds the bytes to aiohttp's HTTP/1.1 parser (llhttp, in C), hands
each request to :func:`provisioner.web.phones.answer` (the same decision the main application's
route makes) and writes the :class:`~provisioner.web.phones.Reply` as bytes. It writes no access
log line per fetch, and runs in several processes sharing the port (``SO_REUSEPORT``):
``provisioner serve`` serves it in its own process and starts ``PROVISIONER_PHONES_PROCESSES -
1`` more ``provisioner phones-server`` processes, restarting any that dies.

aiohttp's own low-level server (``web.Server``) cost ~128 µs of CPU per request on the
benchmark machine before any work of ours (bench/README.md); this one answers a whole fetch in
less. What it keeps of an HTTP server: keep-alive and pipelining (answers in request order),
``Connection: close`` and HTTP/1.0, HEAD, aiohttp's size limits on the request line and
headers (a malformed or oversized request gets a 400 and the connection closes, logged as one
DEBUG line), a deadline for a request's head (a client trickling bytes cannot hold a
connection) and for idle keep-alive connections, back-pressure (no reading while the socket's
send buffer is full), TLS, and a graceful close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import ssl
import time
from collections import deque
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import Any, cast

from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD

from provisioner.children import KeptChild, child_env
from provisioner.core import open_core
from provisioner.phoneauth import Phones
from provisioner.settings import Settings
from provisioner.signals import stop_requested
from provisioner.web.errors import quiet_malformed_requests
from provisioner.web.phones import Asked, Reply, answer, error_reply, open_phones

log = logging.getLogger(__name__)

#: aiohttp's limits (its server's defaults, which the main listener applies): a request line or
#: one header of at most 8190 bytes, at most 128 headers.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128
KEEPALIVE_TIMEOUT = 75.0
"""Seconds an idle keep-alive connection stays open (aiohttp's default before 3.14)."""
REQUEST_TIMEOUT = 15.0
"""Seconds a request's head may take from its first byte (a new connection's first request:
from the connection): what a slow or malicious client can hold a connection for."""
SHUTDOWN_TIMEOUT = 10.0
"""Seconds a graceful close waits for the answers in progress before dropping connections."""
_BODY_LIMIT = 2**20
"""A body's bytes the parser may buffer: phones send none, and a request with one is the
connection's last, so at most what one read returns (256 KiB) is ever held."""


class _UnreadBodies:
    """The protocol the parser gives a request body's ``StreamReader`` for flow control:
    nobody reads a body here (a request with one is the connection's last, see
    :data:`_BODY_LIMIT`), so there is nothing to pause or resume."""

    connected = True
    _reading_paused = False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


_UNREAD_BODIES = _UnreadBodies()

_METHOD_NOT_ALLOWED = error_reply(
    405, "method_not_allowed", "Phones only GET.", [("Allow", "GET, HEAD")]
)
_INTERNAL_ERROR = error_reply(500, "internal_error", "Internal error.")
_MALFORMED = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 11\r\nConnection: close\r\n\r\nBad Request"
)

_status_lines: dict[tuple[HttpVersion, int], str] = {}


def _status_line(version: HttpVersion, status: int) -> str:
    line = _status_lines.get((version, status))
    if line is None:
        phrase = HTTPStatus(status).phrase
        line = _status_lines[version, status] = (
            f"HTTP/{version.major}.{version.minor} {status} {phrase}\r\n"
        )
    return line


class _Stamp:
    """``Date`` and ``Server`` header lines, formatted once a second."""

    second = 0
    lines = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second = second
            cls.lines = f"Date: {formatdate(second, usegmt=True)}\r\nServer: {SERVER_SOFTWARE}\r\n"
        return cls.lines


def serialise(reply: Reply, version: HttpVersion, *, head: bool, keep_alive: bool) -> bytes:
    """``reply`` as an HTTP/1.x response, headers laid out as aiohttp's server writes them.

    Built per response from the reply's shared strings (no per-file byte blocks: memory per
    device counts, bench/README.md)."""
    status, body = reply.status, reply.body
    text = _status_line(version, status)
    for name, value in reply.headers:  # a loop: a generator in join() cost a fifth more
        text += f"{name}: {value}\r\n"
    if status != 304:
        text += f"Content-Length: {len(body)}\r\n"
    text += _Stamp.now()
    if keep_alive:
        if version == HttpVersion10:
            text += "Connection: keep-alive\r\n"
    elif version == HttpVersion11:
        text += "Connection: close\r\n"
    data = (text + "\r\n").encode()
    return data if head or status == 304 else data + body


class PhonesServer:
    """The phones' listener of one process: its sockets and open connections."""

    def __init__(
        self,
        phones: Phones,
        settings: Settings,
        *,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.phones = phones
        self.settings = settings
        self.keepalive_timeout = keepalive_timeout
        self.request_timeout = request_timeout
        self.closing = False
        self.connections: set[_Connection] = set()
        self.tasks: set[asyncio.Task[Reply]] = set()
        self._server: asyncio.Server | None = None
        self._emptied = asyncio.Event()

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self, loop),
            host,
            port,
            ssl=ssl_context,
            reuse_port=True,
            backlog=128,  # aiohttp's
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, close idle connections, let the others send the answers they owe
        (for at most :data:`SHUTDOWN_TIMEOUT`), then drop what is left."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.finish()
        self.forget()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emptied.wait(), SHUTDOWN_TIMEOUT)
        for connection in list(self.connections):
            connection.abort()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def forget(self, item: _Connection | asyncio.Task[Reply] | None = None) -> None:
        """``item`` is done; once closing, say when nothing is left."""
        if isinstance(item, asyncio.Task):
            self.tasks.discard(item)
        elif item is not None:
            self.connections.discard(item)
        if self.closing and not self.connections and not self.tasks:
            self._emptied.set()

    async def cleanup(self) -> None:
        await self.close()


_Queued = tuple[RawRequestMessage, bool] | HttpProcessingError
"""A parsed request (and whether it had a body), or why the bytes after the last one were
refused."""


class _Connection(asyncio.Protocol):
    """One client connection: parse, answer in order, write."""

    __slots__ = (
        "_deadline",
        "_done",
        "_last_active",
        "_loop",
        "_parser",
        "_peer",
        "_queue",
        "_read_paused",
        "_server",
        "_started",
        "_timer",
        "_transport",
        "_waiting",
        "_write_paused",
    )

    def __init__(self, server: PhonesServer, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._loop = loop
        self._parser = HttpRequestParser(
            cast(Any, _UNREAD_BODIES),
            loop,
            _BODY_LIMIT,
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
        )
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None
        self._queue: deque[_Queued] = deque()
        self._waiting: asyncio.Task[Reply] | None = None
        """The answer being made for the first queued request (discovery asks the database)."""
        self._done = False
        """Read nothing more: answer what is queued, then close."""
        self._read_paused = False
        self._write_paused = False
        self._last_active = 0.0
        self._started: float | None = None
        """When the request now arriving started (None: between requests)."""
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclasses of asyncio's, only alike.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, list | tuple) else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._server.connections.add(self)
        self._last_active = self._started = self._loop.time()
        self._arm(self._started + self._server.request_timeout)
        if self._server.closing:
            self.finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._transport = None
        self._queue.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        now = self._last_active = self._loop.time()
        queue = self._queue
        try:
            messages, _, _ = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._done = True
            queue.append(exc)
        else:
            for message, payload in messages:
                has_body = payload is not EMPTY_PAYLOAD
                queue.append((message, has_body))
                if has_body:
                    self._done = True
                    break
            # A request's head ends with an empty line: bytes ending otherwise are the start
            # of the next one, on the clock from now (a body's are the connection's last).
            if messages and data.endswith(b"\r\n\r\n"):
                self._started = None
            elif self._started is None:
                self._started = now
                if self._deadline > now + self._server.request_timeout:
                    self._arm(now + self._server.request_timeout)
        self._work()

    def eof_received(self) -> bool:
        self._done = True
        # Keep the socket open for the answers still owed; close now when none is.
        return bool(self._queue) or self._waiting is not None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._last_active = self._loop.time()
        self._work()

    # --- the server's side ---

    def finish(self) -> None:
        """Answer what was asked, read nothing more, close (graceful shutdown)."""
        self._done = True
        self._work()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _work(self) -> None:
        """Answer the queued requests in order while nothing holds them up (an answer being
        made, a full send buffer); read only while nothing does."""
        transport = self._transport
        if transport is None:
            return
        queue = self._queue
        while queue and self._waiting is None and not self._write_paused:
            item = queue.popleft()
            if isinstance(item, HttpProcessingError):
                # The client got its 400; a junk request is worth no more than a DEBUG line.
                log.debug("malformed request refused: %s", type(item).__name__)
                queue.clear()
                transport.write(_MALFORMED)
                break
            self._answer(transport, *item)
        if self._done and not queue and self._waiting is None:
            if not self._write_paused:
                transport.close()  # else once what is buffered is sent: resume_writing
            return
        busy = bool(queue) or self._waiting is not None or self._write_paused
        if busy != self._read_paused:
            self._read_paused = busy
            if busy:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _answer(self, transport: asyncio.Transport, message: RawRequestMessage, body: bool) -> None:
        keep_alive = not (message.should_close or body or (self._done and not self._queue))
        if not keep_alive:
            self._done = True
        head = message.method == "HEAD"
        if not head and message.method != "GET":
            transport.write(
                serialise(_METHOD_NOT_ALLOWED, message.version, head=False, keep_alive=keep_alive)
            )
            return
        url = message.url
        if url.absolute:
            url = url.relative()
        server = self._server
        try:
            answered = answer(
                server.phones,
                server.settings,
                Asked(message.method, url, message.headers, self._peer),
            )
        except Exception:
            log.exception("phones' request %s %s failed", message.method, url.path)
            self._done, keep_alive, answered = True, False, _INTERNAL_ERROR
        if isinstance(answered, Reply):
            transport.write(serialise(answered, message.version, head=head, keep_alive=keep_alive))
            return
        task = self._waiting = asyncio.ensure_future(answered)
        server.tasks.add(task)
        task.add_done_callback(partial(self._answered, message, head, keep_alive))

    def _answered(
        self, message: RawRequestMessage, head: bool, keep_alive: bool, task: asyncio.Task[Reply]
    ) -> None:
        self._server.forget(task)
        self._waiting = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            reply = task.result()
        else:
            log.error("phones' request %s %s failed", message.method, message.path, exc_info=exc)
            self._done, keep_alive, reply = True, False, _INTERNAL_ERROR
        if self._transport is not None:
            self._transport.write(
                serialise(reply, message.version, head=head, keep_alive=keep_alive)
            )
            self._last_active = self._loop.time()
        self._work()

    # --- deadlines ---

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._deadline = when
        self._timer = self._loop.call_at(when, self._check_time)

    def _check_time(self) -> None:
        """Close a connection whose request is late or that sat idle too long; otherwise look
        again at its next deadline (one timer a connection, moved only when it fires)."""
        self._timer = None
        if self._transport is None:
            return
        now = self._loop.time()
        server = self._server
        if self._waiting is not None or self._queue:
            deadline = now + server.request_timeout  # ours to answer, not the client's fault
        elif self._started is not None:
            deadline = self._started + server.request_timeout
        else:
            deadline = self._last_active + server.keepalive_timeout
        if now >= deadline:
            self._done = True
            if self._write_paused:
                self._transport.abort()
            else:
                self._transport.close()
            return
        self._arm(deadline)


async def start_phones_site(
    phones: Phones, settings: Settings, ssl_context: ssl.SSLContext | None
) -> PhonesServer:
    assert settings.phones_listen is not None
    server = PhonesServer(phones, settings)
    await server.start(settings.phones_listen.host, settings.phones_listen.port, ssl_context)
    return server


async def run_standalone(settings: Settings, ssl_context: ssl.SSLContext | None) -> None:
    """One extra phones' process: its own small pool, cache, listener and recorder."""
    quiet_malformed_requests()
    async with (
        open_core(settings, run_migrations=False, pool_size=(1, 2)) as core,
        open_phones(core) as phones,
    ):
        server = await start_phones_site(phones, settings, ssl_context)
        # Objects alive after start-up stay; keep the collector from rescanning them.
        gc.collect()
        gc.freeze()
        stop = stop_requested()
        try:
            await stop.wait()
        finally:
            await server.close()


class Children:
    """Keeps ``count`` ``provisioner phones-server`` processes running until stopped."""

    def __init__(self, count: int, database_url: str) -> None:
        env = child_env(database_url)
        self._children = [
            KeptChild(("phones-server",), env, name="phones' process", log=log)
            for _ in range(count)
        ]

    def start(self) -> None:
        for child in self._children:
            child.start()

    async def stop(self) -> None:
        await asyncio.gather(*(child.stop() for child in self._children))

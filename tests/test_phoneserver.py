"""The lean phones' server (:mod:`provisioner.web.phoneserver`) over a real socket.

It runs in the test's process on the application's own phones' state (cache, limiter, nonces),
so the same request can be put to both listeners: the main application's route and the lean
server must answer alike. Then the HTTP edge cases the lean server handles itself: pipelining,
HEAD, HTTP/1.0, ``Connection: close``, keep-alive, 405, malformed and oversized requests, a
client that trickles its request, graceful close.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from provisioner.web.keys import PHONES, SETTINGS
from provisioner.web.phoneserver import PhonesServer
from tests.test_phones import (
    BOOTSTRAP,
    PHONES_UNDER_TEST,
    Api,
    Client,
    api,  # noqa: F401
    phones_client,  # noqa: F401
    provision,
)

T54W = PHONES_UNDER_TEST[0]


# pytest-asyncio 1.x's replacement (its loop-factories hook) parametrises every test of the
# directory; this module alone runs on both loops.
pytestmark = pytest.mark.filterwarnings(
    'ignore:Overriding the "event_loop_policy" fixture is deprecated'
)


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Both loops the service runs on (``provisioner serve`` takes uvloop when installed)."""
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.EventLoopPolicy()  # type: ignore[no-any-return]
    return asyncio.DefaultEventLoopPolicy()


PATH = f"/provisioning/{T54W.line_file}"


@dataclass
class Answer:
    version: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for n, v in self.headers if n.lower() == name.lower()]
        return found[0] if found else None


def request(
    method: str = "GET",
    path: str = PATH,
    *,
    version: str = "1.1",
    auth: str | None = BOOTSTRAP,
    extra: str = "",
) -> bytes:
    text = f"{method} {path} HTTP/{version}\r\nHost: phones.example.net\r\n"
    text += f"User-Agent: {T54W.user_agent}\r\n"
    if auth is not None:
        text += f"Authorization: {auth}\r\n"
    return (text + extra + "\r\n").encode()


async def read_answer(reader: asyncio.StreamReader, *, head: bool = False) -> Answer:
    status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[:-2]
    version, status, _ = status_line.split(" ", 2)
    headers = [(n, v) for n, _, v in (line.partition(": ") for line in lines)]
    found = [v for n, v in headers if n.lower() == "content-length"]
    length = 0 if head or not found else int(found[0])
    return Answer(version, int(status), headers, await reader.readexactly(length))


async def ask(port: int, data: bytes, *, head: bool = False) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(read_answer(reader, head=head), 5)
    finally:
        writer.close()


async def closed(reader: asyncio.StreamReader, within: float = 5) -> bool:
    return await asyncio.wait_for(reader.read(), within) == b""


@pytest.fixture
async def lean(phones_client: Client, api: Api) -> AsyncIterator[PhonesServer]:  # noqa: F811
    """The lean server on the app's phones' state, with one provisioned Yealink."""
    await provision(api, T54W)
    server = PhonesServer(
        phones_client.app[PHONES],
        phones_client.app[SETTINGS],
        keepalive_timeout=2.0,
        request_timeout=0.5,
    )
    await server.start("127.0.0.1", 0, None)
    yield server
    await server.close()


def comparable(answer: Answer) -> tuple[str, int, list[tuple[str, str]], bytes]:
    """What both listeners must agree on: all but the date and a Digest nonce (a timestamp)."""
    headers = sorted(
        (name, re.sub(r'nonce="[^"]*"', 'nonce="…"', value))
        for name, value in answer.headers
        if name not in ("Date",)
    )
    return answer.version, answer.status, headers, answer.body


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(request(), id="200"),
        pytest.param(request("HEAD"), id="head"),
        pytest.param(request(auth=None), id="401-challenge"),
        pytest.param(request(auth="Basic Ym9vdDp3cm9uZw=="), id="401-wrong-password"),
        pytest.param(request(path="/provisioning/../etc/passwd"), id="404-path"),
        pytest.param(request(path="/elsewhere"), id="404-outside"),
        pytest.param(request(version="1.0"), id="http-1.0"),
        pytest.param(request(extra="Connection: close\r\n"), id="connection-close"),
        pytest.param(request(version="1.0", extra="Connection: keep-alive\r\n"), id="1.0-ka"),
        pytest.param(request(path=f"{PATH}?x=1"), id="query"),
    ],
)
async def test_both_listeners_answer_alike(
    lean: PhonesServer,
    phones_client: Client,  # noqa: F811
    data: bytes,
) -> None:
    assert phones_client.port is not None
    head = data.startswith(b"HEAD")
    main = await ask(phones_client.port, data, head=head)
    ours = await ask(lean.port, data, head=head)
    assert comparable(ours) == comparable(main)


async def test_304_and_429_alike(lean: PhonesServer, phones_client: Client) -> None:  # noqa: F811
    assert phones_client.port is not None
    etag = (await ask(lean.port, request())).header("ETag")
    assert etag
    conditional = request(extra=f"If-None-Match: {etag}\r\n")
    main, ours = await ask(phones_client.port, conditional), await ask(lean.port, conditional)
    assert ours.status == 304
    assert (ours.body, ours.header("Content-Length")) == (b"", None)
    assert comparable(ours) == comparable(main)
    # Ten failures from this address (the limiter is shared): both refuse it alike.
    for _ in range(10):
        assert (await ask(lean.port, request(auth="Basic Ym9vdDp3cm9uZw=="))).status == 401
    main, ours = await ask(phones_client.port, request()), await ask(lean.port, request())
    assert ours.status == 429
    assert comparable(ours) == comparable(main)


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    lean: PhonesServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(
        request() + request("HEAD") + request(path="/nowhere") + request("POST") + request()
    )
    got = [
        await read_answer(reader),
        await read_answer(reader, head=True),
        await read_answer(reader),
        await read_answer(reader),
        await read_answer(reader),
    ]
    assert [a.status for a in got] == [200, 200, 404, 405, 200]
    assert got[1].body == b""
    assert got[1].header("Content-Length") == str(len(got[0].body))
    assert got[3].header("Allow") == "GET, HEAD"
    assert got[4].body == got[0].body
    # Still open: keep-alive reuse.
    writer.write(request())
    assert (await read_answer(reader)).status == 200
    writer.close()


async def test_requests_split_across_reads_are_answered(lean: PhonesServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    data = request() + request()
    for cut in (10, 70, len(request()) + 3):
        writer.write(data[:cut])
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(data[cut:])
        assert (await read_answer(reader)).status == 200
        assert (await read_answer(reader)).status == 200
    writer.close()


async def test_http_1_0_and_connection_close_end_the_connection(lean: PhonesServer) -> None:
    for data, version, connection in (
        (request(version="1.0"), "HTTP/1.0", None),
        (request(extra="Connection: close\r\n"), "HTTP/1.1", "close"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
        writer.write(data)
        got = await read_answer(reader)
        assert (got.version, got.status, got.header("Connection")) == (version, 200, connection)
        assert await closed(reader)
        writer.close()


async def test_a_new_phone_is_discovered_on_the_lean_server_in_order(lean: PhonesServer) -> None:
    """Discovery's answer waits for the database: the requests behind it wait their turn."""
    mac = "001565d15c71"
    ua = f"Yealink SIP-T54W 96.86.0.70 {':'.join(mac[i : i + 2] for i in range(0, 12, 2))}"
    new = request(path=f"/provisioning/{mac}.cfg").replace(T54W.user_agent.encode(), ua.encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(new + request(path="/nowhere") + new)
    got = [await read_answer(reader) for _ in range(3)]
    assert [a.status for a in got] == [200, 404, 200]
    assert got[0].body == got[2].body
    assert f"{mac}".encode() in got[0].body or got[0].body
    writer.write(request("GET", f"/provisioning/{mac}.cfg", extra="Connection: close\r\n"))
    writer.close()


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(b"NOT A REQUEST\r\n\r\n", id="not-http"),
        pytest.param(b"GET /\x00bad HTTP/1.1\r\nHost: x\r\n\r\n", id="nul"),
        pytest.param(request(extra="X-Big: " + "a" * 9000 + "\r\n"), id="field-too-long"),
        pytest.param(request(path="/" + "a" * 9000), id="line-too-long"),
        pytest.param(
            request(extra="".join(f"X-{i}: y\r\n" for i in range(130))), id="too-many-headers"
        ),
        pytest.param(request(extra=f"User-Agent: {T54W.user_agent}\r\n"), id="duplicate-ua"),
    ],
)
async def test_malformed_or_oversized_requests_get_400_and_close(
    lean: PhonesServer, junk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "provisioner.web.phoneserver")
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(request())
    assert (await read_answer(reader)).status == 200
    writer.write(junk)
    got = await read_answer(reader)
    assert (got.status, got.header("Connection")) == (400, "close")
    assert await closed(reader)
    writer.close()
    ours = [r for r in caplog.records if r.name == "provisioner.web.phoneserver"]
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in ours] == [
        (logging.DEBUG, "malformed request refused")
    ]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


async def test_a_request_trickled_too_slowly_is_cut_off(lean: PhonesServer) -> None:
    """Slowloris: bytes keep coming, the request never completes within its deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    started = asyncio.get_running_loop().time()
    sent = await trickle(writer, reader, request(), every=0.05)
    assert sent < len(request())
    assert await closed(reader)
    assert asyncio.get_running_loop().time() - started < 2.0  # request_timeout 0.5 s
    writer.close()


async def trickle(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, data: bytes, every: float
) -> int:
    """Send ``data`` a byte at a time; how many bytes went before the server closed."""
    for sent in range(len(data)):
        if reader.at_eof():
            return sent
        try:
            writer.write(data[sent : sent + 1])
            await writer.drain()
        except ConnectionError:
            return sent
        await asyncio.sleep(every)
    return len(data)


async def test_a_silent_connection_is_closed_and_an_idle_one_later(lean: PhonesServer) -> None:
    loop = asyncio.get_running_loop()
    reader, _ = await asyncio.open_connection("127.0.0.1", lean.port)
    started = loop.time()
    assert await closed(reader)
    assert 0.4 < loop.time() - started < 1.5  # request_timeout 0.5 s
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(request())
    assert (await read_answer(reader)).status == 200
    started = loop.time()
    assert await closed(reader)
    assert 1.8 < loop.time() - started < 3.5  # keepalive_timeout 2 s
    writer.close()


async def test_a_request_with_a_body_is_answered_and_ends_the_connection(
    lean: PhonesServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(request(extra="Content-Length: 5\r\n") + b"hello" + request())
    got = await read_answer(reader)
    assert (got.status, got.header("Connection")) == (200, "close")
    assert await closed(reader)
    writer.close()


async def test_close_answers_what_is_asked_then_closes_idle_connections(
    lean: PhonesServer,
) -> None:
    port = lean.port
    idle_reader, _ = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(request())
    assert (await read_answer(reader)).status == 200
    await lean.close()
    assert await closed(idle_reader, 1)
    assert await closed(reader, 1)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)

"""What the lean phones' server's Python costs per fetch, without sockets or a database.

    python bench/answer_cost.py [--devices 2000] [--requests 60000] [--profile]
                                [--check-every-request]

In-process: a device cache filled directly (Yealink-like devices, one ~3 KB config each, packed
against a sample of its kind as the real cache packs them, a Basic credential each), 64
connections of ``web/phoneserver.py``'s protocol on fake transports that count the bytes
written, and authenticated ``GET /provisioning/<mac>.cfg`` requests fed to them in rotation
through the devices, as ``fetch.py``'s wrk script sends them. What is measured is this
process's CPU time per request: the parser, ``answer()``, the reply's bytes, the fetch record;
not the event loop's I/O nor the kernel's (``fetch.py``'s protocol floor shows those). Every
answer is checked to be a 200 with the device's body.

CPU time, not wall time: a busy machine changes it little, so a change to the hot path can be
judged here in seconds while other work runs. ``--profile`` prints cProfile's top functions
(profiling doubles the time; read it for proportions).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import pstats
import sys
import time
from typing import Any

from provisioner.phoneauth import FailureLimiter, NonceSigner, Phones
from provisioner.phonecache import (
    CachedDevice,
    DeviceCache,
    FetchRecorder,
    Packing,
    served_file,
)
from provisioner.settings import Settings
from provisioner.web.phoneserver import PhonesServer, _Connection

CONNECTIONS = 64


class CountingTransport:
    """What the protocol uses of a transport; keeps the last answer to check it."""

    def __init__(self) -> None:
        self.written = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def config(index: int) -> bytes:
    lines = [
        "#!version:1.0.0.1",
        f"account.1.label = {2_000_000 + index}",
        f"account.1.user_name = {2_000_000 + index}",
        f"account.1.password = secret{index:08d}x",
        *(f"linekey.{k}.type = 15\nlinekey.{k}.line = 1" for k in range(1, 60)),
    ]
    return ("\n".join(lines) + "\n").encode()


def fill(cache: DeviceCache, devices: int) -> list[tuple[bytes, bytes]]:
    """The cache's devices, and per device its request and its body."""
    packing = Packing(config(devices))  # a sample of the kind, as a full load picks one
    requests = []
    for index in range(devices):
        mac = f"001565{index:06x}"
        username, password = mac, f"password{index:08d}"  # as the real cache: the MAC
        body = config(index)
        files = {"{mac}.cfg": served_file(f"{mac}.cfg", body, f'"{index:016x}"', packing)}
        device = CachedDevice(
            mac, "yealink", 1, files, cache.hasher.credential(username, password), False
        )
        cache.devices[mac] = device
        authorization = base64.b64encode(f"{username}:{password}".encode()).decode()
        user_agent = f"Yealink SIP-T54W 96.86.0.100 00:15:65:{mac[6:8]}:{mac[8:10]}:{mac[10:]}"
        request = (
            f"GET /provisioning/{mac}.cfg HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
            f"User-Agent: {user_agent}\r\nAuthorization: Basic {authorization}\r\n\r\n"
        )
        requests.append((request.encode(), body))
    return requests


async def measure(devices: int, count: int, profile: bool, keep: bool) -> dict[str, Any]:
    cache = DeviceCache(vault=None)  # type: ignore[arg-type]  # never loads from a database
    requests = fill(cache, devices)
    phones = Phones(
        cache=cache,
        recorder=FetchRecorder(None),  # type: ignore[arg-type]  # queued, never flushed
        limiter=FailureLimiter(),
        nonces=NonceSigner(b"n" * 32),
    )
    if not keep:
        phones.verified.max_bytes = 0  # every request checked in full, as before it was kept
    server = PhonesServer(phones, Settings.from_env({}))
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(CONNECTIONS):
        connection, transport = _Connection(server, loop), CountingTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        connections.append((connection, transport))
    # Two rounds first (as fetch.py's warm-up): identification is cached after a device's first
    # authenticated fetch, the verified request after its second. Every answer is checked then.
    for index, (request, body) in enumerate(requests * 2):
        connection, transport = connections[index % CONNECTIONS]
        connection.data_received(request)
        assert transport.last.startswith(b"HTTP/1.1 200 OK\r\n"), transport.last[:200]
        assert transport.last.endswith(b"\r\n\r\n" + body)
    assert len(phones.verified) == (devices if keep else 0)
    profiler = cProfile.Profile() if profile else None
    written = sum(t.written for _, t in connections)
    started = time.process_time()
    if profiler:
        profiler.enable()
    for index in range(count):
        connections[index % CONNECTIONS][0].data_received(requests[index % devices][0])
    if profiler:
        profiler.disable()
    seconds = time.process_time() - started
    written = sum(t.written for _, t in connections) - written
    expected = sum(len(requests[i % devices][1]) for i in range(count))
    assert written > expected, "every request answered with its body"
    for connection, _ in connections:
        connection.connection_lost(None)
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    return {
        "devices": devices,
        "requests": count,
        "cpu_us_per_request": round(seconds / count * 1e6, 2),
        "verified_requests_kept": keep,
        "profiled": profile,
        "python": sys.version.split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    parser.add_argument(
        "--check-every-request",
        action="store_true",
        help="keep no verified request (phonecache.VerifiedFetches): the full check each time",
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    print(
        json.dumps(
            run(measure(args.devices, args.requests, args.profile, not args.check_every_request)),
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

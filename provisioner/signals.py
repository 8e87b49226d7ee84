"""Talking with the operator's service manager: its request to stop, and (systemd,
``Type=notify``) telling it the service is ready or stopping."""

from __future__ import annotations

import asyncio
import os
import signal
import socket


def stop_requested() -> asyncio.Event:
    """An event set on SIGINT or SIGTERM; the process then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


def notify_service_manager(*states: str) -> None:
    """Send ``states`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``) to systemd's notification
    socket, when the process runs under it as ``Type=notify`` (``NOTIFY_SOCKET`` is set)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall("\n".join(states).encode())

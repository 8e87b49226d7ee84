"""Talking with the operator's service manager: its request to stop, and (systemd,
``Type=notify``) telling it the service is ready or stopping."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import sys


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


PARENT_ENV = "PROVISIONER_PARENT_PID"
"""Set by ``provisioner serve`` for the processes it starts (phones' processes, push worker)."""

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a process ``serve`` started (:data:`PARENT_ENV`): have the kernel kill it when
    ``serve`` dies, as the threads of one process die together. ``serve`` stops its children
    on SIGTERM itself; this is for the death it cannot handle (SIGKILL, the OOM killer), after
    which a successor starts children of its own. Linux only; elsewhere nothing happens."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(parent):  # it died before the line above
        os.kill(os.getpid(), signal.SIGKILL)

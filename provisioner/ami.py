"""Making a device fetch now through Asterisk: the manager interface (AMI) action ``PJSIPNotify``.

Asterisk then sends the SIP NOTIFY itself, from the registrar the phone already trusts, to every
contact of the endpoint (VENDORS.md, "Resync").

Wire format: on connect the server sends one line ``Asterisk Call Manager/<version>``; after that
every message in either direction is ``Key: value`` lines ended by CRLF, terminated by an empty
line. A client message starts with ``Action:``; the server answers with ``Response: Success`` or
``Response: Error`` plus ``Message:``, echoing the action's ``ActionID``, and may send ``Event:``
messages at any time. Responses are matched to actions by ``ActionID`` rather than by order, so an
event in between, or the late answer to an action that already timed out, is never taken for
another caller's answer. The notifier logs in with ``Events: off``; a connection opened with an
event mask (:func:`connect`, used by the contact follower in ``contacts.py``) queues the events
for its owner instead of dropping them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from provisioner.notify import NotifyError, NotifyTarget

log = logging.getLogger(__name__)

DEFAULT_PORT = 5038
LOGOFF_SECONDS = 2.0
"""How long :meth:`AmiNotifier.close` waits for Asterisk's ``Goodbye`` before hanging up."""

Fields = Sequence[tuple[str, str]]
Message = dict[str, str]
"""A received message: header names lower-cased, the first value of each name."""


class AmiError(NotifyError):
    """Connecting or logging in to the manager interface failed; the message names the address
    and the user, never the secret."""


class ConnectionLost(Exception):
    """The connection ended (before the action's response arrived)."""


@dataclass(frozen=True)
class AmiAccount:
    """Where the manager interface is and whom to log in as: a parsed ``PROVISIONER_AMI_URL``."""

    host: str
    port: int
    username: str
    secret: str = field(repr=False)

    @classmethod
    def from_url(cls, url: str) -> AmiAccount:
        """Parse ``ami://user:secret@host[:5038]``; user and secret are URL-unquoted.

        Raises ValueError (never quoting the secret) for anything else.
        """
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ValueError("AMI URL: the port is not a number from 1 to 65535") from None
        if parts.scheme != "ami" or not parts.hostname or not parts.username:
            raise ValueError("AMI URL: expected ami://user:secret@host:5038")
        username = unquote(parts.username)
        secret = unquote(parts.password or "")
        if _has_line_break(username) or _has_line_break(secret):
            raise ValueError("AMI URL: user and secret must not contain line breaks")
        return cls(parts.hostname, port or DEFAULT_PORT, username, secret)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class AmiConnection:
    """One TCP connection to the manager interface: writes actions; a reader task answers them.

    Events are dropped unless the connection was opened with ``events=True``; then they queue, in
    the order received, for :meth:`next_events`.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, events: bool = False
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[Message | None] | None = asyncio.Queue() if events else None
        self.closed = False

    async def read_banner(self) -> str:
        line = await self._reader.readline()
        return line.decode("utf-8", "replace").strip()

    def start_reading(self) -> None:
        self._reader_task = asyncio.create_task(self._read_loop(), name="ami-reader")

    async def request(self, action: str, fields: Fields) -> Message:
        """Send one action and wait for the response carrying its ActionID."""
        if self.closed:
            raise ConnectionLost
        action_id = f"{self._prefix}-{next(self._ids)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            async with self._write_lock:
                self._writer.write(_encode(action, action_id, fields))
                await self._writer.drain()
            log.debug("AMI action %s sent (ActionID %s)", action, action_id)
            return await future
        except OSError:
            raise ConnectionLost from None
        finally:
            self._pending.pop(action_id, None)

    async def close(self) -> None:
        """Log off (best effort, briefly) and hang up."""
        if not self.closed:
            with contextlib.suppress(ConnectionLost, TimeoutError):
                async with asyncio.timeout(LOGOFF_SECONDS):
                    await self.request("Logoff", ())
        self.abort()
        if self._reader_task is not None:
            await asyncio.wait({self._reader_task})
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(LOGOFF_SECONDS):
                await self._writer.wait_closed()

    async def next_events(self, limit: int = 500) -> list[Message]:
        """Wait for events; return those received since the last call (at most ``limit``), oldest
        first. Raises :class:`ConnectionLost` once the connection ended and every event received
        before was returned."""
        assert self._events is not None, "this connection was opened without events"
        batch: list[Message] = []
        while len(batch) < limit and not (batch and self._events.empty()):
            message = await self._events.get()
            if message is None:
                self._events.put_nowait(None)  # the end stays the end for the next call
                if batch:
                    break
                raise ConnectionLost
            batch.append(message)
        return batch

    def abort(self) -> None:
        """Hang up now, without logging off; pending actions fail with :class:`ConnectionLost`."""
        if self._reader_task is not None:
            self._reader_task.cancel()
        self._lost()

    async def _read_loop(self) -> None:
        try:
            while (message := await _read_message(self._reader)) is not None:
                self._dispatch(message)
        except (OSError, ValueError) as exc:
            # ValueError: a line longer than the stream limit; the stream cannot be resynchronised.
            log.warning("AMI connection failed: %s", exc)
        finally:
            self._lost()

    def _dispatch(self, message: Message) -> None:
        if "response" not in message:
            if self._events is not None:
                self._events.put_nowait(message)
            else:
                log.debug("AMI event %s ignored", message.get("event", "(unnamed)"))
            return
        action_id = message.get("actionid", "")
        future = self._pending.get(action_id)
        if future is None or future.done():
            log.debug("AMI response for ActionID %r ignored: nobody waits for it", action_id)
            return
        future.set_result(message)

    def _lost(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()
            if self._events is not None:
                self._events.put_nowait(None)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost())


class AmiNotifier:
    """Notifier through an Asterisk manager interface, ``ami://user:secret@host[:5038]``.

    Logs in on first use and keeps that one connection for every later action; concurrent calls
    share it. A connection that dropped is replaced by the next call, and an action that was in
    flight on a connection found dead is sent once more on a new one (a second ``check-sync`` is
    harmless). After a failed connection attempt (unreachable, refused login, no answer) the next
    attempt is allowed only after ``backoff`` seconds, doubling per consecutive failure up to
    ``max_backoff``; calls in between fail at once with the last error instead of queueing, because
    the push worker already retries each job on its own schedule.

    :param url: the ``PROVISIONER_AMI_URL`` value; user and secret are URL-unquoted.
    :param timeout: seconds one :meth:`notify` may take in all, logging in included.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self._account = AmiAccount.from_url(url)
        self.host = self._account.host
        self.port = self._account.port
        self.username = self._account.username
        self.timeout = timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._connection: AmiConnection | None = None
        self._connecting: asyncio.Task[AmiConnection] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_error = ""
        self._closed = False

    @property
    def address(self) -> str:
        return self._account.address

    async def notify(self, target: NotifyTarget) -> str:
        """Ask Asterisk to send ``NOTIFY`` with ``Event: <target.event>`` to ``target.sip_user``.

        Returns ``AMI: <Asterisk's message>`` (``AMI: NOTIFY sent``); raises NotifyError with
        Asterisk's message when it refuses (``AMI: Unable to retrieve endpoint 201-x-1``).
        """
        if target.sip_user is None:
            raise NotifyError("no SIP account to notify through Asterisk")
        if _has_line_break(target.sip_user) or _has_line_break(target.event):
            raise NotifyError("the SIP account or event contains a line break")
        response = await self._action(
            "PJSIPNotify",
            [("Endpoint", target.sip_user), ("Variable", f"Event={_literal(target.event)}")],
        )
        return _result(response)

    async def ping(self) -> str:
        """Check that Asterisk answers, logging in first if needed; raise NotifyError if not."""
        return _result(await self._action("Ping", ()))

    async def close(self) -> None:
        """Log off (best effort) and close the connection; later calls raise NotifyError."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.wait({self._connecting})
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def _action(self, action: str, fields: Fields) -> Message:
        connection: AmiConnection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                connection, reused = await self._connected()
                try:
                    return await connection.request(action, fields)
                except ConnectionLost:
                    if not reused:
                        raise NotifyError(self._lost_message()) from None
                log.info("AMI connection to %s was lost; reconnecting", self.address)
                connection, _ = await self._connected()
                try:
                    return await connection.request(action, fields)
                except ConnectionLost:
                    raise NotifyError(self._lost_message()) from None
        except TimeoutError:
            if connection is not None and not connection.closed:
                # Silence on an open connection may mean the peer vanished without closing it
                # (a reboot, a firewall dropping state): it would swallow every later action too.
                log.warning("AMI: no answer from %s; dropping the connection", self.address)
                connection.abort()
            raise NotifyError(
                f"Asterisk at {self.address} did not answer within {self.timeout:g} s"
            ) from None

    async def _connected(self) -> tuple[AmiConnection, bool]:
        """The logged-in connection, and whether it was already open before this call."""
        if self._closed:
            raise NotifyError("the AMI notifier is closed")
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection, True
        if self._connecting is None:
            wait = self._retry_at - asyncio.get_running_loop().time()
            if wait > 0:
                raise NotifyError(f"{self._last_error} (next attempt in {wait:.1f} s)")
            self._connecting = asyncio.create_task(self._open(), name="ami-login")
            self._connecting.add_done_callback(self._opened)
        # Shielded: one caller's timeout must not abort the login the other callers wait for.
        return await asyncio.shield(self._connecting), False

    async def _open(self) -> AmiConnection:
        return await connect(self._account, within=self.timeout)

    def _opened(self, task: asyncio.Task[AmiConnection]) -> None:
        self._connecting = None
        if task.cancelled():
            return
        failure = task.exception()
        if failure is None:
            self._connection = task.result()
            self._failures = 0
            self._retry_at = 0.0
            return
        self._failures += 1
        delay = min(self._max_backoff, self._backoff * 2 ** (self._failures - 1))
        self._retry_at = asyncio.get_running_loop().time() + delay
        self._last_error = str(failure)
        log.warning("%s; next attempt in %.1f s", failure, delay)

    def _lost_message(self) -> str:
        return f"Asterisk at {self.address} closed the AMI connection before answering"


async def connect(account: AmiAccount, *, within: float, events: str = "off") -> AmiConnection:
    """Connect and log in within ``within`` seconds, with the event mask ``events`` (Login's
    ``Events``: ``off``, ``on``, or classes such as ``system``); with any mask but ``off`` the
    connection queues events for :meth:`AmiConnection.next_events`. Every failure is an
    :class:`AmiError`."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(account.host, account.port)
            connection = AmiConnection(reader, writer, events=events.lower() != "off")
            try:
                await _log_in(connection, account, events)
            except BaseException:
                connection.abort()
                raise
    except TimeoutError:
        raise AmiError(
            f"Asterisk at {account.address} did not complete the AMI login within {within:g} s"
        ) from None
    except OSError as exc:
        raise AmiError(f"cannot reach Asterisk at {account.address}: {_reason(exc)}") from None
    except ConnectionLost:
        raise AmiError(
            f"Asterisk at {account.address} closed the AMI connection during the login"
        ) from None
    return connection


async def _log_in(connection: AmiConnection, account: AmiAccount, events: str) -> None:
    banner = await connection.read_banner()
    if "Call Manager/" not in banner:
        raise AmiError(f"{account.address} does not greet as an Asterisk manager interface")
    connection.start_reading()
    response = await connection.request(
        "Login", [("Username", account.username), ("Secret", account.secret), ("Events", events)]
    )
    if response.get("response", "").lower() != "success":
        raise AmiError(
            f"Asterisk refused the AMI login (user {account.username!r} at {account.address})"
        )
    log.info("AMI: logged in to %s (%s) as %r", account.address, banner, account.username)


def _result(response: Message) -> str:
    message = response.get("message", "")
    if response.get("response", "").lower() == "success":
        return f"AMI: {message or 'Success'}"
    raise NotifyError(f"AMI: {message or response.get('response') or 'no answer'}")


def _encode(action: str, action_id: str, fields: Fields) -> bytes:
    lines = [f"Action: {action}", f"ActionID: {action_id}"]
    lines.extend(f"{name}: {value}" for name, value in fields)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_message(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None at the end of the stream (a cut-off message included)."""
    message: Message = {}
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            return None
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            if message:
                return message
            continue
        name, sep, value = text.partition(":")
        if sep:
            message.setdefault(name.strip().lower(), value.strip())


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionError) and exc.errno:
        return os.strerror(exc.errno)  # "Connection refused", not asyncio's "Connect call failed"
    return exc.strerror or str(exc)


def _has_line_break(value: str) -> bool:
    return any(c in value for c in "\r\n\0")


_SPECIAL = re.compile(r'([\\",])')


def _literal(value: str) -> str:
    r"""Escape a ``Variable:`` value so Asterisk takes it literally.

    Asterisk splits each ``Variable`` header into several ``name=value`` items at commas, dropping
    double quotes and treating backslash as an escape (``ast_app_separate_args`` in manager.c), so
    those three characters are backslash-escaped; ``;`` and ``=`` pass unchanged
    (``Event=check-sync;reboot=false``).
    """
    return _SPECIAL.sub(r"\\\1", value)

"""AmiNotifier against a stand-in for Asterisk's manager interface.

Asterisk cannot run here, so :class:`FakeAsterisk` stands in for it at the protocol level: it
speaks the AMI wire format as Asterisk's manager.c and res_pjsip_notify.c do. It greets with the
``Asterisk Call Manager/<version>`` line; checks ``Login`` against a known user and secret
(``Success`` / ``Authentication accepted``, or ``Error`` / ``Authentication failed`` and hangs up);
answers ``PJSIPNotify`` with ``Success`` / ``NOTIFY sent`` for known endpoints and ``Error`` /
``Unable to retrieve endpoint <name>`` otherwise; answers ``Ping`` and ``Logoff`` (``Goodbye``);
echoes every ``ActionID``; sends an unsolicited ``Event: FullyBooted`` after the login and between
held-back answers; and records every action it receives, line by line as sent.

For the contact follower (``tests/test_ami_contacts.py``) it also keeps the PJSIP contacts
registered at it: :meth:`FakeAsterisk.contact_status` changes them and sends ``ContactStatus``
(class ``system``, as ``main/stasis_endpoints.c`` does) to every session that logged in with an
``Events`` mask including it, and ``PJSIPShowRegistrationInboundContactStatuses`` is answered as
``res_pjsip_registrar.c`` does: ``Success`` with ``EventList: start``, one
``ContactStatusDetail`` per contact, then ``ContactStatusDetailComplete``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from provisioner.ami import AmiNotifier
from provisioner.notify import NotifyError, NotifyTarget

USER = "provisioner"
SECRET = "s3cr;t/p@ss w%rd"
WRONG_SECRET = "Wr0ng-Secret-7x"
ENDPOINT = "201-aabbcc-1"
FULLY_BOOTED = (
    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 12\r\nLastReload: 12\r\n"
    b"Status: Fully Booted\r\n\r\n"
)


def target(sip_user: str | None = ENDPOINT, event: str = "check-sync;reboot=false") -> NotifyTarget:
    return NotifyTarget(
        mac="000413aabbcc", event=event, contact=None, sip_user=sip_user, sip_password=None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Action:
    lines: list[str]
    """The ``Key: value`` lines exactly as received."""

    def get(self, key: str) -> str | None:
        for line in self.lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == key.lower():
                return value.strip()
        return None

    @property
    def name(self) -> str:
        return (self.get("Action") or "").lower()


def response(kind: str, action_id: str | None, **headers: str) -> bytes:
    lines = [f"Response: {kind}"]
    if action_id is not None:
        lines.append(f"ActionID: {action_id}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def event(name: str, action_id: str | None, **headers: str) -> bytes:
    lines = [f"Event: {name}"]
    if action_id is not None:
        lines.append(f"ActionID: {action_id}")
    lines.extend(f"{key}: {value}" for key, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True)
class Contact:
    """A PJSIP contact registered at the fake Asterisk."""

    aor: str
    uri: str
    user_agent: str
    status: str


async def read_action(reader: asyncio.StreamReader) -> Action | None:
    lines: list[str] = []
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            return None
        text = line.decode().rstrip("\r\n")
        if text:
            lines.append(text)
        elif lines:
            return Action(lines)


class FakeAsterisk:
    def __init__(self, secret: str = SECRET, endpoints: frozenset[str] = frozenset()) -> None:
        self.secret = secret
        self.endpoints = endpoints | {ENDPOINT}
        self.connections = 0
        self.actions: list[Action] = []
        self.answered: list[str] = []
        """ActionIDs of PJSIPNotify actions, in the order they were answered."""
        self.hold_notifies = 0
        """Hold back the answers to this many PJSIPNotify actions, then send them in reverse."""
        self.drop_on: str | None = None
        """Hang up instead of answering the next action of this name (lower case)."""
        self.hang_up_after_banner = 0
        """Hang up this many next connections right after the banner."""
        self.all_closed = asyncio.Event()
        self.contacts: dict[str, Contact] = {}
        """The registered contacts by AOR, listed by PJSIPShowRegistrationInboundContactStatuses."""
        self.list_contacts = True
        """False: answer that action as an Asterisk without it (or the permission) does."""
        self.silent = False
        """Read actions but answer none: a peer gone without closing the connection."""
        self.listings = 0
        """How many contact listings were answered completely."""
        self._held: list[tuple[str, bytes]] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._event_writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._port = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def event_sessions(self) -> int:
        """Logged-in sessions that receive ``system`` events."""
        return len(self._event_writers)

    def url(self, secret: str | None = None) -> str:
        password = quote(self.secret if secret is None else secret, safe="")
        return f"ami://{USER}:{password}@127.0.0.1:{self.port}"

    def named(self, name: str) -> list[Action]:
        return [action for action in self.actions if action.name == name.lower()]

    async def start(self) -> None:
        """Listen (again: on the port of the first start, as a restarted Asterisk does)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])

    def contact_status(
        self, aor: str, uri: str, status: str = "Created", user_agent: str | None = None
    ) -> None:
        """A contact of ``aor`` changed: update the registered contacts and send
        ``Event: ContactStatus`` (with ``UserAgent`` only when given, as Asterisk 14 did)."""
        if status == "Removed":
            if aor in self.contacts and self.contacts[aor].uri == uri:
                del self.contacts[aor]
        elif status != "Unreachable":
            self.contacts[aor] = Contact(aor, uri, user_agent or "", status)
        fields = {
            "Privilege": "system,all",
            "URI": uri,
            "ContactStatus": status,
            "AOR": aor,
            "EndpointName": aor,
            "RoundtripUsec": "0",
        }
        if user_agent is not None:
            fields["UserAgent"] = user_agent
        message = event("ContactStatus", None, **fields)
        for writer in self._event_writers:
            writer.write(message)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self.hang_up()
        await self._server.wait_closed()

    async def hang_up(self) -> None:
        """Close every client connection, as a restarting Asterisk would."""
        writers = list(self._writers)
        for writer in writers:
            writer.close()
        for writer in writers:
            await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.all_closed.clear()
        self._writers.add(writer)
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            if self.hang_up_after_banner:
                self.hang_up_after_banner -= 1
                await writer.drain()
                return
            authenticated = False
            while (action := await read_action(reader)) is not None:
                self.actions.append(action)
                if self.silent:
                    continue
                if action.name == self.drop_on:
                    self.drop_on = None
                    return
                keep_going, authenticated = self._answer(action, authenticated, writer)
                await writer.drain()
                if not keep_going:
                    return
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            self._event_writers.discard(writer)
            if not self._writers:
                self.all_closed.set()

    def _answer(
        self, action: Action, authenticated: bool, writer: asyncio.StreamWriter
    ) -> tuple[bool, bool]:
        """Write the answer; return (keep the connection, authenticated)."""
        action_id = action.get("ActionID")
        if action.name == "login":
            if action.get("Username") == USER and action.get("Secret") == self.secret:
                writer.write(response("Success", action_id, Message="Authentication accepted"))
                writer.write(FULLY_BOOTED)
                mask = {c.strip().lower() for c in (action.get("Events") or "on").split(",")}
                if mask & {"on", "system"}:
                    self._event_writers.add(writer)
                return True, True
            writer.write(response("Error", action_id, Message="Authentication failed"))
            return False, False
        if not authenticated:
            writer.write(response("Error", action_id, Message="Permission denied"))
        elif action.name == "pjsipnotify":
            self._answer_notify(action, writer)
        elif action.name == "pjsipshowregistrationinboundcontactstatuses" and self.list_contacts:
            self._answer_contact_listing(action_id, writer)
        elif action.name == "ping":
            writer.write(response("Success", action_id, Ping="Pong", Timestamp="1700000000.0"))
        elif action.name == "logoff":
            writer.write(response("Goodbye", action_id, Message="Thanks for all the fish."))
            return False, True
        else:
            writer.write(response("Error", action_id, Message="Invalid/unknown command"))
        return True, authenticated

    def _answer_contact_listing(self, action_id: str | None, writer: asyncio.StreamWriter) -> None:
        message = "Following are ContactStatusEvents for each Inbound registration"
        writer.write(response("Success", action_id, EventList="start", Message=message))
        for contact in self.contacts.values():
            writer.write(
                event(
                    "ContactStatusDetail",
                    action_id,
                    AOR=contact.aor,
                    URI=contact.uri,
                    UserAgent=contact.user_agent,
                    RegExpire="1700003600",
                    ViaAddress="127.0.0.1:5060",
                    Status=contact.status,
                    RoundtripUsec="N/A",
                    EndpointName=contact.aor,
                    ID=f"{contact.aor};@0123456789abcdef",
                )
            )
        writer.write(
            event(
                "ContactStatusDetailComplete",
                action_id,
                EventList="Complete",
                ListItems=str(len(self.contacts)),
            )
        )
        self.listings += 1

    def _answer_notify(self, action: Action, writer: asyncio.StreamWriter) -> None:
        action_id = action.get("ActionID") or ""
        endpoint = action.get("Endpoint")
        if endpoint in self.endpoints:
            answer = response("Success", action_id, Message="NOTIFY sent")
        else:
            answer = response("Error", action_id, Message=f"Unable to retrieve endpoint {endpoint}")
        if not self.hold_notifies:
            self.answered.append(action_id)
            writer.write(answer)
            return
        self._held.append((action_id, answer))
        if len(self._held) < self.hold_notifies:
            return
        for held_id, held in reversed(self._held):
            self.answered.append(held_id)
            writer.write(held)
            writer.write(FULLY_BOOTED)
        self._held.clear()
        self.hold_notifies = 0


@pytest.fixture
async def asterisk() -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk(endpoints=frozenset(f"2{n:02}-aabbcc-1" for n in range(20)))
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def notifier(asterisk: FakeAsterisk) -> AsyncIterator[AmiNotifier]:
    ami = AmiNotifier(asterisk.url())
    yield ami
    await ami.close()


async def test_logs_in_and_sends_pjsipnotify(asterisk: FakeAsterisk, notifier: AmiNotifier) -> None:
    assert await notifier.notify(target()) == "AMI: NOTIFY sent"

    login, notify = asterisk.actions
    assert login.name == "login"
    assert login.get("Username") == USER
    assert login.get("Secret") == SECRET  # URL-unquoted
    assert login.get("Events") == "off"
    assert notify.lines[0] == "Action: PJSIPNotify"
    assert f"Endpoint: {ENDPOINT}" in notify.lines
    assert "Variable: Event=check-sync;reboot=false" in notify.lines
    assert notify.get("ActionID")
    assert notify.get("ActionID") != login.get("ActionID")
    assert asterisk.answered == [notify.get("ActionID")]


async def test_unknown_endpoint_reports_asterisks_message(notifier: AmiNotifier) -> None:
    with pytest.raises(NotifyError) as caught:
        await notifier.notify(target("201-x-1"))
    assert str(caught.value) == "AMI: Unable to retrieve endpoint 201-x-1"


async def test_wrong_secret_is_refused_without_leaking_it(
    asterisk: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ami = AmiNotifier(asterisk.url(WRONG_SECRET))
    try:
        with pytest.raises(NotifyError) as caught:
            await ami.notify(target())
        # Within the backoff the next call fails at once, without another login attempt.
        with pytest.raises(NotifyError) as again:
            await ami.notify(target())
    finally:
        await ami.close()

    assert str(caught.value).startswith("Asterisk refused the AMI login")
    assert "Asterisk refused the AMI login" in str(again.value)
    assert "next attempt in" in str(again.value)
    assert asterisk.connections == 1
    assert [action.get("Secret") for action in asterisk.named("login")] == [WRONG_SECRET]
    for text in (str(caught.value), repr(caught.value), str(again.value), caplog.text):
        assert WRONG_SECRET not in text
        assert quote(WRONG_SECRET, safe="") not in text
    assert caplog.records  # the failure was logged, without the secret


async def test_one_connection_for_several_notifies(
    asterisk: FakeAsterisk, notifier: AmiNotifier
) -> None:
    for _ in range(3):
        assert await notifier.notify(target()) == "AMI: NOTIFY sent"

    assert asterisk.connections == 1
    assert len(asterisk.named("login")) == 1
    assert len(asterisk.named("pjsipnotify")) == 3


async def test_concurrent_notifies_answered_out_of_order(
    asterisk: FakeAsterisk, notifier: AmiNotifier
) -> None:
    # Even numbers are known endpoints, odd ones unknown: each error names its own endpoint, so
    # an answer handed to the wrong caller would show.
    users = [f"2{n:02}-aabbcc-1" if n % 2 == 0 else f"2{n:02}-unknown-1" for n in range(20)]
    asterisk.hold_notifies = 20

    results = await asyncio.gather(
        *(notifier.notify(target(user)) for user in users), return_exceptions=True
    )

    for user, result in zip(users, results, strict=True):
        if "unknown" in user:
            assert isinstance(result, NotifyError)
            assert str(result) == f"AMI: Unable to retrieve endpoint {user}"
        else:
            assert result == "AMI: NOTIFY sent"
    sent = [action.get("ActionID") for action in asterisk.named("pjsipnotify")]
    assert asterisk.answered == list(reversed(sent))
    assert asterisk.connections == 1
    assert len(asterisk.named("login")) == 1


async def test_reconnects_after_asterisk_hung_up(
    asterisk: FakeAsterisk, notifier: AmiNotifier
) -> None:
    assert await notifier.notify(target()) == "AMI: NOTIFY sent"
    await asterisk.hang_up()

    assert await notifier.notify(target()) == "AMI: NOTIFY sent"
    assert asterisk.connections == 2
    assert len(asterisk.named("login")) == 2


async def test_action_cut_off_by_a_hang_up_is_sent_again(
    asterisk: FakeAsterisk, notifier: AmiNotifier
) -> None:
    assert await notifier.notify(target()) == "AMI: NOTIFY sent"
    asterisk.drop_on = "pjsipnotify"

    assert await notifier.notify(target()) == "AMI: NOTIFY sent"
    assert asterisk.connections == 2
    assert len(asterisk.named("pjsipnotify")) == 3


async def test_silence_on_an_open_connection_drops_it(asterisk: FakeAsterisk) -> None:
    ami = AmiNotifier(asterisk.url(), timeout=0.2)
    try:
        assert await ami.notify(target()) == "AMI: NOTIFY sent"
        asterisk.hold_notifies = 1_000  # never answers: a peer gone without closing
        with pytest.raises(NotifyError, match=r"did not answer within 0\.2 s"):
            await ami.notify(target())
        asterisk.hold_notifies = 0
        assert await ami.notify(target()) == "AMI: NOTIFY sent"
    finally:
        await ami.close()
    assert asterisk.connections == 2


async def test_login_cut_off_fails_then_next_call_reconnects(asterisk: FakeAsterisk) -> None:
    asterisk.hang_up_after_banner = 1
    ami = AmiNotifier(asterisk.url(), backoff=0.0)
    try:
        with pytest.raises(NotifyError, match="closed the AMI connection"):
            await ami.notify(target())
        assert await ami.notify(target()) == "AMI: NOTIFY sent"
    finally:
        await ami.close()
    assert asterisk.connections == 2


async def test_unreachable_asterisk_fails_quickly() -> None:
    port = free_port()  # closed again: nothing listens there
    ami = AmiNotifier(f"ami://{USER}:{quote(SECRET, safe='')}@127.0.0.1:{port}")
    try:
        async with asyncio.timeout(2):
            with pytest.raises(NotifyError) as caught:
                await ami.notify(target())
    finally:
        await ami.close()
    assert str(caught.value).startswith(f"cannot reach Asterisk at 127.0.0.1:{port}")
    assert SECRET not in str(caught.value)


async def test_silent_server_times_out() -> None:
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # says nothing until the client hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ami = AmiNotifier(f"ami://{USER}:x@127.0.0.1:{port}", timeout=0.2)
    try:
        with pytest.raises(NotifyError, match="did not"):
            await ami.notify(target())
    finally:
        await ami.close()
        server.close()
        await server.wait_closed()
    assert accepted.is_set()


async def test_no_sip_account_is_refused_before_connecting(
    asterisk: FakeAsterisk, notifier: AmiNotifier
) -> None:
    with pytest.raises(NotifyError, match=r"^no SIP account to notify through Asterisk$"):
        await notifier.notify(target(sip_user=None))
    with pytest.raises(NotifyError, match="line break"):
        await notifier.notify(target(event="check-sync\r\nAction: Logoff"))
    assert asterisk.connections == 0


async def test_event_value_is_escaped_for_asterisks_variable_parser(
    asterisk: FakeAsterisk, notifier: AmiNotifier
) -> None:
    await notifier.notify(target(event='x-custom,a="b"'))
    (notify,) = asterisk.named("pjsipnotify")
    assert 'Variable: Event=x-custom\\,a=\\"b\\"' in notify.lines


async def test_ping(asterisk: FakeAsterisk, notifier: AmiNotifier) -> None:
    assert await notifier.ping() == "AMI: Success"
    assert [action.name for action in asterisk.actions] == ["login", "ping"]


async def test_close_logs_off_and_hangs_up(asterisk: FakeAsterisk) -> None:
    ami = AmiNotifier(asterisk.url())
    await ami.notify(target())
    await ami.close()

    assert asterisk.actions[-1].name == "logoff"
    async with asyncio.timeout(2):
        await asterisk.all_closed.wait()
    with pytest.raises(NotifyError, match="closed"):
        await ami.notify(target())
    await ami.close()  # idempotent


def test_url_parsing() -> None:
    ami = AmiNotifier("ami://admin:p%40ss%3Aword@pbx.example")
    assert (ami.host, ami.port, ami.username, ami.address) == (
        "pbx.example",
        5038,
        "admin",
        "pbx.example:5038",
    )
    assert AmiNotifier("ami://admin:x@[2001:db8::1]:5039").address == "[2001:db8::1]:5039"


@pytest.mark.parametrize(
    "url",
    [
        "http://admin:hunter2@pbx.example",
        "ami://pbx.example",
        "ami://admin:hunter2@pbx.example:notaport",
        "ami://admin:hunter2%0D%0AAction%3A%20Logoff@pbx.example",
    ],
)
def test_bad_url_is_rejected_without_quoting_the_secret(url: str) -> None:
    with pytest.raises(ValueError, match="AMI URL") as caught:
        AmiNotifier(url)
    assert "hunter2" not in str(caught.value)

"""Direct SIP NOTIFY against a real SIP stack: sipp plays the phone (scenarios in tests/sipp/).

Each test starts sipp as a UAS on a free loopback port with ``-trace_msg``, sends through
:class:`SipNotifier`, then reads what sipp received and sent from its message log. sipp must
be installed (Debian package ``sip-tester``); without it these tests fail rather than skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import pytest

from provisioner.notify import NotifyError, NotifyTarget
from provisioner.sip import SipNotifier, digest_authorization, parse_contact

SCENARIOS = Path(__file__).parent / "sipp"
USER = "201-aabbcc-1"
PASSWORD = "Line-1-Secret!"  # the credentials tests/sipp/notify_challenge.xml accepts
EVENT = "check-sync;reboot=false"  # Snom desk phones' variant (VENDORS.md)

Transport = Literal["udp", "tcp"]


@dataclass(frozen=True)
class Traced:
    """One message from sipp's ``-trace_msg`` log."""

    at: float
    received: bool
    start_line: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        assert len(values) == 1, f"{name}: {values} in {self.start_line}"
        return values[0]

    def has(self, name: str) -> bool:
        return any(key.lower() == name.lower() for key, _ in self.headers)

    @property
    def text(self) -> str:
        return "\n".join([self.start_line, *(f"{key}: {value}" for key, value in self.headers)])


def parse_trace(text: str) -> list[Traced]:
    messages = []
    for entry in re.split(r"^-{20,} (?=\d{4}-)", text, flags=re.MULTILINE)[1:]:
        stamp, kind, *lines = entry.strip("\n").split("\n")
        lines = [line for line in lines if line.strip()]
        messages.append(
            Traced(
                at=datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp(),
                received="received" in kind,
                start_line=lines[0],
                headers=tuple(
                    (name.strip(), value.strip())
                    for name, _, value in (line.partition(":") for line in lines[1:])
                ),
            )
        )
    return messages


@dataclass
class Phone:
    """A running sipp UAS and the files it writes."""

    process: asyncio.subprocess.Process
    port: int
    transport: Transport
    directory: Path

    def contact(self, user: str = USER) -> str:
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        return f"sip:{user}@127.0.0.1:{self.port}{suffix}"

    def target(self, user: str = USER, password: str | None = PASSWORD) -> NotifyTarget:
        return NotifyTarget(
            mac="000413aabbcc",
            event=EVENT,
            contact=self.contact(user),
            sip_user=user,
            sip_password=password,
        )

    async def exit_code(self, within: float = 10.0) -> int:
        """Wait for sipp to finish its calls (``-m``); its exit code is 0 when all succeeded."""
        try:
            async with asyncio.timeout(within):
                return await self.process.wait()
        except TimeoutError:
            pytest.fail(f"sipp still running after {within} s; errors: {self.errors()}")

    def messages(self) -> list[Traced]:
        log = self.directory / "messages.log"
        return parse_trace(log.read_text()) if log.exists() else []

    def received_notifies(self) -> list[Traced]:
        return [m for m in self.messages() if m.received and m.start_line.startswith("NOTIFY ")]

    def sent(self) -> list[Traced]:
        return [m for m in self.messages() if not m.received]

    def screen(self) -> str:
        return (self.directory / "screen.log").read_text()

    def errors(self) -> str:
        parts = [self.directory / "errors.log", self.directory / "stderr.log"]
        return " | ".join(path.read_text().strip() for path in parts if path.exists())


def free_port(transport: Transport) -> int:
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bound(port: int, transport: Transport) -> bool:
    """Whether something listens on the port: /proc/net/{udp,tcp}, state 0A = LISTEN."""
    table = Path("/proc/net/tcp" if transport == "tcp" else "/proc/net/udp").read_text()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and (transport == "udp" or fields[3] == "0A"):
            return True
    return False


StartPhone = Callable[..., Awaitable[Phone]]


@pytest.fixture
async def start_phone(tmp_path: Path) -> AsyncIterator[StartPhone]:
    """Start sipp with a scenario; wait until its socket is bound. Stopped at teardown."""
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp is not installed: install the Debian package sip-tester")
    phones: list[Phone] = []

    async def start(
        scenario: str, *, transport: Transport = "udp", calls: int = 1, pause_ms: int = 0
    ) -> Phone:
        directory = tmp_path / f"phone{len(phones)}"
        directory.mkdir()
        port = free_port(transport)
        command = [
            *(sipp, "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port)),
            *("-t", "t1" if transport == "tcp" else "u1", "-m", str(calls)),
            *("-nostdin", "-timeout", "20s", "-d", str(pause_ms)),
            *("-trace_msg", "-message_file", str(directory / "messages.log")),
            *("-trace_screen", "-screen_file", str(directory / "screen.log")),
            *("-trace_err", "-error_file", str(directory / "errors.log")),
        ]
        with (directory / "stderr.log").open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        phone = Phone(process, port, transport, directory)
        phones.append(phone)
        async with asyncio.timeout(5):
            while not _bound(port, transport):
                if process.returncode is not None:
                    pytest.fail(f"sipp exited with {process.returncode}: {phone.errors()}")
                await asyncio.sleep(0.01)  # polling the socket table, not waiting for time
        return phone

    yield start
    for phone in phones:
        if phone.process.returncode is None:
            phone.process.kill()
            await phone.process.wait()


@pytest.fixture
async def notifier() -> AsyncIterator[SipNotifier]:
    sender = SipNotifier(timeout=3.0)
    yield sender
    await sender.close()


def assert_notify_headers(message: Traced, phone: Phone, transport: str) -> None:
    """The request line and header set of RFC 3261 §8.1.1 plus the event package's headers."""
    assert message.start_line == f"NOTIFY {phone.contact()} SIP/2.0"
    assert re.fullmatch(
        rf"SIP/2\.0/{transport} 127\.0\.0\.1:\d+;branch=z9hG4bK[0-9a-f]{{16,}};rport",
        message.header("Via"),
    )
    assert message.header("Max-Forwards") == "70"
    assert re.fullmatch(r"<sip:provisioner@127\.0\.0\.1>;tag=[0-9a-f]+", message.header("From"))
    assert message.header("To") == f"<sip:{USER}@127.0.0.1:{phone.port}>"
    assert message.header("Call-ID")
    assert message.header("CSeq") == "1 NOTIFY"
    contact_suffix = ";transport=tcp" if transport == "TCP" else ""
    assert re.fullmatch(
        rf"<sip:provisioner@127\.0\.0\.1:\d+{contact_suffix}>", message.header("Contact")
    )
    assert message.header("Event") == EVENT
    assert message.header("Subscription-State") == "terminated"
    assert message.header("User-Agent") == "provisioner"
    assert message.header("Content-Length") == "0"


async def test_udp_notify_is_answered_200(start_phone: StartPhone, notifier: SipNotifier) -> None:
    phone = await start_phone("notify_ok.xml")

    assert await notifier.notify(phone.target()) == "200 OK"

    assert await phone.exit_code() == 0, phone.errors()
    [notify] = phone.received_notifies()
    assert_notify_headers(notify, phone, "UDP")


async def test_tcp_notify_is_answered_200(start_phone: StartPhone, notifier: SipNotifier) -> None:
    phone = await start_phone("notify_ok.xml", transport="tcp")

    assert await notifier.notify(phone.target()) == "200 OK"

    assert await phone.exit_code() == 0, phone.errors()
    [notify] = phone.received_notifies()
    assert_notify_headers(notify, phone, "TCP")


async def test_many_devices_at_once_share_one_udp_socket(
    start_phone: StartPhone, notifier: SipNotifier
) -> None:
    phone = await start_phone("notify_ok.xml", calls=3)
    users = ["201-aabbcc-1", "202-aabbcc-2", "203-aabbcc-3"]

    results = await asyncio.gather(*(notifier.notify(phone.target(user)) for user in users))

    assert results == ["200 OK"] * 3
    assert await phone.exit_code() == 0, phone.errors()
    notifies = phone.received_notifies()
    assert sorted(m.start_line.split("@")[0] for m in notifies) == [
        f"NOTIFY sip:{u}" for u in users
    ]
    assert len({m.header("Call-ID") for m in notifies}) == 3
    assert len({m.header("Via").split(";")[0] for m in notifies}) == 1  # same local port


async def test_digest_challenge_is_answered_once_with_qop_auth(
    start_phone: StartPhone, notifier: SipNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    phone = await start_phone("notify_challenge.xml")
    caplog.set_level(logging.DEBUG, logger="provisioner")

    # sipp's verifyauth accepted the Authorization header: it answers 200 only then.
    assert await notifier.notify(phone.target()) == "200 OK"

    assert await phone.exit_code() == 0, phone.errors()
    first, second = phone.received_notifies()
    assert not first.has("Authorization")
    authorization = second.header("Authorization")
    assert authorization.startswith(f'Digest username="{USER}", realm="phone.example"')
    assert "qop=auth," in authorization
    assert "nc=00000001" in authorization
    assert re.search(r'cnonce="[0-9a-f]+"', authorization)
    assert 'opaque="5ccc069c403ebaf9"' in authorization
    assert f'uri="{phone.contact()}"' in authorization
    # RFC 3261 §8.1.3.5 / §22.2: same call, next CSeq, new transaction.
    assert second.header("Call-ID") == first.header("Call-ID")
    assert second.header("From") == first.header("From")
    assert second.header("CSeq") == "2 NOTIFY"
    assert second.header("Via") != first.header("Via")
    assert [m.start_line for m in phone.sent()] == ["SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK"]
    assert all(PASSWORD not in m.text for m in phone.messages())
    assert PASSWORD not in caplog.text


async def test_wrong_password_is_reported_as_rejected_credentials(
    start_phone: StartPhone, notifier: SipNotifier
) -> None:
    phone = await start_phone("notify_challenge.xml")
    wrong = "Not-The-Line-Password"

    with pytest.raises(NotifyError, match="rejected our credentials") as failure:
        await notifier.notify(phone.target(password=wrong))

    assert str(failure.value) == "device rejected our credentials (401 Unauthorized)"
    await phone.exit_code()
    assert len(phone.received_notifies()) == 2  # answered once, not again
    assert all(wrong not in m.text for m in phone.messages())


async def test_challenge_without_stored_credentials(
    start_phone: StartPhone, notifier: SipNotifier
) -> None:
    phone = await start_phone("notify_challenge.xml")

    with pytest.raises(NotifyError, match="no SIP credentials"):
        await notifier.notify(phone.target(password=None))

    assert len(phone.received_notifies()) == 1


async def test_proxy_challenge_is_answered_with_proxy_authorization(
    start_phone: StartPhone, notifier: SipNotifier
) -> None:
    phone = await start_phone("notify_proxy_challenge.xml")

    assert await notifier.notify(phone.target()) == "200 OK"

    assert await phone.exit_code() == 0, phone.errors()
    _, second = phone.received_notifies()
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', second.header("Proxy-Authorization")))
    assert "qop" not in params  # none offered: RFC 2069 compatible answer

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - the algorithm under test

    ha1 = md5(f"{USER}:phone.example:{PASSWORD}")
    expected = md5(f"{ha1}:{params['nonce']}:{md5('NOTIFY:' + phone.contact())}")
    assert params["response"] == expected
    assert params["uri"] == phone.contact()


async def test_busy_phone_is_an_error(start_phone: StartPhone, notifier: SipNotifier) -> None:
    phone = await start_phone("notify_busy.xml", transport="tcp")

    with pytest.raises(NotifyError) as failure:
        await notifier.notify(phone.target())

    assert str(failure.value) == "device answered 486 Busy Here"
    assert await phone.exit_code() == 0, phone.errors()


async def test_silent_phone_gets_retransmissions_until_the_timeout(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone("notify_silent.xml", pause_ms=4500)
    sender = SipNotifier(timeout=4.0)
    started = time.monotonic()
    try:
        with pytest.raises(NotifyError) as failure:
            await sender.notify(phone.target())
        elapsed = time.monotonic() - started
    finally:
        await sender.close()

    assert str(failure.value) == f"no answer from 127.0.0.1:{phone.port} within 4 s"
    assert 3.9 < elapsed < 4.5
    assert await phone.exit_code() == 0, phone.errors()
    # Timer E (RFC 3261 §17.1.2.2): sent at 0, retransmitted at 0.5, 1.5 and 3.5 s.
    notifies = phone.received_notifies()
    assert len(notifies) == 4
    assert len({m.text for m in notifies}) == 1  # identical: same branch, same CSeq
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(notifies)]
    assert gaps == pytest.approx([0.5, 1.0, 2.0], abs=0.15)
    retransmissions = re.search(r"NOTIFY\s+\d+\s+(\d+)", phone.screen())
    assert retransmissions is not None
    assert int(retransmissions[1]) == 3  # sipp's own count


async def test_provisional_answer_then_final(
    start_phone: StartPhone, notifier: SipNotifier
) -> None:
    phone = await start_phone("notify_trying.xml")  # 100 at once, 200 after 1.7 s

    assert await notifier.notify(phone.target()) == "200 OK"

    assert await phone.exit_code() == 0, phone.errors()
    # In Proceeding, Timer E still fires, but at T2 = 4 s after the retransmission at 0.5 s.
    first, second = phone.received_notifies()
    assert second.at - first.at == pytest.approx(0.5, abs=0.15)


async def test_provisional_answer_only_is_a_timeout(start_phone: StartPhone) -> None:
    phone = await start_phone("notify_trying.xml")
    sender = SipNotifier(timeout=1.0)
    try:
        with pytest.raises(NotifyError) as failure:
            await sender.notify(phone.target())
    finally:
        await sender.close()

    assert str(failure.value) == (
        f"no answer from 127.0.0.1:{phone.port} within 1 s (last answer: 100 Trying)"
    )


async def test_refused_tcp_connection(notifier: SipNotifier) -> None:
    port = free_port("tcp")
    target = NotifyTarget(
        "000413aabbcc", EVENT, f"sip:{USER}@127.0.0.1:{port};transport=tcp", None, None
    )

    with pytest.raises(NotifyError, match=rf"^can't connect to 127\.0\.0\.1:{port}: "):
        await notifier.notify(target)


async def test_close_fails_a_pending_notification() -> None:
    received = asyncio.get_running_loop().create_future()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not received.done():
                received.set_result(data)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Sink, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    sender = SipNotifier(timeout=10.0)
    pending = asyncio.create_task(
        sender.notify(
            NotifyTarget("000413aabbcc", EVENT, f"sip:{USER}@127.0.0.1:{port}", None, None)
        )
    )
    try:
        async with asyncio.timeout(5):
            await received
        await sender.close()
        with pytest.raises(NotifyError, match="closed"):
            await pending
    finally:
        transport.close()


@pytest.mark.parametrize(
    ("contact", "message"),
    [
        ("sips:201@10.0.0.5", "TLS transport not supported"),
        ("sip:201@10.0.0.5;transport=tls", "TLS transport not supported"),
        ("sip:201@10.0.0.5;transport=ws", "WS transport not supported"),
        ("tel:+4930123456", "not a SIP URI"),
        ("sip:201@10.0.0.5\r\nX-Injected: 1", "not a SIP URI"),
    ],
)
def test_contacts_we_cannot_use(contact: str, message: str) -> None:
    with pytest.raises(NotifyError, match=message):
        parse_contact(contact)


def test_contact_defaults_and_parameters() -> None:
    plain = parse_contact("sip:201-aabbcc-1@10.0.0.5")
    assert (plain.host, plain.port, plain.transport) == ("10.0.0.5", 5060, "udp")
    assert plain.request_uri == "sip:201-aabbcc-1@10.0.0.5"

    snom = parse_contact("<sip:201@10.0.0.5:5080;transport=TCP;line=kfx3?Subject=x>")
    assert (snom.port, snom.transport) == (5080, "tcp")
    assert snom.request_uri == "sip:201@10.0.0.5:5080;transport=TCP;line=kfx3"
    assert snom.address_of_record == "sip:201@10.0.0.5:5080"


async def test_event_with_line_break_is_refused(notifier: SipNotifier) -> None:
    target = NotifyTarget(
        "000413aabbcc", "check-sync\r\nX-Injected: 1", "sip:201@127.0.0.1", None, None
    )

    with pytest.raises(NotifyError, match="event"):
        await notifier.notify(target)


async def test_ipv6_contact_from_an_ipv4_notifier(notifier: SipNotifier) -> None:
    target = NotifyTarget("000413aabbcc", EVENT, "sip:201@[::1]:5060", None, None)

    with pytest.raises(NotifyError, match=r"can't reach IPv6 address \[::1\]"):
        await notifier.notify(target)


def test_digest_matches_rfc_2617_example() -> None:
    """RFC 2617 §3.5: the worked example, qop=auth, nc=00000001."""
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    answer = digest_authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    assert answer is not None
    assert 'response="6629fae49393a05397450978507c4ef1"' in answer
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in answer


def test_digest_refuses_unknown_algorithms() -> None:
    challenge = 'Digest realm="r", nonce="n", algorithm=AKAv1-MD5'
    answer = digest_authorization(
        challenge, method="NOTIFY", uri="sip:a@b", username="u", password="p", cnonce="c"
    )
    assert answer is None


@pytest.mark.parametrize(
    ("local_host", "contact"),
    [
        ("0.0.0.0", "sip:201@10.0.0.5:5080"),
        ("0.0.0.0", "sip:201@127.0.0.1"),
        ("::", "sip:201@[2001:db8:0:0::1]:5062"),
        ("::", "sip:201@[::1]"),
    ],
)
async def test_an_address_contact_is_located_as_getaddrinfo_would_without_asking_it(
    local_host: str, contact: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PBX reports addresses; asking getaddrinfo for each (a thread hop per NOTIFY) gave
    the same answer at a cost."""
    sender = SipNotifier(local_host=local_host)
    uri = parse_contact(contact)
    family = socket.AF_INET6 if ":" in local_host else socket.AF_INET
    [(*_, expected)] = socket.getaddrinfo(
        uri.bare_host, uri.port, family=family, type=socket.SOCK_DGRAM
    )[:1]
    loop = asyncio.get_running_loop()

    async def not_asked(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("getaddrinfo asked for an address")

    monkeypatch.setattr(loop, "getaddrinfo", not_asked)
    try:
        assert await sender._resolve(uri) == tuple(expected)
    finally:
        await sender.close()


async def test_a_name_is_still_asked_of_getaddrinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def asking(host: str, *args: object, **kwargs: object) -> object:
        asked.append(host)
        return await real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", asking)
    sender = SipNotifier(local_host="0.0.0.0")
    try:
        assert await sender._resolve(parse_contact("sip:201@localhost:5070")) == ("127.0.0.1", 5070)
    finally:
        await sender.close()
    assert asked == ["localhost"]

"""Direct SIP NOTIFY: make a phone fetch its configuration now, without going through the PBX.

One notification is one unsolicited, out-of-dialog ``NOTIFY`` (``Event: check-sync`` or the
vendor's variant, ``Subscription-State: terminated``) sent to the contact the phone registered.
It is a non-INVITE client transaction (RFC 3261 §17.1.2), answered at most once with digest
credentials when the phone challenges it (RFC 3261 §22.2, RFC 7616 / RFC 8760).

Transports: UDP through one socket shared by every notification of a :class:`SipNotifier`, and
TCP with one connection per notification. ``sips:`` URIs and TLS are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import re
import secrets
import socket
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, cast

from provisioner.notify import NotifyError, NotifyTarget

log = logging.getLogger(__name__)

T1: Final = 0.5
"""RTT estimate, the first retransmission interval (RFC 3261 §17.1.1.1)."""
T2: Final = 4.0
"""Cap on the retransmission interval of non-INVITE requests (RFC 3261 §17.1.2.2)."""

_USER_AGENT: Final = "provisioner"
_MAX_BODY: Final = 65536

Transport = Literal["udp", "tcp"]
_TransactionKey = tuple[str, str]
"""The top Via's branch and the CSeq method: what identifies a client transaction."""


@dataclass(frozen=True)
class ContactUri:
    """A device's registered ``sip:`` contact, reduced to what is needed to reach it."""

    request_uri: str
    """The contact URI with its parameters (``;transport=``, ``;line=`` ...), headers dropped."""
    address_of_record: str
    """``sip:user@host[:port]``, for the To header."""
    host: str
    """Host as written, IPv6 references with their brackets."""
    port: int
    transport: Transport

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def bare_host(self) -> str:
        return self.host.strip("[]")


_URI = re.compile(
    r"(?P<scheme>sips?):"
    r"(?:(?P<user>[^@;?]+)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<params>;[^?]*)?"
    r"(?:\?.*)?",
    re.IGNORECASE,
)
_URI_CHARS = re.compile(r"[\x21-\x7e]+")
_VISIBLE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
"""A header value we may write: printable ASCII, no line breaks (no header injection)."""


def parse_contact(contact: str) -> ContactUri:
    """Parse ``sip:user@host[:port][;params]``, bare or in ``<...>``; refuse what we can't reach.

    The Request-URI keeps the contact's parameters: a proxy forwarding to a registered contact
    uses it unchanged (RFC 3261 §16.5), and some phones pick the line from them (Snom ``;line=``).
    The port defaults to 5060 and the transport to UDP (RFC 3261 §19.1.2); locating the phone
    through SRV records (RFC 3263) is skipped because registered contacts name the phone itself.
    """
    text = contact.strip()
    if "<" in text:
        text = text[text.find("<") + 1 : text.rfind(">")]
    match = _URI.fullmatch(text)
    if match is None or not _URI_CHARS.fullmatch(text):
        raise NotifyError("the device's registered contact is not a SIP URI")
    if match["scheme"].lower() == "sips":
        raise NotifyError("TLS transport not supported (sips: contact)")
    params = {}
    for param in (match["params"] or "").split(";")[1:]:
        name, _, value = param.partition("=")
        params[name.strip().lower()] = value.strip().lower()
    named = params.get("transport", "udp")
    if named not in ("udp", "tcp"):
        raise NotifyError(f"{named.upper()} transport not supported")
    transport: Transport = "tcp" if named == "tcp" else "udp"
    port = int(match["port"]) if match["port"] else 5060
    if not 0 < port < 65536:
        raise NotifyError("the device's registered contact has an invalid port")
    user = f"{match['user']}@" if match["user"] else ""
    explicit_port = f":{match['port']}" if match["port"] else ""
    host = match["host"]
    return ContactUri(
        request_uri="sip:" + text.split(":", 1)[1].split("?", 1)[0],
        address_of_record=f"sip:{user}{host}{explicit_port}",
        host=host,
        port=port,
        transport=transport,
    )


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    """(lower-case long name, value), in message order."""

    @property
    def summary(self) -> str:
        return f"{self.status} {self.reason}".rstrip()

    def values(self, name: str) -> list[str]:
        return [value for header, value in self.headers if header == name]

    @property
    def key(self) -> _TransactionKey | None:
        """Branch of the only Via and CSeq method; ``None`` for a response that isn't ours.

        A response with more than one Via value must be discarded (RFC 3261 §18.1.2).
        """
        vias = [via for value in self.values("via") for via in value.split(",")]
        cseqs = self.values("cseq")
        if len(vias) != 1 or len(cseqs) != 1:
            return None
        branch = re.search(r";\s*branch\s*=\s*([^;\s]+)", vias[0], re.IGNORECASE)
        method = cseqs[0].split()[-1:]
        if branch is None or not method:
            return None
        return branch[1], method[0].upper()


# Compact header forms (RFC 3261 §7.3.3) that matter for a response.
_COMPACT: Final = {"v": "via", "l": "content-length", "i": "call-id", "f": "from", "t": "to"}


def _split_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Start line and (lower-case long name, value) headers; ValueError when malformed."""
    lines = re.split(r"\r?\n", head.decode("utf-8", errors="replace").strip("\r\n"))
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation line
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError("header line without a colon")
        name = name.strip().lower()
        headers.append((_COMPACT.get(name, name), value.strip()))
    return lines[0], headers


def _parse_response(start: str, headers: list[tuple[str, str]]) -> _Response | None:
    """The response of a split message head; ``None`` for a request. ValueError when malformed."""
    version, _, rest = start.partition(" ")
    if version.upper() != "SIP/2.0":
        return None
    code, _, reason = rest.partition(" ")
    status = int(code)
    if not 100 <= status <= 699:
        raise ValueError(f"status code {status} out of range")
    printable = "".join(char for char in reason if char.isprintable())[:80]
    return _Response(status, printable, tuple(headers))


_HASHES: Final = {"MD5": "md5", "SHA-256": "sha256"}
_AUTH_PARAM = re.compile(
    r"""([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,\s*|$)"""
)


def _challenge_params(challenge: str) -> dict[str, str] | None:
    """The parameters of a ``Digest`` challenge (RFC 7616 §3.3); ``None`` for another scheme."""
    scheme, _, rest = challenge.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    position, rest = 0, rest.strip()
    while position < len(rest):
        match = _AUTH_PARAM.match(rest, position)
        if match is None:
            return None
        value = match[2]
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[match[1].lower()] = value
        position = match.end()
    return params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def digest_authorization(
    challenge: str, *, method: str, uri: str, username: str, password: str, cnonce: str
) -> str | None:
    """The ``Authorization`` value answering one ``Digest`` challenge, ``None`` if unsupported.

    MD5 and SHA-256 (RFC 8760). With ``qop`` offered the answer uses ``qop=auth`` (``auth-int``
    over the empty body when only that is offered), ``nc=00000001`` and ``cnonce``; without it,
    the RFC 2069 form that RFC 2617 §3.2.2.1 keeps for compatibility.
    """
    params = _challenge_params(challenge)
    if params is None or "realm" not in params or "nonce" not in params:
        return None
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        return None

    def digest(text: str) -> str:
        return hashlib.new(_HASHES[algorithm], text.encode(), usedforsecurity=False).hexdigest()

    realm, nonce = params["realm"], params["nonce"]
    offered = [option.strip().lower() for option in params.get("qop", "").split(",")]
    ha1 = digest(f"{username}:{realm}:{password}")
    fields = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
    ]
    if "auth" in offered or "auth-int" in offered:
        qop = "auth" if "auth" in offered else "auth-int"
        ha2 = digest(f"{method}:{uri}" + (f":{digest('')}" if qop == "auth-int" else ""))
        response = digest(f"{ha1}:{nonce}:00000001:{cnonce}:{qop}:{ha2}")
        fields += [f'response="{response}"', f"qop={qop}", "nc=00000001", f'cnonce="{cnonce}"']
    elif params.get("qop"):
        return None
    else:
        response = digest(f"{ha1}:{nonce}:{digest(f'{method}:{uri}')}")
        fields.append(f'response="{response}"')
    fields.append(f"algorithm={algorithm}")
    if "opaque" in params:
        fields.append(f"opaque={_quote(params['opaque'])}")
    return "Digest " + ", ".join(fields)


def _credentials(response: _Response, uri: str, target: NotifyTarget) -> tuple[str, str]:
    """The header answering a 401 or 407: the topmost challenge we support (RFC 8760)."""
    asked, answer = (
        ("www-authenticate", "Authorization")
        if response.status == 401
        else ("proxy-authenticate", "Proxy-Authorization")
    )
    if not target.sip_user or not target.sip_password:
        raise NotifyError(
            f"device asked for digest authentication ({response.summary}) "
            "but the line has no SIP credentials"
        )
    if not _VISIBLE.fullmatch(target.sip_user):
        raise NotifyError("the line's SIP user contains characters a SIP header can't carry")
    cnonce = secrets.token_hex(8)
    for challenge in response.values(asked):
        value = digest_authorization(
            challenge,
            method="NOTIFY",
            uri=uri,
            username=target.sip_user,
            password=target.sip_password,
            cnonce=cnonce,
        )
        if value is not None:
            return answer, value
    raise NotifyError(
        f"device's digest challenge needs an algorithm or qop we don't support ({response.summary})"
    )


class _Channel(Protocol):
    """A way to the device: sends one request, returns its final response."""

    transport: Literal["UDP", "TCP"]
    local: tuple[str, int]
    last_provisional: str | None

    async def transact(self, request: bytes, key: _TransactionKey) -> _Response: ...

    async def aclose(self) -> None: ...


class _UdpEndpoint(asyncio.DatagramProtocol):
    """The notifier's UDP socket: routes each response to the transaction waiting for it."""

    def __init__(self) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[_TransactionKey, asyncio.Queue[_Response | None]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    @property
    def closed(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            response = _parse_response(*_split_head(data.partition(b"\r\n\r\n")[0]))
        except ValueError as exc:
            log.debug("ignoring malformed SIP datagram from %s: %s", addr, exc)
            return
        key = response.key if response is not None else None
        if key is not None and key in self._waiting:
            self._waiting[key].put_nowait(response)

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for queue in self._waiting.values():
            queue.put_nowait(None)

    def register(self, key: _TransactionKey) -> asyncio.Queue[_Response | None]:
        queue: asyncio.Queue[_Response | None] = asyncio.Queue()
        self._waiting[key] = queue
        return queue

    def unregister(self, key: _TransactionKey) -> None:
        self._waiting.pop(key, None)

    def send(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._transport is None or self._transport.is_closing():
            raise NotifyError("the SIP notifier was closed")
        self._transport.sendto(data, addr)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _UdpChannel:
    transport: Literal["UDP", "TCP"] = "UDP"

    def __init__(self, endpoint: _UdpEndpoint, addr: tuple[Any, ...], local_host: str) -> None:
        self._endpoint = endpoint
        self._addr = addr
        self.local = (local_host, endpoint.local_port)
        self.last_provisional: str | None = None

    async def transact(self, request: bytes, key: _TransactionKey) -> _Response:
        """Send with Timer E retransmissions until a final response (RFC 3261 §17.1.2.2).

        Timer E starts at T1 and doubles up to T2; once a provisional response has arrived
        (Proceeding state) the request is still retransmitted, every T2, as the RFC requires.
        Timer F is the caller's overall deadline, which cancels this coroutine.
        """
        loop = asyncio.get_running_loop()
        queue = self._endpoint.register(key)
        try:
            interval = T1
            self._endpoint.send(request, self._addr)
            retransmit_at = loop.time() + interval
            while True:
                try:
                    async with asyncio.timeout_at(retransmit_at):
                        response = await queue.get()
                except TimeoutError:
                    interval = T2 if self.last_provisional else min(2 * interval, T2)
                    self._endpoint.send(request, self._addr)
                    retransmit_at = loop.time() + interval
                    continue
                if response is None:
                    raise NotifyError("the SIP notifier was closed")
                if response.status >= 200:
                    return response
                self.last_provisional = response.summary
        finally:
            self._endpoint.unregister(key)

    async def aclose(self) -> None:
        """Nothing to release: the socket belongs to the notifier."""


class _TcpChannel:
    transport: Literal["UDP", "TCP"] = "TCP"

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hostport: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._hostport = hostport
        sockname = writer.get_extra_info("sockname")
        self.local = (str(sockname[0]), int(sockname[1]))
        self.last_provisional: str | None = None

    async def transact(self, request: bytes, key: _TransactionKey) -> _Response:
        """Send once (reliable transport: no Timer E) and read until the final response."""
        try:
            self._writer.write(request)
            await self._writer.drain()
            while True:
                response = await self._read_response()
                if response is None or response.key != key:
                    continue
                if response.status >= 200:
                    return response
                self.last_provisional = response.summary
        except (asyncio.IncompleteReadError, ConnectionError):
            raise NotifyError(
                f"{self._hostport} closed the connection without a final answer"
            ) from None
        except asyncio.LimitOverrunError:
            raise NotifyError(f"{self._hostport} sent an oversized SIP message") from None

    async def _read_response(self) -> _Response | None:
        """Read one message, framed by Content-Length (RFC 3261 §18.3); ``None`` for a request.

        Blank lines before a message are CRLF keep-alives (RFC 5626 §3.5.1) and are skipped.
        """
        head = b""
        while not head.strip(b"\r\n"):
            head = await self._reader.readuntil(b"\r\n\r\n")
        try:
            start, headers = _split_head(head)
            response = _parse_response(start, headers)
            lengths = [value for name, value in headers if name == "content-length"]
            body_length = int(lengths[0]) if lengths else 0
        except ValueError:
            raise NotifyError(f"{self._hostport} sent a malformed SIP message") from None
        if not 0 <= body_length <= _MAX_BODY:
            raise NotifyError(f"{self._hostport} sent an oversized SIP message")
        await self._reader.readexactly(body_length)
        return response

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):  # reset by the peer: closed either way
            await self._writer.wait_closed()


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class _Call:
    """What stays the same across the NOTIFY and its authenticated retry."""

    uri: ContactUri
    event: str
    call_id: str
    from_tag: str

    def request(
        self, channel: _Channel, branch: str, cseq: int, authorization: tuple[str, str] | None
    ) -> bytes:
        """The NOTIFY: headers of RFC 3261 §8.1.1, ``rport`` (RFC 3581 §3), RFC 6665 §8.2."""
        host, port = _bracketed(channel.local[0]), channel.local[1]
        contact_transport = ";transport=tcp" if channel.transport == "TCP" else ""
        lines = [
            f"NOTIFY {self.uri.request_uri} SIP/2.0",
            f"Via: SIP/2.0/{channel.transport} {host}:{port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:provisioner@{host}>;tag={self.from_tag}",
            f"To: <{self.uri.address_of_record}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} NOTIFY",
            f"Contact: <sip:provisioner@{host}:{port}{contact_transport}>",
            f"Event: {self.event}",
            "Subscription-State: terminated",
            f"User-Agent: {_USER_AGENT}",
        ]
        if authorization is not None:
            lines.append(f"{authorization[0]}: {authorization[1]}")
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()


_RECEIVE_BUFFER = 4 * 1024 * 1024


class SipNotifier:
    """Sends check-sync NOTIFYs straight to phones: a :class:`~provisioner.notify.Notifier`.

    Safe to call concurrently for many devices. The UDP socket is opened on the first UDP
    notification; :meth:`close` releases it and every open TCP connection.
    """

    def __init__(
        self,
        *,
        local_host: str = "0.0.0.0",  # noqa: S104 - phones are on other hosts by design
        timeout: float = 32.0,
        connect_timeout: float = 5.0,
    ) -> None:
        """
        :param local_host: IP address to send from (``0.0.0.0`` / ``::`` for any); its family
            (IPv4 or IPv6) is the family of the phones this notifier can reach.
        :param timeout: overall limit of one :meth:`notify` call, challenge round included, in
            seconds. The default is Timer F, 64*T1 (RFC 3261 §17.1.2.2).
        :param connect_timeout: limit for establishing a TCP connection, within ``timeout``.
        """
        address = ipaddress.ip_address(local_host)
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._local_host = str(address)
        self._wildcard = address.is_unspecified
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._endpoint: _UdpEndpoint | None = None
        self._endpoint_lock = asyncio.Lock()
        self._tcp_channels: set[_TcpChannel] = set()
        self._closed = False

    async def notify(self, target: NotifyTarget) -> str:
        """Send ``target.event`` to ``target.contact``; return the final 2xx, e.g. ``200 OK``.

        Raises NotifyError for an unusable contact, an unreachable phone, a final response of
        300 or above, a second challenge, or no final response within ``timeout``.
        """
        if self._closed:
            raise RuntimeError("SipNotifier.notify() called after close()")
        if not target.contact:
            raise NotifyError("the device has no registered SIP contact")
        if not _VISIBLE.fullmatch(target.event):
            raise NotifyError("the event contains characters a SIP header can't carry")
        uri = parse_contact(target.contact)
        channel: _Channel | None = None
        try:
            async with asyncio.timeout(self._timeout):
                channel = await self._open(uri)
                return await self._exchange(channel, uri, target)
        except TimeoutError:
            last = channel.last_provisional if channel is not None else None
            waited = f" (last answer: {last})" if last else ""
            raise NotifyError(
                f"no answer from {uri.hostport} within {self._timeout:g} s{waited}"
            ) from None
        finally:
            if channel is not None:
                await channel.aclose()
                if isinstance(channel, _TcpChannel):
                    self._tcp_channels.discard(channel)

    async def close(self) -> None:
        """Close the UDP socket and open TCP connections; pending notifications fail."""
        self._closed = True
        if self._endpoint is not None:
            self._endpoint.close()
        for channel in list(self._tcp_channels):
            await channel.aclose()

    async def _exchange(self, channel: _Channel, uri: ContactUri, target: NotifyTarget) -> str:
        """NOTIFY, then once more with credentials if challenged (RFC 3261 §8.1.3.5, §22.2).

        The retry is a new transaction (new branch) in the same call: same Call-ID and From
        tag, CSeq + 1.
        """
        call = _Call(
            uri, target.event, call_id=secrets.token_hex(16), from_tag=secrets.token_hex(8)
        )
        authorization: tuple[str, str] | None = None
        for cseq in (1, 2):
            branch = "z9hG4bK" + secrets.token_hex(16)  # magic cookie: RFC 3261 §8.1.1.7
            request = call.request(channel, branch, cseq, authorization)
            log.debug("NOTIFY %s over %s, CSeq %d", uri.request_uri, channel.transport, cseq)
            response = await channel.transact(request, (branch, "NOTIFY"))
            log.debug("NOTIFY %s answered %s", uri.request_uri, response.summary)
            if response.status not in (401, 407):
                break
            if authorization is not None:
                raise NotifyError(f"device rejected our credentials ({response.summary})")
            authorization = _credentials(response, uri.request_uri, target)
        if 200 <= response.status < 300:
            return response.summary
        raise NotifyError(f"device answered {response.summary}")

    async def _open(self, uri: ContactUri) -> _Channel:
        addr = await self._resolve(uri)
        if uri.transport == "tcp":
            return await self._connect_tcp(uri, addr)
        endpoint = await self._udp_endpoint()
        return _UdpChannel(endpoint, addr, self._source_address(uri, addr))

    async def _resolve(self, uri: ContactUri) -> tuple[Any, ...]:
        """The phone's socket address, in the family of ``local_host``."""
        try:
            literal = ipaddress.ip_address(uri.bare_host)
        except ValueError:
            literal = None
        if literal is not None and (literal.version == 6) != (self._family == socket.AF_INET6):
            raise NotifyError(
                f"can't reach IPv{literal.version} address {uri.host} from {self._local_host}"
            )
        if literal is not None:
            # What getaddrinfo answers for an address (parse_contact admits no IPv6 zone), without
            # its thread hop: the contacts a PBX reports are addresses (issue 14: ~2 % of the
            # push worker's CPU).
            if literal.version == 4:
                return (str(literal), uri.port)
            return (str(literal), uri.port, 0, 0)
        loop = asyncio.get_running_loop()
        kind = socket.SOCK_STREAM if uri.transport == "tcp" else socket.SOCK_DGRAM
        try:
            infos = await loop.getaddrinfo(uri.bare_host, uri.port, family=self._family, type=kind)
        except socket.gaierror as exc:
            raise NotifyError(f"can't resolve {uri.host}: {exc.strerror}") from None
        return tuple(infos[0][4])

    async def _udp_endpoint(self) -> _UdpEndpoint:
        """The shared UDP socket, opened on first use and reopened if an error closed it."""
        async with self._endpoint_lock:
            if self._endpoint is None or self._endpoint.closed:
                loop = asyncio.get_running_loop()
                try:
                    transport, self._endpoint = await loop.create_datagram_endpoint(
                        _UdpEndpoint, local_addr=(self._local_host, 0), family=self._family
                    )
                    # A burst of notifications brings a burst of answers while the loop is
                    # busy: a larger buffer (the kernel caps it) spares resends for drops.
                    sock = transport.get_extra_info("socket")
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
                except OSError as exc:
                    raise NotifyError(
                        f"can't open a UDP socket on {self._local_host}: {exc.strerror}"
                    ) from None
            return self._endpoint

    def _source_address(self, uri: ContactUri, addr: tuple[Any, ...]) -> str:
        """The address the phone sees us at, for Via and Contact.

        With a wildcard bind, ask the kernel which source it would route from: ``connect`` on a
        throwaway UDP socket selects a route without sending anything.
        """
        if not self._wildcard:
            return self._local_host
        try:
            with socket.socket(self._family, socket.SOCK_DGRAM) as probe:
                probe.connect(addr)
                return str(probe.getsockname()[0])
        except OSError as exc:
            raise NotifyError(f"can't reach {uri.hostport}: {exc.strerror}") from None

    async def _connect_tcp(self, uri: ContactUri, addr: tuple[Any, ...]) -> _TcpChannel:
        local_addr = None if self._wildcard else (self._local_host, 0)
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    addr[0], addr[1], family=self._family, local_addr=local_addr
                )
        except TimeoutError:
            raise NotifyError(
                f"can't connect to {uri.hostport}: no answer within {self._connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise NotifyError(f"can't connect to {uri.hostport}: {exc.strerror}") from None
        channel = _TcpChannel(reader, writer, uri.hostport)
        self._tcp_channels.add(channel)
        return channel

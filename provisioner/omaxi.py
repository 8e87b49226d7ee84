"""Mitel SIP-DECT: changing users on the OpenMobility Manager (OMM) through OM AXI.

OM AXI ("OM Application XML Interface") is the OMM's management interface. Wire facts, from
VENDORS.md, the SIP-DECT compendium's OM AXI chapter and the behaviour public OM AXI clients agree
on:

- TLS to port 12622 (12621 is plain TCP, for debugging). Every message is one XML element, UTF-8,
  without an XML declaration, terminated by one NUL byte; the stream is split on NUL, never on
  TCP reads. A request may carry ``seq="N"``, which its response echoes, so answers are matched to
  requests by ``seq`` and not by order. A failed request's response carries ``errCode``
  (``EAuth``, ``ENoEnt``, ``EInval``, …), ``info`` and sometimes ``bad`` (the offending attribute)
  and ``maxLen``.
- The OMM also sends messages nobody asked for, e.g. ``<EventPPUserCnf>`` to clients that
  subscribed to events. They carry no ``seq`` and are ignored here.
- On a new link the OMM accepts only ``<Open username=".." password=".."/>``. ``OpenResp`` carries
  ``ommVersion``, ``protocolVersion`` and a child ``<publicKey modulus="<hex>" exponent="<hex>"/>``;
  OMMs that leave the key out answer ``<GetPublicKey/>`` with the same two attributes.
- The secret attributes of a PP user, ``pin`` and ``sipPw``, travel RSA-encrypted with that key:
  PKCS#1 v1.5 padding, base64. Responses carry them (and ``credentialPw``, ``serviceAuthPassword``)
  encrypted with the OMM's own key, of no use to a client; they are left out of what this module
  returns, so no caller can log them by accident.
- Ciphertexts in OMM answers published with open-source clients are 64 bytes long, i.e. a 512-bit
  key, which encrypts at most 53 bytes (inferred, not documented). The limit is computed from the
  announced key; a longer secret is refused with a message instead of being sent undecryptable.
- The OMM closes a link that has been idle for five minutes; ``<Ping/>`` keeps it open. This
  client does not keep the link alive on its own: the next call after a drop reconnects and logs
  in again.

Trusting the OMM: OMMs ship self-signed certificates, which the default TLS context refuses. A
site either pins the certificate (``fingerprint``: SHA-256 of the DER certificate, as
``openssl x509 -noout -fingerprint -sha256`` prints it), or passes an ``ssl_context`` that trusts
the OMM's certificate or CA. ``verify=False`` turns checking off and says so in the log at every
connection: whoever sits in the middle then learns the AXI password, which grants full access to
the DECT system. The pin is checked after the TLS handshake and before the first byte of the
login is written.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import re
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

from cryptography.hazmat.primitives.asymmetric import padding, rsa

from provisioner.notify import NotifyError

log = logging.getLogger(__name__)

DEFAULT_PORT = 12622
MAX_MESSAGE_BYTES = 1 << 20
"""A longer message (a runaway stream without NUL) ends the connection."""
CLOSE_SECONDS = 2.0
"""How long :meth:`OmAxiClient.close` waits for the TLS shutdown."""

Attributes = dict[str, str]
"""A record's XML attributes as the OMM sends them: every value a string, booleans ``0``/``1``."""

#: Attributes the OMM returns encrypted with its own key; never handed to callers.
SECRET_ATTRIBUTES = frozenset({"pin", "sipPw", "credentialPw", "serviceAuthPassword"})
_PKCS1_V15_OVERHEAD = 11
_NOT_IN_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DECLARATIONS = re.compile(rb"<!(?i:doctype|entity)")
_HEX = re.compile(r"[0-9a-fA-F]+")


class OmAxiError(NotifyError):
    """The OMM refused a request; ``code`` is its ``errCode`` (``ENoEnt``, ``EInval``, …)."""

    def __init__(self, code: str, info: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.info = info


class _ConnectionLost(Exception):
    """The connection ended before the request's response arrived."""


class _Connection:
    """One link to the OMM: writes requests; a reader task hands each answer to its request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: dict[int, asyncio.Future[ET.Element]] = {}
        self._seqs = itertools.count(1)
        self.public_key: rsa.RSAPublicKey | None = None
        self.closed = False
        self._reader_task = asyncio.create_task(self._read_loop(), name="omaxi-reader")

    def peer_certificate(self) -> bytes | None:
        ssl_object = self._writer.get_extra_info("ssl_object")
        if not isinstance(ssl_object, ssl.SSLObject):
            return None
        return ssl_object.getpeercert(binary_form=True)

    async def request(self, element: ET.Element) -> ET.Element:
        """Send ``element`` with the next ``seq`` and wait for the answer echoing it."""
        if self.closed:
            raise _ConnectionLost
        seq = next(self._seqs)
        element.attrib = {"seq": str(seq), **element.attrib}
        future: asyncio.Future[ET.Element] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            # One write() per message: asyncio never interleaves two writes' bytes.
            self._writer.write(ET.tostring(element, encoding="unicode").encode() + b"\0")
            await self._writer.drain()
            log.debug("OM AXI %s sent (seq %d)", element.tag, seq)
            return await future
        except OSError:
            raise _ConnectionLost from None
        finally:
            self._pending.pop(seq, None)

    async def close(self) -> None:
        self.abort()
        await asyncio.wait({self._reader_task})
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await self._writer.wait_closed()

    def abort(self) -> None:
        """Hang up now; pending requests fail with :class:`_ConnectionLost`."""
        self._reader_task.cancel()
        self._lost()

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    frame = await self._reader.readuntil(b"\0")
                except asyncio.IncompleteReadError:
                    return  # the end of the stream; a cut-off message with it
                self._dispatch(frame[:-1])
        except asyncio.LimitOverrunError:
            log.warning("OM AXI: a message exceeds %d bytes; hanging up", MAX_MESSAGE_BYTES)
        except OSError as exc:
            log.warning("OM AXI connection failed: %s", _reason(exc))
        finally:
            self._lost()

    def _dispatch(self, frame: bytes) -> None:
        if not frame.strip():
            return
        try:
            message = _parse(frame)
        except ValueError as exc:
            # The content is not logged: it may carry (encrypted) secrets.
            log.warning("OM AXI: ignoring a malformed message of %d bytes: %s", len(frame), exc)
            return
        seq = message.get("seq", "")
        future = self._pending.get(int(seq)) if seq.isdigit() else None
        if future is None or future.done():
            log.debug("OM AXI %s ignored: no request waits for it", message.tag)
            return
        future.set_result(message)

    def _lost(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(_ConnectionLost())


class OmAxiClient:
    """An OM AXI session with one OMM, opened on first use and reopened after a drop.

    Concurrent calls share one connection; their answers are matched by ``seq``. A request in
    flight on a connection that turns out to be dead is sent once more on a new one: every request
    this client makes is idempotent (a ``SetPPUser`` sets the same values again). Every failure is
    a :class:`NotifyError` whose text carries no password, PIN or SIP password; refusals by the
    OMM are :class:`OmAxiError` with the OMM's ``errCode``.

    :param host: the OMM's address (for an OMM on an RFP, the RFP running it).
    :param port: 12622 for TLS; 12621 with ``tls=False``.
    :param username: an OMM user account with the "Write" permission (made for OM AXI
        applications in the OM Management Portal's user administration).
    :param password: its password.
    :param tls: False only for debugging on a lab network: the password crosses it readable.
    :param ssl_context: used as given (the caller decides what to trust); ``verify`` is then
        ignored, ``fingerprint`` still checked.
    :param verify: verify the certificate chain and host name with the system's CAs. A
        self-signed OMM certificate fails this: pin it or pass a context trusting it instead.
    :param fingerprint: the SHA-256 fingerprint of the OMM's certificate (hex, colons optional).
        The certificate must match it exactly; chain and host name are then not checked.
    :param timeout: seconds one call may take in all, connecting and logging in included.
    """

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        username: str,
        password: str,
        tls: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        verify: bool = True,
        fingerprint: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not username:
            raise ValueError("OM AXI: the username is empty")
        if _NOT_IN_XML.search(username) or _NOT_IN_XML.search(password):
            raise ValueError("OM AXI: username and password must not contain control characters")
        if not tls and (ssl_context is not None or fingerprint is not None):
            raise ValueError("OM AXI: ssl_context and fingerprint need tls=True")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.timeout = timeout
        self._fingerprint = None if fingerprint is None else _normalise_fingerprint(fingerprint)
        self._unverified = tls and ssl_context is None and self._fingerprint is None and not verify
        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl = ssl_context or _default_context(verify and self._fingerprint is None)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def __aenter__(self) -> OmAxiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and log in now, unless already logged in; the other calls do so on their own."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._connected()
        except TimeoutError:
            raise NotifyError(
                f"OMM at {self.address} did not complete the login within {self.timeout:g} s"
            ) from None

    async def set_pp_user(
        self,
        uid: int,
        *,
        num: str,
        add_id: str | None,
        pin: str | None,
        sip_auth_id: str | None,
        sip_password: str | None,
        name: str | None,
    ) -> Attributes:
        """Update the PP user ``uid`` (``SetPPUser``); attributes passed as None stay as they are.

        ``num`` is the user's number (the SIP user name), ``add_id`` the "User Login Id" a user
        types with the PIN at an unbound handset when the OMM's login variant is ``ID``.
        ``pin`` and ``sip_password`` are encrypted with the key the OMM announced on this
        connection. Returns the user record the OMM answers with, secrets left out. Raises
        :class:`OmAxiError` when the OMM refuses (``ENoEnt``: no user ``uid``; it is not created;
        ``ETooLong`` with ``maxLen``: a value is longer than the OMM takes).
        """
        _check_uid(uid)
        plain = {"num": num, "addId": add_id, "sipAuthId": sip_auth_id, "name": name}
        for attribute, value in plain.items():
            if value is not None and _NOT_IN_XML.search(value):
                raise NotifyError(f"the {attribute} of user {uid} contains a control character")
        secrets = {"pin": pin, "sipPw": sip_password}

        def request(connection: _Connection) -> ET.Element:
            key = connection.public_key
            assert key is not None  # set by the login
            user = {"uid": str(uid), "num": num}
            if add_id is not None:
                user["addId"] = add_id
            if pin is not None:
                user["pin"] = _encrypt(key, pin, f"the PIN of user {uid}")
            if sip_auth_id is not None:
                user["sipAuthId"] = sip_auth_id
            if sip_password is not None:
                user["sipPw"] = _encrypt(key, sip_password, f"the SIP password of user {uid}")
            if name is not None:
                user["name"] = name
            element = ET.Element("SetPPUser")
            ET.SubElement(element, "user", user)
            return element

        response = await self._exchange(request)
        answer = _answer(response, "SetPPUserResp", _present(secrets.values()))
        user = answer.find("user")
        return {} if user is None else _public(user)

    async def get_pp_user(self, uid: int) -> Attributes:
        """The PP user ``uid`` as the OMM holds it (``GetPPUser``), secrets left out.

        Raises :class:`OmAxiError` with code ``ENoEnt`` when there is no such user. The answer is
        checked to be about ``uid``: the OMM treats ``uid`` as where a listing starts.
        """
        _check_uid(uid)
        response = await self._exchange(lambda _: ET.Element("GetPPUser", uid=str(uid)))
        for user in _answer(response, "GetPPUserResp", ()).iter("user"):
            if user.get("uid") == str(uid):
                return _public(user)
        raise OmAxiError("ENoEnt", f"no user {uid}", f"OMM: ENoEnt (no user {uid})")

    async def ping(self) -> None:
        """Check that the OMM answers (``Ping``), logging in first if needed; keeps the link up."""
        _answer(await self._exchange(lambda _: ET.Element("Ping")), "PingResp", ())

    async def close(self) -> None:
        """Hang up; later calls raise NotifyError."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.wait({self._connecting})
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def _exchange(self, request: Callable[[_Connection], ET.Element]) -> ET.Element:
        """Send the request ``request`` builds for a logged-in connection; return the answer."""
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self.timeout):
                connection, reused = await self._connected()
                try:
                    return await connection.request(request(connection))
                except _ConnectionLost:
                    if not reused:
                        raise NotifyError(self._lost_message()) from None
                log.info("OM AXI connection to %s was lost; reconnecting", self.address)
                connection, _ = await self._connected()
                try:
                    return await connection.request(request(connection))
                except _ConnectionLost:
                    raise NotifyError(self._lost_message()) from None
        except TimeoutError:
            if connection is not None and not connection.closed:
                # Silence on an open link may mean the OMM vanished without closing it (a
                # reboot, a firewall dropping state): it would swallow every later request too.
                log.warning("OM AXI: no answer from %s; dropping the connection", self.address)
                connection.abort()
            raise NotifyError(
                f"OMM at {self.address} did not answer within {self.timeout:g} s"
            ) from None

    async def _connected(self) -> tuple[_Connection, bool]:
        """The logged-in connection, and whether it was open before this call."""
        if self._closed:
            raise NotifyError("the OM AXI client is closed")
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection, True
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._open(), name="omaxi-login")
            self._connecting.add_done_callback(self._opened)
        # Shielded: one caller's timeout must not abort the login the other callers wait for.
        return await asyncio.shield(self._connecting), False

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        if task.cancelled():
            return
        failure = task.exception()  # retrieved here, so an unawaited failure is not reported
        if failure is None:
            self._connection = task.result()
        else:
            log.warning("%s", failure)

    async def _open(self) -> _Connection:
        """Connect, check the certificate pin, log in; every failure is a NotifyError."""
        if self._ssl is None:
            log.warning("OM AXI: plain TCP to %s: the password crosses the network", self.address)
        elif self._unverified:
            log.warning(
                "OM AXI: the certificate of the OMM at %s is not verified (verify=False)",
                self.address,
            )
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                    limit=MAX_MESSAGE_BYTES,
                )
                connection = _Connection(reader, writer)
                try:
                    self._check_pin(connection)
                    await self._log_in(connection)
                except BaseException:
                    connection.abort()
                    raise
        except TimeoutError:
            raise NotifyError(
                f"OMM at {self.address} did not complete the OM AXI login within {self.timeout:g} s"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise NotifyError(
                f"the certificate of the OMM at {self.address} does not verify "
                f"({exc.verify_message}); for a self-signed OMM certificate, pin its SHA-256 "
                "fingerprint or pass an ssl_context that trusts it"
            ) from None
        except ssl.SSLError as exc:
            raise NotifyError(
                f"TLS with the OMM at {self.address} failed: {_reason(exc)}"
            ) from None
        except OSError as exc:
            raise NotifyError(f"cannot reach the OMM at {self.address}: {_reason(exc)}") from None
        except _ConnectionLost:
            raise NotifyError(
                f"OMM at {self.address} closed the connection during the login"
            ) from None
        return connection

    def _check_pin(self, connection: _Connection) -> None:
        if self._fingerprint is None:
            return
        certificate = connection.peer_certificate()
        presented = "" if certificate is None else hashlib.sha256(certificate).hexdigest()
        if not hmac.compare_digest(presented, self._fingerprint):
            raise NotifyError(
                f"the OMM at {self.address} presented a certificate with SHA-256 fingerprint "
                f"{_colons(presented) or '(none)'}, not the pinned {_colons(self._fingerprint)}; "
                "not logging in"
            )

    async def _log_in(self, connection: _Connection) -> None:
        response = await connection.request(
            ET.Element("Open", username=self.username, password=self._password)
        )
        code = response.get("errCode")
        if code is not None:
            detail = _detail(response, (self._password,))
            raise NotifyError(
                f"OMM refused the login: {code}{detail} (user {self.username!r} at {self.address})"
            )
        if response.tag != "OpenResp":
            raise NotifyError(f"OMM at {self.address} answered Open with {response.tag}")
        key = response.find("publicKey")
        if key is None:
            key = _answer(
                await connection.request(ET.Element("GetPublicKey")), "GetPublicKeyResp", ()
            )
        connection.public_key = _public_key(key, self.address)
        log.info(
            "OM AXI: logged in to %s as %r (%s, protocol %s, %d-bit key)",
            self.address,
            self.username,
            response.get("ommVersion", "unknown version"),
            response.get("protocolVersion", "?"),
            connection.public_key.key_size,
        )

    def _lost_message(self) -> str:
        return f"OMM at {self.address} closed the connection before answering"


def _answer(response: ET.Element, expected: str, secrets: Iterable[str]) -> ET.Element:
    """``response`` if it is a success of kind ``expected``; else the OMM's refusal as an error."""
    code = response.get("errCode")
    if code is not None:
        info = _scrub(response.get("info", ""), secrets)
        raise OmAxiError(code, info, f"OMM: {code}{_detail(response, secrets)}")
    if response.tag != expected:
        raise NotifyError(f"OMM answered with {response.tag}, expected {expected}")
    return response


def _detail(response: ET.Element, secrets: Iterable[str]) -> str:
    """`` (info; attribute x, at most n)`` from a refusal, secrets blanked out."""
    secrets = tuple(secrets)
    parts = [response.get("info", "")]
    if bad := response.get("bad"):
        parts.append(f"attribute {bad}")
    if max_len := response.get("maxLen"):
        parts.append(f"at most {max_len}")
    text = _scrub("; ".join(part for part in parts if part), secrets)
    return f" ({text})" if text else ""


def _scrub(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so a secret containing another is blanked out whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _present(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(value for value in values if value)


def _public(record: ET.Element) -> Attributes:
    return {name: value for name, value in record.attrib.items() if name not in SECRET_ATTRIBUTES}


def _public_key(element: ET.Element, address: str) -> rsa.RSAPublicKey:
    modulus, exponent = element.get("modulus", ""), element.get("exponent", "")
    if not (_HEX.fullmatch(modulus) and _HEX.fullmatch(exponent)):
        raise NotifyError(f"OMM at {address} announced no usable public key")
    try:
        key = rsa.RSAPublicNumbers(int(exponent, 16), int(modulus, 16)).public_key()
    except ValueError:
        raise NotifyError(f"OMM at {address} announced no usable public key") from None
    if key.key_size // 8 <= _PKCS1_V15_OVERHEAD:
        raise NotifyError(f"OMM at {address} announced a {key.key_size}-bit key, too short")
    return key


def _encrypt(key: rsa.RSAPublicKey, secret: str, what: str) -> str:
    """``secret`` RSA-encrypted (PKCS#1 v1.5) with ``key``, base64: how OM AXI carries secrets."""
    plain = secret.encode("utf-8")
    room = key.key_size // 8 - _PKCS1_V15_OVERHEAD
    if len(plain) > room:
        raise NotifyError(
            f"{what} is {len(plain)} bytes long; the OMM's {key.key_size}-bit key "
            f"carries at most {room}"
        )
    return base64.b64encode(key.encrypt(plain, padding.PKCS1v15())).decode("ascii")


def _parse(frame: bytes) -> ET.Element:
    """One message as an element; ValueError if it is not well-formed XML.

    Entities can only be declared in a document type declaration, so refusing those leaves the
    parser nothing to expand (billion laughs) or fetch (external entities); OM AXI uses neither.
    """
    if _DECLARATIONS.search(frame):
        raise ValueError("document type declarations are not part of OM AXI")
    try:
        return ET.fromstring(frame)  # noqa: S314 -- declarations refused above
    except ET.ParseError as exc:
        raise ValueError(str(exc)) from None


def _check_uid(uid: int) -> None:
    if uid < 1:
        raise ValueError(f"OM AXI user ids start at 1, got {uid}")


def _normalise_fingerprint(fingerprint: str) -> str:
    digits = re.sub(r"[\s:]", "", fingerprint).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise ValueError("OM AXI: the fingerprint must be a SHA-256 digest, 64 hex digits")
    return digits


def _colons(digest: str) -> str:
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


def _default_context(verify: bool) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context()
    # Pinned (checked after the handshake) or explicitly unverified: no CA store to load.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, ConnectionError) and exc.errno:
        return os.strerror(exc.errno)  # "Connection refused", not "Connect call failed …"
    return exc.strerror or str(exc) or type(exc).__name__

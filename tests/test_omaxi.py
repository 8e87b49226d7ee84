"""OmAxiClient against a stand-in for a Mitel OMM's OM AXI.

No OMM can run here, so :class:`FakeOmm` stands in for one at the protocol level. It listens with
TLS on 127.0.0.1 with a self-signed certificate made in the test (as OMMs ship), and speaks the
wire format of ``provisioner/omaxi.py``'s docstring: XML elements terminated by NUL, split on NUL
whatever the TCP reads; ``seq`` echoed; ``Open`` checked against a known account and answered with
``OpenResp`` carrying the public half of an RSA key pair the stand-in owns (512 bits, the size
real OMM answers suggest), or with ``errCode="EAuth"``; ``GetPublicKey``; ``SetPPUser`` decrypts
``pin`` and ``sipPw`` with its private key (PKCS#1 v1.5, base64), which proves the client
encrypted with the announced key, and stores them; ``GetPPUser`` returns stored users with
booleans as ``0``/``1`` and the secrets encrypted; unknown uids get ``errCode="ENoEnt"``.

It sends event messages (``EventPPUserCnf`` after each change, ``EventDECTSubscriptionMode`` after
the login) although nobody subscribed, which a real OMM does only after ``Subscribe``, so that
every test shows the client ignoring messages it did not ask for. Switches make it write in odd
chunks, hold answers back and release them in reverse, hang up instead of answering, or fall
silent.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import itertools
import logging
import secrets
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from provisioner.notify import NotifyError
from provisioner.omaxi import OmAxiClient, OmAxiError

USER = "provisioner"
PASSWORD = "Axi-P@ss \"w&<rd>' x"
WRONG_PASSWORD = "Wr0ng-Axi-Secret-7x"
PIN = "472918"
SIP_PASSWORD = "SipSecret-x9QvT3"
WAIT = 5.0
"""Upper bound for waiting on the stand-in's events; a test that needs it has failed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- keys and certificate -----------------------------------------------------------------------


def _probably_prime(n: int) -> bool:
    """Miller-Rabin; cryptography refuses to generate RSA keys under 1024 bits."""
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(40):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, e: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if (candidate - 1) % e and _probably_prime(candidate):
            return candidate


def rsa_512() -> rsa.RSAPrivateKey:
    e = 65537
    p = _prime(256, e)
    q = _prime(256, e)
    while q == p:
        q = _prime(256, e)
    d = pow(e, -1, (p - 1) * (q - 1))
    return rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    ).private_key()


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    pem: str
    fingerprint: str
    """SHA-256 of the DER certificate, as ``openssl x509 -fingerprint -sha256`` prints it."""


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "omm.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("omm-cert")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return Certificate(
        folder / "cert.pem",
        folder / "key.pem",
        pem.decode(),
        ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper(),
    )


@pytest.fixture(scope="session")
def omm_key() -> rsa.RSAPrivateKey:
    return rsa_512()


# --- the stand-in OMM ---------------------------------------------------------------------------


def element(tag: str, seq: str | None, **attributes: str) -> ET.Element:
    return ET.Element(tag, {"seq": seq, **attributes} if seq is not None else attributes)


def user_record(uid: int, num: str) -> dict[str, str]:
    return {
        "uid": str(uid),
        "relType": "Unbound",
        "ppn": "0",
        "name": f"User {num}",
        "num": num,
        "sipAuthId": f"{num}-aabbcc-{uid}",
        "sipPw": f"old-sip-{uid}",
        "pin": "000000",
        "locatable": "0",
        "msgRight": "1",
        "external": "0",
    }


@dataclass
class Link:
    writer: asyncio.StreamWriter
    logged_in: bool = False
    held: list[tuple[str, list[ET.Element]]] = field(default_factory=list)


class FakeOmm:
    def __init__(self, tls: ssl.SSLContext | None, key: rsa.RSAPrivateKey) -> None:
        self.tls = tls
        self.key = key
        self.users = {uid: user_record(uid, f"10{uid}") for uid in (1, 2, 3)}
        self.requests: list[ET.Element] = []
        self.raw: list[bytes] = []
        """Every message received, as sent (without the NUL)."""
        self.connections = 0
        self.answered: list[str] = []
        """``seq`` of the SetPPUser answers, in the order they were sent."""
        self.key_in_open = True
        self.hold_sets = 0
        """Hold back this many SetPPUser answers, then send them in reverse order."""
        self.drop_on: str | None = None
        """Hang up instead of answering the next request of this name."""
        self.chunks: tuple[int, ...] = ()
        """Write every answer in pieces of these sizes, cycled; empty: in one write."""
        self.noise: list[bytes] = []
        """Frames sent before every answer."""
        self.pieces: list[bytes] = []
        self.link_finished = asyncio.Event()
        self.all_closed = asyncio.Event()
        self.all_closed.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def named(self, tag: str) -> list[ET.Element]:
        return [request for request in self.requests if request.tag == tag]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self.hang_up()
        await self._server.wait_closed()

    async def hang_up(self) -> None:
        """Close every client connection, as a rebooting OMM would."""
        writers = list(self._writers)
        for writer in writers:
            writer.close()
        for writer in writers:
            async with asyncio.timeout(WAIT):
                await writer.wait_closed()

    def decrypt(self, value: str) -> str:
        ciphertext = base64.b64decode(value, validate=True)
        return self.key.decrypt(ciphertext, padding.PKCS1v15()).decode()

    def encrypt(self, value: str) -> str:
        ciphertext = self.key.public_key().encrypt(value.encode(), padding.PKCS1v15())
        return base64.b64encode(ciphertext).decode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.all_closed.clear()
        self._writers.add(writer)
        link = Link(writer)
        buffer = b""
        try:
            while data := await reader.read(4096):
                *frames, buffer = (buffer + data).split(b"\0")
                for frame in frames:
                    self.raw.append(frame)
                    request = ET.fromstring(frame)  # noqa: S314 -- the client under test wrote it
                    self.requests.append(request)
                    if request.tag == self.drop_on:
                        self.drop_on = None
                        return
                    await self._answer(link, request)
        except OSError:
            pass  # the client hung up mid-stream
        finally:
            writer.close()
            self._writers.discard(writer)
            self.link_finished.set()
            if not self._writers:
                self.all_closed.set()

    async def _answer(self, link: Link, request: ET.Element) -> None:
        seq, tag = request.get("seq"), request.tag
        if tag == "Open":
            await self._open(link, request)
        elif not link.logged_in:
            await self._send(link, element(f"{tag}Resp", seq, errCode="EAuth", info="no session"))
        elif tag == "GetPublicKey":
            await self._send(link, element("GetPublicKeyResp", seq, **self._key_attributes()))
        elif tag == "Ping":
            await self._send(link, element("PingResp", seq, timeStamp="1700000000"))
        elif tag == "GetPPUser":
            await self._get_pp_user(link, seq, int(request.get("uid", "0")))
        elif tag == "SetPPUser":
            await self._set_pp_user(link, seq, request)
        else:
            await self._send(link, element(f"{tag}Resp", seq, errCode="EInval", info="unknown"))

    def _key_attributes(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        modulus = f"{numbers.n:X}"
        return {"modulus": modulus.zfill(len(modulus) + len(modulus) % 2), "exponent": "010001"}

    async def _open(self, link: Link, request: ET.Element) -> None:
        seq = request.get("seq")
        if request.get("username") != USER or request.get("password") != PASSWORD:
            await self._send(
                link, element("OpenResp", seq, protocolVersion="45", errCode="EAuth", info="")
            )
            return
        link.logged_in = True
        answer = element(
            "OpenResp",
            seq,
            ommStbState="None",
            ommVersion="OpenMobility Manager SIP-DECT 8.1SP1",
            axiVersion="8.1",
            protocolVersion="45",
        )
        if self.key_in_open:
            ET.SubElement(answer, "publicKey", self._key_attributes())
        await self._send(link, answer, element("EventDECTSubscriptionMode", None, mode="Off"))

    async def _get_pp_user(self, link: Link, seq: str | None, uid: int) -> None:
        stored = self.users.get(uid)
        if stored is None:
            await self._send(
                link, element("GetPPUserResp", seq, errCode="ENoEnt", info="no such user")
            )
            return
        answer = element("GetPPUserResp", seq)
        ET.SubElement(answer, "user", self._on_the_wire(stored))
        await self._send(link, answer)

    def _on_the_wire(self, stored: dict[str, str]) -> dict[str, str]:
        return {
            name: self.encrypt(value) if name in ("pin", "sipPw") else value
            for name, value in stored.items()
        }

    async def _set_pp_user(self, link: Link, seq: str | None, request: ET.Element) -> None:
        user = request.find("user")
        assert user is not None
        uid = int(user.get("uid", "0"))
        answers: list[ET.Element]
        if uid not in self.users:
            answers = [element("SetPPUserResp", seq, errCode="ENoEnt", info="no such user")]
        else:
            update = dict(user.attrib)
            for name in ("pin", "sipPw"):
                if name in update:
                    update[name] = self.decrypt(update[name])
            self.users[uid].update(update)
            event = element("EventPPUserCnf", None)
            ET.SubElement(event, "user", uid=str(uid), num=self.users[uid]["num"])
            answer = element("SetPPUserResp", seq)
            ET.SubElement(answer, "user", self._on_the_wire(self.users[uid]))
            answers = [event, answer]
        if not self.hold_sets:
            self.answered.append(seq or "")
            await self._send(link, *answers)
            return
        link.held.append((seq or "", answers))
        if len(link.held) < self.hold_sets:
            return
        self.hold_sets = 0
        released: list[ET.Element] = []
        for held_seq, held in reversed(link.held):
            self.answered.append(held_seq)
            released.extend(held)
        link.held.clear()
        await self._send(link, *released)  # all in one write: many messages in one read

    async def _send(self, link: Link, *elements: ET.Element) -> None:
        data = b"".join(frame + b"\0" for frame in self.noise) + b"".join(
            ET.tostring(e, encoding="unicode").encode() + b"\0" for e in elements
        )
        if not self.chunks:
            link.writer.write(data)
            await link.writer.drain()
            return
        sizes = itertools.cycle(self.chunks)
        while data:
            size = next(sizes)
            piece, data = data[:size], data[size:]
            self.pieces.append(piece)
            link.writer.write(piece)
            await link.writer.drain()


def server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    return context


@pytest.fixture
async def omm(certificate: Certificate, omm_key: rsa.RSAPrivateKey) -> AsyncIterator[FakeOmm]:
    fake = FakeOmm(server_context(certificate), omm_key)
    await fake.start()
    yield fake
    await fake.stop()


def client_for(omm: FakeOmm, certificate: Certificate, **options: Any) -> OmAxiClient:
    settings: dict[str, Any] = {
        "username": USER,
        "password": PASSWORD,
        "fingerprint": certificate.fingerprint,
        "timeout": WAIT,
    }
    settings.update(options)
    return OmAxiClient("127.0.0.1", omm.port, **settings)


@pytest.fixture
async def client(omm: FakeOmm, certificate: Certificate) -> AsyncIterator[OmAxiClient]:
    axi = client_for(omm, certificate)
    yield axi
    await axi.close()


async def set_user(client: OmAxiClient, uid: int, **changes: str | None) -> dict[str, str]:
    values: dict[str, Any] = {
        "num": f"20{uid}-aabbcc-{uid}",
        "add_id": f"20{uid}",
        "pin": PIN,
        "sip_auth_id": f"20{uid}-aabbcc-{uid}",
        "sip_password": SIP_PASSWORD,
        "name": None,
    }
    values.update(changes)
    return await client.set_pp_user(uid, **values)


# --- tests --------------------------------------------------------------------------------------


async def test_login_and_set_pp_user_the_omm_decrypts_the_secrets(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    result = await set_user(client, 2, name="Zoë Müller & Söhne <Lager>")

    stored = omm.users[2]
    assert stored["pin"] == PIN
    assert stored["sipPw"] == SIP_PASSWORD
    assert stored["num"] == "202-aabbcc-2"
    assert stored["addId"] == "202"
    assert stored["sipAuthId"] == "202-aabbcc-2"
    assert stored["name"] == "Zoë Müller & Söhne <Lager>"

    login, update = omm.requests
    assert login.tag == "Open"
    assert login.attrib == {"seq": "1", "username": USER, "password": PASSWORD}
    assert update.tag == "SetPPUser"
    assert update.get("seq") == "2"
    sent = update.find("user")
    assert sent is not None
    assert list(sent.attrib) == ["uid", "num", "addId", "pin", "sipAuthId", "sipPw", "name"]
    for name in ("pin", "sipPw"):
        assert len(base64.b64decode(sent.get(name, ""), validate=True)) == 64  # 512-bit key
    assert omm.raw[1].startswith(
        b'<SetPPUser seq="2"><user uid="2" num="202-aabbcc-2" addId="202" pin="'
    )
    assert not any(PIN.encode() in frame or SIP_PASSWORD.encode() in frame for frame in omm.raw)

    assert result["uid"] == "2"
    assert result["num"] == "202-aabbcc-2"
    assert result["addId"] == "202"
    assert result["name"] == "Zoë Müller & Söhne <Lager>"
    assert "pin" not in result
    assert "sipPw" not in result


async def test_attributes_passed_as_none_are_left_alone(omm: FakeOmm, client: OmAxiClient) -> None:
    await client.set_pp_user(
        3, num="303", add_id=None, pin=None, sip_auth_id=None, sip_password=None, name=None
    )

    sent = omm.named("SetPPUser")[0].find("user")
    assert sent is not None
    assert sent.attrib == {"uid": "3", "num": "303"}
    assert omm.users[3]["pin"] == "000000"
    assert omm.users[3]["sipPw"] == "old-sip-3"


async def test_get_pp_user_returns_attributes_without_secrets(client: OmAxiClient) -> None:
    assert await client.get_pp_user(1) == {
        "uid": "1",
        "relType": "Unbound",
        "ppn": "0",
        "name": "User 101",
        "num": "101",
        "sipAuthId": "101-aabbcc-1",
        "locatable": "0",
        "msgRight": "1",
        "external": "0",
    }


async def test_wrong_password_is_refused_without_leaking_it(
    omm: FakeOmm, certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    axi = client_for(omm, certificate, password=WRONG_PASSWORD)
    try:
        with pytest.raises(NotifyError) as caught:
            await set_user(axi, 2)
    finally:
        await axi.close()

    assert str(caught.value).startswith("OMM refused the login: EAuth")
    assert USER in str(caught.value)
    for text in (str(caught.value), repr(caught.value), caplog.text):
        assert WRONG_PASSWORD not in text
        assert PIN not in text
        assert SIP_PASSWORD not in text
    assert caplog.records  # the failure was logged, without the password
    assert [request.tag for request in omm.requests] == ["Open"]
    assert omm.requests[0].get("password") == WRONG_PASSWORD
    assert omm.users[2]["pin"] == "000000"


async def test_secrets_never_reach_the_log(
    omm: FakeOmm, client: OmAxiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await set_user(client, 2)
    await client.get_pp_user(2)
    with pytest.raises(OmAxiError):
        await set_user(client, 99)

    sent = omm.named("SetPPUser")[0].find("user")
    assert sent is not None
    for secret in (PASSWORD, PIN, SIP_PASSWORD, sent.get("pin"), sent.get("sipPw")):
        assert secret
        assert secret not in caplog.text


async def test_unknown_uid_is_reported_with_the_omms_code(client: OmAxiClient) -> None:
    with pytest.raises(OmAxiError) as caught:
        await set_user(client, 99)
    assert caught.value.code == "ENoEnt"
    assert caught.value.info == "no such user"
    assert str(caught.value) == "OMM: ENoEnt (no such user)"
    assert isinstance(caught.value, NotifyError)

    with pytest.raises(OmAxiError) as lookup:
        await client.get_pp_user(99)
    assert lookup.value.code == "ENoEnt"


@pytest.mark.parametrize("spelling", ["colons", "plain"])
async def test_pinned_fingerprint_connects(
    omm: FakeOmm, certificate: Certificate, spelling: str
) -> None:
    pin = certificate.fingerprint
    if spelling == "plain":
        pin = pin.replace(":", "").lower()
    async with client_for(omm, certificate, fingerprint=pin) as axi:
        await axi.ping()
    assert [request.tag for request in omm.requests] == ["Open", "Ping"]


async def test_wrong_fingerprint_refuses_before_sending_the_login(
    omm: FakeOmm, certificate: Certificate
) -> None:
    other = certificate.fingerprint[:-1] + ("0" if certificate.fingerprint[-1] != "0" else "1")
    axi = client_for(omm, certificate, fingerprint=other)
    try:
        with pytest.raises(NotifyError) as caught:
            await axi.ping()
    finally:
        await axi.close()

    message = str(caught.value)
    assert certificate.fingerprint in message  # what the OMM presented, to check out of band
    assert f"not the pinned {other}" in message
    assert PASSWORD not in message
    # The TLS handshake completed, so the stand-in saw the connection open and close.
    async with asyncio.timeout(WAIT):
        await omm.link_finished.wait()
    assert omm.raw == []


async def test_self_signed_certificate_is_refused_by_default(
    omm: FakeOmm, certificate: Certificate
) -> None:
    axi = client_for(omm, certificate, fingerprint=None)
    try:
        with pytest.raises(NotifyError) as caught:
            await axi.ping()
    finally:
        await axi.close()
    assert "does not verify" in str(caught.value)
    assert "fingerprint" in str(caught.value)
    assert omm.raw == []


async def test_context_trusting_the_certificate_connects(
    omm: FakeOmm, certificate: Certificate
) -> None:
    context = ssl.create_default_context(cadata=certificate.pem)
    async with client_for(omm, certificate, fingerprint=None, ssl_context=context) as axi:
        await axi.ping()


async def test_verification_off_connects_and_says_so(
    omm: FakeOmm, certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with client_for(omm, certificate, fingerprint=None, verify=False) as axi:
        await axi.ping()
    assert "is not verified" in caplog.text


async def test_concurrent_updates_answered_out_of_order_are_matched_by_seq(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    # Even uids exist, odd ones do not: an answer handed to the wrong caller would show.
    uids = list(range(10, 30))
    omm.users.update({uid: user_record(uid, f"3{uid}") for uid in uids if uid % 2 == 0})
    omm.hold_sets = len(uids)

    results = await asyncio.gather(
        *(set_user(client, uid, pin=f"{uid:06}", num=f"4{uid}") for uid in uids),
        return_exceptions=True,
    )

    for uid, result in zip(uids, results, strict=True):
        if uid % 2:
            assert isinstance(result, OmAxiError)
            assert result.code == "ENoEnt"
        else:
            assert isinstance(result, dict)
            assert (result["uid"], result["num"]) == (str(uid), f"4{uid}")
            assert omm.users[uid]["pin"] == f"{uid:06}"
    sent = [request.get("seq") for request in omm.named("SetPPUser")]
    assert omm.answered == list(reversed(sent))
    assert omm.connections == 1
    assert len(omm.named("Open")) == 1


async def test_reconnects_and_logs_in_again_after_the_omm_hung_up(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    await client.ping()
    await omm.hang_up()

    await set_user(client, 2)
    assert omm.users[2]["pin"] == PIN
    assert omm.connections == 2
    assert len(omm.named("Open")) == 2


async def test_request_cut_off_by_a_hang_up_is_sent_again(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    await client.ping()
    omm.drop_on = "SetPPUser"

    await set_user(client, 2)
    assert omm.users[2]["sipPw"] == SIP_PASSWORD
    assert omm.connections == 2
    assert len(omm.named("SetPPUser")) == 2


async def test_messages_split_across_reads_and_several_in_one_read(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    omm.chunks = (1, 2, 3, 5, 8, 13, 900, 7)

    await set_user(client, 1)
    await set_user(client, 2, name="Ünïcødé straddling chunks ✓")
    assert (await client.get_pp_user(2))["name"] == "Ünïcødé straddling chunks ✓"
    await client.ping()

    assert omm.users[1]["pin"] == PIN
    assert any(piece.count(b"\0") >= 2 for piece in omm.pieces)  # several messages in a piece
    assert any(b"\0" not in piece for piece in omm.pieces)  # messages split across pieces


async def test_unsolicited_and_malformed_messages_are_ignored(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    omm.noise = [
        b"",
        b"<EventRFPState id='3' connected='1'",  # cut off: not XML
        b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><x>&a;</x>',
        b'<PingResp seq="999"/>',  # nobody waits for seq 999
        b"<EventPPDevCnf><pp ppn='1' ipei='03074 0220259 3'/></EventPPDevCnf>",
    ]
    await set_user(client, 2)
    await client.ping()
    assert omm.users[2]["pin"] == PIN


async def test_public_key_asked_for_when_open_resp_has_none(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    omm.key_in_open = False
    await set_user(client, 2)
    assert [request.tag for request in omm.requests] == ["Open", "GetPublicKey", "SetPPUser"]
    assert omm.users[2]["pin"] == PIN


async def test_secret_too_long_for_the_omms_key_is_refused(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    longest = "s" * 53
    await set_user(client, 2, sip_password=longest)
    assert omm.users[2]["sipPw"] == longest

    too_long = "t" * 54
    with pytest.raises(NotifyError) as caught:
        await set_user(client, 2, sip_password=too_long)
    assert str(caught.value) == (
        "the SIP password of user 2 is 54 bytes long; the OMM's 512-bit key carries at most 53"
    )
    assert len(omm.named("SetPPUser")) == 1


async def test_silence_on_an_open_connection_drops_it(
    omm: FakeOmm, certificate: Certificate
) -> None:
    async with client_for(omm, certificate, timeout=0.3) as axi:
        await axi.ping()
        omm.hold_sets = 1_000  # never answers: an OMM gone without closing the link
        with pytest.raises(NotifyError, match=r"did not answer within 0\.3 s"):
            await set_user(axi, 2)
        omm.hold_sets = 0
        await set_user(axi, 3)
    assert omm.users[3]["pin"] == PIN
    assert omm.connections == 2


async def test_close_hangs_up_and_later_calls_fail(omm: FakeOmm, client: OmAxiClient) -> None:
    await client.ping()
    await client.close()

    async with asyncio.timeout(WAIT):
        await omm.all_closed.wait()
    with pytest.raises(NotifyError, match="closed"):
        await client.ping()
    assert omm.connections == 1


async def test_control_characters_are_refused_before_connecting(
    omm: FakeOmm, client: OmAxiClient
) -> None:
    with pytest.raises(NotifyError, match="the name of user 2 contains a control character"):
        await set_user(client, 2, name="evil\x00<Open/>")
    with pytest.raises(NotifyError, match="the addId of user 2 contains a control character"):
        await set_user(client, 2, add_id="20\x002")
    assert omm.connections == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"password": "a\x00b"}, "control characters"),
        ({"username": ""}, "username is empty"),
        ({"fingerprint": "AB:CD"}, "64 hex digits"),
        ({"tls": False}, "need tls=True"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"username": USER, "password": "x", "fingerprint": "ab" * 32}
    settings.update(options)
    with pytest.raises(ValueError, match=message) as caught:
        OmAxiClient("omm.example", **settings)
    assert "a\x00b" not in str(caught.value)


async def test_plain_tcp_for_debugging_works_and_warns(
    omm_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    plain = FakeOmm(None, omm_key)
    await plain.start()
    try:
        async with OmAxiClient(
            "127.0.0.1", plain.port, username=USER, password=PASSWORD, tls=False
        ) as axi:
            await set_user(axi, 2)
    finally:
        await plain.stop()
    assert plain.users[2]["pin"] == PIN
    assert "plain TCP" in caplog.text
    assert PASSWORD not in caplog.text


async def test_unreachable_omm_fails_quickly() -> None:
    port = free_port()  # closed again: nothing listens there
    axi = OmAxiClient("127.0.0.1", port, username=USER, password=PASSWORD, verify=False)
    try:
        async with asyncio.timeout(WAIT):
            with pytest.raises(NotifyError) as caught:
                await axi.ping()
    finally:
        await axi.close()
    assert str(caught.value).startswith(f"cannot reach the OMM at 127.0.0.1:{port}")
    assert PASSWORD not in str(caught.value)

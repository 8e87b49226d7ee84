"""OpenLDAP's slapd as the directory, and ldap-utils to change it (a helper, not tests).

slapd 2.5 (Debian packages ``slapd`` and ``ldap-utils``) runs in the foreground (``-d 0``) from
a ``slapd.conf`` generated in a directory of its own under /var/tmp, with an ``mdb`` database,
listening on two free loopback ports: ``ldap://`` (which offers StartTLS) and ``ldaps://``. Its
TLS certificate is issued for 127.0.0.1 by a CA the tests make with ``cryptography``; a second,
unrelated CA is there to be refused. Started as root, it drops to ``nobody`` (``-u``/``-g``),
who owns the directory. Readiness is the port accepting connections; a stop is awaited.

The service account ``cn=reader`` may read everything but passwords, and its searches are held
to 50 entries (``size.hard=50``) and pages of at most 50 (``size.pr=50``), with no limit over a
whole paged search (``size.prtotal=unlimited``): more users than that need paging. The seed
has 120 people, ``alice`` (in the admin group), and ``juergen`` with a non-ASCII name.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "slapd-Root-Secret-4"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "Reader-Bind-Secret-93"
PEOPLE = f"ou=people,{SUFFIX}"
ADMINS = f"cn=pbx-admins,ou=groups,{SUFFIX}"
SEEDED_PEOPLE = 120
ALICE_PASSWORD = "Alice-Directory-Pw-1"
JUERGEN_NAME = "Jürgen Müller-Åström"
#: The size limits the service account meets (see the module's docstring).
SIZE_LIMIT = 50
RUN_AS = "nobody"
STARTUP = 15.0


def person(
    uid: str,
    name: str,
    *,
    base: str = PEOPLE,
    extension: str | None = None,
    password: str | None = None,
    mail: bool = True,
) -> str:
    """An inetOrgPerson entry as LDIF (for ``add``)."""
    lines = [
        f"dn: uid={uid},{base}",
        "objectClass: inetOrgPerson",
        f"uid: {uid}",
        f"cn: {name}",
        f"sn: {name.split()[-1]}",
    ]
    if mail:
        lines.append(f"mail: {uid}@example.org")
    if extension:
        lines.append(f"telephoneNumber: {extension}")
    if password:
        lines.append(f"userPassword: {password}")
    return "\n".join(lines) + "\n"


def _seed() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Example\ndc: example\n",
        f"dn: {READER_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: reader\n"
        f"sn: reader\nuserPassword: {READER_PASSWORD}\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        person("alice", "Alice Directory", extension="2001", password=ALICE_PASSWORD),
        person("juergen", JUERGEN_NAME, extension="2002", password="Juergen-Pw-2"),
        *(
            person(f"p{n:03d}", f"Person {n:03d}", extension=str(5000 + n))
            for n in range(1, SEEDED_PEOPLE + 1)
        ),
        f"dn: {ADMINS}\nobjectClass: groupOfNames\ncn: pbx-admins\nmember: uid=alice,{PEOPLE}\n",
    ]
    return "\n".join(entries)


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    other_ca_file: Path
    cert_file: Path
    key_file: Path


def _make_pki(directory: Path) -> Pki:
    now = datetime.datetime.now(datetime.UTC)

    def ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("provisioner test CA")
    _, other_cert = ca("provisioner other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(
        directory / "ca.pem",
        directory / "other-ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.other_ca_file.write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


def _config(directory: Path, pki: Pki) -> str:
    schema = Path("/etc/ldap/schema")
    includes = "\n".join(
        f"include {schema / name}.schema" for name in ("core", "cosine", "inetorgperson", "nis")
    )
    return f"""{includes}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {directory}/slapd.pid
argsfile {directory}/slapd.args
TLSCACertificateFile {pki.ca_file}
TLSCertificateFile {pki.cert_file}
TLSCertificateKeyFile {pki.key_file}
database mdb
maxsize 104857600
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {directory}/db
limits users size.soft={SIZE_LIMIT} size.hard={SIZE_LIMIT} size.pr={SIZE_LIMIT}
  size.prtotal=unlimited
access to attrs=userPassword by self =xw by anonymous auth by * none
access to * by users read by * none
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Slapd:
    """A slapd the tests start, stop, and change with ldapadd/ldapmodify/ldapdelete."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.tls_port = _free_port()
        self.log = directory / "slapd.log"
        self.pki = _make_pki(directory)
        (directory / "db").mkdir()
        self.config = directory / "slapd.conf"
        self.config.write_text(_config(directory, self.pki))
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            for path in [directory, *directory.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no output)"
        return "--- slapd output:\n" + "\n".join(text.splitlines()[-30:])

    def start(self) -> None:
        slapd = shutil.which("slapd") or shutil.which("slapd", path="/usr/sbin:/sbin")
        if slapd is None:
            pytest.fail("slapd is not installed: apt-get install slapd ldap-utils")
        privileges: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            privileges = ["-u", str(user.pw_uid), "-g", str(user.pw_gid)]
        urls = f"{self.url}/ {self.ldaps_url}/"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [slapd, "-d", "0", "-h", urls, "-f", str(self.config), *privileges],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP
        while not (_accepting(self.port) and _accepting(self.tls_port)):
            if self.process.poll() is not None:
                pytest.fail(f"slapd exited with {self.process.returncode}\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"slapd not listening within {STARTUP} s\n{self.tail()}")
            time.sleep(0.02)  # the polling interval, not a synchronisation

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _tool(self, tool: str, ldif: str, *extra: str) -> None:
        result = subprocess.run(
            [tool, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *extra],
            input=ldif.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"{tool}: {result.stderr.decode(errors='replace')}"

    def add(self, ldif: str) -> None:
        self._tool("ldapadd", ldif)

    def modify(self, ldif: str) -> None:
        self._tool("ldapmodify", ldif)

    def delete(self, *dns: str) -> None:
        self._tool("ldapdelete", "\n".join(dns) + "\n")

    def new_subtree(self, name: str) -> str:
        """An empty ``ou`` of its own for a test that changes the directory."""
        dn = f"ou={name},{SUFFIX}"
        self.add(f"dn: {dn}\nobjectClass: organizationalUnit\nou: {name}\n")
        return dn


def start_slapd() -> tuple[Slapd, Path]:
    # Not pytest's tmp_path: as root it is 0700, which nobody cannot search.
    base = Path(tempfile.mkdtemp(prefix="provisioner-slapd-", dir="/var/tmp"))
    base.chmod(0o755)
    server = Slapd(base)
    server.start()
    try:
        server.add(_seed())
    except BaseException:
        server.stop()
        raise
    return server, base

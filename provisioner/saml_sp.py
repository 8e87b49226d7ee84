"""This service as a SAML 2.0 service provider (SP) of one identity provider (IdP): the edge
where pysaml2 (and the ``xmlsec1`` program it runs) is used and its errors become ours.

What an answer must be to be believed, checked by pysaml2 and again here where pysaml2 is
lenient: the assertion signed by the IdP's key from its metadata (a signed response alone
is not enough), issued by that IdP, an ``AudienceRestriction`` naming this SP (pysaml2 accepts
an assertion without one), bearer confirmations whose ``Recipient`` is this SP's ACS URL
(pysaml2 checks it only when given details this SP has no use for) and whose ``InResponseTo``
is a request this SP sent, a ``Destination`` (when present) that is the ACS URL (pysaml2
drops the assertion silently otherwise), and the validity windows
(``NotBefore``/``NotOnOrAfter``) with :data:`CLOCK_SKEW_SECONDS` of slack. Which requests
are outstanding and which assertions were used already is the caller's part
(:mod:`provisioner.sso`, in the database).

Verification runs ``xmlsec1`` and blocks: callers run :meth:`ServiceProvider.verify` in a
thread.
"""

from __future__ import annotations

import calendar
import fcntl
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, SAMLError
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor, metadata_tostring_fix
from saml2.response import IncorrectlySigned, StatusError, UnsolicitedResponse
from saml2.sigver import SigverError, get_xmlsec_binary
from saml2.time_util import str_to_time
from saml2.validate import ResponseLifetimeExceed, ToEarly
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from provisioner.saml import CLOCK_SKEW_SECONDS, Assertion, refused
from provisioner.settings import SamlSettings, Settings, SettingsError

# pysaml2 logs whole assertions (names, addresses) at DEBUG and subjects at INFO: personal data
# has no place in the service log. Its warnings and errors stay.
logging.getLogger("saml2").setLevel(logging.WARNING)

_KEY_BITS = 3072
_CERT_LIFETIME = timedelta(days=3650)


class ServiceProvider:
    """The SP: its metadata, AuthnRequests, and the verification of the IdP's answers."""

    def __init__(self, settings: Settings, saml: SamlSettings) -> None:
        key_file, cert_file = saml.sp_key_file, saml.sp_cert_file
        if key_file is None or cert_file is None:
            key_file = settings.data_dir / "saml-sp.key"
            cert_file = settings.data_dir / "saml-sp.crt"
            ensure_key_pair(key_file, cert_file, urlsplit(settings.public_url).hostname or "sp")
        self.idp_entity_id = saml.idp_entity_id
        self.entity_id = f"{settings.public_url}/saml/metadata"
        self.acs_url = f"{settings.public_url}/saml/acs"
        try:
            xmlsec = get_xmlsec_binary()
        except SigverError:
            raise SettingsError(
                "PROVISIONER_SAML_IDP_METADATA: single sign-on needs the xmlsec1 program "
                "(Debian package xmlsec1)"
            ) from None
        config: dict[str, Any] = {
            "entityid": self.entity_id,
            "xmlsec_binary": xmlsec,
            "key_file": str(key_file),
            "cert_file": str(cert_file),
            "metadata": {"local": [str(saml.idp_metadata)]},
            "accepted_time_diff": CLOCK_SKEW_SECONDS,
            "allow_unknown_attributes": True,
            "signing_algorithm": SIG_RSA_SHA256,
            "digest_algorithm": DIGEST_SHA256,
            "service": {
                "sp": {
                    "name": "provisioner",
                    "endpoints": {
                        "assertion_consumer_service": [(self.acs_url, BINDING_HTTP_POST)]
                    },
                    "want_assertions_signed": True,
                    "want_response_signed": False,
                    "allow_unsolicited": False,
                    "authn_requests_signed": True,
                }
            },
        }
        # Two configurations: loading the SP's key takes pysaml2 some 200 ms, so the client
        # that signs requests (on the event loop only) is made once, while verification, in
        # threads, gets a client of its own each time from a configuration without the key.
        # Fresh clients also keep pysaml2's per-subject memory from growing. The key is for
        # signing only (the metadata says so): IdPs do not encrypt for this SP.
        self._config = _loaded(config)
        self._verify_config = _loaded({k: v for k, v in config.items() if k != "key_file"})
        self._requests = Saml2Client(config=self._config)

    @cached_property
    def metadata(self) -> str:
        """This SP's metadata document (what the IdP's administrator imports)."""
        descriptor = entity_descriptor(self._config)
        descriptor.extensions = None  # pysaml2's list of every algorithm it knows, MD5 included
        text = metadata_tostring_fix(descriptor, {"xs": "http://www.w3.org/2001/XMLSchema"})
        return text.decode() if isinstance(text, bytes) else str(text)

    def authn_request(self, relay_state: str) -> tuple[str, str]:
        """A signed AuthnRequest for the HTTP-Redirect binding: its ID and the IdP's URL that
        carries it."""
        request_id, info = self._requests.prepare_for_authenticate(
            entityid=self.idp_entity_id,
            relay_state=relay_state,
            binding=BINDING_HTTP_REDIRECT,
            sigalg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
        )
        location = dict(info["headers"])["Location"]
        return str(request_id), str(location)

    def verify(self, saml_response: str, request_id: str) -> Assertion:
        """Check the posted ``SAMLResponse`` as the answer to ``request_id`` (blocks: run it in
        a thread); refusals are ``saml_invalid`` with a reason."""
        try:
            response = Saml2Client(config=self._verify_config).parse_authn_request_response(
                saml_response, BINDING_HTTP_POST, outstanding={request_id: request_id}
            )
        # pysaml2 signals a failed check with its own classes, with ValueError, and with bare
        # Exception (audience, unknown conditions): every one of them is a refusal here.
        except Exception as exc:
            raise refused(*_refusal_of(exc)) from None
        if response is None or response.response is None:
            raise refused("invalid", "The identity provider's answer is not valid.")
        # pysaml2 leaves the assertion out, without an error, when the Destination is wrong.
        destination = response.response.destination
        if destination is not None and destination != self.acs_url:
            raise refused("destination", "The answer was sent to another address.")
        if response.assertion is None:
            raise refused("invalid", "The identity provider's answer holds no valid assertion.")
        return self._checked(response, request_id)

    def _checked(self, response: Any, request_id: str) -> Assertion:
        """What pysaml2 verified, checked where it is lenient, as an :class:`Assertion`."""
        assertion = response.assertion
        issuer = assertion.issuer.text.strip() if assertion.issuer is not None else None
        if issuer != self.idp_entity_id:
            raise refused("issuer", "The assertion comes from another identity provider.")
        conditions = assertion.conditions
        audiences = {
            (audience.text or "").strip()
            for restriction in (conditions.audience_restriction if conditions else [])
            for audience in restriction.audience
        }
        if self.entity_id not in audiences:
            raise refused("audience", "The assertion is meant for another service.")
        confirmations = assertion.subject.subject_confirmation
        recipients = {
            c.subject_confirmation_data.recipient if c.subject_confirmation_data else None
            for c in confirmations
        }
        if not confirmations or recipients != {self.acs_url}:
            raise refused("recipient", "The assertion is meant for another address.")
        if response.in_response_to != request_id:
            raise refused("unsolicited", "The answer is to no request of this service.")
        ends = [c.subject_confirmation_data.not_on_or_after for c in confirmations] + [
            conditions.not_on_or_after
        ]
        ends = [end for end in ends if end]
        if not ends or not assertion.id:
            raise refused("invalid", "The assertion has no ID or no end of validity.")
        latest = max(calendar.timegm(str_to_time(end)) for end in ends)
        name_id = response.name_id
        return Assertion(
            id=assertion.id,
            issuer=issuer,
            request_id=request_id,
            expires_at=datetime.fromtimestamp(latest + CLOCK_SKEW_SECONDS, UTC),
            name_id=(name_id.text or "").strip() or None if name_id is not None else None,
            name_id_format=name_id.format if name_id is not None else None,
            attributes=_attributes(assertion, response.ava or {}),
        )


def _loaded(config: dict[str, Any]) -> SPConfig:
    loaded = SPConfig()
    try:
        loaded.load(config)
    except (SAMLError, OSError, ValueError) as exc:
        raise SettingsError(
            f"PROVISIONER_SAML_IDP_METADATA: pysaml2 cannot use it ({type(exc).__name__})"
        ) from None
    return loaded


def _refusal_of(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, UnsolicitedResponse):
        return "unsolicited", "The answer is to no request of this service."
    if isinstance(exc, ResponseLifetimeExceed):
        return "expired", "The assertion has expired."
    if isinstance(exc, ToEarly):
        return "not_yet_valid", "The assertion is not valid yet."
    if isinstance(exc, StatusError):
        return "idp_status", "The identity provider did not sign you in."
    if isinstance(exc, SigverError | IncorrectlySigned):
        return "signature", "The assertion is not signed by the identity provider."
    text = str(exc)
    if "AudienceRestrictions" in text:
        return "audience", "The assertion is meant for another service."
    if "recipient" in text:
        return "recipient", "The assertion is meant for another address."
    return "invalid", "The identity provider's answer is not valid."


def _attributes(assertion: Any, ava: Mapping[str, list[str]]) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for statement in assertion.attribute_statement:
        for attribute in statement.attribute:
            values = tuple((v.text or "").strip() for v in attribute.attribute_value if v.text)
            for name in (attribute.name, attribute.friendly_name):
                if name:
                    found.setdefault(name.lower(), values)
    for local_name, local_values in ava.items():
        found.setdefault(local_name.lower(), tuple(str(v) for v in local_values))
    return found


# --- the SP's key and certificate ----------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_key_pair(key_file: Path, cert_file: Path, common_name: str) -> None:
    """Create the SP's private key (mode 0600) and a self-signed certificate for it, once:
    processes starting together on one data directory wait for the first one's pair."""
    key_file.parent.mkdir(parents=True, exist_ok=True)
    with _locked(key_file.parent / ".saml-sp.lock"):
        if key_file.exists() and cert_file.exists():
            return
        key_pem, cert_pem = self_signed_key_pair(common_name, _KEY_BITS, _CERT_LIFETIME)
        _write(key_file, key_pem, 0o600)
        _write(cert_file, cert_pem, 0o644)


def self_signed_key_pair(common_name: str, bits: int, lifetime: timedelta) -> tuple[bytes, bytes]:
    """A new RSA key and a self-signed certificate for it (valid from a day ago, for a clock
    behind ours), both PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + lifetime)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` under a temporary name, then rename: never a partial file in place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)

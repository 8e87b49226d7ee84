"""A real SAML identity provider for the tests (a helper, not tests): pysaml2's IdP side
(``saml2.server.Server``) with a key and certificate made here, signing with ``xmlsec1``.

It reads the AuthnRequest the service redirected the browser to, and answers it the way an
IdP does: a Response to that request's ID, for the ACS URL and audience the service's own
metadata names, with the assertion signed. Each way an answer can be forged or stale is a
parameter of :meth:`TestIdP.answer`; nothing is mocked.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, class_name, samlp
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT, NameID
from saml2.server import Server
from saml2.sigver import pre_signature_part, signed_instance_factory
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from provisioner.saml_sp import self_signed_key_pair

ENTITY_ID = "https://idp.example.test/idp"
# http: Chromium holds up a form an https page posts to an http address (the test server).
SSO_URL = "http://idp.example.test/sso"
PASSWORD_CONTEXT = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def make_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A fresh RSA key and a self-signed certificate for it, as PEM files."""
    key_pem, cert_pem = self_signed_key_pair(name, 2048, timedelta(days=30))
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.crt"
    key_file.write_bytes(key_pem)
    cert_file.write_bytes(cert_pem)
    return key_file, cert_file


@dataclass(frozen=True)
class Request:
    """The AuthnRequest as the IdP received it through the browser."""

    id: str
    acs_url: str
    issuer: str
    relay_state: str


class TestIdP:
    """One identity provider: its key pair, its metadata file, and the SP it trusts."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, directory: Path, name: str = "idp") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key_file, self.cert_file = make_key_pair(directory, name)
        self.sp_metadata_file: Path | None = None
        self.metadata_file = directory / f"{name}-metadata.xml"
        self.metadata_file.write_text(self._metadata())

    def _config(self, lifetime: timedelta = timedelta(minutes=5)) -> IdPConfig:
        config: dict[str, Any] = {
            "entityid": ENTITY_ID,
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "service": {
                "idp": {
                    "endpoints": {"single_sign_on_service": [(SSO_URL, BINDING_HTTP_REDIRECT)]},
                    "policy": {
                        "default": {
                            "lifetime": {"seconds": int(lifetime.total_seconds())},
                            "name_form": NAME_FORMAT_URI,
                            "attribute_restrictions": None,
                        }
                    },
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT],
                }
            },
        }
        if self.sp_metadata_file is not None:
            config["metadata"] = {"local": [str(self.sp_metadata_file)]}
        loaded = IdPConfig()
        loaded.load(config)
        return loaded

    def _metadata(self) -> str:
        text = create_metadata_string(None, config=self._config())
        return text.decode() if isinstance(text, bytes) else str(text)

    def trust(self, sp_metadata: str) -> None:
        """Import the service's metadata, as an IdP administrator does."""
        self.sp_metadata_file = self.directory / "sp-metadata.xml"
        self.sp_metadata_file.write_text(sp_metadata)

    def receive(self, redirect_url: str) -> Request:
        """Read the AuthnRequest the service sent the browser here with."""
        assert redirect_url.startswith(SSO_URL + "?"), redirect_url
        query = parse_qs(urlsplit(redirect_url).query)
        parsed = Server(config=self._config()).parse_authn_request(
            query["SAMLRequest"][0], BINDING_HTTP_REDIRECT
        )
        message = parsed.message
        return Request(
            id=message.id,
            acs_url=message.assertion_consumer_service_url,
            issuer=message.issuer.text,
            relay_state=query.get("RelayState", [""])[0],
        )

    def answer(
        self,
        request: Request,
        *,
        username: str = "alice",
        attributes: dict[str, list[str]] | None = None,
        name_id_format: str = NAMEID_FORMAT_PERSISTENT,
        sign_assertion: bool = True,
        sign_response: bool = False,
        lifetime: timedelta = timedelta(minutes=5),
        issued_ago: timedelta | None = None,
        edit: Callable[[str], str] | None = None,
        audience: str | None = None,
        in_response_to: str | None = None,
    ) -> str:
        """A Response to ``request`` (base64, as the browser posts it): NameID ``username``,
        the attributes given, signed as asked, valid for ``lifetime`` from its issue, for
        ``audience`` (default: the service that asked).

        ``issued_ago`` dates the whole answer back (negative: forward) as an IdP whose clock
        is off, or an answer kept for later, would: every instant in it moves. ``edit``
        rewrites the XML, as an IdP that builds it wrong would. Either happens before the
        assertion is signed, the way pysaml2's IdP signs its own."""
        server = Server(config=self._config(lifetime))
        prepare = issued_ago is not None or edit is not None
        if prepare:
            sign_assertion = False
        response = server.create_authn_response(
            identity=attributes if attributes is not None else {},
            in_response_to=in_response_to or request.id,
            destination=request.acs_url,
            sp_entity_id=audience or request.issuer,
            name_id=NameID(format=name_id_format, text=username),
            authn={"class_ref": PASSWORD_CONTEXT, "authn_auth": ENTITY_ID},
            sign_assertion=sign_assertion,
            sign_response=sign_response,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
            binding=BINDING_HTTP_POST,
        )
        xml = str(response)
        if prepare:
            if issued_ago is not None:
                xml = _moved_back(xml, issued_ago)
            if edit is not None:
                xml = edit(xml)
            xml = _signed_assertion(server, xml)
        return base64.b64encode(xml.encode()).decode()


_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _moved_back(xml: str, by: timedelta) -> str:
    def move(match: re.Match[str]) -> str:
        moment = datetime.strptime(match.group(0), "%Y-%m-%dT%H:%M:%SZ") - by
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    return _INSTANT.sub(move, xml)


def _signed_assertion(server: Server, xml: str) -> str:
    """The Response with its assertion signed by ``server``'s key (as pysaml2's IdP does)."""
    response = samlp.response_from_string(xml)
    assertion = response.assertion[0]
    assertion.signature = pre_signature_part(
        assertion.id, server.sec.my_cert, 1, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256
    )
    signed = signed_instance_factory(response, server.sec, [(class_name(assertion), assertion.id)])
    return str(signed)

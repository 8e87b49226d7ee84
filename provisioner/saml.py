"""SAML 2.0 single sign-on, the light part: what a verified assertion says, a first look at a
posted answer, and the refusal every failed check becomes. The service provider itself, which
needs pysaml2 (seconds to import), is :mod:`provisioner.saml_sp`, loaded only when SAML is
configured.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml

from provisioner.errors import ProvisionerError, invalid

#: How far the IdP's clock may be off ours, either way.
CLOCK_SKEW_SECONDS = 60
NAME_ID = "nameid"
"""The attribute mapping's name for the subject's NameID (``username=NameID``)."""
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"

_SAMLP = "{urn:oasis:names:tc:SAML:2.0:protocol}"
_SAML = "{urn:oasis:names:tc:SAML:2.0:assertion}"


def refused(reason: str, message: str) -> ProvisionerError:
    """An answer from the IdP that is not believed; ``reason`` says which check failed."""
    error = invalid("saml_invalid", message)
    error.reason = reason
    return error


@dataclass(frozen=True)
class Assertion:
    """A verified assertion: who the IdP says signed in, for which of our requests."""

    id: str
    issuer: str
    request_id: str
    expires_at: datetime
    """Until when it could be accepted (its latest ``NotOnOrAfter`` plus the clock skew)."""
    name_id: str | None
    name_id_format: str | None
    attributes: Mapping[str, tuple[str, ...]]
    """Values by attribute ``Name``, ``FriendlyName`` and pysaml2's local name, lower-cased."""

    def value(self, source: str) -> str | None:
        """The first value of attribute ``source``, or the NameID for ``NameID``."""
        if source.lower() == NAME_ID:
            return self.name_id
        values = self.attributes.get(source.lower(), ())
        return values[0] if values else None


@dataclass(frozen=True)
class Unverified:
    """What a posted answer claims, read before anything is verified: only to pick the
    outstanding request and to refuse a known assertion early, never to trust."""

    in_response_to: str | None
    issuer: str | None
    assertion_id: str | None


def is_transient(assertion: Assertion) -> bool:
    """A NameID that changes at every sign-in: no way to know a user by."""
    return assertion.name_id_format == NAMEID_TRANSIENT


def peek(saml_response: str) -> Unverified:
    """What the posted answer claims, unverified; an answer that is no SAML Response at all
    is refused (``malformed``)."""
    try:
        root = parse_xml(base64.b64decode(saml_response, validate=False))
    except (binascii.Error, ValueError, ParseError, DefusedXmlException):
        raise refused("malformed", "The answer is no SAML response.") from None
    if root.tag != f"{_SAMLP}Response":
        raise refused("malformed", "The answer is no SAML response.")
    assertion = root.find(f"{_SAML}Assertion")
    issuer = assertion.find(f"{_SAML}Issuer") if assertion is not None else None
    return Unverified(
        in_response_to=root.get("InResponseTo"),
        issuer=(issuer.text or "").strip() if issuer is not None else None,
        assertion_id=assertion.get("ID") if assertion is not None else None,
    )

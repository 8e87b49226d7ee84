"""Outcomes a caller can cause, each with a stable machine-readable code.

The domain raises these; each audience renders them its own way (the web layer maps
:class:`Kind` to an HTTP status, the CLI to an exit code). Messages are for humans and never
contain a secret.
"""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    INVALID = "invalid"  # the request itself is malformed
    UNPROCESSABLE = "unprocessable"  # well-formed, but breaks a rule (policy, missing email)
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    LOCKED = "locked"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # a needed part is not configured
    UPSTREAM = "upstream"  # a peer (SMTP server, ...) failed


class ProvisionerError(Exception):
    """An expected failure: ``code`` is the contract, ``message`` a human sentence."""

    def __init__(
        self,
        kind: Kind,
        code: str,
        message: str,
        *,
        reason: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message
        self.reason = reason
        """Finer machine-readable cause within ``code`` (e.g. which policy rule failed)."""
        self.retry_after = retry_after


def invalid(code: str, message: str) -> ProvisionerError:
    return ProvisionerError(Kind.INVALID, code, message)


def unprocessable(code: str, message: str) -> ProvisionerError:
    return ProvisionerError(Kind.UNPROCESSABLE, code, message)


def not_found(code: str, message: str) -> ProvisionerError:
    return ProvisionerError(Kind.NOT_FOUND, code, message)


def conflict(code: str, message: str) -> ProvisionerError:
    return ProvisionerError(Kind.CONFLICT, code, message)


def forbidden(code: str, message: str) -> ProvisionerError:
    return ProvisionerError(Kind.FORBIDDEN, code, message)


def unauthenticated(code: str, message: str) -> ProvisionerError:
    return ProvisionerError(Kind.UNAUTHENTICATED, code, message)


def directory_unavailable() -> ProvisionerError:
    """The LDAP directory did not answer (or not usefully): the caller may retry later."""
    return ProvisionerError(
        Kind.UNAVAILABLE,
        "directory_unavailable",
        "The directory cannot be reached; try again shortly.",
        retry_after=30,
    )

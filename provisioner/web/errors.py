"""Rendering errors as ``{"error": {"code", "message"}}`` and the middleware that does it."""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from provisioner.errors import Kind, ProvisionerError
from provisioner.outage import database_unavailable
from provisioner.web.keys import REQUEST_ID

log = logging.getLogger(__name__)

STATUS: dict[Kind, int] = {
    Kind.INVALID: 400,
    Kind.UNAUTHENTICATED: 401,
    Kind.FORBIDDEN: 403,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.UNPROCESSABLE: 422,
    Kind.LOCKED: 423,
    Kind.RATE_LIMITED: 429,
    Kind.UPSTREAM: 502,
    Kind.UNAVAILABLE: 503,
}

# aiohttp's own refusals (routing, body size) in the same shape as ours.
_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is malformed."),
    401: ("unauthenticated", "Authentication is required."),
    403: ("forbidden", "You may not do this."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept this method."),
    413: ("body_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send JSON."),
}


def error_document(code: str, message: str) -> bytes:
    """The body :func:`error_response` sends, as bytes (for the phones' lean server)."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    reason: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if reason is not None:
        error["reason"] = reason
    return web.json_response({"error": error}, status=status, headers=headers)


def render_error(exc: ProvisionerError) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    if exc.kind is Kind.UNAUTHENTICATED:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="provisioner"'}
    return error_response(
        STATUS[exc.kind], exc.code, exc.message, reason=exc.reason, headers=headers
    )


class _OncePer:
    """True at most once per ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = -seconds

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True


_OUTAGE_WARNING = _OncePer(60.0)


def note_database_unavailable(request: web.Request, exc: BaseException) -> None:
    """Log a request refused for want of the database: one line, no traceback, and a WARNING
    at most once a minute (an outage under load must not flood the log)."""
    log.log(
        logging.WARNING if _OUTAGE_WARNING() else logging.DEBUG,
        "request %s %s refused: database unavailable (%s) [%s]",
        request.method,
        request.path,
        type(exc).__name__,
        request.get(REQUEST_ID, ""),
    )


#: Status, code, message and headers of the answer to a request refused for want of the database.
DATABASE_UNAVAILABLE = (
    503,
    "database_unavailable",
    "The database cannot be reached; try again shortly.",
    (("Retry-After", "5"),),
)


def database_unavailable_response() -> web.Response:
    status, code, message, headers = DATABASE_UNAVAILABLE
    return error_response(status, code, message, headers=dict(headers))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the contract's error shape; never leak a stack trace."""
    request[REQUEST_ID] = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    try:
        return await handler(request)
    except ProvisionerError as exc:
        return render_error(exc)
    except asyncpg.DataError:
        # A value the database cannot store (a NUL byte, say) that validation let through:
        # still the caller's input, so a 400, and never echoed since it may be a secret.
        log.warning(
            "request %s refused: value not storable [%s]", request.path, request[REQUEST_ID]
        )
        return error_response(400, "value_invalid", "A value in the request cannot be stored.")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(exc.status, code, message, headers=headers)
    except Exception as exc:
        if database_unavailable(exc):
            note_database_unavailable(request, exc)
            return database_unavailable_response()
        log.exception(
            "request %s %s failed [%s]", request.method, request.path, request[REQUEST_ID]
        )
        return error_response(
            500, "internal_error", f"Internal error; reference {request[REQUEST_ID]}."
        )


class _MalformedRequests(logging.Filter):
    """aiohttp logs every request its parser refuses at ERROR with a traceback: one per junk
    request, a cheap way to flood the log. The client got its 400; one DEBUG line is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args = "malformed request refused: %s", (type(exc).__name__,)
            record.exc_info = None
            record.exc_text = None
        return True


_MALFORMED = _MalformedRequests()


def quiet_malformed_requests() -> None:
    """Install the filter on aiohttp's server logger (idempotent: a filter is added once)."""
    logging.getLogger("aiohttp.server").addFilter(_MALFORMED)

"""Reading request input: JSON bodies with typed fields, and query parameters.

Every refusal is a :class:`ProvisionerError` naming the field, so the caller sees exactly what
to fix; nothing here echoes a field's value back (it may be a secret).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any, TypeVar, cast

from aiohttp import web

from provisioner.errors import invalid

T = TypeVar("T")
_MISSING: Any = object()


async def json_body(request: web.Request, allowed: Collection[str]) -> dict[str, Any]:
    """The request's JSON object; unknown keys are refused so typos do not pass silently."""
    if request.content_type != "application/json":
        raise invalid("content_type_invalid", "Send the body as application/json.")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid("json_invalid", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise invalid("body_invalid", "The body must be a JSON object.")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid("field_unknown", f"Unknown field(s): {', '.join(unknown)}.")
    return body


async def json_list(request: web.Request) -> list[Any]:
    if request.content_type != "application/json":
        raise invalid("content_type_invalid", "Send the body as application/json.")
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid("json_invalid", "The body is not valid JSON.") from None
    if not isinstance(body, list):
        raise invalid("body_invalid", "The body must be a JSON array.")
    return body


def field(body: dict[str, Any], name: str, kind: type[T], default: Any = _MISSING) -> T:
    """``body[name]`` checked to be of ``kind``; missing → ``default`` or ``field_missing``.

    ``None`` is accepted only when the default is None (an optional, nullable field).
    """
    if name not in body:
        if default is _MISSING:
            raise invalid("field_missing", f"The field {name} is required.")
        return default  # type: ignore[no-any-return]
    value = body[name]
    if value is None and default is None:
        return cast(T, None)
    # bool is an int subclass; never take true for a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise invalid("field_type", f"The field {name} must be {_type_name(kind)}.")
    return value


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list"}.get(
        kind, kind.__name__
    )


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise invalid("query_invalid", f"{name} must be a whole number from {low} to {high}.")
    return int(text)


def query_datetime(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise invalid("query_invalid", f"{name} must be an ISO 8601 date or time.") from None
    if value.tzinfo is None:
        raise invalid("query_invalid", f"{name} needs a time zone, e.g. 2026-01-31T00:00:00Z.")
    return value

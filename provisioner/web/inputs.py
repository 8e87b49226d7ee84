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


#: The deepest nesting of arrays and objects a body may have. No request needs more than 3; the
#: JSON parser recurses per level, so a deep body must be refused before it is parsed.
MAX_JSON_DEPTH = 32


def load_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON; ``json_invalid`` (400) when it is not, or nests too deep."""
    if _nesting_depth(raw) > MAX_JSON_DEPTH:
        raise invalid("json_invalid", f"The body nests deeper than {MAX_JSON_DEPTH} levels.")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise invalid("json_invalid", "The body is not valid JSON.") from None


def _nesting_depth(raw: bytes) -> int:
    """The deepest ``[``/``{`` nesting in ``raw``, brackets inside strings not counted; a linear
    scan that stops as soon as the limit is passed."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


async def json_body(request: web.Request, allowed: Collection[str]) -> dict[str, Any]:
    """The request's JSON object; unknown keys are refused so typos do not pass silently."""
    if request.content_type != "application/json":
        raise invalid("content_type_invalid", "Send the body as application/json.")
    body = load_json(await request.read())
    if not isinstance(body, dict):
        raise invalid("body_invalid", "The body must be a JSON object.")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise invalid("field_unknown", f"Unknown field(s): {', '.join(unknown)}.")
    return body


async def json_list(request: web.Request) -> list[Any]:
    if request.content_type != "application/json":
        raise invalid("content_type_invalid", "Send the body as application/json.")
    body = load_json(await request.read())
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


_BOOLS = {"true": True, "false": False}


def query_bool(request: web.Request, name: str) -> bool | None:
    """``true`` or ``false``; absent or empty: None."""
    text = request.query.get(name)
    if not text:
        return None
    if text not in _BOOLS:
        raise invalid("query_invalid", f"{name} must be true or false.")
    return _BOOLS[text]


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

"""Reading request input: JSON bodies checked against their shape, and query parameters.

A body's shape is declared once, as a schema of the OpenAPI document
(:mod:`provisioner.web.openapi`): the document shows it and :func:`read_body` enforces it, so the
two cannot drift. A refusal is a :class:`ProvisionerError` naming the field: the structural
codes (``field_unknown``, ``field_missing``, ``field_type``) or, for a rule on a field's value,
the code the schema declares with it (``x-error``). Nothing here echoes a value back (it may be a
secret).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeVar, cast

from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from provisioner.errors import Kind, ProvisionerError, invalid
from provisioner.web.keys import CORE

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
        return json.loads(raw, parse_float=_number)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise invalid("json_invalid", "The body is not valid JSON.") from None


def _number(text: str) -> int | float:
    """A JSON number with a fraction or exponent: an int when it is a whole one (JSON, and the
    API document's integers, make no difference between 5 and 5.0)."""
    value = float(text)
    return int(value) if value.is_integer() else value


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


async def read_body(request: web.Request, shape: str) -> Any:
    """The request's JSON body, checked against the document's schema ``shape``; the defaults
    the schema declares are filled in for absent fields."""
    if request.content_type != "application/json":
        raise invalid("content_type_invalid", "Send the body as application/json.")
    data = load_json(await request.read())
    check_shape(data, shape, pin_min_length=request.config_dict[CORE].settings.pin_min_length)
    return data


def check_shape(data: Any, shape: str, *, pin_min_length: int) -> None:
    """Raise the refusal for the first rule of ``shape`` that ``data`` breaks; fill defaults."""
    checker = _checker(shape, pin_min_length)
    errors = list(checker.validator.iter_errors(data))
    if errors:
        raise _refusal(min(errors, key=_precedence))
    if isinstance(data, dict):
        _fill_defaults(checker.defaults, data)
    elif isinstance(data, list):
        for item in data:
            _fill_defaults(checker.item_defaults, item)


@dataclass(frozen=True)
class _Checker:
    validator: Draft202012Validator
    defaults: dict[str, Any]
    """The top-level fields' defaults, filled in for absent fields (handlers read no other)."""
    item_defaults: dict[str, Any]
    """The same for the items of an array body."""


@cache
def _checker(shape: str, pin_min_length: int) -> _Checker:
    from provisioner.web.openapi import openapi_document  # the document imports the domain

    components = openapi_document(pin_min_length)["components"]
    schema = components["schemas"][shape]
    # The shape's own $refs point into the document: validate with the components beside it.
    root = {"$ref": "#/$defs/shape", "$defs": {"shape": schema}, "components": components}

    def defaults_of(sub: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in sub:  # "#/components/schemas/Name"
            sub = components["schemas"][sub["$ref"].rpartition("/")[2]]
        props = sub.get("properties", {})
        return {name: prop["default"] for name, prop in props.items() if "default" in prop}

    return _Checker(
        Draft202012Validator(root), defaults_of(schema), defaults_of(schema.get("items", {}))
    )


def _fill_defaults(defaults: dict[str, Any], body: dict[str, Any]) -> None:
    for name, value in defaults.items():
        body.setdefault(name, value)


#: Which refusal a request gets when it breaks several rules: the shape of the whole body first,
#: then unknown, missing and mistyped fields, then the rules on values.
_ORDER = {"additionalProperties": 1, "required": 2, "type": 3}


def _rule_of(error: ValidationError) -> dict[str, Any] | None:
    """The ``x-error`` the schema declares for the rule ``error`` broke, if any: by default for
    every rule on the value, not for the structural ones (type, required, unknown fields)."""
    rule = error.schema.get("x-error") if isinstance(error.schema, dict) else None
    if rule is None:
        return None
    keyword = str(error.validator)
    applies = keyword in rule["keywords"] if "keywords" in rule else keyword not in _ORDER
    return cast(dict[str, Any], rule) if applies else None


def _precedence(error: ValidationError) -> tuple[int, int, list[str]]:
    if not error.absolute_path and error.validator == "type":
        rank = 0
    else:
        rank = _ORDER.get(str(error.validator), len(_ORDER) + 1)
    return rank, len(error.absolute_path), [str(p) for p in error.absolute_path]


def _refusal(error: ValidationError) -> ProvisionerError:
    rule = _rule_of(error)
    keyword = str(error.validator)
    if rule is not None:
        kind = Kind.UNPROCESSABLE if rule.get("status") == 422 else Kind.INVALID
        reason = rule.get("reasons", {}).get(keyword)
        return ProvisionerError(kind, rule["code"], rule["message"], reason=reason)
    path = list(error.absolute_path)
    expected: Any = error.validator_value
    instance: Any = error.instance
    schema: Any = error.schema
    if keyword == "type" and not path:
        return invalid("body_invalid", f"The body must be {_json_type(expected)}.")
    if keyword == "additionalProperties":
        unknown = sorted(set(instance) - set(schema.get("properties", {})))
        names = ", ".join(_field_name([*path, name]) for name in unknown)
        return invalid("field_unknown", f"Unknown field(s): {names}.")
    if keyword == "required":
        missing = [name for name in expected if name not in instance]
        return invalid(
            "field_missing", f"The field {_field_name([*path, missing[0]])} is required."
        )
    if keyword == "type":
        return invalid(
            "field_type", f"The field {_field_name(path)} must be {_json_type(expected)}."
        )
    return invalid(
        "field_invalid", f"The field {_field_name(path)} is not valid; see the API document."
    )


def _field_name(path: Iterable[Any]) -> str:
    return ".".join(str(part) for part in path) or "body"


_JSON_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "boolean": "true or false",
    "array": "a JSON array",
    "object": "a JSON object",
    "null": "null",
    "number": "a number",
}


def _json_type(names: str | list[str]) -> str:
    return " or ".join(_JSON_TYPES[n] for n in ([names] if isinstance(names, str) else names))


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


def query_int(
    request: web.Request,
    name: str,
    default: int,
    low: int,
    high: int,
    *,
    empty_is_absent: bool = False,
) -> int:
    """The whole number ``name`` in ``low``..``high``; absent: ``default``. Present but empty is
    refused as the API document's integers say, unless ``empty_is_absent`` (a page's form
    sends its empty fields)."""
    text = request.query.get(name)
    if text is None or (text == "" and empty_is_absent):
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise invalid("query_invalid", f"{name} must be a whole number from {low} to {high}.")
    return int(text)


#: An RFC 3339 date-time with its zone (what the API document calls ``date-time``).
_HH_MM = "([01][0-9]|2[0-3]):[0-5][0-9]"
DATE_TIME_PATTERN = (
    "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    f"[Tt]{_HH_MM}:[0-5][0-9]"
    r"(\.[0-9]{1,6})?"
    f"([Zz]|[+-]{_HH_MM})$"
)
_DATE_TIME = re.compile(DATE_TIME_PATTERN)


_BOOLS = {"true": True, "false": False}


def query_bool(request: web.Request, name: str, *, empty_is_absent: bool = False) -> bool | None:
    """``true`` or ``false``; absent (or empty, with ``empty_is_absent``): None."""
    text = request.query.get(name)
    if text is None or (text == "" and empty_is_absent):
        return None
    if text not in _BOOLS:
        raise invalid("query_invalid", f"{name} must be true or false.")
    return _BOOLS[text]


def query_datetime(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        if not _DATE_TIME.fullmatch(text):
            raise ValueError(text)
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise invalid(
            "query_invalid",
            f"{name} must be an ISO 8601 time with a zone, e.g. 2026-01-31T00:00:00Z.",
        ) from None

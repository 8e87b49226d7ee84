"""The OpenAPI document: well-formed, served publicly, and true to the router and the server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web_urldispatcher import PrefixedSubAppResource

from provisioner.web.openapi import openapi_document
from tests.conftest import Api

PREFIX = "/api/v1"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Refusals of the body itself, before any field is looked at.
BODY_CODES = {"content_type_invalid", "json_invalid", "body_invalid"}
FIELD_CODES = {"field_unknown", "field_missing", "field_type"}


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow ``$ref`` (within the document) until a non-reference node."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(target, dict), f"unresolved {ref}"
            assert part in target, f"unresolved {ref}"
            target = target[part]
        node = target
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def body_schema(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = resolve(
        doc, op["requestBody"]["content"]["application/json"]["schema"]
    )
    return schema


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "nobody", path)


# --- a JSON Schema checker for the subset the document uses -------------------------------------

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number"):
        ok = isinstance(value, int) or (name == "number" and isinstance(value, float))
        return ok and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def schema_errors(doc: dict[str, Any], schema: Any, value: Any, where: str = "$") -> list[str]:
    """What about ``value`` breaks ``schema``; covers every keyword the document uses."""
    schema = resolve(doc, schema)
    errors: list[str] = []
    for sub in schema.get("allOf", []):
        errors += schema_errors(doc, sub, value, where)
    if "if" in schema:
        branch = "then" if not schema_errors(doc, schema["if"], value, where) else "else"
        if branch in schema:
            errors += schema_errors(doc, schema[branch], value, where)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            return [*errors, f"{where}: {value!r} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} is not {schema['const']!r}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", len(value)):
            errors.append(f"{where}: length of {value!r} out of range")
        if schema.get("format") == "date-time":
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is None:
                errors.append(f"{where}: {value!r} is not a date-time with zone")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not schema.get("minimum", value) <= value <= schema.get("maximum", value)
    ):
        errors.append(f"{where}: {value} out of range")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [
            f"{where}: {name} missing" for name in schema.get("required", []) if name not in value
        ]
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(doc, properties[name], item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: {name} not allowed")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(doc, schema["items"], item, f"{where}[{i}]")
    return errors


def test_schema_checker_catches_mistakes() -> None:
    doc = openapi_document()
    user = resolve(doc, {"$ref": "#/components/schemas/User"})
    assert schema_errors(doc, user, {}) != []
    error = {"$ref": "#/components/schemas/Error"}
    assert schema_errors(doc, error, {"error": {"code": "x_y", "message": "m"}}) == []
    assert schema_errors(doc, error, {"error": {"code": "X", "message": 1}}) != []
    body = {"$ref": "#/components/schemas/PasswordBody"}
    assert schema_errors(doc, body, {"mode": "random_and_email"}) == []
    assert schema_errors(doc, body, {"mode": "set"}) != []  # password needed
    assert schema_errors(doc, body, {"mode": "random_and_email", "password": "x" * 10}) != []


# --- the document itself -----------------------------------------------------------------------


async def test_served_without_auth(client: TestClient[Any, Any]) -> None:
    response = await client.get(f"{PREFIX}/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == json.loads(json.dumps(openapi_document()))


def test_document_is_well_formed() -> None:
    doc = openapi_document()
    assert doc is openapi_document()  # built once
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"]
    assert doc["info"]["version"]
    assert doc["servers"] == [{"url": PREFIX}]
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert doc["security"] == [{"bearer": []}]
    for ref in refs(doc):
        resolve(doc, {"$ref": ref})

    ids = [op.get("operationId") for _, _, op in operations(doc)]
    assert all(ids), "every operation needs an operationId"
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    for method, path, op in operations(doc):
        assert path.startswith("/"), path
        assert not path.startswith(PREFIX), path
        assert op["responses"], f"{method} {path} has no responses"
        for status, response in op["responses"].items():
            assert re.fullmatch(r"[1-5][0-9][0-9]", status), (method, path, status)
            assert resolve(doc, response)["description"]
        item = doc["paths"][path]
        declared = {
            p["name"]
            for p in (
                resolve(doc, p) for p in item.get("parameters", []) + op.get("parameters", [])
            )
            if p["in"] == "path"
        }
        assert declared == set(re.findall(r"\{([^}]+)\}", path)), (method, path)
        codes = op["x-error-codes"]
        for status, listed in codes.items():
            assert status in op["responses"], (method, path, status)
            described = resolve(doc, op["responses"][status])["description"]
            assert all(f"`{code}`" in described for code in listed), (method, path, status)
    public = {(m, p) for m, p, op in operations(doc) if op.get("security") == []}
    assert public == {("POST", "/auth/login"), ("GET", "/openapi.json")}


def test_document_passes_openapi_spec_validator() -> None:
    """The full OpenAPI 3.1 meta-schema check, where the validator happens to be installed."""
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(openapi_document())


# --- the document against the running server ----------------------------------------------------


def router_operations(client: TestClient[Any, Any]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    subapps = [
        r
        for r in client.app.router.resources()
        if isinstance(r, PrefixedSubAppResource) and r.canonical == PREFIX
    ]
    assert len(subapps) == 1
    for route in subapps[0]._app.router.routes():
        if route.method == "HEAD":
            continue
        assert route.resource is not None
        canonical = route.resource.canonical
        assert canonical.startswith(PREFIX + "/"), canonical
        found.add((route.method, canonical.removeprefix(PREFIX)))
    return found


async def test_paths_match_router(client: TestClient[Any, Any]) -> None:
    documented = {(method, path) for method, path, _ in operations(openapi_document())}
    assert documented == router_operations(client)


async def test_security_matches_server(client: TestClient[Any, Any]) -> None:
    for method, path, op in operations(openapi_document()):
        async with client.request(method, PREFIX + concrete(path)) as response:
            data = await response.json()
        if op.get("security") == []:
            assert response.status != 401, (method, path, data)
        else:
            assert response.status == 401, (method, path, data)
            assert data["error"]["code"] == "unauthenticated"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_required_fields_match_server(admin: Api) -> None:
    """Each documented required field, left out, makes the server answer ``field_missing``;
    the documented examples (every optional field included) pass the server's field checks."""
    doc = openapi_document()
    checked = set()
    for method, path, op in operations(doc):
        if "requestBody" not in op:
            continue
        schema = body_schema(doc, op)
        examples = schema["examples"]
        assert examples, f"{op['operationId']}: add an example body"
        assert set().union(*examples) == set(schema["properties"]), op["operationId"]
        for example in examples:
            assert schema_errors(doc, schema, example) == [], op["operationId"]
            status, data = await admin.call(method, concrete(path), example)
            refused = status == 400 and data["error"]["code"] in BODY_CODES | FIELD_CODES
            assert not refused, (op["operationId"], example, data)
        full = examples[0]
        # Only the documented required fields: the server must not demand more.
        minimal = {name: full[name] for name in schema["required"]}
        status, data = await admin.call(method, concrete(path), minimal)
        assert not (status == 400 and data["error"]["code"] in FIELD_CODES), (
            op["operationId"],
            data,
        )
        for name in schema["required"]:
            body = {k: v for k, v in full.items() if k != name}
            status, data = await admin.call(method, concrete(path), body)
            assert (status, data["error"]["code"]) == (400, "field_missing"), (
                op["operationId"],
                name,
                data,
            )
            assert name in data["error"]["message"]
        status, data = await admin.call(method, concrete(path), {**full, "surplus": 1})
        assert (status, data["error"]["code"]) == (400, "field_unknown"), op["operationId"]
        checked.add(op["operationId"])
    assert {"login", "createUser", "setUserPin", "setUserPassword", "changeMyPassword"} <= checked


class Checker:
    """Calls the API and holds every answer to what the document says of that operation."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.doc = openapi_document()

    async def __call__(
        self, method: str, path: str, template: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        status, data = await self.api.call(method, path, body, token=token)
        op = self.doc["paths"][template][method.lower()]
        where = f"{op['operationId']} → {status}"
        assert str(status) in op["responses"], f"{where} is not documented: {data}"
        response = resolve(self.doc, op["responses"][str(status)])
        if "content" not in response:
            assert data is None, where
            return status, data
        schema = response["content"]["application/json"]["schema"]
        assert schema_errors(self.doc, schema, data) == [], (where, data)
        if status >= 400:
            assert data["error"]["code"] in op["x-error-codes"][str(status)], (where, data)
        return status, data


def properties_of(doc: dict[str, Any], name: str | dict[str, Any]) -> set[str]:
    """Every property a schema (by name) names, through ``allOf``."""
    schema = resolve(
        doc, {"$ref": f"#/components/schemas/{name}"} if isinstance(name, str) else name
    )
    found: set[str] = set(schema.get("properties", {}))
    for sub in schema.get("allOf", []):
        found |= properties_of(doc, sub)
    return found


async def test_responses_match_schemas(admin: Api) -> None:
    """Answers carry exactly the documented fields, with documented statuses and codes."""
    doc = openapi_document()
    check = Checker(admin)

    status, alice = await check(
        "POST",
        "/users",
        "/users",
        {"username": "alice", "display_name": "Alice", "extension": "201", "email": "a@ex.net"},
    )
    assert status == 201
    assert set(alice) == properties_of(doc, "User")
    status, _ = await check("POST", "/users", "/users", {"username": "Bad!", "display_name": "B"})
    assert status == 400
    status, _ = await check(
        "POST", "/users", "/users", {"username": "bob", "display_name": "B", "extension": "201"}
    )
    assert status == 409
    status, page = await check("GET", "/users?limit=1&search=ali", "/users")
    assert status == 200
    assert [u["username"] for u in page["users"]] == ["alice"]
    status, _ = await check("GET", "/users?limit=0", "/users")
    assert status == 400
    assert (await check("GET", "/users/alice", "/users/{username}"))[0] == 200
    assert (await check("GET", "/users/nobody", "/users/{username}"))[0] == 404
    status, changed = await check(
        "PATCH", "/users/alice", "/users/{username}", {"email": None, "language": "en"}
    )
    assert status == 200
    assert changed["email"] is None

    status, data = await check(
        "PUT", "/users/alice/pin", "/users/{username}/pin", {"pin": "111111"}
    )
    assert status == 422
    assert data["error"]["reason"] == "repeated"
    status, data = await check(
        "PUT", "/users/alice/pin", "/users/{username}/pin", {"pin": "480913"}
    )
    assert status == 200
    assert set(data) == properties_of(doc, "PinChangeResult")
    password = "Tr1cky-Lamp-Story"
    status, data = await check(
        "POST",
        "/users/alice/password",
        "/users/{username}/password",
        {"mode": "set", "password": password, "temporary": False},
    )
    assert status == 200
    assert set(data) == properties_of(doc, "PasswordChangeResult")
    status, data = await check(
        "POST", "/users/alice/password", "/users/{username}/password", {"mode": "set_and_email"}
    )
    assert status == 400
    assert data["error"]["code"] == "password_missing"
    status, data = await check(
        "POST", "/users/alice/password", "/users/{username}/password", {"mode": "random_and_email"}
    )
    assert status == 422
    assert data["error"]["code"] == "email_missing"

    status, session = await check(
        "POST", "/auth/login", "/auth/login", {"username": "alice", "password": password}
    )
    assert status == 200
    assert set(session) == properties_of(doc, "Session")
    user = Checker(Api(admin.client, session["token"]))
    status, me = await user("GET", "/me", "/me")
    assert status == 200
    assert set(me) == properties_of(doc, "Me")
    assert (await user("GET", "/users", "/users"))[0] == 403
    status, data = await user("PUT", "/me/pin", "/me/pin", {"pin": "201"})
    assert status == 422
    status, data = await user(
        "PUT",
        "/me/password",
        "/me/password",
        {"current_password": "wrong-one", "new_password": "x"},
    )
    assert status == 403
    status, fresh = await user(
        "PUT",
        "/me/password",
        "/me/password",
        {"current_password": password, "new_password": "Another-Good-0ne"},
    )
    assert status == 200
    assert set(fresh) == properties_of(doc, "Session")
    assert (await user("GET", "/me", "/me"))[0] == 401  # the old token is revoked

    status, acting = await check(
        "POST", "/users/alice/impersonate", "/users/{username}/impersonate"
    )
    assert status == 200
    assert (await check("POST", "/users/admin/impersonate", "/users/{username}/impersonate"))[
        0
    ] == 409
    status, me = await check("GET", "/me", "/me", token=acting["token"])
    assert status == 200
    assert me["impersonator"] == "admin"
    assert (await check("POST", "/auth/logout", "/auth/logout", token=acting["token"]))[0] == 204

    status, audit = await check("GET", "/audit?action=password&limit=5", "/audit")
    assert status == 200
    assert audit["entries"]
    assert set(audit["entries"][0]) == properties_of(doc, "AuditEntry")
    assert {e["action"] for e in audit["entries"]} == {"password.change"}
    oldest = audit["entries"][-1]["id"]
    status, older = await check("GET", f"/audit?before={oldest}", "/audit")
    assert status == 200
    assert all(e["id"] < oldest for e in older["entries"])
    assert (await check("GET", "/audit?since=2026-01-01T00:00:00", "/audit"))[0] == 400
    assert (await check("DELETE", "/users/admin", "/users/{username}"))[0] == 409
    assert (await check("DELETE", "/users/alice", "/users/{username}"))[0] == 204

"""The OpenAPI document: well-formed, served publicly, and true to the router and the server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import openapi_spec_validator
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
    """The full OpenAPI 3.1 meta-schema check (openapi-spec-validator, of the test extras)."""
    openapi_spec_validator.validate(openapi_document())


# --- the document against the running server ----------------------------------------------------


def router_operations(client: TestClient[Any, Any]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    subapps = [
        r
        for r in client.app.router.resources()
        if isinstance(r, PrefixedSubAppResource)
        and (r.canonical == PREFIX or r.canonical.startswith(PREFIX + "/"))
    ]
    assert len(subapps) == 2  # the JSON API and the PBX's signed reads (/api/v1/pbx)
    for subapp in subapps:
        for route in subapp._app.router.routes():
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
        elif op.get("security") == [{"hookSignature": []}]:
            # Signed like the hooks; this app has no hook secret (tests/test_pbx.py has one).
            assert (response.status, data["error"]["code"]) == (503, "hooks_not_configured")
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
        # A JSON array body (of objects) is checked item by item, each sent as a one-item array.
        is_array = schema["type"] == "array"
        fields = resolve(doc, schema["items"]) if is_array else schema
        objects = [item for example in examples for item in example] if is_array else examples
        assert set().union(*objects) == set(fields["properties"]), op["operationId"]

        def wrap(obj: dict[str, Any], is_array: bool = is_array) -> Any:
            return [obj] if is_array else obj

        for example in examples:
            assert schema_errors(doc, schema, example) == [], op["operationId"]
            status, data = await admin.call(method, concrete(path), example)
            refused = status == 400 and data["error"]["code"] in BODY_CODES | FIELD_CODES
            assert not refused, (op["operationId"], example, data)
        full = objects[0]
        # Only the documented required fields: the server must not demand more.
        minimal = {name: full[name] for name in fields["required"]}
        status, data = await admin.call(method, concrete(path), wrap(minimal))
        assert not (status == 400 and data["error"]["code"] in FIELD_CODES), (
            op["operationId"],
            data,
        )
        for name in fields["required"]:
            body = {k: v for k, v in full.items() if k != name}
            status, data = await admin.call(method, concrete(path), wrap(body))
            assert (status, data["error"]["code"]) == (400, "field_missing"), (
                op["operationId"],
                name,
                data,
            )
            assert name in data["error"]["message"]
        status, data = await admin.call(method, concrete(path), wrap({**full, "surplus": 1}))
        # An array item with an unknown field is refused as a whole (the document says so).
        unknown = "body_invalid" if is_array else "field_unknown"
        assert (status, data["error"]["code"]) == (400, unknown), op["operationId"]
        assert unknown in op["x-error-codes"]["400"], op["operationId"]
        checked.add(op["operationId"])
    assert {
        "login",
        "createUser",
        "setUserPin",
        "setUserPassword",
        "changeMyPassword",
        "createDevice",
        "updateDevice",
        "setDeviceAssignments",
        "putSite",
    } <= checked


class Checker:
    """Calls the API and holds every answer to what the document says of that operation."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.doc = openapi_document()
        self.seen: set[tuple[str, int, str | None]] = set()
        """(operationId, status, error code or None) of every answer so far."""

    def template_of(self, method: str, path: str) -> str:
        """The documented path ``path`` (a concrete one, maybe with a query) is an instance of."""
        bare = path.partition("?")[0]
        found = [
            template
            for m, template, _ in operations(self.doc)
            if m == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), bare)
        ]
        # A literal path wins over a template that would match it too (/devices/discovered).
        found = [template for template in found if template == bare] or found
        assert len(found) == 1, (method, path, found)
        return found[0]

    async def expect(
        self, status: int, code: str | None, method: str, path: str, body: Any = None
    ) -> Any:
        """Call, check against the document, and insist on ``status`` (and error ``code``)."""
        got, data = await self(method, path, self.template_of(method, path), body)
        assert got == status, (method, path, body, data)
        if code is not None:
            assert data["error"]["code"] == code, (method, path, body, data)
        return data

    async def __call__(
        self, method: str, path: str, template: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        status, data = await self.api.call(method, path, body, token=token)
        op = self.doc["paths"][template][method.lower()]
        where = f"{op['operationId']} → {status}"
        code = data["error"]["code"] if status >= 400 and isinstance(data, dict) else None
        self.seen.add((op["operationId"], status, code))
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
        {"current_password": "wrong-one", "new_password": "Tr1cky-Lamp-Story"},
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


# Operations whose every documented outcome the device scenario below reaches.
DEVICE_TAGS = {"devices", "sites", "push-jobs"}
# Codes every request (or every body) can get; covered by the tests above and elsewhere.
GENERIC_CODES = BODY_CODES | FIELD_CODES | {"unauthenticated", "token_invalid", "body_too_large"}
GENERIC_CODES |= {"forbidden", "password_change_required"}


async def test_device_responses_match_schemas(admin: Api) -> None:
    """Sites, devices, assignments, re-provisioning and push jobs answer as documented; every
    status and error code the document lists for them is reached."""
    doc = openapi_document()
    check = Checker(admin)
    expect = check.expect

    sites = await expect(200, None, "GET", "/sites")
    assert [s["name"] for s in sites["sites"]] == ["default"]
    assert set(sites["sites"][0]) == properties_of(doc, "Site")
    site = await expect(
        200,
        None,
        "PUT",
        "/sites/main",
        {"registrar_host": "pbx.example.net", "transport": "tls", "language": "en"},
    )
    assert set(site) == properties_of(doc, "Site")
    assert (site["registrar_port"], site["ntp_server"]) == (5060, "pool.ntp.org")  # defaults
    await expect(400, "site_invalid", "PUT", "/sites/Main!", {})
    for name, value in [
        ("registrar_host", "pbx example"),
        ("registrar_port", 0),
        ("transport", "sctp"),
        ("timezone", "Mars/Olympus_Mons"),
        ("language", "xx"),
        ("ntp_server", ""),
    ]:
        await expect(400, f"{name}_invalid", "PUT", "/sites/main", {name: value})
    await expect(400, "field_type", "PUT", "/sites/main", {"registrar_port": "5060"})
    assert site["maintenance_window"] == "02:00-04:00"  # the default
    for window in ["2-4", "02:00", "24:00-01:00", "02:00-04:60", "02:00 - 04:00"]:
        await expect(
            422, "maintenance_window_invalid", "PUT", "/sites/main", {"maintenance_window": window}
        )
    for realm in ["sip example", "", "-sip.example.net", "x" * 254]:
        await expect(422, "sip_realm_invalid", "PUT", "/sites/main", {"sip_realm": realm})
    realm = await expect(200, None, "PUT", "/sites/main", {"sip_realm": "sip.example.net"})
    assert realm["sip_realm"] == "sip.example.net"
    realm = await expect(200, None, "PUT", "/sites/main", {"sip_realm": None})
    assert realm["sip_realm"] is None
    unchanged = await expect(200, None, "GET", "/sites")
    assert {x["name"]: x["maintenance_window"] for x in unchanged["sites"]}["main"] == "02:00-04:00"
    changed_site = await expect(
        200, None, "PUT", "/sites/main", {"maintenance_window": "23:30-01:00"}
    )
    assert changed_site["maintenance_window"] == "23:30-01:00"

    for username, extension in [("alice", "201"), ("bob", None)]:
        status, _ = await check(
            "POST",
            "/users",
            "/users",
            {"username": username, "display_name": username.title(), "extension": extension},
        )
        assert status == 201

    assert await expect(200, None, "GET", "/devices/discovered") == {"devices": []}
    models = await expect(200, None, "GET", "/models")
    assert set(models) == properties_of(doc, "ModelList")
    assert {"vendor": "yealink", "model": "T54W", "kind": "desk", "slots": 16, "family": "96"} in (
        models["models"]
    )
    model_text = resolve(doc, {"$ref": "#/components/schemas/DeviceCreate"})["properties"]["model"][
        "description"
    ]
    assert "- `yealink`:" in model_text
    assert "T54W (desk, 16)" in model_text
    desk = await expect(
        201,
        None,
        "POST",
        "/devices",
        {"mac": "00:15:65:AA:BB:CC", "vendor": "yealink", "model": "t54w", "site": "main"},
    )
    # Only DECT systems have an access code.
    assert set(desk) == properties_of(doc, "DeviceDetail") - {"access_code", "warning"}
    assert (desk["mac"], desk["model"], desk["kind"], desk["label"]) == (
        "001565aabbcc",
        "T54W",
        "desk",
        "",
    )
    assert desk["assignments"] == []
    assert desk["render_error"] is None
    mac = desk["mac"]
    dect = await expect(
        201,
        None,
        "POST",
        "/devices",
        {"mac": "7c2f80000001", "vendor": "gigaset", "model": "N610", "label": "Hall"},
    )
    assert dect["site"] == "default"
    assert dect["render_error"]  # the default site has no registrar yet
    assert set(dect) == properties_of(doc, "DeviceDetail") - {"warning"}
    assert re.fullmatch(r"[0-9]{4}", dect["access_code"])

    code_path = f"/devices/{dect['mac']}/access-code"
    replaced = await expect(200, None, "POST", code_path)
    assert set(replaced) == properties_of(doc, "AccessCodeResult")
    assert re.fullmatch(r"[0-9]{4}", replaced["access_code"])
    chosen = await expect(200, None, "POST", code_path, {"access_code": "4827"})
    assert chosen["access_code"] == "4827"
    assert (await expect(200, None, "GET", f"/devices/{dect['mac']}"))["access_code"] == "4827"
    for bad in ["482", "48271", "48a7", "", "\uff14\uff18\uff12\uff17"]:
        await expect(422, "access_code_invalid", "POST", code_path, {"access_code": bad})
    await expect(400, "field_type", "POST", code_path, {"access_code": 4827})
    await expect(400, "field_unknown", "POST", code_path, {"code": "4827"})
    await expect(422, "access_code_unused", "POST", "/devices/001565aabbcc/access-code")
    await expect(404, "device_not_found", "POST", "/devices/7c2f80000000/access-code")
    await expect(422, "mac_invalid", "POST", "/devices/nobody/access-code")
    assert (await expect(200, None, "GET", f"/devices/{dect['mac']}"))["access_code"] == "4827"

    device = {"mac": "001565000001", "vendor": "yealink", "model": "T54W"}
    await expect(409, "device_exists", "POST", "/devices", {**device, "mac": "0015.65aa.bbcc"})
    await expect(422, "mac_invalid", "POST", "/devices", {**device, "mac": "00:15:65"})
    await expect(422, "mac_invalid", "POST", "/devices", {**device, "mac": "00:15:65-00-00-01"})
    await expect(422, "vendor_unknown", "POST", "/devices", {**device, "vendor": "acme"})
    await expect(422, "model_unknown", "POST", "/devices", {**device, "model": "M300"})
    await expect(422, "site_unknown", "POST", "/devices", {**device, "site": "nowhere"})
    max_label = resolve(doc, {"$ref": "#/components/schemas/DeviceCreate"})["properties"]["label"][
        "maxLength"
    ]
    too_long = "x" * (max_label + 1)
    await expect(400, "label_invalid", "POST", "/devices", {**device, "label": too_long})
    await expect(400, "label_invalid", "POST", "/devices", {**device, "label": "a\nb"})

    put = f"/devices/{mac}/assignments"
    assigned = await expect(200, None, "PUT", put, [{"slot": 1, "username": "alice"}])
    assert [set(a) for a in assigned] == [properties_of(doc, "Assignment")]
    assert (assigned[0]["username"], assigned[0]["extension"]) == ("alice", "201")
    await expect(422, "slot_invalid", "PUT", put, [{"slot": 17, "username": "alice"}])
    await expect(
        422,
        "slot_duplicate",
        "PUT",
        put,
        [{"slot": 2, "username": "alice"}, {"slot": 2, "username": "alice"}],
    )
    await expect(
        422, "ipui_not_dect", "PUT", put, [{"slot": 1, "username": "alice", "ipui": "0328D3C8A1"}]
    )
    await expect(422, "extension_missing", "PUT", put, [{"slot": 1, "username": "bob"}])
    await expect(404, "user_not_found", "PUT", put, [{"slot": 1, "username": "nobody"}])
    await expect(404, "device_not_found", "PUT", "/devices/001565000000/assignments", [])
    await expect(422, "mac_invalid", "PUT", "/devices/nobody/assignments", [])
    await expect(400, "body_invalid", "PUT", put, {"slot": 1, "username": "alice"})
    await expect(400, "body_invalid", "PUT", put, [{"slot": 1, "user": "alice"}])
    await expect(400, "field_type", "PUT", put, [{"slot": "1", "username": "alice"}])
    put_dect = f"/devices/{dect['mac']}/assignments"
    await expect(
        422, "ipui_invalid", "PUT", put_dect, [{"slot": 1, "username": "alice", "ipui": "xyz"}]
    )
    handsets = await expect(
        200, None, "PUT", put_dect, [{"slot": 1, "username": "alice", "ipui": "0328d3c8a1"}]
    )
    assert handsets[0]["ipui"] == "0328D3C8A1"

    got = await expect(200, None, "GET", f"/devices/{mac.upper()}")
    assert set(got) == properties_of(doc, "DeviceDetail") - {"access_code", "warning"}
    assert [a["slot"] for a in got["assignments"]] == [1]
    assert got["revision"] >= 1
    await expect(404, "device_not_found", "GET", "/devices/001565000000")
    await expect(422, "mac_invalid", "GET", "/devices/nobody")
    page = await expect(200, None, "GET", "/devices?search=aabb&limit=10")
    assert (page["total"], [d["mac"] for d in page["devices"]]) == (1, [mac])
    assert set(page["devices"][0]) == properties_of(doc, "DeviceListItem")
    assert page["devices"][0]["push_state"] == "pending"
    await expect(400, "query_invalid", "GET", "/devices?limit=0")
    await expect(400, "query_invalid", "GET", "/devices?offset=-1")

    queued = await expect(202, None, "POST", f"/devices/{mac}/reprovision")
    assert set(queued) == properties_of(doc, "ReprovisionResult")
    assert len(queued["jobs"]) == 1
    rotated = await expect(202, None, "POST", f"/devices/{mac}/reprovision", {"rotate_sip": True})
    assert len(rotated["jobs"]) == 1
    # The DECT system's site has no registrar: it cannot be rendered, so nothing is rotated.
    await expect(
        422, "render_failed", "POST", f"/devices/{dect['mac']}/reprovision", {"rotate_sip": True}
    )
    await expect(400, "field_type", "POST", f"/devices/{mac}/reprovision", {"rotate_sip": 1})
    await expect(404, "device_not_found", "POST", "/devices/001565000000/reprovision")
    await expect(422, "mac_invalid", "POST", "/devices/nobody/reprovision")
    queued = await expect(202, None, "POST", "/users/alice/reprovision")
    assert len(queued["jobs"]) == 2
    assert (await expect(202, None, "POST", "/users/bob/reprovision"))["jobs"] == []
    await expect(404, "user_not_found", "POST", "/users/nobody/reprovision")

    jobs = await expect(200, None, "GET", "/push-jobs?state=pending&device=00-15-65-aa-bb-cc")
    assert jobs["jobs"]
    assert all((j["device"], j["state"]) == (mac, "pending") for j in jobs["jobs"])
    assert set(jobs["jobs"][0]) == properties_of(doc, "PushJob")
    everything = await expect(200, None, "GET", "/push-jobs?limit=1")
    assert len(everything["jobs"]) == 1
    await expect(400, "query_invalid", "GET", "/push-jobs?state=done")
    await expect(400, "query_invalid", "GET", "/push-jobs?limit=1001")
    await expect(422, "mac_invalid", "GET", "/push-jobs?device=nobody")

    patch = f"/devices/{mac}"
    changed = await expect(
        200, None, "PATCH", patch, {"label": " Front desk ", "model": "t57w", "site": "default"}
    )
    assert (changed["label"], changed["model"]) == ("Front desk", "T57W")
    assert changed["site"] == "default"
    assert set(changed) == properties_of(doc, "DeviceDetail") - {"access_code", "warning"}
    assert (await expect(200, None, "PATCH", patch, {}))["label"] == "Front desk"
    await expect(422, "model_incompatible", "PATCH", patch, {"model": "W70B"})  # DECT
    await expect(200, None, "PUT", put, [{"slot": 16, "username": "alice"}])
    await expect(422, "model_incompatible", "PATCH", patch, {"model": "T31G"})  # 2 lines
    await expect(422, "model_unknown", "PATCH", patch, {"model": "N610"})
    await expect(422, "site_unknown", "PATCH", patch, {"site": "nowhere"})
    await expect(400, "label_invalid", "PATCH", patch, {"label": "a\tb"})
    await expect(400, "field_type", "PATCH", patch, {"label": None})
    await expect(404, "device_not_found", "PATCH", "/devices/001565000000", {"label": "x"})
    await expect(422, "mac_invalid", "PATCH", "/devices/nobody", {"label": "x"})

    access = f"/devices/{mac}/api-access"
    omm = {"host": "omm.example.net", "username": "provisioner", "password": "Axi-Secret-1"}
    await expect(422, "api_access_unused", "PUT", access, omm)  # a Yealink: notified over SIP
    await expect(201, None, "POST", "/devices", {"mac": "003042aabbcc", "vendor": "mitel",
                                                 "model": "SIP-DECT"})  # fmt: skip
    omm_access = "/devices/003042aabbcc/api-access"
    await expect(204, None, "PUT", omm_access, {**omm, "fingerprint": "ab" * 32})
    await expect(400, "host_invalid", "PUT", omm_access, {**omm, "host": "a b"})
    await expect(400, "port_invalid", "PUT", omm_access, {**omm, "port": 70000})
    await expect(400, "credentials_invalid", "PUT", omm_access, {**omm, "password": ""})
    await expect(400, "fingerprint_invalid", "PUT", omm_access, {**omm, "fingerprint": "xy"})
    await expect(404, "device_not_found", "PUT", "/devices/003042000000/api-access", omm)
    await expect(422, "mac_invalid", "PUT", "/devices/nobody/api-access", omm)
    await expect(204, None, "DELETE", "/devices/003042aabbcc")

    await expect(204, None, "DELETE", patch)
    await expect(404, "device_not_found", "DELETE", patch)
    await expect(422, "mac_invalid", "DELETE", "/devices/nobody")
    await expect(404, "device_not_found", "GET", patch)
    assert (await expect(200, None, "GET", "/devices"))["total"] == 1

    # Every documented outcome of these operations was reached (the generic ones aside).
    for method, path, op in operations(doc):
        if not DEVICE_TAGS & set(op["tags"]):
            continue
        documented = {
            (op["operationId"], int(status), None if status < "400" else code)
            for status in op["responses"]
            for code in op["x-error-codes"].get(status, [None])
            if code not in GENERIC_CODES
        }
        missing = documented - check.seen
        assert not missing, (method, path, sorted(missing, key=str))


VALUE_RULES = {"pattern", "minLength", "maxLength", "enum", "const", "minimum", "maximum"}


def test_every_rule_on_a_request_value_names_its_refusal() -> None:
    """A body schema's rule on a value carries the code the server answers when it is broken
    (``x-error``): the edge refuses with it, and the operation lists it. (Conditions of an
    ``if`` only select a branch; they refuse nothing.)"""
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    bodies = {
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rpartition("/")[2]
        for _, _, op in operations(doc)
        if "requestBody" in op
    }
    bare: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if VALUE_RULES & node.keys() and "x-error" not in node:
                bare.append(where)
            for key, value in node.items():
                if key not in ("if", "x-error", "examples", "default"):
                    walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}/{index}")

    seen: set[str] = set()
    for name in sorted(bodies):
        for ref in [name, *re.findall(r"#/components/schemas/(\w+)", json.dumps(schemas[name]))]:
            if ref not in seen:
                seen.add(ref)
                walk(schemas[ref], ref)
    assert bare == []
    # And each operation lists the codes of its body's rules.
    for _, _, op in operations(doc):
        if "requestBody" not in op:
            continue
        name = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        rules = re.findall(
            r'"code": "(\w+)", "status": (\d+)', json.dumps(resolve(doc, {"$ref": name}))
        )
        for code, status in rules:
            assert code in op["x-error-codes"][status], (op["operationId"], code)

"""The OpenAPI 3.1 document served at ``GET /api/v1/openapi.json``.

It describes what the handlers in :mod:`provisioner.web.api` and
:mod:`provisioner.web.devices_api` do now: every route, which body fields are required, the
response shapes and, per operation and status, the error codes the server can answer with.
``tests/test_openapi.py`` holds it to the router and to the server.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from provisioner import devices_service, hashing, maintenance, passwords, pins, sites, store, users
from provisioner.devices import ADAPTERS
from provisioner.settings import DEFAULT_PIN_MIN_LENGTH
from provisioner.web import inputs

JSON = "application/json"

_ERROR_CODES_NOTE = (
    "The `error.code` values this operation answers with, by status (the message is for "
    "humans; branch on the code)."
)


def _ref(kind: str, name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> dict[str, Any]:
    return _ref("schemas", name)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _codes(codes: list[str]) -> str:
    return ", ".join(f"`{code}`" for code in codes)


# --- errors ------------------------------------------------------------------------------------

_BODY_400 = [
    "content_type_invalid",
    "json_invalid",
    "body_invalid",
    "field_unknown",
    "field_missing",
    "field_type",
]
_UNAUTHENTICATED_401 = ["unauthenticated", "token_invalid"]
_ADMIN_403 = ["forbidden", "password_change_required"]

_STATUS_TEXT = {
    400: "The request is malformed",
    401: "No valid bearer token",
    403: "Not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "The body is larger than 64 KiB",
    422: "Well-formed, but breaks a rule",
    429: "Too many attempts",
    502: "A peer failed",
    503: "A needed part is not configured",
}


def _error_response(status: int, codes: list[str], notes: str = "") -> dict[str, Any]:
    description = f"{_STATUS_TEXT[status]}. Codes: {_codes(codes)}."
    if notes:
        description += f" {notes}"
    response: dict[str, Any] = {"description": description, "content": _json(_schema("Error"))}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": _ref("headers", "WWWAuthenticate")}
    if status == 429:
        response["headers"] = {"Retry-After": _ref("headers", "RetryAfter")}
    return response


def _operation(
    *,
    operation_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: dict[int, dict[str, Any]],
    errors: dict[int, list[str]],
    notes: dict[int, str] | None = None,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    public: bool = False,
    body_400: list[str] = _BODY_400,
    body_required: bool = True,
) -> dict[str, Any]:
    """One operation; ``errors`` maps status → codes beyond the ones every request can get.

    ``body_400`` are the codes reading the body can cause (a JSON array body has no
    ``field_unknown``).
    """
    errors = {status: list(codes) for status, codes in errors.items()}
    if body is not None:
        errors[400] = body_400 + [c for c in errors.get(400, []) if c not in body_400]
        errors.setdefault(413, ["body_too_large"])
        for status, code in _body_rules(body):
            if code not in errors.setdefault(status, []):
                errors[status].append(code)
    if not public:
        errors[401] = _UNAUTHENTICATED_401
    all_responses: dict[str, Any] = {str(s): r for s, r in sorted(responses.items())}
    for status, codes in sorted(errors.items()):
        if status == 401 and codes == _UNAUTHENTICATED_401:
            all_responses["401"] = _ref("responses", "Unauthenticated")
        elif status == 413:
            all_responses["413"] = _ref("responses", "BodyTooLarge")
        else:
            all_responses[str(status)] = _error_response(
                status, codes, (notes or {}).get(status, "")
            )
    op: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": f"{description}\n\n{_ERROR_CODES_NOTE}",
        "x-error-codes": {str(s): codes for s, codes in sorted(errors.items())},
    }
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": _json(_schema(body))}
    op["responses"] = all_responses
    if public:
        op["security"] = []
    return op


def _rule(
    schema: dict[str, Any],
    code: str,
    message: str,
    *,
    status: int = 400,
    keywords: list[str] | None = None,
    reasons: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``schema`` with the refusal a request gets for breaking its rules (``x-error``, read by
    :func:`provisioner.web.inputs.read_body`): the code and status the domain answers with for
    the same rule, so the edge and the domain refuse alike. It covers the rules on the value
    (pattern, length, enum, range); ``keywords`` names others or fewer; ``reasons`` gives the
    policy's ``reason`` per keyword."""
    rule: dict[str, Any] = {"code": code, "status": status, "message": message}
    if keywords is not None:
        rule["keywords"] = keywords
    if reasons is not None:
        rule["reasons"] = reasons
    return {**schema, "x-error": rule}


@cache
def _body_rules(name: str) -> list[tuple[int, str]]:
    """The (status, code) of every ``x-error`` in the schema ``name``, through its $refs: the
    refusals its rules cause are listed with each operation that takes it."""
    schemas = _schemas(DEFAULT_PIN_MIN_LENGTH)  # the codes do not depend on the PIN policy
    found: dict[tuple[int, str], None] = {}
    seen: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "x-error" in node:
                found[(node["x-error"]["status"], node["x-error"]["code"])] = None
            ref = node.get("$ref", "")
            if ref.startswith("#/components/schemas/") and ref not in seen:
                seen.add(ref)
                walk(schemas[ref.rpartition("/")[2]])
            for key, value in node.items():
                if key != "x-error":
                    walk(value)

    walk(schemas[name])
    return list(found)


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_schema(schema))}


_NO_CONTENT = {"description": "Done; no body."}
_USERNAME = _ref("parameters", "Username")

_PIN_POLICY = (
    "`pin_policy` carries `reason`: `not_digits`, `length`, `repeated`, `sequence`, "
    "`extension` (equals the user's extension) or `common`."
)
_PW_POLICY_NOTE = (
    "`password_policy` carries `reason`: `length`, `characters`, `personal` (username or "
    "email address) or `common`"
)


# --- paths -------------------------------------------------------------------------------------


def _paths() -> dict[str, Any]:
    user_field_400 = [
        "display_name_invalid",
        "extension_invalid",
        "email_invalid",
        "auth_backend_invalid",
        "language_invalid",
        "role_invalid",
    ]
    return {
        "/auth/login": {
            "post": _operation(
                operation_id="login",
                tag="auth",
                summary="Log in with username and password",
                description=(
                    "Opens a session for a user of the `local` backend (12 hours), or of the "
                    "`ldap` backend with the directory's password. Unknown "
                    "users, users of another external backend and wrong passwords all answer "
                    "`invalid_credentials`. After 5 failed attempts the account is locked "
                    "for 30 s, doubling per further failure up to 15 minutes (`429`). When "
                    "the password is temporary, `password_change_required` is true and the "
                    "token (15 minutes) may only read `GET /me`, change the password "
                    "(`PUT /me/password`) and log out."
                ),
                body="LoginBody",
                responses={200: _ok("Session", "A new session.")},
                errors={
                    401: ["invalid_credentials"],
                    403: ["user_disabled"],
                    429: ["login_rate_limited"],
                    503: ["directory_unavailable"],
                },
                notes={503: "An `ldap` user, and the directory does not answer."},
                public=True,
            )
        },
        "/auth/logout": {
            "post": _operation(
                operation_id="logout",
                tag="auth",
                summary="Revoke the token this request carries",
                description="Ends the session of the bearer token; other tokens stay valid.",
                responses={204: _NO_CONTENT},
                errors={},
            )
        },
        "/users": {
            "get": _operation(
                operation_id="listUsers",
                tag="users",
                summary="List users",
                description="Users ordered by username, a page at a time. Administrators only.",
                parameters=[
                    {
                        "name": "search",
                        "in": "query",
                        "description": (
                            "Case-insensitive substring of username, display name, extension "
                            "or email address; empty means no filter."
                        ),
                        "schema": {"type": "string"},
                    },
                    *_DIRECTORY_USER_FILTERS,
                    _ref("parameters", "Limit"),
                    _ref("parameters", "Offset"),
                ],
                responses={200: _ok("UserList", "One page of users and the total count.")},
                errors={400: ["query_invalid", "auth_backend_invalid"], 403: _ADMIN_403},
            ),
            "post": _operation(
                operation_id="createUser",
                tag="users",
                summary="Create a user",
                description=(
                    "Creates a user without PIN or password (set them with the `pin` and "
                    "`password` operations). Administrators only."
                ),
                body="UserCreate",
                responses={201: _ok("User", "The new user.")},
                errors={
                    400: ["username_invalid", *user_field_400],
                    403: _ADMIN_403,
                    409: ["username_taken", "extension_taken"],
                },
            ),
        },
        "/users/{username}": {
            "parameters": [_USERNAME],
            "get": _operation(
                operation_id="getUser",
                tag="users",
                summary="Read a user",
                description="Administrators only.",
                responses={200: _ok("User", "The user.")},
                errors={403: _ADMIN_403, 404: ["user_not_found"]},
            ),
            "patch": _operation(
                operation_id="updateUser",
                tag="users",
                summary="Change a user's fields",
                description=(
                    "Changes only the fields sent; `username` cannot change. A change of "
                    "`display_name`, `extension` or `language` queues a push to the user's "
                    "devices. Administrators only."
                ),
                body="UserUpdate",
                responses={200: _ok("User", "The user after the change.")},
                errors={
                    400: user_field_400,
                    403: _ADMIN_403,
                    404: ["user_not_found"],
                    409: [
                        "extension_taken",
                        "extension_in_use",
                        "last_admin",
                        "cannot_disable_self",
                        "field_from_directory",
                    ],
                },
            ),
            "delete": _operation(
                operation_id="deleteUser",
                tag="users",
                summary="Delete a user",
                description=(
                    "Deletes the user with its sessions and device assignments and queues a "
                    "push to the devices that carried it. Administrators only; not oneself."
                ),
                responses={204: _NO_CONTENT},
                errors={
                    403: _ADMIN_403,
                    404: ["user_not_found"],
                    409: ["cannot_delete_self", "last_admin"],
                },
            ),
        },
        "/users/{username}/impersonate": {
            "parameters": [_USERNAME],
            "post": _operation(
                operation_id="impersonateUser",
                tag="auth",
                summary="Get a token that acts as the user",
                description=(
                    "A token (1 hour) with the user's rights, not the administrator's; the "
                    "audit log names both. It dies when either's password changes. With it, "
                    "`PUT /me/password` needs no current password. Administrators only."
                ),
                responses={200: _ok("Session", "A session acting as the user.")},
                errors={
                    403: _ADMIN_403,
                    404: ["user_not_found"],
                    409: ["already_impersonating", "impersonate_self"],
                },
            ),
        },
        "/users/{username}/pin": {
            "parameters": [_USERNAME],
            "put": _operation(
                operation_id="setUserPin",
                tag="users",
                summary="Set a user's phone PIN",
                description=(
                    "Stores the PIN, resets the PIN failure counter, writes the audit row and "
                    "queues one push job per device that carries the user, in one "
                    "transaction. Administrators only."
                ),
                body="PinBody",
                responses={200: _ok("PinChangeResult", "The PIN is set.")},
                errors={403: _ADMIN_403, 404: ["user_not_found"], 422: ["pin_policy"]},
                notes={422: _PIN_POLICY},
            ),
        },
        "/users/{username}/password": {
            "parameters": [_USERNAME],
            "post": _operation(
                operation_id="setUserPassword",
                tag="users",
                summary="Set a user's password",
                description=(
                    "For users of the `local` backend. Revokes every token the user holds. "
                    "`set` stores the given password; `set_and_email` also mails it to the "
                    "user; `random_and_email` generates one and mails it. For the email modes "
                    "the mail is sent before the change commits: when it fails, nothing "
                    "changes. Administrators only."
                ),
                body="PasswordBody",
                responses={200: _ok("PasswordChangeResult", "The password is set.")},
                errors={
                    400: ["mode_invalid", "password_missing", "password_not_expected"],
                    403: _ADMIN_403,
                    404: ["user_not_found"],
                    409: ["auth_backend_external"],
                    422: ["email_missing", "email_invalid", "password_policy"],
                    502: ["mail_failed"],
                    503: ["mail_not_configured"],
                },
                notes={
                    400: (
                        "`password_missing`: a `set` mode without password; "
                        "`password_not_expected`: `random_and_email` with one."
                    ),
                    422: f"`email_*` only for the email modes. {_PW_POLICY_NOTE}.",
                },
            ),
        },
        "/me": {
            "get": _operation(
                operation_id="getMe",
                tag="self-service",
                summary="The user the token acts as",
                description=(
                    "Also allowed with a token that must change its password first. "
                    "`impersonator` names the administrator behind an impersonation token."
                ),
                responses={200: _ok("Me", "The user.")},
                errors={},
            )
        },
        "/me/pin": {
            "put": _operation(
                operation_id="setMyPin",
                tag="self-service",
                summary="Set one's own phone PIN",
                description="As `setUserPin`, for the user the token acts as.",
                body="PinBody",
                responses={200: _ok("PinChangeResult", "The PIN is set.")},
                errors={403: ["password_change_required"], 422: ["pin_policy"]},
                notes={422: _PIN_POLICY},
            )
        },
        "/me/password": {
            "put": _operation(
                operation_id="changeMyPassword",
                tag="self-service",
                summary="Change one's own password",
                description=(
                    "For users of the `local` backend. Revokes every token the user holds, "
                    "this one included, and answers with a fresh session. The current "
                    "password is required except with an impersonation token. Also allowed "
                    "with a token that must change its password first."
                ),
                body="OwnPasswordBody",
                responses={200: _ok("Session", "The password is changed; use the new token.")},
                errors={
                    403: ["current_password_wrong"],
                    409: ["auth_backend_external", "password_changed_meanwhile"],
                    422: ["current_password_missing", "password_policy"],
                },
                notes={
                    409: "`password_changed_meanwhile`: another change landed first; retry.",
                    422: f"{_PW_POLICY_NOTE}, or `unchanged` (equals the current password).",
                },
            ),
        },
        "/audit": {
            "get": _operation(
                operation_id="listAudit",
                tag="audit",
                summary="Search the audit log",
                description=(
                    "Entries newest first. For the next page pass the last entry's `id` as "
                    "`before`. Administrators only."
                ),
                parameters=[
                    {
                        "name": "user",
                        "in": "query",
                        "description": (
                            "Username that is the target, the actor or the impersonating "
                            "administrator (exact match)."
                        ),
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "action",
                        "in": "query",
                        "description": (
                            "Action, matched exactly or as a dotted prefix: `password` "
                            "matches `password.change`, `auth` matches `auth.login` and "
                            "`auth.login_failed`."
                        ),
                        "schema": {"type": "string", "examples": ["pin.change"]},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "description": (
                            "Only entries at or after this ISO 8601 time, which must carry a "
                            "zone (`Z` or an offset)."
                        ),
                        "schema": {
                            "type": "string",
                            "format": "date-time",
                            "pattern": inputs.DATE_TIME_PATTERN,
                            "examples": ["2026-01-31T00:00:00Z"],
                        },
                    },
                    _ref("parameters", "Limit"),
                    {
                        "name": "before",
                        "in": "query",
                        "description": "Only entries with a smaller `id` (paging); 0 = none.",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 2**62},
                    },
                ],
                responses={200: _ok("AuditList", "Matching entries, newest first.")},
                errors={400: ["query_invalid"], 403: _ADMIN_403},
            )
        },
        **_device_paths(),
        **_pbx_paths(),
        "/openapi.json": {
            "get": _operation(
                operation_id="getOpenApiDocument",
                tag="meta",
                summary="This document",
                description="The OpenAPI document of this API; needs no token.",
                responses={
                    200: {
                        "description": "The OpenAPI 3.1 document.",
                        "content": _json({"type": "object"}),
                    }
                },
                errors={},
                public=True,
            )
        },
    }


_MAC = _ref("parameters", "Mac")
_MAC_422 = ["mac_invalid"]
_PUSH_JOB_STATES = store.PUSH_JOB_STATES
#: Site fields refused with 400; the maintenance window's format is refused with 422.
_SITE_FIELD_400 = [
    f"{name}_invalid" for name in sites.FIELDS if name not in ("maintenance_window", "sip_realm")
]
# Reading a JSON array body: no `field_unknown`, an item with an unknown field is `body_invalid`.
_ARRAY_BODY_400 = [code for code in _BODY_400 if code != "field_unknown"]


def _pbx_paths() -> dict[str, Any]:
    operation = _operation(
        operation_id="getExtensionAccounts",
        tag="pbx",
        summary="Which SIP accounts carry an extension now",
        description=(
            "For routing a call to a user wherever they are: the line accounts of the devices "
            "the extension's user is assigned to, and of those where they logged in with the "
            "PIN (hot desking, `hotdesk: true`, listed first). The same rows as the view "
            "`pbx.extension_accounts`. Signed like the hooks, over `<t>.` and the empty body; "
            "a signature may be used again within its 300 s (reads are not replays)."
        ),
        parameters=[
            {
                "name": "extension",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"},
            }
        ],
        responses={200: _ok("ExtensionAccounts", "The accounts; empty when none.")},
        errors={
            401: ["signature_invalid", "signature_expired"],
            422: ["extension_invalid"],
            503: ["hooks_not_configured"],
        },
        public=True,
    )
    operation["security"] = [{"hookSignature": []}]
    return {"/pbx/extensions/{extension}": {"get": operation}}


def _device_paths() -> dict[str, Any]:
    return {
        "/devices": {
            "get": _operation(
                operation_id="listDevices",
                tag="devices",
                summary="List devices",
                description=(
                    "Devices ordered by MAC address, a page at a time, each with the state of "
                    "its latest push job. Administrators only."
                ),
                parameters=[
                    {
                        "name": "search",
                        "in": "query",
                        "description": (
                            "Case-insensitive substring of MAC address (12 hex digits, no "
                            "separators), label, model or vendor; empty means no filter."
                        ),
                        "schema": {"type": "string"},
                    },
                    _ref("parameters", "Limit"),
                    _ref("parameters", "Offset"),
                ],
                responses={200: _ok("DeviceList", "One page of devices and the total count.")},
                errors={400: ["query_invalid"], 403: _ADMIN_403},
            ),
            "post": _operation(
                operation_id="createDevice",
                tag="devices",
                summary="Add a device",
                description=(
                    "Adds a desk phone or DECT system with a fresh provisioning credential and "
                    "renders its files (a site without a SIP registrar leaves `render_error` "
                    "set until the site has one). Adding a discovered phone "
                    "(`GET /devices/discovered`) adopts it: its discovered row goes and a push "
                    "job (`device.adopt`) brings it the full config. Administrators only."
                ),
                body="DeviceCreate",
                responses={201: _ok("DeviceDetail", "The new device, without assignments.")},
                errors={
                    400: ["label_invalid"],
                    403: _ADMIN_403,
                    409: ["device_exists"],
                    422: [*_MAC_422, "vendor_unknown", "model_unknown", "site_unknown"],
                },
                notes={422: "`vendor_unknown` and `model_unknown` name the accepted values."},
            ),
        },
        "/devices/{mac}": {
            "parameters": [_MAC],
            "get": _operation(
                operation_id="getDevice",
                tag="devices",
                summary="Read a device with its assignments",
                description="Administrators only.",
                responses={200: _ok("DeviceDetail", "The device.")},
                errors={403: _ADMIN_403, 404: ["device_not_found"], 422: _MAC_422},
            ),
            "patch": _operation(
                operation_id="updateDevice",
                tag="devices",
                summary="Change a device's label, model or site",
                description=(
                    "Changes only the fields sent. The model may change within the vendor, to "
                    "one of the same kind with enough slots for the current assignments. A "
                    "change re-renders the device and queues a push; sending the current "
                    "values changes nothing. Administrators only."
                ),
                body="DeviceUpdate",
                responses={200: _ok("DeviceDetail", "The device after the change.")},
                errors={
                    400: ["label_invalid"],
                    403: _ADMIN_403,
                    404: ["device_not_found"],
                    422: [*_MAC_422, "model_unknown", "model_incompatible", "site_unknown"],
                },
                notes={
                    422: (
                        "`model_incompatible`: the model is of the other kind (desk/DECT) or "
                        "has fewer slots than the highest assigned one."
                    )
                },
            ),
            "delete": _operation(
                operation_id="deleteDevice",
                tag="devices",
                summary="Delete a device",
                description=(
                    "Deletes the device with its assignments, push jobs and rendered files; "
                    "from then on its fetches are refused. Administrators only."
                ),
                responses={204: _NO_CONTENT},
                errors={403: _ADMIN_403, 404: ["device_not_found"], 422: _MAC_422},
            ),
        },
        "/devices/{mac}/assignments": {
            "parameters": [_MAC],
            "put": _operation(
                operation_id="setDeviceAssignments",
                tag="devices",
                summary="Replace the users on a device's lines or handsets",
                description=(
                    "Replaces every assignment of the device (an empty array removes them "
                    "all). A slot that keeps its user keeps its SIP account and password; "
                    "every other slot gets a new SIP account with a random password. "
                    "Re-renders the device and queues a push. Administrators only."
                ),
                body="AssignmentsBody",
                body_400=_ARRAY_BODY_400,
                responses={
                    200: {
                        "description": "The device's assignments, by slot.",
                        "content": _json({"type": "array", "items": _schema("Assignment")}),
                    }
                },
                errors={
                    403: _ADMIN_403,
                    404: ["device_not_found", "user_not_found"],
                    422: [
                        *_MAC_422,
                        "slot_invalid",
                        "slot_duplicate",
                        "ipui_not_dect",
                        "ipui_invalid",
                        "extension_missing",
                    ],
                },
                notes={
                    400: (
                        "`body_invalid` also for an item that is not an object or has a field "
                        "other than `slot`, `username` and `ipui`."
                    ),
                    404: "`user_not_found`: an item names an unknown user.",
                    422: (
                        "`slot_invalid`: outside 1 to the model's slot count; `ipui_not_dect`: "
                        "an IPUI for a desk phone; `extension_missing`: the user has no "
                        "extension."
                    ),
                },
            ),
        },
        "/devices/{mac}/api-access": {
            "parameters": [_MAC],
            "put": _operation(
                operation_id="setDeviceApiAccess",
                tag="devices",
                summary="Store how to reach the device's management API",
                description=(
                    "For devices that take changes through their own management API instead of "
                    "being told to fetch (Mitel SIP-DECT: the OMM's OM AXI, TLS port 12622). "
                    "The push worker then applies PIN and SIP changes through it. The password "
                    "is stored encrypted and never returned. Administrators only."
                ),
                body="ApiAccess",
                responses={204: _NO_CONTENT},
                errors={
                    400: [
                        "host_invalid",
                        "port_invalid",
                        "credentials_invalid",
                        "fingerprint_invalid",
                    ],
                    403: _ADMIN_403,
                    404: ["device_not_found"],
                    422: [*_MAC_422, "api_access_unused"],
                },
            ),
        },
        "/devices/discovered": {
            "get": _operation(
                operation_id="listDiscoveredDevices",
                tag="devices",
                summary="List phones that fetched but were never added",
                description=(
                    "Phones of a known vendor that fetched a config with the bootstrap "
                    "credential for a MAC no device has, most recently seen first: at most "
                    "1,000 per site (the least recently seen go first), at most one new one per "
                    "source address a minute. Such a phone gets a minimal config of its "
                    "vendor's format (provisioning URL and credential, time, language; no SIP "
                    "account, no secret of anyone) when it is a desk phone of a model its "
                    "vendor's adapter serves; DECT systems and models the adapter does not "
                    "serve get nothing until added. Adopt one with `POST /devices` (its row "
                    "goes, a push is queued). Empty with `PROVISIONER_DISCOVERY=off`. "
                    "Administrators only."
                ),
                responses={200: _ok("DiscoveredDeviceList", "Every discovered phone.")},
                errors={403: _ADMIN_403},
            )
        },
        "/models": {
            "get": _operation(
                operation_id="listModels",
                tag="devices",
                summary="List the models of every vendor's table",
                description=(
                    "The models `POST /devices` knows by name. A model that is not listed but "
                    "fits a vendor's family is still added (`model_known: false`) and served "
                    "with the family's generic configuration. Administrators only."
                ),
                responses={200: _ok("ModelList", "Every model, by vendor.")},
                errors={403: _ADMIN_403},
            )
        },
        "/devices/{mac}/access-code": {
            "parameters": [_MAC],
            "post": _operation(
                operation_id="setDeviceAccessCode",
                tag="devices",
                summary="Replace a DECT system's access code",
                description=(
                    "The access code is what a handset enters to subscribe to the DECT system: "
                    "a secret of its own, random per system, never a user's PIN (a PIN change "
                    'never alters it). No body: a new random code; `{"access_code": '
                    '"NNNN"}`: that code, exactly as many digits as the vendor\'s key takes '
                    "(4 unless the vendor documents otherwise). The device is re-rendered and "
                    "gets a push job. The current code is in `GET /devices/{mac}`. "
                    "Administrators only."
                ),
                body="AccessCodeUpdate",
                body_required=False,
                responses={200: _ok("AccessCodeResult", "The code now in force.")},
                errors={
                    403: _ADMIN_403,
                    404: ["device_not_found"],
                    422: [*_MAC_422, "access_code_invalid", "access_code_unused"],
                },
                notes={
                    422: (
                        "`access_code_invalid`: not exactly the vendor's number of digits; "
                        "`access_code_unused`: the device is a desk phone."
                    )
                },
            ),
        },
        "/devices/{mac}/reprovision": {
            "parameters": [_MAC],
            "post": _operation(
                operation_id="reprovisionDevice",
                tag="devices",
                summary="Re-render a device and push it",
                description=(
                    "Renders the device's files again and queues a push job that makes the "
                    "device fetch them (folded into the device's open job, if it has one). "
                    'With `{"rotate_sip": true}` every line of the device gets a new SIP '
                    "password first: the passwords, the registrar's digests of them (the "
                    "`pbx` views) and the rendered files commit together; a device that cannot "
                    "be rendered keeps its passwords (`422 render_failed`). Administrators only."
                ),
                body="ReprovisionRequest",
                body_required=False,
                responses={202: _ok("ReprovisionResult", "The push job is queued.")},
                errors={
                    403: _ADMIN_403,
                    404: ["device_not_found"],
                    422: [*_MAC_422, "render_failed"],
                },
            ),
        },
        "/users/{username}/reprovision": {
            "parameters": [_USERNAME],
            "post": _operation(
                operation_id="reprovisionUser",
                tag="devices",
                summary="Re-render and push every device that carries a user",
                description=(
                    "As `reprovisionDevice`, for each device with the user on a line or "
                    "handset; `jobs` is empty when there is none. Administrators only."
                ),
                responses={202: _ok("ReprovisionResult", "The push jobs are queued.")},
                errors={403: _ADMIN_403, 404: ["user_not_found"]},
            ),
        },
        "/push-jobs": {
            "get": _operation(
                operation_id="listPushJobs",
                tag="push-jobs",
                summary="List push jobs",
                description=(
                    "Jobs newest first. A device has at most one open (`pending`, "
                    "`scheduled` or `notified`) job; later changes fold into it. "
                    "Administrators only."
                ),
                parameters=[
                    {
                        "name": "state",
                        "in": "query",
                        "description": "Only jobs in this state; empty means any.",
                        "schema": {"type": "string", "enum": list(_PUSH_JOB_STATES)},
                    },
                    {
                        "name": "device",
                        "in": "query",
                        "description": (
                            "Only jobs of this device (a MAC address in any form the `mac` "
                            "path parameter accepts); empty means any."
                        ),
                        "schema": {"type": "string"},
                    },
                    _ref("parameters", "Limit"),
                ],
                responses={200: _ok("PushJobList", "Matching jobs, newest first.")},
                errors={400: ["query_invalid"], 403: _ADMIN_403, 422: _MAC_422},
                notes={
                    400: "`query_invalid`: an unknown `state` or a `limit` out of range.",
                    422: "`mac_invalid`: `device` is not a MAC address.",
                },
            )
        },
        "/sites": {
            "get": _operation(
                operation_id="listSites",
                tag="sites",
                summary="List sites",
                description="Every site, ordered by name. Administrators only.",
                responses={200: _ok("SiteList", "The sites.")},
                errors={403: _ADMIN_403},
            )
        },
        "/sites/{name}": {
            "parameters": [_ref("parameters", "SiteName")],
            "put": _operation(
                operation_id="putSite",
                tag="sites",
                summary="Create or change a site",
                description=(
                    "Creates the site when it does not exist (fields not sent take their "
                    "defaults) and applies the fields sent. Every device of the site is "
                    "re-rendered and gets a push job, unless only `maintenance_window` "
                    "changed (no configuration carries it: jobs waiting for the window are "
                    "timed anew). Answers `200` whether the site was created or changed. "
                    "Administrators only."
                ),
                body="SiteUpdate",
                responses={200: _ok("Site", "The site after the change.")},
                errors={
                    400: ["site_invalid", *_SITE_FIELD_400],
                    403: _ADMIN_403,
                    422: ["maintenance_window_invalid", "sip_realm_invalid"],
                },
                notes={
                    400: "`site_invalid`: the name in the path breaks the naming rule.",
                    422: (
                        '`maintenance_window_invalid`: not `"HH:MM-HH:MM"`; '
                        "`sip_realm_invalid`: not a host name."
                    ),
                },
            ),
        },
    }


# --- schemas -----------------------------------------------------------------------------------

_TIME = {"type": "string", "format": "date-time"}
_TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
_USERNAME_SCHEMA = _rule(
    {
        "type": "string",
        "pattern": users.USERNAME_PATTERN,
        "description": (
            "1-64 lower-case letters, digits and `. _ @ -`, starting with a letter or digit."
        ),
    },
    "username_invalid",
    "A username is 1-64 lower-case letters, digits and . _ @ -.",
)
_DISPLAY_NAME = _rule(
    {
        "type": "string",
        "pattern": users.DISPLAY_NAME_PATTERN,
        "description": "1-128 characters after trimming, no control characters.",
    },
    "display_name_invalid",
    "A display name is 1-128 characters.",
)
_EXTENSION = _rule(
    {
        "type": ["string", "null"],
        "pattern": users.EXTENSION_PATTERN,
        "description": "1-15 digits, unique among users; null for none.",
    },
    "extension_invalid",
    "An extension is 1-15 digits.",
)
_EMAIL = _rule(
    {
        "type": ["string", "null"],
        "maxLength": users.EMAIL_MAX_LENGTH,
        "pattern": users.EMAIL_OR_BLANK_PATTERN,
        "description": "An email address; null (or blank) for none.",
    },
    "email_invalid",
    "The email address is not valid.",
)
_AUTH_BACKEND = _rule(
    {"type": "string", "enum": list(users.AUTH_BACKENDS)},
    "auth_backend_invalid",
    f"auth_backend is one of {', '.join(users.AUTH_BACKENDS)}.",
)
_LANGUAGE = _rule(
    {"type": "string", "enum": list(users.LANGUAGES)},
    "language_invalid",
    f"language is one of {', '.join(users.LANGUAGES)}.",
)
_ROLE = _rule(
    {"type": "string", "enum": list(users.ROLES)},
    "role_invalid",
    f"role is one of {', '.join(users.ROLES)}.",
)
_NEW_PASSWORD = _rule(
    {
        "type": "string",
        "minLength": passwords.MIN_LENGTH,
        "maxLength": passwords.MAX_LENGTH,
        "pattern": "^[ -~]*$",
        "description": (
            f"{passwords.MIN_LENGTH}-{passwords.MAX_LENGTH} printable ASCII characters; not the "
            "username or email address, not a common password."
        ),
    },
    "password_policy",
    f"A password has {passwords.MIN_LENGTH}-{passwords.MAX_LENGTH} printable ASCII characters.",
    status=422,
    keywords=["minLength", "maxLength", "pattern"],
    reasons={"minLength": "length", "maxLength": "length", "pattern": "characters"},
)
#: A password to check (sign-in, the current one): longer ones are refused before hashing.
_PASSWORD_INPUT = _rule(
    {"type": "string", "maxLength": hashing.MAX_PASSWORD_INPUT},
    "password_policy",
    f"A password has at most {hashing.MAX_PASSWORD_INPUT} characters.",
    status=422,
    keywords=["maxLength"],
    reasons={"maxLength": "length"},
)


def _object(
    properties: dict[str, Any], required: list[str], *, closed: bool = False, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if closed:
        # Request bodies: the server refuses unknown fields (400 field_unknown).
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def _schemas(pin_min_length: int) -> dict[str, Any]:
    user_properties = {
        "username": {"type": "string"},
        "display_name": {"type": "string"},
        "extension": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"]},
        "auth_backend": _AUTH_BACKEND,
        "language": _LANGUAGE,
        "role": _ROLE,
        "pin_set": {"type": "boolean"},
        "pin_changed_at": _TIME_OR_NULL,
        "pin_locked_until": {
            **_TIME_OR_NULL,
            "description": "Set while PIN logins are locked after repeated failures.",
        },
        "password_set": {"type": "boolean"},
        "password_changed_at": _TIME_OR_NULL,
        "must_change_password": {
            "type": "boolean",
            "description": "The password is temporary: the user must choose a new one.",
        },
        "disabled": {
            "type": "boolean",
            "description": "Cannot sign in, use a token or check a PIN; devices stay assigned.",
        },
        "disabled_at": _TIME_OR_NULL,
        "disabled_by": {
            "enum": ["admin", "directory", None],
            "description": "Who disabled the user: an admin, or the directory sync.",
        },
        "directory_dn": {
            "type": ["string", "null"],
            "description": "The directory entry an `ldap` user was last synced from.",
        },
        "created_at": _TIME,
        "updated_at": _TIME,
    }
    return {
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": {
                            "type": "string",
                            "pattern": "^[a-z][a-z0-9_]*$",
                            "description": "Stable, machine-readable.",
                        },
                        "message": {"type": "string", "description": "A sentence for humans."},
                        "reason": {
                            "type": "string",
                            "description": "Finer cause within `code`, e.g. the policy rule.",
                        },
                    },
                    ["code", "message"],
                )
            },
            ["error"],
        ),
        "LoginBody": _object(
            {"username": {"type": "string"}, "password": _PASSWORD_INPUT},
            ["username", "password"],
            closed=True,
            examples=[{"username": "alice", "password": "correct horse battery"}],
        ),
        "Session": _object(
            {
                "token": {"type": "string", "description": "Send as `Authorization: Bearer`."},
                "expires_at": _TIME,
                "password_change_required": {
                    "type": "boolean",
                    "description": (
                        "The token may only read `GET /me`, change the password and log out."
                    ),
                },
            },
            ["token", "expires_at", "password_change_required"],
        ),
        "User": _object(user_properties, list(user_properties)),
        "Me": {
            "allOf": [
                _schema("User"),
                _object(
                    {
                        "impersonator": {
                            "type": ["string", "null"],
                            "description": "The administrator behind an impersonation token.",
                        }
                    },
                    ["impersonator"],
                ),
            ]
        },
        "UserList": _object(
            {
                "users": {"type": "array", "items": _schema("User")},
                "total": {"type": "integer", "description": "Matching users, all pages."},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
            ["users", "total", "limit", "offset"],
        ),
        "UserCreate": _object(
            {
                "username": _USERNAME_SCHEMA,
                "display_name": _DISPLAY_NAME,
                "extension": _EXTENSION,
                "email": _EMAIL,
                "auth_backend": {**_AUTH_BACKEND, "default": "local"},
                "language": {**_LANGUAGE, "default": "de"},
                "role": {**_ROLE, "default": "user"},
            },
            ["username", "display_name"],
            closed=True,
            examples=[
                {
                    "username": "alice",
                    "display_name": "Alice Example",
                    "extension": "201",
                    "email": "alice@example.net",
                    "auth_backend": "local",
                    "language": "en",
                    "role": "user",
                }
            ],
        ),
        "UserUpdate": _object(
            {
                "disabled": {
                    "type": "boolean",
                    "description": "Disable (revokes the user's tokens) or enable the user.",
                },
                "display_name": _DISPLAY_NAME,
                "extension": _EXTENSION,
                "email": _EMAIL,
                "auth_backend": _AUTH_BACKEND,
                "language": _LANGUAGE,
                "role": _ROLE,
            },
            [],
            closed=True,
            examples=[
                {
                    "display_name": "Alice Example",
                    "extension": "202",
                    "email": None,
                    "auth_backend": "local",
                    "language": "en",
                    "role": "user",
                    "disabled": False,
                }
            ],
        ),
        "PinBody": _object(
            {
                "pin": _rule(
                    {
                        "type": "string",
                        "pattern": "^[0-9]*$",
                        "minLength": pin_min_length,
                        "maxLength": pins.MAX_LENGTH,
                        "description": (
                            f"Digits only, {pin_min_length} (PROVISIONER_PIN_MIN_LENGTH) to "
                            f"{pins.MAX_LENGTH} digits; not one repeated digit, not a run, not "
                            "the user's extension, not a common PIN."
                        ),
                    },
                    "pin_policy",
                    f"A PIN has {pin_min_length} to {pins.MAX_LENGTH} digits.",
                    status=422,
                    reasons={"pattern": "not_digits", "minLength": "length", "maxLength": "length"},
                )
            },
            ["pin"],
            closed=True,
            examples=[{"pin": "480913"}],
        ),
        "PinChangeResult": _object(
            {
                "push_jobs": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "Push jobs queued for the devices that carry the user.",
                }
            },
            ["push_jobs"],
        ),
        "PasswordBody": _object(
            {
                "mode": _rule(
                    {"type": "string", "enum": list(passwords.MODES)},
                    "mode_invalid",
                    f"mode is one of {', '.join(passwords.MODES)}.",
                ),
                "password": {
                    **_NEW_PASSWORD,
                    "type": ["string", "null"],
                    "description": (
                        "Required for `set` and `set_and_email`; absent or null for "
                        f"`random_and_email`. {_NEW_PASSWORD['description']}"
                    ),
                },
                "temporary": {
                    "type": "boolean",
                    "default": True,
                    "description": (
                        "The user must choose a new password at the next login. Ignored for "
                        "`random_and_email`, whose passwords always are temporary."
                    ),
                },
            },
            ["mode"],
            closed=True,
            allOf=[
                {
                    "if": {"properties": {"mode": {"const": "random_and_email"}}},
                    "then": {
                        "properties": {
                            "password": _rule(
                                {"type": "null"},
                                "password_not_expected",
                                "A random password is generated: send none.",
                                keywords=["type"],
                            )
                        }
                    },
                },
                {
                    "if": {"properties": {"mode": {"enum": ["set", "set_and_email"]}}},
                    "then": _rule(
                        {
                            "required": ["password"],
                            "properties": {
                                "password": _rule(
                                    {"type": "string"},
                                    "password_missing",
                                    "This mode needs a password.",
                                    keywords=["type"],
                                )
                            },
                        },
                        "password_missing",
                        "This mode needs a password.",
                        keywords=["required"],
                    ),
                },
            ],
            examples=[
                {"mode": "set", "password": "Tr1cky-Lamp-Story", "temporary": True},
                {"mode": "random_and_email"},
            ],
        ),
        "PasswordChangeResult": _object({"email_sent": {"type": "boolean"}}, ["email_sent"]),
        "OwnPasswordBody": _object(
            {
                "current_password": {
                    **_PASSWORD_INPUT,
                    "type": ["string", "null"],
                    "description": "Required except with an impersonation token.",
                },
                "new_password": _NEW_PASSWORD,
            },
            ["new_password"],
            closed=True,
            examples=[
                {"current_password": "Old-Passw0rd-here", "new_password": "Tr1cky-Lamp-Story"}
            ],
        ),
        "AuditEntry": _object(
            {
                "id": {"type": "integer"},
                "at": _TIME,
                "actor": {
                    "type": ["string", "null"],
                    "description": "Who acted (the impersonated user under impersonation).",
                },
                "impersonator": {"type": ["string", "null"]},
                "user": {"type": ["string", "null"], "description": "The user acted upon."},
                "action": {"type": "string", "examples": ["pin.change", "password.change"]},
                "source": {
                    "type": ["string", "null"],
                    "description": "Client address, `cli` or `startup`.",
                },
                "details": {
                    "type": "object",
                    "description": "Non-secret details of the action.",
                },
            },
            ["id", "at", "actor", "impersonator", "user", "action", "source", "details"],
        ),
        "AuditList": _object(
            {"entries": {"type": "array", "items": _schema("AuditEntry")}}, ["entries"]
        ),
        **_device_schemas(),
        **_directory_schemas(),
    }


_MAC_FORMS = (
    "12 hex digits in any case, plain or split into equal groups by one kind of separator, "
    "`:`, `-` or `.` (`00:15:65:AA:BB:CC`, `0015.65aa.bbcc`, `001565aabbcc`); answers use 12 "
    "lower-case hex digits."
)
_SITE_NAME = {
    "type": "string",
    "pattern": sites.NAME_PATTERN,
    "description": "1-64 lower-case letters, digits and `. _ -`, starting with a letter or digit.",
}
_KNOWN_SITE = _rule(
    {**_SITE_NAME, "description": "An existing site."},
    "site_unknown",
    "There is no such site.",
    status=422,
)
_VENDOR = {"type": "string", "enum": list(ADAPTERS)}


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


_VENDOR_INPUT = _rule(
    {
        "type": "string",
        "pattern": rf"^\s*(?:{'|'.join(_any_case(v) for v in ADAPTERS)})\s*$",
        "description": f"One of {', '.join(f'`{v}`' for v in ADAPTERS)}, in any case.",
    },
    "vendor_unknown",
    f"vendor is one of {', '.join(sorted(ADAPTERS))}.",
    status=422,
)
_MAC_INPUT = _rule(
    {"type": "string", "pattern": devices_service.MAC_PATTERN},
    "mac_invalid",
    "A MAC address is 12 hex digits, e.g. 00:15:65:aa:bb:cc or 001565aabbcc.",
    status=422,
)
_KIND = {
    "type": "string",
    "enum": ["desk", "dect"],
    "description": "A desk phone (slots are its lines) or a DECT system (slots are handsets).",
}
_LABEL = _rule(
    {
        "type": "string",
        "maxLength": devices_service.LABEL_MAX_LENGTH,
        "pattern": devices_service.LABEL_PATTERN,
        "description": (
            f"Free text, at most {devices_service.LABEL_MAX_LENGTH} characters, no control "
            "characters; trimmed."
        ),
    },
    "label_invalid",
    f"A label is at most {devices_service.LABEL_MAX_LENGTH} characters.",
)


def _models_description() -> str:
    """The models per vendor, from the adapter registry."""
    vendors = "\n".join(
        f"- `{vendor}`: "
        + ", ".join(f"{m.name} ({m.kind}, {m.slots})" for m in adapter.models.values())
        for vendor, adapter in ADAPTERS.items()
    )
    return (
        "The vendor's model name, matched case-insensitively (answers use the spelling "
        "below). Per vendor, each model with its kind and slot count (lines of a desk phone, "
        f"handsets of a DECT system):\n\n{vendors}"
    )


_ACCESS_CODE = {"type": "string", "pattern": "^[0-9]{4,8}$"}
_REALM = _rule(
    {
        "type": ["string", "null"],
        "pattern": sites.HOST_PATTERN,
        "description": (
            "The digest realm (and domain) of the site's line accounts on the registrar (the "
            "`pbx` views), a host name; null: the registrar host."
        ),
    },
    "sip_realm_invalid",
    "sip_realm is a host name, or null for the registrar host.",
    status=422,
)
_WINDOW = _rule(
    {
        "type": "string",
        "pattern": maintenance.WINDOW_PATTERN,
        "description": (
            "When devices that restart to apply a change (Snom M-series bases) are pushed: "
            "`HH:MM-HH:MM` in the site's time zone, may run past midnight; equal times: always."
        ),
    },
    "maintenance_window_invalid",
    'A maintenance window is "HH:MM-HH:MM" (24-hour clock, site time).',
    status=422,
)


def _device_schemas() -> dict[str, Any]:
    device_properties = {
        "mac": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
        "vendor": _VENDOR,
        "model": {"type": "string", "description": "As the vendor spells it, e.g. `T54W`."},
        "kind": _KIND,
        "label": {"type": "string"},
        "site": {"type": "string"},
        "revision": {
            "type": "integer",
            "minimum": 0,
            "description": "Grows whenever the rendered files change; 0 before the first render.",
        },
        "fetched_revision": {
            "type": "integer",
            "minimum": 0,
            "description": (
                "The newest revision the device fetched of its own files; equal to `revision` "
                "when the device is up to date."
            ),
        },
        "rendered_at": {
            **_TIME_OR_NULL,
            "description": "When the current revision was rendered.",
        },
        "render_error": {
            "type": ["string", "null"],
            "description": (
                "Why the last render failed or what it had to work around (the last good "
                "revision stays in service); null when fine."
            ),
        },
        "bootstrap_allowed": {
            "type": "boolean",
            "description": (
                "The site-wide bootstrap credential still opens this device's files; false "
                "once the device fetched with its own credential."
            ),
        },
        "last_fetch": {
            "type": ["object", "null"],
            "description": "The device's latest fetch of a file; null before the first.",
            "properties": {
                "at": _TIME,
                "revision": {"type": "integer"},
                "file": {"type": "string"},
                "source": {"type": "string", "description": "The client address."},
            },
            "required": ["at", "revision", "file", "source"],
        },
        "created_at": _TIME,
    }
    return {
        "Device": _object(device_properties, list(device_properties)),
        "DeviceDetail": {
            "allOf": [
                _schema("Device"),
                _object(
                    {
                        "assignments": {"type": "array", "items": _schema("Assignment")},
                        "model_known": {
                            "type": "boolean",
                            "description": (
                                "false: the model is not in the vendor's table (`GET /models`) "
                                "but fits the family; it is served with the family's generic "
                                "configuration."
                            ),
                        },
                        "warning": {
                            "type": "string",
                            "description": "Present when `model_known` is false: what to check.",
                        },
                        "access_code": {
                            **_ACCESS_CODE,
                            "description": (
                                "DECT systems only: the code a handset enters to subscribe "
                                "(absent for desk phones). Replace it with "
                                "`POST /devices/{mac}/access-code`."
                            ),
                        },
                    },
                    ["assignments", "model_known"],
                ),
            ]
        },
        "ModelList": _object(
            {
                "models": {
                    "type": "array",
                    "items": _object(
                        {
                            "vendor": _VENDOR,
                            "model": {"type": "string"},
                            "kind": _KIND,
                            "slots": {
                                "type": "integer",
                                "minimum": 1,
                                "description": "Lines of a desk phone, handsets of a DECT system.",
                            },
                            "family": {
                                "type": "string",
                                "description": "The vendor's grouping (e.g. Yealink's common "
                                "file number).",
                            },
                        },
                        ["vendor", "model", "kind", "slots", "family"],
                    ),
                }
            },
            ["models"],
        ),
        "AccessCodeUpdate": _object(
            {
                "access_code": _rule(
                    {
                        **_ACCESS_CODE,
                        "description": "The vendor's number of digits; omit for a random code.",
                    },
                    "access_code_invalid",
                    "An access code is 4 to 8 digits, as many as the device takes.",
                    status=422,
                )
            },
            [],
            closed=True,
            examples=[{"access_code": "4827"}],
        ),
        "AccessCodeResult": _object(
            {
                "access_code": _ACCESS_CODE,
                "push_jobs": {"type": "array", "items": {"type": "integer"}},
            },
            ["access_code", "push_jobs"],
        ),
        "DiscoveredDeviceList": _object(
            {
                "devices": {
                    "type": "array",
                    "items": _object(
                        {
                            "mac": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
                            "vendor": _VENDOR,
                            "model": {
                                "type": ["string", "null"],
                                "description": "As the phone's User-Agent names it; null when "
                                "it names none.",
                            },
                            "firmware": {
                                "type": ["string", "null"],
                                "description": "The version the User-Agent names, if any.",
                            },
                            "source": {
                                "type": "string",
                                "description": "The address the phone fetched from (behind "
                                "trusted proxies, the forwarded one).",
                            },
                            "site": _SITE_NAME,
                            "first_seen": _TIME,
                            "last_seen": {
                                **_TIME,
                                "description": "Updated at most about once a minute.",
                            },
                        },
                        [
                            "mac",
                            "vendor",
                            "model",
                            "firmware",
                            "source",
                            "site",
                            "first_seen",
                            "last_seen",
                        ],
                    ),
                }
            },
            ["devices"],
        ),
        "DeviceListItem": {
            "allOf": [
                _schema("Device"),
                _object(
                    {
                        "push_state": {
                            "type": ["string", "null"],
                            "enum": [*_PUSH_JOB_STATES, None],
                            "description": "The state of the latest push job; null for none.",
                        }
                    },
                    ["push_state"],
                ),
            ]
        },
        "DeviceList": _object(
            {
                "devices": {"type": "array", "items": _schema("DeviceListItem")},
                "total": {"type": "integer", "description": "Matching devices, all pages."},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
            ["devices", "total", "limit", "offset"],
        ),
        "DeviceCreate": _object(
            {
                "mac": {**_MAC_INPUT, "description": _MAC_FORMS},
                "vendor": _VENDOR_INPUT,
                "model": {"type": "string", "description": _models_description()},
                "label": {**_LABEL, "default": ""},
                "site": {**_KNOWN_SITE, "default": "default"},
            },
            ["mac", "vendor", "model"],
            closed=True,
            examples=[
                {
                    "mac": "00:15:65:aa:bb:cc",
                    "vendor": "yealink",
                    "model": "T54W",
                    "label": "Reception",
                    "site": "default",
                }
            ],
        ),
        "DeviceUpdate": _object(
            {
                "label": _LABEL,
                "model": {
                    "type": "string",
                    "description": (
                        "Another model of the device's vendor and kind, matched "
                        "case-insensitively, with at least as many slots as the highest "
                        "assigned one."
                    ),
                },
                "site": _KNOWN_SITE,
            },
            [],
            closed=True,
            examples=[{"label": "Front desk", "model": "T57W", "site": "default"}],
        ),
        "Assignment": _object(
            {
                "slot": {"type": "integer", "minimum": 1},
                "username": {"type": "string"},
                "display_name": {"type": "string"},
                "extension": {
                    "type": ["string", "null"],
                    "description": "The user's extension now (null if it was removed since).",
                },
                "ipui": {"type": ["string", "null"], "pattern": "^[0-9A-F]{10}$"},
                "sip_user": {
                    "type": "string",
                    "description": "The SIP account of this line or handset.",
                },
                "user_disabled": {
                    "type": "boolean",
                    "description": "The user is disabled (the line stays assigned).",
                },
            },
            ["slot", "username", "display_name", "extension", "ipui", "sip_user", "user_disabled"],
        ),
        "AssignmentItem": _rule(
            _object(
                {
                    "slot": _rule(
                        {
                            "type": "integer",
                            "minimum": 1,
                            "description": "1 to the model's slot count; each slot at most once.",
                        },
                        "slot_invalid",
                        "A slot is 1 to the model's slot count.",
                        status=422,
                        keywords=["minimum"],
                    ),
                    "username": {
                        "type": "string",
                        "description": "An existing user with an extension.",
                    },
                    "ipui": _rule(
                        {
                            "type": ["string", "null"],
                            "pattern": devices_service.IPUI_OR_BLANK_PATTERN,
                            "default": None,
                            "description": (
                                "DECT systems only: the handset's IPUI, 10 hex digits (stored "
                                "upper case); null or empty for none."
                            ),
                        },
                        "ipui_invalid",
                        "An IPUI is 10 hex digits.",
                        status=422,
                        keywords=["pattern"],
                    ),
                },
                ["slot", "username"],
                closed=True,
            ),
            "body_invalid",
            "Each item is an object with slot, username and ipui.",
            keywords=["type", "additionalProperties"],
        ),
        "AssignmentsBody": {
            "type": "array",
            "items": _schema("AssignmentItem"),
            "description": "Every assignment the device is to have.",
            "examples": [
                [
                    {"slot": 1, "username": "alice", "ipui": None},
                    {"slot": 2, "username": "bob"},
                ]
            ],
        },
        "ReprovisionRequest": _object(
            {
                "rotate_sip": {
                    "type": "boolean",
                    "default": False,
                    "description": "Give every line of the device a new SIP password.",
                }
            },
            [],
            closed=True,
            examples=[{"rotate_sip": True}],
        ),
        "ExtensionAccounts": _object(
            {
                "extension": {"type": "string"},
                "accounts": {
                    "type": "array",
                    "items": _object(
                        {
                            "username": {"type": "string", "description": "The SIP account."},
                            "domain": {"type": "string", "description": "Its realm."},
                            "mac": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
                            "slot": {"type": "integer", "minimum": 1},
                            "hotdesk": {
                                "type": "boolean",
                                "description": "The user logged in there with the PIN.",
                            },
                            "contact": {
                                "type": ["string", "null"],
                                "description": "Where the device was last seen registered.",
                            },
                        },
                        ["username", "domain", "mac", "slot", "hotdesk", "contact"],
                    ),
                },
            },
            ["extension", "accounts"],
        ),
        "ReprovisionResult": _object(
            {
                "jobs": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "description": "The ids of the queued push jobs, one per device.",
                }
            },
            ["jobs"],
        ),
        "PushJob": _object(
            {
                "id": {"type": "integer"},
                "device": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
                "state": {
                    "type": "string",
                    "enum": list(_PUSH_JOB_STATES),
                    "description": (
                        "`pending`: to be sent; `scheduled`: rendered, waits for the site's "
                        "maintenance window (a device that restarts to apply a change); "
                        "`notified`: the device was told to fetch; `fetched`: it did; "
                        "`failed`: gave up."
                    ),
                },
                "reason": {
                    "type": "string",
                    "description": "What queued it.",
                    "examples": ["device.assign", "pin.change", "reprovision", "site.update"],
                },
                "attempts": {"type": "integer", "minimum": 0},
                "last_error": {"type": ["string", "null"]},
                "created_at": _TIME,
                "updated_at": _TIME,
            },
            [
                "id",
                "device",
                "state",
                "reason",
                "attempts",
                "last_error",
                "created_at",
                "updated_at",
            ],
        ),
        "PushJobList": _object({"jobs": {"type": "array", "items": _schema("PushJob")}}, ["jobs"]),
        "Site": _object(
            {
                "name": {"type": "string"},
                "registrar_host": {
                    "type": "string",
                    "description": "Empty until configured; devices are not rendered until then.",
                },
                "registrar_port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "transport": {"type": "string", "enum": list(sites.TRANSPORTS)},
                "timezone": {"type": "string"},
                "language": _LANGUAGE,
                "ntp_server": {"type": "string"},
                "maintenance_window": _WINDOW,
                "sip_realm": _REALM,
            },
            ["name", *sites.FIELDS],
        ),
        "SiteList": _object({"sites": {"type": "array", "items": _schema("Site")}}, ["sites"]),
        "ApiAccess": _object(
            {
                "host": _rule(
                    {
                        "type": "string",
                        "pattern": sites.HOST_PATTERN,
                        "description": "Host name or IP address (IPv6 in brackets).",
                    },
                    "host_invalid",
                    "host must be a host name or IP address.",
                ),
                "port": _rule(
                    {"type": ["integer", "null"], "minimum": 1, "maximum": 65535, "default": 12622},
                    "port_invalid",
                    "port is 1 to 65535.",
                    keywords=["minimum", "maximum"],
                ),
                "username": _rule(
                    {"type": "string", "minLength": 1, "maxLength": 64},
                    "credentials_invalid",
                    "username and password are required.",
                    keywords=["minLength", "maxLength"],
                ),
                "password": _rule(
                    {"type": "string", "minLength": 1, "writeOnly": True},
                    "credentials_invalid",
                    "username and password are required.",
                    keywords=["minLength"],
                ),
                "fingerprint": _rule(
                    {
                        "type": ["string", "null"],
                        "pattern": devices_service.FINGERPRINT_OR_BLANK_PATTERN,
                        "description": (
                            "SHA-256 of the device's TLS certificate (64 hex digits, or pairs "
                            "split by colons): pins a self-signed certificate. Null or empty: "
                            "the certificate must verify against the system's CAs."
                        ),
                    },
                    "fingerprint_invalid",
                    "fingerprint is a SHA-256 in hex (64 digits).",
                    keywords=["pattern"],
                ),
            },
            ["host", "username", "password"],
            closed=True,
            examples=[
                {
                    "host": "omm.example.net",
                    "port": 12622,
                    "username": "provisioner",
                    "password": "Axi-Secret-1",
                    "fingerprint": None,
                }
            ],
        ),
        "SiteUpdate": _object(
            {
                "registrar_host": _rule(
                    {
                        "type": "string",
                        "pattern": sites.HOST_PATTERN,
                        "description": (
                            "The SIP registrar: a host name or IP address (IPv6 in brackets). "
                            "A new site starts empty (its devices are not rendered)."
                        ),
                    },
                    "registrar_host_invalid",
                    "registrar_host must be a host name or IP address.",
                ),
                "registrar_port": _rule(
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 65535,
                        "description": "A new site starts with 5060.",
                    },
                    "registrar_port_invalid",
                    "registrar_port is 1 to 65535.",
                    keywords=["minimum", "maximum"],
                ),
                "transport": _rule(
                    {
                        "type": "string",
                        "enum": list(sites.TRANSPORTS),
                        "description": "A new site starts with `udp`.",
                    },
                    "transport_invalid",
                    f"transport is one of {', '.join(sites.TRANSPORTS)}.",
                ),
                "timezone": _rule(
                    {
                        "type": "string",
                        "enum": sites.time_zones(),
                        "description": "An IANA time zone name; a new site starts with "
                        "`Europe/Berlin`.",
                    },
                    "timezone_invalid",
                    "timezone is an IANA name such as Europe/Berlin.",
                ),
                "language": {**_LANGUAGE, "description": "A new site starts with `de`."},
                "ntp_server": _rule(
                    {
                        "type": "string",
                        "pattern": sites.HOST_PATTERN,
                        "description": (
                            "A host name or IP address (IPv6 in brackets); a new site starts "
                            "with `pool.ntp.org`."
                        ),
                    },
                    "ntp_server_invalid",
                    "ntp_server must be a host name or IP address.",
                ),
                "maintenance_window": {
                    **_WINDOW,
                    "description": f"{_WINDOW['description']} A new site starts with "
                    "`02:00-04:00`.",
                },
                "sip_realm": _REALM,
            },
            [],
            closed=True,
            examples=[
                {
                    "registrar_host": "pbx.example.net",
                    "registrar_port": 5061,
                    "transport": "tls",
                    "timezone": "Europe/Berlin",
                    "language": "en",
                    "ntp_server": "ntp.example.net",
                    "maintenance_window": "01:30-03:30",
                    "sip_realm": "sip.example.net",
                }
            ],
        ),
    }


# --- the directory (issue 11) -------------------------------------------------------------------

_DIRECTORY_USER_FILTERS = [
    {
        "name": "backend",
        "in": "query",
        "description": "Only users of this authentication backend.",
        "schema": {"enum": ["local", "ldap", "saml"]},
    },
    {
        "name": "disabled",
        "in": "query",
        "description": "Only disabled (`true`) or enabled (`false`) users.",
        "schema": {"enum": ["true", "false"]},
    },
]


def _directory_paths() -> dict[str, Any]:
    return {
        "/directory/sync": {
            "post": _operation(
                operation_id="syncDirectory",
                tag="directory",
                summary="Sync the directory's users now",
                description=(
                    "Reads the directory page by page (one transaction per page): its users "
                    "become users of backend `ldap` with the mapped fields and, with "
                    "`PROVISIONER_LDAP_ADMIN_GROUP`, the role; `ldap` users it no longer lists "
                    "are disabled (tokens revoked, devices kept), those it disabled and lists "
                    "again are enabled. Users of other backends are never changed; a directory "
                    "user with a local user's username is listed in `conflicts`. With "
                    '`{"dry_run": true}` nothing changes. The body is optional. '
                    "Administrators only."
                ),
                body="DirectorySyncBody",
                body_required=False,
                responses={200: _ok("DirectorySyncReport", "What the sync did.")},
                errors={
                    403: _ADMIN_403,
                    409: ["directory_sync_running"],
                    503: ["directory_not_configured", "directory_unavailable"],
                },
            )
        }
    }


def _directory_schemas() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    item = _object(
        {"username": {"type": "string"}, "dn": {"type": "string"}, "reason": {"type": "string"}},
        ["dn", "reason"],
    )
    return {
        "DirectorySyncBody": _object(
            {"dry_run": {"type": "boolean", "default": False}},
            [],
            closed=True,
            examples=[{"dry_run": True}],
        ),
        "DirectorySyncReport": _object(
            {
                "created": count,
                "updated": count,
                "enabled": count,
                "disabled": count,
                "unchanged": count,
                "entries": {**count, "description": "Entries the directory listed."},
                "dry_run": {"type": "boolean"},
                "skipped": {
                    "type": "array",
                    "items": item,
                    "description": "Entries that make no valid user (`reason`: the field's "
                    "error code, e.g. `username_invalid`, `extension_invalid`).",
                },
                "conflicts": {
                    "type": "array",
                    "items": item,
                    "description": "`local_user` or `saml_user`: a user of that backend has "
                    "the username; `extension_taken`; `duplicate_in_directory`.",
                },
            },
            [
                "created",
                "updated",
                "enabled",
                "disabled",
                "unchanged",
                "entries",
                "dry_run",
                "skipped",
                "conflicts",
            ],
        ),
    }


def _version() -> str:
    try:
        return version("provisioner")
    except PackageNotFoundError:
        return "0+unknown"


@cache
def openapi_document(pin_min_length: int = DEFAULT_PIN_MIN_LENGTH) -> dict[str, Any]:
    """The document for the PIN policy in force, built once; treat it as read-only. Its body
    schemas are what :func:`provisioner.web.inputs.read_body` enforces."""
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "provisioner",
            "version": _version(),
            "description": (
                "Phone-provisioning service: users, their phone PINs and passwords, devices and "
                "the users on their lines, sites, push jobs, the audit log. Administrators may "
                "use every operation; other users only `/me*` and `/auth/logout`. Every error "
                'answers `{"error": {"code", "message"}}` '
                "(plus `reason` for policy refusals); an unexpected failure is `500 "
                "internal_error` with a reference to the server log."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": "auth", "description": "Sessions and impersonation."},
            {"name": "users", "description": "User administration (administrators only)."},
            {"name": "self-service", "description": "The user the token acts as."},
            {
                "name": "devices",
                "description": "Phones and DECT systems, the users on their lines or handsets.",
            },
            {
                "name": "sites",
                "description": (
                    "The SIP registrar, time zone, language and NTP server devices share."
                ),
            },
            {
                "name": "push-jobs",
                "description": "Making devices fetch their changed files (administrators only).",
            },
            {"name": "audit", "description": "Who did what to whom, from where."},
            {
                "name": "pbx",
                "description": (
                    "What the PBX reads, signed with the hooks' secret instead of a token."
                ),
            },
            {"name": "directory", "description": "The LDAP directory's users (issue 11)."},
            {"name": "meta", "description": "About this API."},
        ],
        "paths": {**_paths(), **_directory_paths()},
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `POST /auth/login` or an impersonation.",
                },
                "hookSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Provisioner-Signature",
                    "description": (
                        '`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` '
                        "with PROVISIONER_HOOK_SECRET (the body of a GET is empty); at most "
                        "300 s old."
                    ),
                },
            },
            "schemas": _schemas(pin_min_length),
            "parameters": {
                "Username": {
                    "name": "username",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
                "Limit": {
                    "name": "limit",
                    "in": "query",
                    "description": "Page size.",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
                "Offset": {
                    "name": "offset",
                    "in": "query",
                    "description": "How many entries to skip.",
                    "schema": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": 10_000_000,
                        "default": 0,
                    },
                },
                "Mac": {
                    "name": "mac",
                    "in": "path",
                    "required": True,
                    "description": f"The device's MAC address. {_MAC_FORMS}",
                    "schema": {
                        "type": "string",
                        "pattern": devices_service.MAC_PATTERN,
                        "examples": ["001565aabbcc"],
                    },
                },
                "SiteName": {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": _SITE_NAME,
                },
            },
            "headers": {
                "WWWAuthenticate": {
                    "description": 'Always `Bearer realm="provisioner"`.',
                    "schema": {"type": "string"},
                },
                "RetryAfter": {
                    "description": "Seconds until the next attempt may succeed.",
                    "schema": {"type": "integer", "minimum": 1},
                },
            },
            "responses": {
                "Unauthenticated": _error_response(
                    401,
                    _UNAUTHENTICATED_401,
                    "`unauthenticated`: no `Authorization: Bearer` header; `token_invalid`: "
                    "the token is unknown, expired or revoked.",
                ),
                "BodyTooLarge": _error_response(413, ["body_too_large"]),
            },
        },
    }

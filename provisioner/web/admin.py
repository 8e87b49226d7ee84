"""The admin pages under ``/admin/``: users, the PIN and password widget, devices, audit log.

Handlers are thin: read the form or query, call the same domain functions the JSON API calls,
render. A successful POST answers with a redirect and a one-time confirmation (post/redirect/
get); a refused one renders the page again with the reason next to the field, never with a
secret filled back in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from provisioner import audit, auth, devices_service, discovery, passwords, pins, users
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.errors import Kind, ProvisionerError, invalid
from provisioner.web import admin_me
from provisioner.web.admin_render import (
    STATIC_DIR,
    error_message,
    html_errors,
    render,
    security_headers,
)
from provisioner.web.admin_session import (
    ADMIN_COOKIE,
    SESSION_COOKIE,
    actor_of,
    form_text,
    redirect,
    session_middleware,
    set_cookie,
    set_flash,
    web_session,
)
from provisioner.web.devices_api import device_view, discovered_view, job_view, model_view
from provisioner.web.errors import STATUS
from provisioner.web.inputs import query_bool, query_int
from provisioner.web.keys import CORE

routes = web.RouteTableDef()

PAGE_SIZE = 50
AUDIT_PAGE_SIZE = 50
DEVICE_JOBS_SHOWN = 10
#: Users the "New phones" list offers by name; any other username may be typed.
USER_PICKER = 200
#: Discovered phones the devices page shows (most recently seen first); the API lists all.
NEW_PHONES_SHOWN = 100
_MAX_PAGE = 1_000_000

# Which form field a domain refusal of "create user" belongs next to.
_USER_FIELD_OF_CODE = {
    "username_invalid": "username",
    "username_taken": "username",
    "display_name_invalid": "display_name",
    "extension_invalid": "extension",
    "extension_taken": "extension",
    "email_invalid": "email",
    "auth_backend_invalid": "auth_backend",
    "language_invalid": "language",
    "role_invalid": "role",
}
_PASSWORD_FLASH = {
    "set": "flash.password_set",
    "set_and_email": "flash.password_emailed",
    "random_and_email": "flash.random_emailed",
}
_CREDENTIAL_FLASHES = frozenset({"flash.pin_changed", *_PASSWORD_FLASH.values()})


# --- helpers -----------------------------------------------------------------------------------


def _core(request: web.Request) -> Core:
    return request.config_dict[CORE]


def user_url(username: str) -> str:
    return f"/admin/users/{quote(username, safe='')}"


def device_url(mac: str) -> str:
    return f"/admin/devices/{mac}"


@dataclass(frozen=True)
class Pager:
    """Offset paging for the lists: which rows this page shows and links to its neighbours."""

    page: int
    total: int
    size: int
    base: str
    params: dict[str, str]

    @property
    def first(self) -> int:
        return min(self.total, (self.page - 1) * self.size + 1)

    @property
    def last(self) -> int:
        return min(self.total, self.page * self.size)

    def url(self, page: int) -> str:
        query = {k: v for k, v in self.params.items() if v}
        if page > 1:
            query["page"] = str(page)
        return self.base + (f"?{urlencode(query)}" if query else "")

    @property
    def previous_url(self) -> str | None:
        return self.url(self.page - 1) if self.page > 1 else None

    @property
    def next_url(self) -> str | None:
        return self.url(self.page + 1) if self.page * self.size < self.total else None


def _page(request: web.Request) -> int:
    return query_int(request, "page", 1, 1, _MAX_PAGE, empty_is_absent=True)


def _device(
    row: Any, assignments: list[Any] | None = None, access_code: str | None = None
) -> dict[str, Any]:
    """The API's device view plus the outcome of the last notify, which the pages show."""
    view = device_view(row, assignments, access_code)
    notified_at = row["last_notify_at"]
    view["last_notify"] = (
        None
        if notified_at is None
        else {"at": notified_at.isoformat(), "result": row["last_notify_result"]}
    )
    return view


# --- users -------------------------------------------------------------------------------------


@routes.get("")
@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return redirect("/admin/users")


@routes.get("/users")
async def users_page(request: web.Request) -> web.Response:
    search = request.query.get("q", "").strip()
    backend = request.query.get("backend", "")
    state = request.query.get("disabled", "")
    page = _page(request)
    rows, total = await users.list_users(
        _core(request),
        actor_of(request),
        search=search or None,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
        backend=backend or None,
        disabled=query_bool(request, "disabled", empty_is_absent=True),
    )
    filters = {"q": search, "backend": backend, "disabled": state}
    return render(
        request,
        "users.html",
        section="users",
        search=search,
        filters=filters,
        backends=users.AUTH_BACKENDS,
        users=[users.public_view(r) for r in rows],
        pager=Pager(page, total, PAGE_SIZE, "/admin/users", filters),
    )


_NEW_USER_DEFAULTS = {
    "username": "",
    "display_name": "",
    "extension": "",
    "email": "",
    "auth_backend": "local",
    "language": "de",
    "role": "user",
}


@routes.get("/users/new")
async def new_user_page(request: web.Request) -> web.Response:
    return _new_user_form(request, dict(_NEW_USER_DEFAULTS))


def _new_user_form(
    request: web.Request,
    values: dict[str, str],
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "user_new.html",
        status=status,
        section="users",
        values=values,
        errors=errors or {},
        options={
            "auth_backend": [(b, f"backend.{b}") for b in users.AUTH_BACKENDS],
            "language": [(code, f"lang.{code}") for code in users.LANGUAGES],
            "role": [(r, f"role.{r}") for r in users.ROLES],
        },
    )


@routes.post("/users/new")
async def create_user(request: web.Request) -> web.Response:
    form = await request.post()
    values = {name: form_text(form, name).strip() for name in _NEW_USER_DEFAULTS}
    new = users.NewUser(
        username=values["username"],
        display_name=values["display_name"],
        extension=values["extension"] or None,
        email=values["email"] or None,
        auth_backend=values["auth_backend"],
        language=values["language"],
        role=values["role"],
    )
    try:
        await users.create_user(_core(request), actor_of(request), new)
    except ProvisionerError as exc:
        where = _USER_FIELD_OF_CODE.get(exc.code, "form")
        errors = {where: error_message(request, exc)}
        return _new_user_form(request, values, errors, STATUS[exc.kind])
    response = redirect(user_url(new.username))
    set_flash(request, response, "flash.user_created", user=new.username)
    return response


@routes.get("/users/{username}")
async def user_page(request: web.Request) -> web.Response:
    return await _user_page(request, request.match_info["username"])


def _email_problem(core: Core, email: str | None) -> str | None:
    """Why the email buttons cannot work for this user (a catalog key), or None."""
    if not email:
        return "cred.no_email"
    if not users.is_valid_email(email):
        return "cred.bad_email"
    if core.mailer is None:
        return "cred.no_mailer"
    return None


async def _user_page(
    request: web.Request,
    username: str,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    page_error: str | None = None,
) -> web.Response:
    core, actor = _core(request), actor_of(request)
    row = await users.find_user(core, actor, username)
    carried = await devices_service.list_user_devices(core, actor, row["username"])
    devices = [{**_device(d), "slot": d["slot"]} for d in carried]
    flash = web_session(request).flash
    errors = errors or {}
    return render(
        request,
        "user.html",
        status=status,
        section="users",
        user=users.public_view(row),
        from_directory=_directory_attributes(core, row),
        devices=devices,
        external=row["auth_backend"] != "local",
        email_problem=_email_problem(core, row["email"]),
        errors=errors,
        page_error=page_error,
        open_widget=bool(errors) or (flash is not None and flash.key in _CREDENTIAL_FLASHES),
    )


def _directory_attributes(core: Core, user: Any) -> dict[str, str]:
    """The user's fields the directory owns, each with the attribute (or group) it comes from."""
    ldap = core.settings.ldap
    owned = users.directory_fields(core, user)
    if ldap is None or not owned:
        return {}
    sources = {name: ldap.attributes.attribute(name) or "" for name in owned}
    if "role" in owned:
        sources["role"] = ldap.admin_group or ""
    return sources


def _refusal(exc: ProvisionerError) -> None:
    """Let a missing user or a refused role reach the error page; keep the rest for the form."""
    if exc.kind in (Kind.NOT_FOUND, Kind.FORBIDDEN):
        raise exc


@routes.post("/users/{username}/pin")
async def set_pin(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    form = await request.post()
    try:
        change = await pins.change_pin(
            _core(request), actor_of(request), username, form_text(form, "pin")
        )
    except ProvisionerError as exc:
        _refusal(exc)
        errors = {"pin": error_message(request, exc)}
        return await _user_page(request, username, status=STATUS[exc.kind], errors=errors)
    response = redirect(user_url(username) + "#credentials")
    set_flash(request, response, "flash.pin_changed", user=username, jobs=len(change.push_jobs))
    return response


@routes.post("/users/{username}/password")
async def set_password(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    form = await request.post()
    mode = form_text(form, "mode")
    try:
        await passwords.admin_set_password(
            _core(request),
            actor_of(request),
            username,
            mode=mode,
            password=form_text(form, "password") or None,
            temporary=form_text(form, "temporary") == "1",
        )
    except ProvisionerError as exc:
        _refusal(exc)
        errors = {"password": error_message(request, exc)}
        return await _user_page(request, username, status=STATUS[exc.kind], errors=errors)
    response = redirect(user_url(username) + "#credentials")
    set_flash(request, response, _PASSWORD_FLASH[mode], user=username)
    return response


@routes.post("/users/{username}/impersonate")
async def impersonate(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    own_token = web_session(request).token
    assert own_token is not None
    try:
        session = await auth.impersonate(_core(request), actor_of(request), username)
    except ProvisionerError as exc:
        _refusal(exc)
        message = error_message(request, exc)
        return await _user_page(request, username, status=STATUS[exc.kind], page_error=message)
    response = redirect("/me/")
    # The admin's own token waits in its own cookie for "back to admin".
    set_cookie(request, response, ADMIN_COOKIE, own_token)
    set_cookie(request, response, SESSION_COOKIE, session.token)
    set_flash(request, response, "flash.impersonating", user=username)
    return response


@routes.post("/users/{username}/reprovision")
async def reprovision_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    jobs = await devices_service.reprovision_user(_core(request), actor_of(request), username)
    response = redirect(user_url(username))
    set_flash(request, response, "flash.reprovision_queued", jobs=len(jobs))
    return response


# --- devices -----------------------------------------------------------------------------------


@routes.get("/devices")
async def devices_page(request: web.Request) -> web.Response:
    return await _devices_page(request)


def _new_phone(row: Any) -> dict[str, Any]:
    """A discovered phone as the "New phones" list shows it."""
    return {
        **discovered_view(row),
        # Handsets are assigned on the device page, with their IPUIs: no user picker for DECT.
        "dect": discovery.kind_of(row["vendor"], row["model"]) == "dect",
    }


async def _devices_page(
    request: web.Request, *, status: int = 200, adoption: Adoption | None = None
) -> web.Response:
    core, actor = _core(request), actor_of(request)
    search = request.query.get("q", "").strip()
    page = _page(request)
    rows, total = await devices_service.list_devices(
        core, actor, search=search or None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    discovered = await discovery.list_discovered(core, actor)
    pickable: list[Any] = []
    if discovered:
        pickable, _ = await users.list_users(core, actor, search=None, limit=USER_PICKER, offset=0)
    return render(
        request,
        "devices.html",
        status=status,
        section="devices",
        search=search,
        devices=[_device(r) for r in rows],
        pager=Pager(page, total, PAGE_SIZE, "/admin/devices", {"q": search}),
        new_phones=[_new_phone(r) for r in discovered[:NEW_PHONES_SHOWN]],
        new_phones_total=len(discovered),
        pickable=[users.public_view(u) for u in pickable],
        adoption=adoption,
    )


@dataclass(frozen=True)
class Adoption:
    """A refused adoption: which phone, what was entered, why."""

    mac: str
    model: str
    username: str
    error: str


@routes.post("/devices/adopt")
async def adopt_device(request: web.Request) -> web.Response:
    """Add a discovered phone with one click: its vendor and model as discovered (the model may
    be corrected), optionally a user on line 1."""
    form = await request.post()
    mac, vendor, model, username = (
        form_text(form, name).strip() for name in ("mac", "vendor", "model", "username")
    )
    assignments = [devices_service.Assignment(1, username)] if username else []
    try:
        row = await devices_service.create_device(
            _core(request),
            actor_of(request),
            devices_service.NewDevice(mac=mac, vendor=vendor, model=model),
            assignments,
        )
    except ProvisionerError as exc:
        if exc.kind is Kind.FORBIDDEN:
            raise
        adoption = Adoption(mac, model, username, error_message(request, exc))
        return await _devices_page(request, status=STATUS[exc.kind], adoption=adoption)
    response = redirect(device_url(row["mac"]))
    set_flash(request, response, "flash.device_adopted", mac=row["mac"])
    return response


async def _masked_preview(core: Core, actor: Actor, mac: str) -> tuple[dict[str, str], str | None]:
    """The files the device would get now, secrets masked; or why they cannot be rendered."""
    try:
        files = await devices_service.preview_device(core, actor, mac, mask=True)
    except ProvisionerError as exc:
        if exc.code != "render_failed":
            raise
        return {}, exc.message
    return {name: body.decode() for name, body in files.items()}, None


@routes.get("/devices/{mac}")
async def device_page(request: web.Request) -> web.Response:
    return await _device_page(request, request.match_info["mac"])


async def _device_page(
    request: web.Request, mac: str, *, status: int = 200, errors: dict[str, str] | None = None
) -> web.Response:
    core, actor = _core(request), actor_of(request)
    details = await devices_service.find_device(core, actor, mac)
    row = details.device
    jobs = await devices_service.list_push_jobs(
        core, actor, state=None, device=row["mac"], limit=DEVICE_JOBS_SHOWN
    )
    files, preview_error = await _masked_preview(core, actor, row["mac"])
    device = {**_device(row, details.assignments, details.access_code), **model_view(row)}
    device["push_state"] = jobs[0]["state"] if jobs else None
    return render(
        request,
        "device.html",
        status=status,
        section="devices",
        device=device,
        jobs=[job_view(j) for j in jobs],
        files=files,
        preview_error=preview_error,
        errors=errors or {},
    )


@routes.post("/devices/{mac}/access-code")
async def set_access_code(request: web.Request) -> web.Response:
    mac = devices_service.parse_mac(request.match_info["mac"])
    form = await request.post()
    try:
        await devices_service.set_access_code(
            _core(request), actor_of(request), mac, form_text(form, "access_code").strip() or None
        )
    except ProvisionerError as exc:
        _refusal(exc)
        errors = {"access_code": error_message(request, exc)}
        return await _device_page(request, mac, status=STATUS[exc.kind], errors=errors)
    response = redirect(device_url(mac) + "#access-code")
    set_flash(request, response, "flash.access_code_changed")
    return response


@routes.post("/devices/{mac}/reprovision")
async def reprovision_device(request: web.Request) -> web.Response:
    mac = devices_service.parse_mac(request.match_info["mac"])
    jobs = await devices_service.reprovision_device(_core(request), actor_of(request), mac)
    response = redirect(device_url(mac))
    set_flash(request, response, "flash.reprovision_queued", jobs=len(jobs))
    return response


# --- audit -------------------------------------------------------------------------------------


def parse_since(text: str) -> datetime | None:
    """A date (midnight UTC) or an ISO 8601 time with a zone; empty → None."""
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise invalid("since_invalid", "since must be a date such as 2026-01-31.")
    return moment


def _details(details: Any) -> list[tuple[str, str]]:
    if not isinstance(details, dict):
        return []
    return [
        (str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
        for k, v in sorted(details.items())
    ]


@routes.get("/audit")
async def audit_page(request: web.Request) -> web.Response:
    filters = {name: request.query.get(name, "").strip() for name in ("user", "action", "since")}
    before = query_int(request, "before", 0, 0, 2**62, empty_is_absent=True) or None
    errors: dict[str, str] = {}
    entries: list[dict[str, Any]] = []
    try:
        since = parse_since(filters["since"])
    except ProvisionerError as exc:
        errors["since"] = error_message(request, exc)
    else:
        entries = await audit.search(
            _core(request),
            actor_of(request),
            user=filters["user"] or None,
            action=filters["action"] or None,
            since=since,
            limit=AUDIT_PAGE_SIZE,
            before_id=before,
        )
    query = {k: v for k, v in filters.items() if v}
    older = None
    if len(entries) == AUDIT_PAGE_SIZE:
        older = "/admin/audit?" + urlencode({**query, "before": entries[-1]["id"]})
    newest = ("/admin/audit?" + urlencode(query)) if before else None
    return render(
        request,
        "audit.html",
        status=400 if errors else 200,
        section="audit",
        filters=filters,
        errors=errors,
        entries=[{**e, "details": _details(e["details"])} for e in entries],
        older_url=older,
        newest_url=newest,
    )


# --- the sub-applications ----------------------------------------------------------------------


def create_admin_app() -> web.Application:
    app = web.Application(middlewares=[html_errors, session_middleware(admin_only=True)])
    app.on_response_prepare.append(security_headers)
    app.add_routes(routes)
    return app


async def _static_cache(request: web.Request, response: web.StreamResponse) -> None:
    # Pages link the files with a content hash in the URL, so a day of caching is safe.
    response.headers["Cache-Control"] = "public, max-age=86400"


def create_static_app() -> web.Application:
    app = web.Application()
    app.on_response_prepare.append(_static_cache)
    app.on_response_prepare.append(security_headers)
    app.router.add_static("/", STATIC_DIR)
    return app


def install(app: web.Application) -> None:
    """Mount the web pages on ``app``: ``/admin/``, ``/me/`` and their ``/static/`` files."""
    app.add_subapp("/admin", create_admin_app())
    app.add_subapp("/me", admin_me.create_me_app())
    app.add_subapp("/static", create_static_app())

"""The self-service pages under ``/me/``, and signing in and out for all web pages.

``/me/login`` and ``/me/language`` are the only pages reachable without a session. A session
from a temporary password reaches only ``/me/password`` (and signing out) until the user has
chosen a new password.
"""

from __future__ import annotations

from aiohttp import web

from provisioner import auth, passwords, pins
from provisioner.core import Core
from provisioner.errors import Kind, ProvisionerError, unprocessable
from provisioner.web import i18n
from provisioner.web.admin_render import error_message, html_errors, render, security_headers
from provisioner.web.admin_session import (
    ADMIN_COOKIE,
    LOGIN_PATH,
    PASSWORD_PATH,
    SESSION_COOKIE,
    WebSession,
    actor_of,
    clear_cookie,
    form_text,
    home_for,
    language_cookie,
    redirect,
    safe_next,
    session_middleware,
    set_cookie,
    set_flash,
    source_of,
    web_session,
)
from provisioner.web.errors import STATUS
from provisioner.web.keys import CORE

routes = web.RouteTableDef()

PUBLIC_PATHS = frozenset({LOGIN_PATH, "/me/language"})


def _core(request: web.Request) -> Core:
    return request.config_dict[CORE]


# --- signing in and out ------------------------------------------------------------------------


@routes.get("/login")
async def login_page(request: web.Request) -> web.Response:
    session = web_session(request)
    next_path = request.query.get("next", "")
    if session.actor is not None:
        return redirect(safe_next(next_path, home_for(session.actor)))
    return _login_form(request, username="", next_path=next_path)


def _login_form(
    request: web.Request,
    *,
    username: str,
    next_path: str,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    return render(
        request,
        "login.html",
        status=status,
        username=username,
        next_path=safe_next(next_path, ""),
        error=error,
        sso=_core(request).settings.saml is not None,
    )


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    username = form_text(form, "username").strip()
    next_path = form_text(form, "next")
    core = _core(request)
    try:
        session = await auth.login(core, username, form_text(form, "password"), source_of(request))
    except ProvisionerError as exc:
        return _login_form(
            request,
            username=username,
            next_path=next_path,
            error=error_message(request, exc),
            status=STATUS[exc.kind],
        )
    actor = await auth.authenticate(core, session.token, source_of(request))
    assert actor is not None
    if session.password_change_required:
        response = redirect(PASSWORD_PATH)
    else:
        response = redirect(safe_next(next_path, home_for(actor)))
    set_cookie(request, response, SESSION_COOKIE, session.token)
    clear_cookie(request, response, ADMIN_COOKIE)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    core = _core(request)
    session = web_session(request)
    if session.token:
        await auth.logout(core, session.token)
    admin_token = request.cookies.get(ADMIN_COOKIE)
    if admin_token:
        await auth.logout(core, admin_token)
    response = redirect(LOGIN_PATH)
    clear_cookie(request, response, SESSION_COOKIE)
    clear_cookie(request, response, ADMIN_COOKIE)
    set_flash(request, response, "flash.signed_out")
    return response


@routes.get("/language")
async def language(request: web.Request) -> web.Response:
    """The language switch: remember the choice in a cookie and go back to the page."""
    session = web_session(request)
    default = home_for(session.actor) if session.actor else LOGIN_PATH
    response = redirect(safe_next(request.query.get("next"), default))
    chosen = request.query.get("lang", "")
    if chosen in i18n.LANGUAGES:
        language_cookie(request, response, chosen)
    return response


@routes.post("/impersonation/end")
async def end_impersonation(request: web.Request) -> web.Response:
    """Back to the admin's own session, which waited in its own cookie."""
    core = _core(request)
    session = web_session(request)
    actor = actor_of(request)
    if actor.impersonator is None:
        return redirect(home_for(actor))
    assert session.token is not None
    await auth.logout(core, session.token)
    admin_token = request.cookies.get(ADMIN_COOKIE, "")
    admin = await auth.authenticate(core, admin_token, source_of(request)) if admin_token else None
    if admin is None or not admin.is_admin or admin.username != actor.impersonator:
        response = redirect(LOGIN_PATH)
        clear_cookie(request, response, SESSION_COOKIE)
    else:
        response = redirect(f"/admin/users/{actor.username}")
        set_cookie(request, response, SESSION_COOKIE, admin_token)
        set_flash(request, response, "flash.impersonation_ended")
    clear_cookie(request, response, ADMIN_COOKIE)
    return response


# --- self-service ------------------------------------------------------------------------------


@routes.get("")
async def me_redirect(request: web.Request) -> web.Response:
    return redirect("/me/")


@routes.get("/")
async def me_page(request: web.Request) -> web.Response:
    return _me(request)


def _me(
    request: web.Request, *, status: int = 200, errors: dict[str, str] | None = None
) -> web.Response:
    return render(request, "me.html", status=status, section="me", errors=errors or {})


@routes.post("/pin")
async def set_pin(request: web.Request) -> web.Response:
    form = await request.post()
    actor = actor_of(request)
    try:
        change = await pins.change_pin(
            _core(request), actor, actor.username, form_text(form, "pin")
        )
    except ProvisionerError as exc:
        return _me(request, status=STATUS[exc.kind], errors={"pin": error_message(request, exc)})
    response = redirect("/me/")
    set_flash(request, response, "flash.own_pin_changed", jobs=len(change.push_jobs))
    return response


@routes.get("/password")
async def password_page(request: web.Request) -> web.Response:
    return _password_page(request)


def _password_page(
    request: web.Request, *, status: int = 200, errors: dict[str, str] | None = None
) -> web.Response:
    return render(request, "password.html", status=status, section="me", errors=errors or {})


def _password_refusal(
    request: web.Request, session: WebSession, back: str, exc: ProvisionerError
) -> web.Response:
    field = "current_password" if exc.code.startswith("current_password") else "new_password"
    errors = {field: error_message(request, exc)}
    if back == "me" and not (session.actor and session.actor.password_change_only):
        return _me(request, status=STATUS[exc.kind], errors=errors)
    return _password_page(request, status=STATUS[exc.kind], errors=errors)


@routes.post("/password")
async def change_password(request: web.Request) -> web.Response:
    form = await request.post()
    session = web_session(request)
    actor = actor_of(request)
    back = form_text(form, "back")
    new_password = form_text(form, "new_password")
    try:
        if new_password != form_text(form, "repeat_password"):
            raise unprocessable("password_mismatch", "The two new passwords differ.")
        fresh = await passwords.change_own_password(
            _core(request),
            actor,
            None if actor.impersonator else (form_text(form, "current_password") or None),
            new_password,
        )
    except ProvisionerError as exc:
        if exc.kind is Kind.CONFLICT and exc.code == "auth_backend_external":
            return _password_page(request, status=STATUS[exc.kind])
        return _password_refusal(request, session, back, exc)
    # The change revoked every older token, this browser's too: carry on with the new one.
    response = redirect(home_for(actor))
    set_cookie(request, response, SESSION_COOKIE, fresh.token)
    set_flash(request, response, "flash.own_password_changed")
    return response


def create_me_app() -> web.Application:
    app = web.Application(
        middlewares=[html_errors, session_middleware(admin_only=False, public=PUBLIC_PATHS)]
    )
    app.on_response_prepare.append(security_headers)
    app.add_routes(routes)
    return app

"""Browser sessions for the web pages: cookies, CSRF tokens, flash messages, access rules.

The session cookie carries the same bearer token the JSON API uses (from ``auth.login`` or
``auth.impersonate``) and is checked with ``auth.authenticate`` on every request, so a password
change, a logout or an expiry ends the browser session exactly as it ends an API token.

Cookies are HttpOnly and ``SameSite=Strict``: no script reads them and no other site's link,
form or frame makes the browser send them. Strict rather than Lax costs one thing: following a
link to the pages from elsewhere (a mail, a chat) shows the sign-in page even when signed in;
for an admin tool that can reset credentials that is worth it. ``Secure`` is set whenever the
request came over HTTPS.

Every POST must carry a CSRF token: an HMAC (key ``vault.derive_key("csrf")``) of the session
token, or, before sign-in, of a random nonce in its own cookie, so the sign-in form is covered
too. A POST the browser marks as sent from another site (``Sec-Fetch-Site``) is refused as
well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import MultiDictProxy

from provisioner import auth, users
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.errors import Kind, ProvisionerError, forbidden
from provisioner.web import i18n
from provisioner.web.keys import CORE

log = logging.getLogger(__name__)

SESSION_COOKIE = "prov_session"
ADMIN_COOKIE = "prov_admin"
"""While an admin impersonates a user: the admin's own token, to go back to."""
ANON_COOKIE = "prov_anon"
"""Before sign-in: the nonce the sign-in form's CSRF token is bound to."""
LANG_COOKIE = "prov_lang"
FLASH_COOKIE = "prov_flash"
CSRF_FIELD = "csrf"

LOGIN_PATH = "/me/login"
PASSWORD_PATH = "/me/password"  # noqa: S105 (a path, not a secret)
# What a session from a temporary password may reach: choosing a password, signing out.
PASSWORD_CHANGE_PATHS = frozenset({PASSWORD_PATH, "/me/logout", "/me/language"})

_NONCE = re.compile(r"[A-Za-z0-9_-]{32,64}")
_LANG_MAX_AGE = 365 * 24 * 3600
_FLASH_MAX_AGE = 120


@dataclass(frozen=True)
class Flash:
    """A confirmation shown once on the page after a redirect: a catalog key and its values."""

    key: str
    params: dict[str, str | int]


@dataclass
class WebSession:
    """Who is at the browser, in which language, and the cookie changes the answer carries."""

    token: str | None
    actor: Actor | None
    user: dict[str, Any] | None
    """The acting user as ``users.public_view`` shows it."""
    lang: str
    csrf: str
    flash: Flash | None = None
    flash_shown: bool = False
    set_cookies: dict[str, str] = field(default_factory=dict)
    clear_cookies: set[str] = field(default_factory=set)

    @property
    def impersonating(self) -> bool:
        return self.actor is not None and self.actor.impersonator is not None


_SESSION = web.RequestKey("web_session", WebSession)


def web_session(request: web.Request) -> WebSession:
    """The session the middleware opened for ``request``."""
    return request[_SESSION]


def maybe_web_session(request: web.Request) -> WebSession | None:
    return request.get(_SESSION)


def actor_of(request: web.Request) -> Actor:
    """The signed-in actor (the middleware has already refused anonymous requests)."""
    actor = web_session(request).actor
    if actor is None:
        raise RuntimeError("page handler reached without a signed-in actor")
    return actor


def form_text(form: MultiDictProxy[Any], name: str) -> str:
    """A text field of a posted form; absent (or a file) reads as empty."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def source_of(request: web.Request) -> str:
    return request.remote or "unknown"


# --- cookies, redirects ------------------------------------------------------------------------


def set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        path="/",
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def clear_cookie(request: web.Request, response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path="/", httponly=True, samesite="Strict", secure=request.secure)


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST the browser follows with a GET (post/redirect/get)."""
    return web.Response(status=303, headers={"Location": location})


def home_for(actor: Actor) -> str:
    return "/admin/users" if actor.is_admin else "/me/"


def safe_next(value: str | None, default: str) -> str:
    """``value`` when it is a path on this site's pages, else ``default`` (no open redirect)."""
    if not value or not value.isascii() or not value.startswith(("/admin", "/me")):
        return default
    if "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 33 for c in value):
        return default
    return value


def login_url(next_path: str | None = None) -> str:
    return LOGIN_PATH + (f"?next={quote(next_path, safe='/')}" if next_path else "")


# --- CSRF and flash signatures -----------------------------------------------------------------


def _sign(core: Core, purpose: str, data: str) -> str:
    return hmac.new(core.vault.derive_key(purpose), data.encode(), hashlib.sha256).hexdigest()


def csrf_token(core: Core, *, token: str | None, nonce: str | None) -> str:
    """The CSRF token for forms of this session (or of this anonymous browser)."""
    basis = f"session:{token}" if token else f"anon:{nonce}"
    return _sign(core, "csrf", basis)


def set_flash(
    request: web.Request, response: web.StreamResponse, key: str, **params: str | int
) -> None:
    """Show catalog text ``key`` once on the next page this browser opens."""
    core = request.config_dict[CORE]
    payload = base64.urlsafe_b64encode(json.dumps([key, params]).encode()).decode().rstrip("=")
    set_cookie(
        request,
        response,
        FLASH_COOKIE,
        f"{payload}.{_sign(core, 'flash', payload)}",
        max_age=_FLASH_MAX_AGE,
    )


def _read_flash(core: Core, value: str | None) -> Flash | None:
    if not value or "." not in value:
        return None
    payload, _, signature = value.rpartition(".")
    if not hmac.compare_digest(signature, _sign(core, "flash", payload)):
        return None
    try:
        key, params = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(key, str) or not isinstance(params, dict):
        return None
    return Flash(key, params)


# --- the middleware ----------------------------------------------------------------------------


def csrf_refused() -> ProvisionerError:
    return ProvisionerError(
        Kind.FORBIDDEN, "csrf_invalid", "The form's CSRF token is missing or wrong."
    )


async def _open(request: web.Request, core: Core) -> WebSession:
    token = request.cookies.get(SESSION_COOKIE) or None
    actor = await auth.authenticate(core, token, source_of(request)) if token else None
    set_cookies: dict[str, str] = {}
    clear_cookies: set[str] = set()
    if token and actor is None:
        # The session ended (expiry, logout, password change). An impersonation that ended
        # returns to the admin's own session when that one is still alive.
        token = None
        clear_cookies.add(SESSION_COOKIE)
        admin_token = request.cookies.get(ADMIN_COOKIE)
        if admin_token:
            clear_cookies.add(ADMIN_COOKIE)
            admin = await auth.authenticate(core, admin_token, source_of(request))
            if admin is not None and admin.is_admin:
                token, actor = admin_token, admin
                clear_cookies.discard(SESSION_COOKIE)
                set_cookies[SESSION_COOKIE] = admin_token
    user = None
    if actor is not None:
        user = users.public_view(await users.find_user(core, actor, actor.username))
    lang = i18n.negotiate(
        request.cookies.get(LANG_COOKIE),
        user["language"] if user else None,
        request.headers.get("Accept-Language", ""),
    )
    nonce = None
    if token is None:
        nonce = request.cookies.get(ANON_COOKIE, "")
        if not _NONCE.fullmatch(nonce):
            nonce = secrets.token_urlsafe(32)
            set_cookies[ANON_COOKIE] = nonce
    return WebSession(
        token=token,
        actor=actor,
        user=user,
        lang=lang,
        csrf=csrf_token(core, token=token, nonce=nonce),
        flash=_read_flash(core, request.cookies.get(FLASH_COOKIE)),
        set_cookies=set_cookies,
        clear_cookies=clear_cookies,
    )


async def _check_csrf(request: web.Request, session: WebSession) -> None:
    # Browsers say where a request comes from in Sec-Fetch-Site, whatever a proxy did to the
    # Host header (which rules out comparing Origin with Host behind a reverse proxy).
    fetched_from = request.headers.get("Sec-Fetch-Site", "same-origin")
    if fetched_from not in ("same-origin", "none"):
        log.warning("form post to %s refused: sent from a %s page", request.path, fetched_from)
        raise csrf_refused()
    # Origin names the page a form was sent from. Its host must be the one the browser sent
    # the form to (Host, kept by reverse proxies as a rule) or the service's public one; a
    # proxy that rewrites Host is covered by the latter. No Origin (old browsers): the token
    # decides alone.
    origin = request.headers.get("Origin")
    if origin is not None and not _same_site_origin(request, origin):
        log.warning("form post to %s refused: sent from origin %.100r", request.path, origin)
        raise csrf_refused()
    form = await request.post()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf):
        log.warning("form post to %s refused: CSRF token missing or wrong", request.path)
        raise csrf_refused()


def _same_site_origin(request: web.Request, origin: str) -> bool:
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        return False  # "null" (sandboxed frames, file: pages) and anything malformed
    public = urlsplit(request.config_dict[CORE].settings.public_url).netloc
    return parts.netloc.lower() in {request.host.lower(), public.lower()}


def session_middleware(*, admin_only: bool, public: frozenset[str] = frozenset()) -> Middleware:
    """Open the browser session and enforce who may reach the sub-application's pages.

    ``admin_only``: every page needs an administrator (an impersonating admin acts as the
    user, so is refused). ``public``: paths reachable without signing in.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        session = await _open(request, request.config_dict[CORE])
        request[_SESSION] = session
        response = await _guarded(request, handler, session, public, admin_only)
        for name, value in session.set_cookies.items():
            if name not in response.cookies:
                set_cookie(request, response, name, value)
        for name in session.clear_cookies - set(response.cookies):
            clear_cookie(request, response, name)
        if session.flash_shown and FLASH_COOKIE not in response.cookies:
            clear_cookie(request, response, FLASH_COOKIE)
        return response

    return middleware


async def _guarded(
    request: web.Request,
    handler: Handler,
    session: WebSession,
    public: frozenset[str],
    admin_only: bool,
) -> web.StreamResponse:
    actor = session.actor
    if actor is None and request.path not in public:
        return redirect(login_url(request.path_qs if request.method == "GET" else None))
    if actor is not None:
        if actor.password_change_only and request.path not in PASSWORD_CHANGE_PATHS:
            return redirect(PASSWORD_PATH)
        if admin_only and not actor.is_admin:
            raise forbidden("forbidden", "This needs an administrator.")
    if request.method == "POST":
        await _check_csrf(request, session)
    return await handler(request)


def language_cookie(request: web.Request, response: web.StreamResponse, lang: str) -> None:
    set_cookie(request, response, LANG_COOKIE, lang, max_age=_LANG_MAX_AGE)

"""Rendering the web pages: the Jinja2 environment, error pages and security headers."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import asyncpg
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from provisioner import passwords, pins
from provisioner.errors import ProvisionerError
from provisioner.outage import database_unavailable
from provisioner.web import i18n
from provisioner.web.admin_session import (
    LANG_COOKIE,
    WebSession,
    home_for,
    maybe_web_session,
)
from provisioner.web.errors import STATUS, note_database_unavailable
from provisioner.web.i18n_catalog import CATALOG
from provisioner.web.keys import CORE, REQUEST_ID

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# No inline script or style anywhere: the pages load /static/admin.css and /static/admin.js.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_environment = jinja2.Environment(
    loader=jinja2.PackageLoader("provisioner", "templates/admin"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@cache
def static_url(name: str) -> str:
    """``/static/<name>`` with a content hash, so browsers may cache it and still see changes."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


def _formatter(lang: str) -> Any:
    pattern = "%d.%m.%Y %H:%M" if lang == "de" else "%Y-%m-%d %H:%M"

    def when(value: datetime | str | None) -> str:
        if value is None:
            return i18n.t(lang, "common.never")
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return i18n.t(lang, "common.time_utc", time=moment.astimezone(UTC).strftime(pattern))

    return when


def policy_params(request: web.Request) -> dict[str, int]:
    """The limits the PIN and password rules name, for help texts and error messages."""
    return {
        "min_pin": request.config_dict[CORE].settings.pin_min_length,
        "max_pin": pins.MAX_LENGTH,
        "min_password": passwords.MIN_LENGTH,
        "max_password": passwords.MAX_LENGTH,
    }


def error_message(request: web.Request, exc: ProvisionerError) -> str:
    """``exc`` as a sentence in the page's language."""
    return i18n.error_text(page_language(request), exc, **policy_params(request))


def page_language(request: web.Request) -> str:
    session = maybe_web_session(request)
    if session is not None:
        return session.lang
    return i18n.negotiate(
        request.cookies.get(LANG_COOKIE), None, request.headers.get("Accept-Language", "")
    )


def render(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    section: str | None = None,
    **context: Any,
) -> web.Response:
    """Render ``template`` with the frame's context (language, session, flash, helpers)."""
    session = maybe_web_session(request) or WebSession(
        token=None, actor=None, user=None, lang=page_language(request), csrf=""
    )
    lang = session.lang
    translate = i18n.translator(lang)
    flash_text = None
    if session.flash is not None and status < 400:
        flash_text = translate(session.flash.key, **session.flash.params)
        session.flash_shown = True
    html = _environment.get_template(template).render(
        t=translate,
        lang=lang,
        languages=i18n.LANGUAGES,
        session=session,
        actor=session.actor,
        home=home_for(session.actor) if session.actor else "/me/",
        flash_text=flash_text,
        path_qs=request.path_qs,
        static=static_url,
        when=_formatter(lang),
        policy=policy_params(request),
        section=section,
        **context,
    )
    return web.Response(text=html, content_type="text/html", status=status)


def error_page(request: web.Request, status: int, title_key: str, text: str) -> web.Response:
    return render(request, "error.html", status=status, title_key=title_key, text=text)


@web.middleware
async def html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Failures as pages in the visitor's language: no JSON, never a stack trace."""
    try:
        return await handler(request)
    except ProvisionerError as exc:
        status = STATUS[exc.kind]
        if exc.code == "csrf_invalid":
            text = i18n.t(page_language(request), "page.csrf.text")
            return error_page(request, status, "page.csrf.title", text)
        return error_page(request, status, _title_key(status), error_message(request, exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        key = _title_key(exc.status)
        text = i18n.t(page_language(request), key.replace(".title", ".text"), ref="")
        return error_page(request, exc.status, key, text)
    except asyncpg.DataError:
        text = i18n.t(page_language(request), "page.400.text")
        return error_page(request, 400, "page.400.title", text)
    except Exception as exc:
        if database_unavailable(exc):
            note_database_unavailable(request, exc)
            text = i18n.t(page_language(request), "page.503.text")
            return error_page(request, 503, "page.503.title", text)
        reference = request.get(REQUEST_ID, "")
        log.exception("page %s %s failed [%s]", request.method, request.path, reference)
        text = i18n.t(page_language(request), "page.error.text", ref=reference)
        return error_page(request, 500, "page.error.title", text)


def _title_key(status: int) -> str:
    key = f"page.{status}.title"
    return key if key in CATALOG else "page.error.title"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the headers every page, redirect and error page carries."""
    headers = response.headers
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["X-Frame-Options"] = "DENY"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    # Pages show personal data and are per session: keep them out of every cache, so "back"
    # after signing out shows nothing.
    headers.setdefault("Cache-Control", "no-store")

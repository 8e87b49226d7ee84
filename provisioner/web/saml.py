"""SAML single sign-on's pages under ``/saml/``: the SP's metadata, the redirect to the
identity provider, and the assertion consumer service (ACS) the IdP posts its answer to.

The ACS takes a cross-site POST by design (HTTP-POST binding), so this sub-application has no
session or CSRF middleware: the answer's signature, its one-time request and its one-time
assertion ID are what protect it. A refusal is an error page with the code and the status it
has everywhere (a client asking for JSON gets the contract's error document instead); the
domain has audited it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from provisioner import auth, sso
from provisioner.errors import ProvisionerError
from provisioner.web.admin_render import (
    error_message,
    html_errors,
    page_language,
    render,
    security_headers,
)
from provisioner.web.admin_session import (
    ADMIN_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    form_text,
    home_for,
    safe_next,
    set_cookie,
    source_of,
)
from provisioner.web.errors import STATUS, render_error
from provisioner.web.keys import CORE, SAML

if TYPE_CHECKING:  # pysaml2 takes seconds to import: loaded only when SAML is configured
    from provisioner.saml_sp import ServiceProvider

routes = web.RouteTableDef()

METADATA_TYPE = "application/samlmetadata+xml"


@web.middleware
async def refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProvisionerError as exc:
        return _refusal(request, exc)


def _sp(request: web.Request) -> ServiceProvider:
    sp = request.config_dict.get(SAML)
    if sp is None:
        raise sso.not_configured()
    return sp


@routes.get("/metadata")
async def metadata(request: web.Request) -> web.Response:
    return web.Response(text=_sp(request).metadata, content_type=METADATA_TYPE)


@routes.get("/login")
async def login(request: web.Request) -> web.Response:
    """To the IdP with a new AuthnRequest; ``next`` (a page of this site, else the start
    page) travels as RelayState and is where the user lands once signed in."""
    next_path = safe_next(request.query.get("next"), "")
    url = await sso.begin(request.config_dict[CORE], _sp(request), next_path)
    return web.Response(status=302, headers={"Location": url})


@routes.post("/acs")
async def acs(request: web.Request) -> web.Response:
    sp = _sp(request)
    form = await request.post()
    core = request.config_dict[CORE]
    source = source_of(request)
    answer = form_text(form, "SAMLResponse")
    signed_in = await sso.finish(core, sp, answer, source, language=page_language(request))
    actor = await auth.authenticate(core, signed_in.session.token, source)
    assert actor is not None
    next_path = safe_next(signed_in.next_path, home_for(actor))
    response = render(request, "saml_signed_in.html", next_path=next_path)
    set_cookie(request, response, SESSION_COOKIE, signed_in.session.token)
    clear_cookie(request, response, ADMIN_COOKIE)
    return response


def _refusal(request: web.Request, exc: ProvisionerError) -> web.Response:
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return render_error(exc)
    code = f"{exc.code}.{exc.reason}" if exc.reason else exc.code
    return render(
        request,
        "error.html",
        status=STATUS[exc.kind],
        title_key="saml.failed",
        text=error_message(request, exc),
        code=code,
    )


def create_saml_app() -> web.Application:
    app = web.Application(middlewares=[html_errors, refusals])
    app.on_response_prepare.append(security_headers)
    app.add_routes(routes)
    return app

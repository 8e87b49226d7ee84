"""Helpers for the web pages' tests: form posts with a plain HTTP client, and a real browser.

The browser is Debian's Chromium driven by Playwright (``pip install playwright``; never
``playwright install``, which would download a browser of its own).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_PASSWORD, Api, bootstrap_admin

CHROMIUM = os.environ.get("PROVISIONER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@dataclass
class Page:
    status: int
    text: str
    location: str | None


@dataclass
class Forms:
    """One visitor with its own cookies, filling in forms as a browser would (no JavaScript)."""

    session: aiohttp.ClientSession
    base: str
    accept_language: str = "en"

    async def get(self, path: str, **headers: str) -> Page:
        headers = {"Accept-Language": self.accept_language, **headers}
        async with self.session.get(
            self.base + path, allow_redirects=False, headers=headers
        ) as response:
            return Page(response.status, await response.text(), response.headers.get("Location"))

    async def csrf(self, path: str) -> str:
        page = await self.get(path)
        match = _CSRF.search(page.text)
        assert match, f"no CSRF field on {path} ({page.status})"
        return match.group(1)

    async def post(
        self, path: str, data: dict[str, str], *, csrf_from: str | None = None, **headers: str
    ) -> Page:
        """POST ``data``; with ``csrf_from`` add the CSRF token that page's form carries."""
        body = dict(data)
        if csrf_from is not None:
            body["csrf"] = await self.csrf(csrf_from)
        headers = {"Accept-Language": self.accept_language, **headers}
        async with self.session.post(
            self.base + path, data=body, allow_redirects=False, headers=headers
        ) as response:
            return Page(response.status, await response.text(), response.headers.get("Location"))

    async def login(self, username: str, password: str) -> Page:
        page = await self.post(
            "/me/login", {"username": username, "password": password}, csrf_from="/me/login"
        )
        assert page.status == 303, page.text
        return page

    def cookie(self, name: str) -> str | None:
        for cookie in self.session.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None


Visitors = Callable[[], Forms]


@pytest.fixture
async def visitor(client: TestClient[Any, Any]) -> AsyncIterator[Visitors]:
    """Make visitors: each one a browser of its own as far as cookies go."""
    sessions: list[aiohttp.ClientSession] = []

    def make() -> Forms:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        sessions.append(session)
        return Forms(session, base_url(client))

    yield make
    for session in sessions:
        await session.close()


@pytest.fixture
async def admin_api(client: TestClient[Any, Any]) -> Api:
    return await bootstrap_admin(client)


@pytest.fixture
async def admin_forms(visitor: Visitors, admin_api: Api) -> Forms:
    forms = visitor()
    await forms.login("admin", ADMIN_PASSWORD)
    return forms


# --- the browser -------------------------------------------------------------------------------


def _require_browser() -> None:
    missing = []
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright")
    if not shutil.which(CHROMIUM):
        missing.append(f"Chromium at {CHROMIUM} (Debian package chromium)")
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Browser:
    """Headless Chromium against the test server; every page fails the test on a CSP report."""

    browser: Any
    client: TestClient[Any, Any]
    csp_violations: list[str]

    async def new_page(
        self, *, width: int = 1280, height: int = 800, locale: str = "en-GB", **options: Any
    ) -> Any:
        """A page in a fresh context: its own cookies, so each page is its own visitor."""
        context = await self.browser.new_context(
            base_url=base_url(self.client),
            viewport={"width": width, "height": height},
            locale=locale,
            **options,
        )
        page = await context.new_page()
        page.on("console", self._console)
        return page

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)


@pytest.fixture
async def browser(client: TestClient[Any, Any]) -> AsyncIterator[Browser]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        session = Browser(chromium, client, [])
        try:
            yield session
        finally:
            await chromium.close()
        assert session.csp_violations == [], "the pages broke their own Content-Security-Policy"


def base_url(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("")).rstrip("/")


async def browser_login(page: Any, username: str, password: str) -> None:
    await page.goto("/me/login")
    await page.get_by_label(re.compile("^(Username|Benutzername)$")).fill(username)
    await page.get_by_label(re.compile("^(Password|Passwort)$")).fill(password)
    await page.get_by_role("button", name=re.compile("^(Sign in|Anmelden)$")).click()
    await page.wait_for_load_state()


# --- data --------------------------------------------------------------------------------------

DESK_PHONE = "001565aabb01"
PIN = "730519"
USERS: tuple[dict[str, Any], ...] = (
    {
        "username": "alice",
        "display_name": "Alice Example",
        "extension": "201",
        "email": "alice@example.net",
        "language": "en",
    },
    {
        "username": "bob",
        "display_name": "Bob Directory",
        "extension": "202",
        "email": "bob@example.net",
        "auth_backend": "ldap",
    },
    {"username": "carol", "display_name": "Carol Nomail", "extension": "203"},
)


async def seed(api: Api) -> None:
    """Three users (local with email, LDAP, local without email) and alice's desk phone."""
    status, data = await api.call("PUT", "/sites/default", {"registrar_host": "pbx.example.net"})
    assert status == 200, data
    for user in USERS:
        status, data = await api.call("POST", "/users", user)
        assert status == 201, data
    status, data = await api.call(
        "POST", "/devices", {"mac": DESK_PHONE, "vendor": "yealink", "model": "T54W"}
    )
    assert status == 201, data
    status, data = await api.call(
        "PUT", f"/devices/{DESK_PHONE}/assignments", [{"slot": 1, "username": "alice"}]
    )
    assert status == 200, data

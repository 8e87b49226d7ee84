"""The main pages at 1280x800 and at phone size: they render, fit, and make the README's pictures.

With ``PROVISIONER_SCREENSHOTS=DIR`` the 1280x800 screenshots are written to DIR (that is how
``docs/screenshots/make.py`` refreshes ``docs/screenshots/``); otherwise to a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import asyncpg

from tests.conftest import ADMIN_PASSWORD, Api
from tests.web.conftest import DESK_PHONE, PIN, Browser, browser_login, seed

USER_PASSWORD = "Quiet-Harbour-42"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MORE_USERS = [
    ("amelie.braun", "Amélie Braun", "204", "ldap"),
    ("ben.schulz", "Ben Schulz", "205", "local"),
    ("clara.wolf", "Clara Wolf", "206", "saml"),
    ("david.koch", "David Koch", "207", "local"),
    ("emma.richter", "Emma Richter", "208", "local"),
    ("felix.neumann", "Felix Neumann", "209", "ldap"),
    ("greta.hofmann", "Greta Hofmann", "210", "local"),
]


async def _realistic_data(api: Api, db: asyncpg.Connection) -> None:
    """The seeded users and phone, plus what a running system has: more users, a fetch."""
    await seed(api)
    for username, name, extension, backend in MORE_USERS:
        body = {
            "username": username,
            "display_name": name,
            "extension": extension,
            "email": f"{username}@example.net",
            "auth_backend": backend,
        }
        status, data = await api.call("POST", "/users", body)
        assert status == 201, data
    status, _ = await api.call("PUT", "/users/alice/pin", {"pin": PIN})
    assert status == 200
    status, _ = await api.call(
        "POST",
        "/users/alice/password",
        {"mode": "set", "password": USER_PASSWORD, "temporary": False},
    )
    assert status == 200
    # As if the push worker had notified the phone and the phone had fetched its files.
    await db.execute(
        """UPDATE devices SET last_fetch_at = now(), last_fetch_revision = revision - 1,
                  last_fetch_file = mac || '.cfg', last_fetch_source = '192.0.2.41',
                  last_notify_at = now(), last_notify_result = 'sip: 200 OK',
                  label = 'Reception desk'
           WHERE mac = $1""",
        DESK_PHONE,
    )


async def _shoot(page: Any, folder: Path, name: str) -> None:
    image = await page.screenshot(path=str(folder / f"{name}.png"))
    assert image.startswith(PNG_SIGNATURE)


async def _fits(page: Any) -> bool:
    return bool(
        await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    )


async def test_main_pages_at_desktop_and_phone_size(
    browser: Browser, admin_api: Api, db: asyncpg.Connection, tmp_path: Path
) -> None:
    await _realistic_data(admin_api, db)
    folder = Path(os.environ.get("PROVISIONER_SCREENSHOTS") or tmp_path)

    page = await browser.new_page()
    await page.goto("/me/login")
    await _shoot(page, folder, "login")
    await browser_login(page, "admin", ADMIN_PASSWORD)
    await _shoot(page, folder, "users")
    await page.goto("/admin/users/alice")
    await page.get_by_text("PIN and password").click()
    await _shoot(page, folder, "user-detail")
    await page.goto(f"/admin/devices/{DESK_PHONE}")
    await _shoot(page, folder, "device-detail")
    await page.goto("/admin/audit")
    await _shoot(page, folder, "audit")

    user = await browser.new_page()
    await browser_login(user, "alice", USER_PASSWORD)
    await _shoot(user, folder, "me")

    phone = page
    await phone.set_viewport_size({"width": 390, "height": 844})
    for path in (
        "/admin/users",
        "/admin/users/alice",
        "/admin/users/new",
        "/admin/devices",
        f"/admin/devices/{DESK_PHONE}",
        "/admin/audit",
        "/me/",
    ):
        await phone.goto(path)
        assert await _fits(phone), f"{path} is wider than a phone's screen"

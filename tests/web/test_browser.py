"""End to end in headless Chromium: what an administrator and a user do in the web pages."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from tests.conftest import ADMIN_PASSWORD, Api, MailSink, mailed_password
from tests.web.conftest import DESK_PHONE, PIN, Browser, browser_login, seed

NEW_PASSWORD = "Lantern-Orchard-58"


def widget(page: Any) -> Any:
    return page.locator("details#credentials")


async def test_admin_sets_pin_and_mails_a_random_password(
    browser: Browser, admin_api: Api, db: asyncpg.Connection, mail_sink: MailSink
) -> None:
    await seed(admin_api)
    page = await browser.new_page()
    await page.goto("/admin/")
    assert "/me/login" in page.url
    await browser_login(page, "admin", ADMIN_PASSWORD)
    assert page.url.endswith("/admin/users")

    await page.get_by_label("Search by name, username, extension or email").fill("alic")
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"q=alic"))
    await page.get_by_role("link", name="alice", exact=True).click()
    await page.wait_for_url(re.compile(r"/admin/users/alice$"))
    assert await widget(page).get_attribute("open") is None, "closed until asked"

    await page.get_by_text("PIN and password").click()
    await page.get_by_label("New PIN").fill(PIN)
    await page.get_by_role("button", name="Apply PIN").click()
    flash = page.get_by_role("status")
    await flash.wait_for()
    assert "PIN changed for alice. Push jobs queued: 1." in await flash.inner_text()
    assert await page.get_by_label("New PIN").input_value() == "", "never filled back in"
    jobs = await db.fetch("SELECT state, reason FROM push_jobs WHERE mac = $1", DESK_PHONE)
    assert [(j["state"], j["reason"]) for j in jobs if j["reason"] == "pin.change"] == [
        ("pending", "pin.change")
    ]

    # The random password: the field stays empty; the button asks first.
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Set random password, send email (New password)").click()
    await page.wait_for_selector("text=A random password has been set for alice")
    bodies = mail_sink.bodies_to("alice@example.net")
    assert len(bodies) == 1
    password = mailed_password(bodies[0])

    # The user signs in with the mailed password and must choose her own first.
    user = await browser.new_page()
    await browser_login(user, "alice", password)
    assert user.url.endswith("/me/password")
    assert await user.get_by_text("Your password is temporary.").is_visible()
    await user.goto("/me/")
    assert user.url.endswith("/me/password"), "nothing else until a password is chosen"
    await user.get_by_label("Current password").fill(password)
    await user.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    await user.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
    await user.get_by_role("button", name="Change password").click()
    await user.wait_for_url(re.compile(r"/me/$"))
    assert "Your password has been changed." in await user.get_by_role("status").inner_text()
    status, session = await admin_api.login("alice", NEW_PASSWORD)
    assert (status, session["password_change_required"]) == (200, False)


async def test_password_controls_are_disabled_with_the_reason(
    browser: Browser, admin_api: Api
) -> None:
    await seed(admin_api)
    page = await browser.new_page()
    await browser_login(page, "admin", ADMIN_PASSWORD)
    buttons = (
        "Change password, don't send email",
        "Change password, send email (New password)",
        "Set random password, send email (New password)",
    )

    # bob signs in through LDAP: the whole password part is greyed out, the PIN is not.
    await page.goto("/admin/users/bob")
    summary = widget(page).locator("summary")
    await summary.focus()
    await page.keyboard.press("Enter")  # the widget opens from the keyboard
    assert await widget(page).get_attribute("open") == ""
    assert await page.get_by_label("New PIN").is_enabled()
    assert await page.get_by_label("New password", exact=True).is_disabled()
    for name in buttons:
        assert await page.get_by_role("button", name=name).is_disabled(), name
    reason = page.get_by_text("bob signs in through LDAP; the password is managed there.")
    assert await reason.is_visible()
    await page.keyboard.press("Enter")
    assert await widget(page).get_attribute("open") is None, "and closes again"

    # carol has no email: she can get a password, but none by mail.
    await page.goto("/admin/users/carol")
    await widget(page).locator("summary").click()
    assert await page.get_by_label("New password", exact=True).is_enabled()
    assert await page.get_by_role("button", name=buttons[0]).is_enabled()
    for name in buttons[1:]:
        button = page.get_by_role("button", name=name)
        assert await button.is_disabled(), name
        assert await button.get_attribute("aria-describedby") == "email-problem"
    assert await page.get_by_text("The user has no email address").is_visible()


async def test_impersonation_shows_a_banner_and_the_audit_names_the_admin(
    browser: Browser, admin_api: Api, db: asyncpg.Connection
) -> None:
    await seed(admin_api)
    page = await browser.new_page()
    await browser_login(page, "admin", ADMIN_PASSWORD)
    await page.goto("/admin/users/alice")
    await page.get_by_role("button", name="Impersonate").click()
    await page.wait_for_url(re.compile(r"/me/$"))
    banner = page.locator(".banner")
    assert "You are acting as Alice Example (alice); you signed in as admin." in (
        await banner.inner_text()
    )

    # Acting as alice means alice's rights: no admin pages.
    response = await page.goto("/admin/users")
    assert response is not None
    assert response.status == 403
    assert await page.get_by_role("heading", name="Access denied").is_visible()
    await page.goto("/me/")
    assert await page.get_by_label("Current password").count() == 0, "not needed when acting"
    await page.get_by_label("New PIN").fill(PIN)
    await page.get_by_role("button", name="Apply PIN").click()
    await page.wait_for_selector("text=Your PIN has been changed.")

    await page.get_by_role("button", name="Back to admin").click()
    await page.wait_for_url(re.compile(r"/admin/users/alice$"))
    assert await page.locator(".banner").count() == 0

    row = await db.fetchrow("SELECT actor, impersonator FROM audit_log WHERE action = 'pin.change'")
    assert (row["actor"], row["impersonator"]) == ("alice", "admin")
    row = await db.fetchrow(
        "SELECT actor, target_user FROM audit_log WHERE action = 'auth.impersonate'"
    )
    assert (row["actor"], row["target_user"]) == ("admin", "alice")

    await page.goto("/admin/audit?user=alice&action=pin")
    cells = page.locator("table.audit tbody tr").first.locator("td")
    texts = [t.strip() for t in await cells.all_inner_texts()]
    assert texts[1:5] == ["pin.change", "alice", "admin", "alice"]

"""The admin pages for directory users: where fields come from, filters, disabled users marked."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_PASSWORD, AppFactory, bootstrap_admin
from tests.directory.conftest import ldap_env
from tests.slapd import ADMINS, Slapd, person
from tests.web.conftest import Forms, base_url


def _rows(html: str) -> list[str]:
    """The usernames the users list shows, in order."""
    return re.findall(r'<a href="/admin/users/([^"]+)">', html)


async def test_pages_show_directory_users_their_sources_and_who_is_disabled(
    make_client: AppFactory, slapd: Slapd, subtree: str
) -> None:
    slapd.add(person("hana", "Hana Hill", base=subtree, extension="3201"))
    slapd.add(person("ivan", "Ivan Ives", base=subtree, extension="3202"))
    slapd.modify(f"dn: {ADMINS}\nchangetype: modify\nadd: member\nmember: uid=hana,{subtree}\n")
    client: TestClient[Any, Any] = await make_client(**ldap_env(slapd, subtree))
    admin = await bootstrap_admin(client)
    await admin.call("POST", "/users", {"username": "kurt", "display_name": "Kurt Local"})
    assert (await admin.call("POST", "/directory/sync", {}))[0] == 200
    status, _ = await admin.call(
        "POST", "/devices", {"mac": "001565aa0101", "vendor": "yealink", "model": "T54W"}
    )
    assert status == 201
    await admin.call("PUT", "/devices/001565aa0101/assignments", [{"slot": 1, "username": "ivan"}])
    slapd.delete(f"uid=ivan,{subtree}")
    assert (await admin.call("POST", "/directory/sync", {}))[0] == 200

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        await _check_pages(Forms(session, base_url(client)), subtree)


async def _check_pages(forms: Forms, subtree: str) -> None:
    await forms.login("admin", ADMIN_PASSWORD)

    hana = await forms.get("/admin/users/hana")
    assert hana.status == 200
    assert '<dd id="auth-backend">LDAP</dd>' in hana.text
    marked = dict(re.findall(r'data-field="(\w+)">from the directory \(([^)]*)\)', hana.text))
    assert marked == {
        "display_name": "cn",
        "extension": "telephoneNumber",
        "email": "mail",
        "role": ADMINS,
    }
    assert f"uid=hana,{subtree}" in hana.text
    local = await forms.get("/admin/users/kurt")
    assert "from the directory" not in local.text

    ldap_only = await forms.get("/admin/users?backend=ldap")
    assert _rows(ldap_only.text) == ["hana", "ivan"]
    disabled = await forms.get("/admin/users?disabled=true")
    assert _rows(disabled.text) == ["ivan"]
    assert 'class="badge badge-disabled">disabled<' in disabled.text
    enabled = await forms.get("/admin/users?disabled=false&backend=local")
    assert _rows(enabled.text) == ["admin", "kurt"]
    assert "badge-disabled" not in enabled.text
    refused = await forms.get("/admin/users?disabled=maybe")
    assert refused.status == 400

    ivan = await forms.get("/admin/users/ivan")
    assert "Disabled by the directory sync" in ivan.text
    device = await forms.get("/admin/devices/001565aa0101")
    assert re.search(
        r"\(ivan\) <span class=\"badge badge-disabled\">user disabled</span>", device.text
    )

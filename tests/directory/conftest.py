"""A slapd for the whole session (see ``tests/slapd.py``) and the service configured for it."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.slapd import ADMINS, PEOPLE, READER_DN, READER_PASSWORD, Slapd, start_slapd
from tests.test_cli import base_env, cli  # noqa: F401 (fixtures of the CLI test)


@pytest.fixture(scope="session")
def slapd_server() -> Iterator[Slapd]:
    server, base = start_slapd()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def slapd(slapd_server: Slapd) -> Iterator[Slapd]:
    """The session's slapd, running when the test starts and after it (a test may stop it)."""
    if not slapd_server.running:
        slapd_server.start()
    yield slapd_server
    if not slapd_server.running:
        slapd_server.start()


def ldap_env(slapd: Slapd, base_dn: str = PEOPLE, **extra: str) -> dict[str, str]:
    """``make_client`` keywords for the directory (no interval sync unless asked for)."""
    return {
        "ldap_url": slapd.url,
        "ldap_bind_dn": READER_DN,
        "ldap_bind_password": READER_PASSWORD,
        "ldap_base_dn": base_dn,
        "ldap_admin_group": ADMINS,
        "ldap_sync_interval": "0",
        **extra,
    }


@pytest.fixture
def subtree(slapd: Slapd) -> str:
    """A subtree of this test's own: users it adds there are the only ones its service sees."""
    return slapd.new_subtree(f"t{secrets.token_hex(4)}")


@pytest.fixture
async def ldap_client(make_client: AppFactory, slapd: Slapd) -> TestClient[Any, Any]:
    """The service with the seeded people as its directory."""
    return await make_client(**ldap_env(slapd))

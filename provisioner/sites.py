"""Sites: the SIP registrar, time zone, language, NTP server and maintenance window a group of
devices shares."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from provisioner import audit, maintenance, store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.errors import invalid, unprocessable
from provisioner.users import LANGUAGES, require_admin

FIELDS = store.SITE_EDITABLE_COLUMNS
#: Fields no device's configuration carries: changing only these re-renders nothing.
_NOT_RENDERED = frozenset({"maintenance_window"})
TRANSPORTS = ("udp", "tcp", "tls")
# Read by Python (fullmatch) and, in the API document, as ECMA-262 JSON Schema.
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
#: A host name or an IP address (IPv6 in brackets), at most 253 characters.
HOST_PATTERN = r"^(?:(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$"
_NAME = re.compile(NAME_PATTERN)
_HOST = re.compile(HOST_PATTERN)


def is_site_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def is_host(value: str) -> bool:
    """A host name or an IP address (IPv6 in brackets), at most 253 characters."""
    return _HOST.fullmatch(value) is not None


@cache
def time_zones() -> list[str]:
    """The IANA time zone names this machine knows, sorted."""
    return sorted(available_timezones())


@cache
def _time_zone_set() -> frozenset[str]:
    return frozenset(time_zones())


def _validate(changes: Mapping[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name in ("registrar_host", "ntp_server") and not is_host(value):
            raise invalid(f"{name}_invalid", f"{name} must be a host name or IP address.")
        if name == "registrar_port" and not 1 <= value <= 65535:
            raise invalid("registrar_port_invalid", "registrar_port is 1 to 65535.")
        if name == "transport" and value not in TRANSPORTS:
            raise invalid("transport_invalid", f"transport is one of {', '.join(TRANSPORTS)}.")
        if name == "timezone" and value not in _time_zone_set():
            raise invalid("timezone_invalid", "timezone is an IANA name such as Europe/Berlin.")
        if name == "language" and value not in LANGUAGES:
            raise invalid("language_invalid", f"language is one of {', '.join(LANGUAGES)}.")
        if name == "maintenance_window":
            value = str(maintenance.parse(value))
        if name == "sip_realm" and value is not None and not is_host(value):
            raise unprocessable(
                "sip_realm_invalid",
                "sip_realm is a host name (the registrar's SIP domain), or null for the registrar "
                "host.",
            )
        clean[name] = value
    return clean


async def list_sites(core: Core, actor: Actor) -> list[Any]:
    require_admin(actor)
    async with core.pool.acquire() as conn:
        return await store.list_sites(conn)


async def set_site(core: Core, actor: Actor, name: str, changes: Mapping[str, Any]) -> Any:
    """Create or change a site; its devices are re-rendered and get a push job.

    A change of the maintenance window alone renders nothing: the site's jobs that wait for the
    window are looked at again by the push worker, which times them by the new one.
    """
    require_admin(actor)
    if not is_site_name(name):
        raise invalid("site_invalid", "A site name is 1-64 lower-case letters, digits and . _ -.")
    clean = _validate(changes)
    async with core.pool.acquire() as conn, conn.transaction():
        row = await store.upsert_site(conn, name, clean)
        macs = []
        if set(clean) - _NOT_RENDERED:
            macs = await store.list_site_device_macs(conn, name)
        retimed = 0
        if "maintenance_window" in clean or "timezone" in clean:
            retimed = await store.reconsider_scheduled_push_jobs(conn, name)
        jobs = await store.enqueue_push_jobs(conn, macs, "site.update")
        await audit.record(
            conn,
            actor,
            "site.update",
            None,
            {"site": name, "fields": sorted(clean), "push_jobs": len(jobs)},
        )
    if jobs or retimed:
        core.push_wake.wake()
    return row


def site_view(row: Any) -> dict[str, Any]:
    return {name: row[name] for name in ("name", *FIELDS)}

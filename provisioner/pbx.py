"""The PBX side: the line accounts a registrar must know, without their clear passwords.

Every line of a device has its own SIP account (``<extension>-<mac>-<slot>``) with a random
password that only the phone's config carries in clear. The registrar gets the digest HA1 of
each account (RFC 2617 3.2.2.2: ``MD5(username:realm:password)``) and Kamailio's ``ha1b``
(``MD5(username@domain:realm:password)``) for the site's SIP realm, through read-only views in the
schema ``pbx`` (``subscriber`` for Kamailio/OpenSIPS ``auth_db``, ``ps_endpoints``/``ps_auths``/
``ps_aors`` for Asterisk's PJSIP realtime, ``extension_accounts`` for routing after hot desking)
that a dedicated database role may read and nothing else, or as a ``pjsip.conf`` include.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from provisioner import store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.errors import invalid, not_found, unprocessable
from provisioner.users import require_admin

#: A PostgreSQL role name this command accepts: a plain identifier, quoted when used.
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_EXTENSION = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True)
class Digests:
    realm: str
    ha1: str
    ha1b: str


def digests(username: str, realm: str, password: str) -> Digests:
    """HA1 and HA1b of an account; the domain of HA1b is the realm (what the views show)."""
    # MD5 is what SIP digest authentication is defined with; these values are what registrars
    # store instead of the password (and are as secret as it is to a registrar's peers).
    ha1 = hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()  # noqa: S324
    ha1b = hashlib.md5(f"{username}@{realm}:{realm}:{password}".encode()).hexdigest()  # noqa: S324
    return Digests(realm, ha1, ha1b)


def effective_realm(site: Any) -> str:
    """The site's SIP realm: ``sip_realm`` when set, else the registrar host."""
    realm: str = site["sip_realm"] or site["registrar_host"]
    return realm


@dataclass(frozen=True)
class ExtensionAccount:
    username: str
    domain: str
    mac: str
    slot: int
    hotdesk: bool
    contact: str | None


async def extension_accounts(core: Core, extension: str) -> list[ExtensionAccount]:
    """The SIP accounts that carry ``extension`` now (its own lines and hot-desk logins)."""
    if not _EXTENSION.fullmatch(extension):
        raise unprocessable("extension_invalid", "An extension is 1-15 digits.")
    async with core.pool.acquire() as conn:
        rows = await store.list_extension_accounts(conn, extension)
    return [
        ExtensionAccount(
            r["username"], r["domain"], r["mac"], r["slot"], r["hotdesk"], r["contact"]
        )
        for r in rows
    ]


async def grant(core: Core, actor: Actor, role: str) -> str | None:
    """Let ``role`` read the views in schema ``pbx`` (and nothing else of provisioner's).

    The role must exist (created by the DBA with the password the PBX uses). Its
    ``search_path`` in this database becomes ``pbx``, so a stock
    ``auth_check(..., "subscriber", ...)`` or Asterisk's ``ps_endpoints`` finds the views
    without a schema prefix. Views run with their owner's rights: the role needs, and gets, no
    right on the tables behind them.

    Setting another role's ``search_path`` takes superuser or CREATEROLE rights, which the
    service's own database user often lacks: then the read rights are granted all the same and
    the statement a superuser must run is returned (None when nothing is left to do).
    """
    require_admin(actor)
    if not _ROLE.fullmatch(role):
        raise invalid("role_invalid", "A role name is a plain lower-case PostgreSQL identifier.")
    async with core.pool.acquire() as conn, conn.transaction():
        if not await store.role_exists(conn, role):
            raise not_found("role_not_found", f"There is no database role {role}; create it first.")
        await store.grant_pbx_views(conn, role)
        try:
            async with conn.transaction():
                await store.set_role_search_path(conn, role)
        except asyncpg.InsufficientPrivilegeError:
            database = await conn.fetchval("SELECT current_database()")
            return f'ALTER ROLE "{role}" IN DATABASE "{database}" SET search_path = pbx;'
    return None


async def pjsip_config(core: Core, actor: Actor) -> str:
    """Every line account as a ``pjsip.conf`` include: endpoint, auth (``md5_cred``) and aor."""
    require_admin(actor)
    async with core.pool.acquire() as conn:
        rows = await store.list_pjsip_accounts(conn)
    sections = [
        "; Written by `provisioner pbx export --format pjsip`: the line accounts of the phones\n"
        "; provisioner serves. Include it from pjsip.conf; run the export again after changes\n"
        "; (or use the realtime views in schema pbx instead). No clear password is written.\n"
    ]
    for r in rows:
        name = r["id"]
        sections.append(
            f"[{name}]\ntype=endpoint\naors={name}\nauth={name}\ncontext={r['context']}\n"
            f"disallow={r['disallow']}\nallow={r['allow']}\ncallerid={r['callerid']}\n"
            f"direct_media={r['direct_media']}\ndtmf_mode={r['dtmf_mode']}\n\n"
            f"[{name}]\ntype=auth\nauth_type=md5\nusername={r['username']}\n"
            f"realm={r['realm']}\nmd5_cred={r['md5_cred']}\n\n"
            f"[{name}]\ntype=aor\nmax_contacts={r['max_contacts']}\n"
            f"remove_existing={r['remove_existing']}\nqualify_frequency={r['qualify_frequency']}\n"
        )
    return "\n".join(sections)


def write_new_file(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path`` (mode 0640) in one step; refuse an existing file unless forced.

    Written under a temporary name beside it, then renamed into place: a reader (Asterisk
    reloading) sees the old file or the new one, never half of one.
    """
    if path.exists() and not force:
        raise unprocessable("file_exists", f"{path} exists; use --force to replace it.")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def line_digests(lines: Sequence[Any], realm: str) -> list[tuple[int, str, str, str]]:
    """(slot, realm, ha1, ha1b) of every rendered line, for :func:`store.set_line_digests`."""
    result = []
    for line in lines:
        d = digests(line.sip_auth_user, realm, line.sip_password)
        result.append((line.slot, d.realm, d.ha1, d.ha1b))
    return result

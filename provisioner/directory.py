"""The LDAP directory: checking a user's password by a bind, and reading its users page by page.

python-ldap (the binding of OpenLDAP's libldap) is blocking: every call runs in a small thread
pool of its own, so a slow directory holds at most :data:`THREADS` threads and never the event
loop, and every operation is bounded by libldap's network and operation timeouts (a backstop
on the asyncio side covers a call libldap does not time out). Each use opens its own connection:
no connection state is shared between threads.

Whatever keeps us from an answer (no route, refused, timed out, a TLS certificate that does not
verify, the service account refused, a base DN or admin group that is not there) is
``503 directory_unavailable``; the log line names the cause, never a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import ldap
import ldap.dn
import ldap.filter
from ldap.controls import SimplePagedResultsControl

from provisioner.errors import directory_unavailable
from provisioner.settings import LdapSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds for connecting and for each operation.
TIMEOUT = 10.0
THREADS = 4
#: The page size asked for first; a server whose limit is lower (OpenLDAP's ``size.pr`` answers
#: adminLimitExceeded) is asked again with half, until it accepts. Active Directory caps pages
#: at its MaxPageSize (1000) by itself.
PAGE_SIZE = 500

# Errors that mean the directory cannot answer us now (or at all, until someone fixes it).
_UNAVAILABLE = (
    ldap.SERVER_DOWN,
    ldap.CONNECT_ERROR,
    ldap.TIMEOUT,
    ldap.TIMELIMIT_EXCEEDED,
    ldap.UNAVAILABLE,
    ldap.BUSY,
)


@dataclass(frozen=True)
class Entry:
    """A user's entry: its DN and the user fields the attribute map fills from it."""

    dn: str
    fields: dict[str, str | None]


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    number: int


def normalise_dn(dn: str) -> str:
    """``dn`` in one spelling (attribute types and values folded to lower case, no blanks
    around separators), so group members compare with entries' DNs."""
    try:
        parts = ldap.dn.str2dn(dn)
    except ldap.DECODING_ERROR:
        return dn.strip().lower()
    folded = [[(kind.lower(), value.lower(), flags) for kind, value, flags in rdn] for rdn in parts]
    return str(ldap.dn.dn2str(folded))


class Directory:
    """One configured directory (``PROVISIONER_LDAP_*``)."""

    def __init__(self, settings: LdapSettings, *, timeout: float = TIMEOUT) -> None:
        self.settings = settings
        self.timeout = timeout
        self._threads = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="ldap")
        self._down = False

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    # --- signing in ----------------------------------------------------------------------------

    async def verify_password(self, username: str, password: str) -> bool:
        """Whether ``password`` is the password of the directory user ``username``: the service
        account finds the user's entry (exactly one under the base DN that matches the filter),
        then a bind as that DN with ``password`` decides."""
        if not password:
            # An empty password makes a simple bind "unauthenticated" (RFC 4513, 5.1.2), which
            # many servers answer with success: it proves nothing.
            return False
        return await self._run(self._verify_password, username, password)

    def _verify_password(self, username: str, password: str) -> bool:
        with self._connection() as conn:
            dn = self._find_dn(conn, username)
            if dn is None:
                return False
            try:
                conn.simple_bind_s(dn, password)
            except (ldap.INVALID_CREDENTIALS, ldap.UNWILLING_TO_PERFORM):
                return False
            return True

    def _find_dn(self, conn: Any, username: str) -> str | None:
        attribute = self.settings.attributes.attribute("username")
        assert attribute is not None  # the settings require it
        query = f"(&{self.settings.user_filter}({attribute}="
        query += f"{ldap.filter.escape_filter_chars(username)}))"
        found = conn.search_ext_s(
            self.settings.base_dn, ldap.SCOPE_SUBTREE, query, ["1.1"], sizelimit=2
        )
        dns = [dn for dn, _ in found if dn is not None]  # None: a referral (AD)
        return dns[0] if len(dns) == 1 else None

    # --- reading the users ---------------------------------------------------------------------

    async def pages(self) -> AsyncIterator[Page]:
        """The users under the base DN that match the filter, one server page at a time."""
        conn = await self._run(self._open)
        try:
            cookie, size, number = b"", PAGE_SIZE, 0
            while True:
                entries, cookie, size = await self._run(self._page, conn, cookie, size)
                number += 1
                yield Page(entries, number)
                if not cookie:
                    return
        finally:
            with contextlib.suppress(Exception):
                await self._run(conn.unbind_s)

    def _page(self, conn: Any, cookie: bytes, size: int) -> tuple[list[Entry], bytes, int]:
        while True:
            control = SimplePagedResultsControl(True, size=size, cookie=cookie)
            try:
                msgid = conn.search_ext(
                    self.settings.base_dn,
                    ldap.SCOPE_SUBTREE,
                    self.settings.user_filter,
                    self.settings.attributes.attributes,
                    serverctrls=[control],
                )
                _, found, _, controls = conn.result3(msgid, timeout=self.timeout)
            except ldap.ADMINLIMIT_EXCEEDED:
                if cookie or size <= 1:
                    raise
                size //= 2
                continue
            break
        entries = [
            Entry(dn, self.settings.attributes.apply(attributes))
            for dn, attributes in found
            if dn is not None
        ]
        paged = [c for c in controls if c.controlType == SimplePagedResultsControl.controlType]
        return entries, (paged[0].cookie if paged else b""), size

    async def admin_members(self) -> frozenset[str]:
        """The normalised DNs of the admin group's members (``member`` or ``uniqueMember``);
        empty without an admin group. A group that is not there is an error, not "nobody":
        reading it as nobody would demote every directory admin."""
        if self.settings.admin_group is None:
            return frozenset()
        return await self._run(self._admin_members, self.settings.admin_group)

    def _admin_members(self, group: str) -> frozenset[str]:
        with self._connection() as conn:
            found = conn.search_ext_s(
                group, ldap.SCOPE_BASE, "(objectClass=*)", ["member", "uniqueMember"]
            )
        members: set[str] = set()
        for _, attributes in found:
            for name, values in (attributes or {}).items():
                if name.lower() in ("member", "uniquemember"):
                    members.update(normalise_dn(v.decode("utf-8", "replace")) for v in values)
        return frozenset(members)

    # --- connections and errors ----------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Any:
        conn = self._open()
        try:
            yield conn
        finally:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_s()

    def _open(self) -> Any:
        """A connection bound as the service account (TLS verified where asked for)."""
        settings = self.settings
        conn = ldap.initialize(settings.url)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
        conn.set_option(ldap.OPT_REFERRALS, 0)  # AD's referrals would be followed anonymously
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, self.timeout)
        conn.set_option(ldap.OPT_TIMEOUT, self.timeout)
        conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
        if settings.ca_file is not None:
            conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(settings.ca_file))
        # The TLS options above take effect for this connection only with a context of its own.
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        try:
            if settings.starttls:
                conn.start_tls_s()
            conn.simple_bind_s(settings.bind_dn or "", settings.bind_password or "")
        except BaseException:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_s()
            raise
        return conn

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout * 3):
                result = await loop.run_in_executor(self._threads, call, *args)
        except TimeoutError:
            self._failed(f"no answer within {self.timeout:.0f} s")
            raise directory_unavailable() from None
        except ldap.LDAPError as exc:
            self._failed(describe(exc))
            raise directory_unavailable() from None
        if self._down:
            log.info("directory %s answers again", self.settings.url)
            self._down = False
        return result

    def _failed(self, cause: str) -> None:
        """Log the first failure in a row as a warning, the rest (every refused sign-in while
        the directory is away) at debug level: an outage must not flood the log."""
        level = logging.DEBUG if self._down else logging.WARNING
        log.log(level, "directory %s unavailable: %s", self.settings.url, cause)
        self._down = True


def describe(exc: ldap.LDAPError) -> str:
    """What went wrong, for the log: the error's class and libldap's description of it, plus
    the server's diagnostic text (never the request, so never a password)."""
    detail = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    parts = [type(exc).__name__, str(detail.get("desc", ""))]
    if detail.get("info"):
        parts.append(str(detail["info"]))
    if isinstance(exc, ldap.INVALID_CREDENTIALS):
        parts.append("(the service account's bind DN or password is wrong)")
    elif not isinstance(exc, _UNAVAILABLE):
        parts.append("(check the base DN, filter and admin group)")
    return ": ".join(p for p in parts if p)

"""Where a device's lines are registered, read from Kamailio's own ``location`` table.

With ``PROVISIONER_KAMAILIO_LOCATION_URL`` set, the push worker asks Kamailio's user location
table at notify time which of the device's line accounts is registered where: always current, no
follower, no hook. The ``registered`` hook (and the AMI follower, :mod:`provisioner.contacts`)
remain for other PBXs.

Its SQL lives here, not in :mod:`provisioner.store`: the table, its schema, its database and the
role that reads it are Kamailio's, not the service's, and nothing here writes.

What Kamailio writes, and the sources this module was written from:

- The ``usrloc`` module mirrors registrations into the table with ``db_mode`` 1 (write-through:
  at once), 2 (write-back: changes reach the table on usrloc's timer, ``timer_interval``, 60 s by
  default) or 3 (DB only); with 0, the default, the table stays empty. Kamailio's usrloc module
  documentation, parameter ``db_mode``. The table is the one ``save("location")`` names.
- Columns (Kamailio's schema, table version 9; Debian ships it as
  ``/usr/share/kamailio/postgres/usrloc-create.sql``): ``username`` (the user of the registered
  address of record, i.e. of the REGISTER's To; ``domain`` is only filled with usrloc's
  ``use_domain``), ``contact``, ``received``, ``path``, ``expires`` and ``last_modified``
  (``TIMESTAMP WITHOUT TIME ZONE``), ``user_agent``, ...
- Timestamps are written in Kamailio's local time (``db_time2str_ex`` in
  ``src/lib/srdb1/db_ut.c`` formats with ``localtime_r``); a contact without expiry (``expires``
  0) is stored as the epoch. Unexpired therefore means ``expires`` later than the current time in
  the session's time zone: the server's ``TimeZone`` unless the URL says
  ``?timezone=<Kamailio's zone>``. usrloc's ``expires_type`` 1 (BIGINT columns) is not read.

A line's account is ``device_assignments.sip_user`` (the user the phone registers, equal to its
digest user ``sip_auth_user``), which is the table's ``username``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from provisioner.notify import NotifyError
from provisioner.settings import Settings

log = logging.getLogger(__name__)

TABLE = "location"
"""The table ``save()`` writes (its first argument); found through the role's search path, or
``?search_path=`` in the URL."""

_FRESHEST = f"""
    SELECT username, contact, user_agent FROM {TABLE}
    WHERE username = ANY($1::text[])
      AND (expires > LOCALTIMESTAMP OR expires < '1970-01-02')
    ORDER BY last_modified DESC, id DESC
    LIMIT 1
"""  # noqa: S608 -- a constant table name; the accounts are bound
"""The newest unexpired registration of any of the accounts; the second bound admits the epoch
(a contact without expiry) in any time zone."""


@dataclass(frozen=True)
class Registration:
    """One line's registration as Kamailio keeps it."""

    sip_user: str
    """The account that registered (the table's ``username``)."""
    contact: str
    user_agent: str | None


class LocationLookup:
    """Reads Kamailio's ``location`` table through a small pool of its own.

    The pool is created on the first lookup and closed by :meth:`close`. A failure (Kamailio's
    database unreachable, the table missing, no permission) is a :class:`NotifyError`, so the push
    worker retries the job with its back-off; the change of state is logged once, as is the
    recovery, never per job.

    :param url: the ``PROVISIONER_KAMAILIO_LOCATION_URL`` value.
    :param timeout: seconds to connect, and for one query.
    """

    def __init__(self, url: str, *, timeout: float = 5.0, max_connections: int = 4) -> None:
        self.url = url
        self.timeout = timeout
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._down = False

    @property
    def where(self) -> str:
        """The database, for messages: host, port and name, never the credentials."""
        parts = urlsplit(self.url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"

    async def registration(self, accounts: Sequence[str]) -> Registration | None:
        """The freshest unexpired registration of any of ``accounts``; None if none has one.

        Raises :class:`NotifyError` when the table cannot be read.
        """
        wanted = [account for account in accounts if account]
        if not wanted:
            return None
        try:
            pool = await self._open()
            async with pool.acquire(timeout=self.timeout) as conn:
                row = await conn.fetchrow(_FRESHEST, wanted, timeout=self.timeout)
        except asyncpg.UndefinedTableError:
            raise self._failed(
                f"Kamailio's {TABLE} table is missing in {self.where} "
                "(usrloc db_mode 1, 2 or 3 writes it; a search_path in the URL finds its schema)"
            ) from None
        except asyncpg.PostgresError as exc:
            raise self._failed(
                f"cannot read Kamailio's {TABLE} table in {self.where}: {exc}"
            ) from None
        except ValueError as exc:  # asyncpg's reading of the URL (e.g. a query without "=")
            raise self._failed(
                "PROVISIONER_KAMAILIO_LOCATION_URL: not a connection URL PostgreSQL's client "
                f"accepts, cannot read Kamailio's {TABLE} table ({type(exc).__name__})"
            ) from None
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            raise self._failed(
                f"cannot read Kamailio's {TABLE} table: {self.where} unreachable "
                f"({type(exc).__name__})"
            ) from None
        if self._down:
            self._down = False
            log.info("Kamailio %s table: readable again (%s)", TABLE, self.where)
        if row is None:
            return None
        return Registration(row["username"], row["contact"], row["user_agent"] or None)

    async def close(self) -> None:
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _open(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                # min_size 0: creating the pool connects nowhere; each lookup connects if needed.
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=0,
                    max_size=self.max_connections,
                    timeout=self.timeout,
                    command_timeout=self.timeout,
                )
            return self._pool

    def _failed(self, message: str) -> NotifyError:
        if not self._down:
            self._down = True
            log.warning("%s; pushes retry with back-off", message)
        return NotifyError(message)


def lookup_for(settings: Settings) -> LocationLookup | None:
    """The lookup the push worker uses with ``PROVISIONER_KAMAILIO_LOCATION_URL``, else None."""
    url = settings.kamailio_location_url
    return LocationLookup(url) if url else None

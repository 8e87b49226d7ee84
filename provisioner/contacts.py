"""Where each line is registered, learnt from Asterisk's manager interface (AMI) itself.

With ``PROVISIONER_AMI_URL`` set, the process that runs the push worker keeps one more manager
connection, with the ``system`` event class on, and records every registered contact Asterisk
reports for a line's SIP account as its device's contact, as the PBX's ``registered`` hook does
(the hook stays, for other PBXs). A line's SIP account (``device_assignments.sip_user``) is the
name of its PJSIP endpoint and AOR (the ``pbx.ps_endpoints``/``pbx.ps_aors`` views).

What Asterisk sends, and the sources this module was written from:

- ``ContactStatus`` (since 13.5, class SYSTEM: the AMI user needs ``read = system``) when a
  contact changes: ``URI``, ``ContactStatus``, ``AOR``, ``EndpointName``, ``RoundtripUsec``;
  Asterisk 14 also sent ``UserAgent``, ``RegExpire``, ``ViaAddress``, ``CallID``, later versions
  do not. Statuses: ``Created`` (a REGISTER added the contact), ``Reachable``/``Unreachable``
  (qualify results), ``Unknown``, ``Unqualified``/``NonQualified``, ``Updated`` (13/14: a
  refresh changed it) and ``Removed`` (expired, unregistered, or replaced: with
  ``remove_existing`` the new contact is ``Created`` and the old one ``Removed`` after it).
  docs.asterisk.org, "Asterisk 20 Documentation / API Documentation / AMI Events /
  ContactStatus"; the Asterisk wiki's "Asterisk 14 ManagerEvent_ContactStatus"; in Asterisk's
  source ``main/stasis_endpoints.c`` (``contactstatus_to_ami``, ``EVENT_FLAG_SYSTEM``) and
  ``res/res_pjsip/pjsip_options.c`` (the status labels; ``Created`` when a contact appears).
- The contacts that exist when we (re)connect: action
  ``PJSIPShowRegistrationInboundContactStatuses`` (since 13.14.0/14.3.0; registered with
  ``EVENT_FLAG_SYSTEM``, so it needs ``write = system``, as ``PJSIPNotify`` does) answers
  ``Response: Success`` with ``EventList: start``, then one ``ContactStatusDetail`` event per
  registered contact (``AOR``, ``URI``, ``UserAgent``, ``Status``, ``EndpointName``, ...) and a
  ``ContactStatusDetailComplete``, each carrying the action's ``ActionID``. docs.asterisk.org,
  ".../AMI Actions/PJSIPShowRegistrationInboundContactStatuses" and ".../AMI Events/
  ContactStatusDetail"; ``res/res_pjsip_registrar.c`` and ``ast_sip_format_contact_ami`` in
  ``res/res_pjsip/pjsip_options.c``. (``PJSIPShowContacts``, since 16.0, lists the same contacts
  as ``ContactList`` events but names the AOR only inside the contact's ID.)
- ``Login`` takes ``Events:`` like the ``Events`` action's ``EventMask``: ``on``, ``off``, or
  event classes (``system,call,...``). docs.asterisk.org, ".../AMI Actions/Events". Only
  ``system`` is asked for: call events on a busy PBX would be most of the traffic.

Decisions:

- ``Removed`` and ``Unreachable`` leave the stored contact. A ``Removed`` often belongs to a
  contact already replaced (``remove_existing``: the new one is ``Created`` first), so clearing
  would lose the contact just recorded; a device that really went away makes its next push fail
  and retry with back-off until it registers again, exactly as with a stale contact from the
  ``registered`` hook. The contact also decides which line is notified (``sip_contact_user``),
  which stays right across a phone's reboot.
- Events are written in batches (whatever arrived since the last write, in order; the listing at
  connect is one or a few batches), so a registration storm after an Asterisk restart costs a
  handful of statements, not one per phone.
- Anything that goes wrong (Asterisk unreachable, a refused login, silence, the database gone)
  closes the AMI connection; after a back-off with jitter the follower connects again and asks
  for the current contacts, which repairs whatever was missed. The state change is logged once
  (``lost connection``, then ``resumed``), never the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from provisioner import store
from provisioner.ami import AmiAccount, AmiConnection, AmiError, ConnectionLost, Message, connect
from provisioner.core import Core
from provisioner.hotdesk import is_contact_uri
from provisioner.push import Backoff

log = logging.getLogger(__name__)

LIST_ACTION = "PJSIPShowRegistrationInboundContactStatuses"
LIST_COMPLETE = "contactstatusdetailcomplete"
EVENT_CLASSES = "system"
REGISTERED = frozenset(
    {"created", "reachable", "updated", "unknown", "unqualified", "nonqualified"}
)
"""``ContactStatus`` values of a contact that is registered (and that may have moved)."""


@dataclass(frozen=True)
class Contact:
    """A line's registration as Asterisk reports it."""

    sip_user: str
    uri: str
    user_agent: str | None


def contact_of(event: Message) -> Contact | None:
    """The registered contact an event reports; None for other events, removals, a status that
    says nothing new (``Unreachable``) and contacts no phone can be reached at."""
    kind = event.get("event", "").lower()
    if kind == "contactstatus":
        if event.get("contactstatus", "").lower() not in REGISTERED:
            return None
    elif kind == "contactstatusdetail":
        # Listed means registered, whatever its qualify status.
        if event.get("status", "").lower() == "removed":
            return None
    else:
        return None
    sip_user = event.get("aor") or event.get("endpointname") or ""
    uri = event.get("uri", "")
    if not sip_user:
        return None
    if not is_contact_uri(uri):
        log.info("AMI contact follower: ignored an unusable contact for %r: %r", sip_user, uri[:80])
        return None
    user_agent = event.get("useragent") or None
    return Contact(sip_user, uri, user_agent[:512] if user_agent else None)


async def record_contacts(core: Core, contacts: Sequence[Contact]) -> list[str]:
    """Store where lines are registered (in the order reported); the MACs of the devices updated.
    Accounts that are no line's are skipped."""
    async with core.pool.acquire() as conn, conn.transaction():
        return await store.set_contacts_by_sip_user(
            conn, [(c.sip_user, c.uri, c.user_agent) for c in contacts]
        )


class _Lost(Exception):
    """The session cannot go on; ``str(exc)`` says why, without secrets."""


class ContactFollower:
    """Follows one Asterisk's contacts until cancelled; never raises anything else.

    :param url: the ``PROVISIONER_AMI_URL`` value.
    :param timeout: seconds for the login, and for Asterisk to answer an action.
    :param ping_seconds: after this long without events, a ``Ping`` checks the connection is alive.
    :param db_seconds: seconds one batch of contacts may take to be written.
    """

    def __init__(
        self,
        core: Core,
        url: str,
        *,
        backoff: Backoff | None = None,
        timeout: float = 10.0,
        ping_seconds: float = 30.0,
        db_seconds: float = 30.0,
    ) -> None:
        self.core = core
        self.account = AmiAccount.from_url(url)
        self.backoff = backoff or Backoff(base=1.0, cap=60.0)
        self.timeout = timeout
        self.ping_seconds = ping_seconds
        self.db_seconds = db_seconds
        self._state = "starting"
        self._listing_refused_logged = False

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
                reason = "the session ended"
            except (_Lost, AmiError) as exc:
                reason = str(exc)
            except ConnectionLost:
                reason = f"Asterisk at {self.account.address} closed the AMI connection"
            except Exception as exc:  # a bug must neither end following nor take the app down
                log.exception("AMI contact follower: unexpected failure")
                reason = f"unexpected {type(exc).__name__}"
            if self._state == "up":
                failures = 0
            failures += 1
            delay = self.backoff.delay(failures)
            self._down(reason, delay)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        connection = await connect(self.account, within=self.timeout, events=EVENT_CLASSES)
        try:
            await self._follow(connection)
        finally:
            await connection.close()

    async def _follow(self, connection: AmiConnection) -> None:
        listing = await self._request(connection, LIST_ACTION)
        syncing = listing.get("response", "").lower() == "success"
        if not syncing:
            if not self._listing_refused_logged:
                self._listing_refused_logged = True
                log.warning(
                    "AMI contact follower: Asterisk refused %s (%s); contacts registered before "
                    "are learnt when they next change (the AMI user needs write = system)",
                    LIST_ACTION,
                    listing.get("message") or "no reason given",
                )
            self._up()
        while True:
            try:
                async with asyncio.timeout(self.ping_seconds):
                    events = await connection.next_events()
            except TimeoutError:
                await self._request(connection, "Ping")
                continue
            contacts = [contact for event in events if (contact := contact_of(event))]
            if contacts:
                await self._record(contacts)
            if syncing and any(e.get("event", "").lower() == LIST_COMPLETE for e in events):
                syncing = False
                self._up()

    async def _request(self, connection: AmiConnection, action: str) -> Message:
        try:
            async with asyncio.timeout(self.timeout):
                return await connection.request(action, ())
        except TimeoutError:
            raise _Lost(
                f"Asterisk at {self.account.address} did not answer {action} "
                f"within {self.timeout:g} s"
            ) from None

    async def _record(self, contacts: Sequence[Contact]) -> None:
        try:
            async with asyncio.timeout(self.db_seconds):
                macs = await record_contacts(self.core, contacts)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _Lost(f"the database failed: {type(exc).__name__}") from None
        log.debug(
            "AMI contact follower: %d contact(s) reported, devices updated: %s",
            len(contacts),
            ", ".join(macs) or "none",
        )

    def _up(self) -> None:
        if self._state == "down":
            log.info("AMI contact follower: resumed (Asterisk at %s)", self.account.address)
        elif self._state == "starting":
            log.info("AMI contact follower: following Asterisk at %s", self.account.address)
        self._state = "up"

    def _down(self, reason: str, delay: float) -> None:
        if self._state != "down":
            log.warning(
                "AMI contact follower: lost connection (%s); retrying with back-off", reason
            )
        else:
            log.debug(
                "AMI contact follower: still down (%s); next attempt in %.1f s", reason, delay
            )
        self._state = "down"


@contextlib.asynccontextmanager
async def following(core: Core) -> AsyncIterator[None]:
    """Follow Asterisk's contacts in the background while the block runs, when
    ``PROVISIONER_AMI_URL`` is set (run it where the push worker runs)."""
    if not core.settings.ami_url:
        yield
        return
    task = asyncio.create_task(ContactFollower(core, core.settings.ami_url).run(), name="contacts")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""The push worker: claim due jobs, render, notify, retry, and let fetches confirm.

Jobs are an outbox written in the same transaction as the change that causes them. Any number of
workers (in ``provisioner serve`` and ``provisioner worker`` processes) share the table: a job is
leased with ``FOR UPDATE SKIP LOCKED``, so two workers never work on it at once, and a job whose
worker died is taken up again when its lease expires. Workers sleep until a change wakes them
(:mod:`provisioner.pushwake`: directly in the same process, through ``LISTEN provisioner_push``
from others), with a slow poll as a safety net.

The worker is what renders a change that queued a push: the devices of the jobs it claims (up
to :attr:`PushWorker.batch` at once) are rendered in one transaction, set-based
(:func:`provisioner.provisioning.render_devices_in`), and notified after its commit. So a device
changed several times before its job is due (the debounce in :mod:`provisioner.store`) is
rendered once, and no NOTIFY announces a revision that has not committed. A device that cannot
be rendered has its error recorded and does not hold up the rest of the batch. The next batch is
claimed and rendered while the ones before are notified (up to :attr:`PushWorker.concurrency`
jobs under way), and the outcomes of the jobs that end while one write of outcomes is under
way go together in the next (:meth:`PushWorker._write_finishes`).

A worker outlives its database: while PostgreSQL is away it retries with back-off, logs the loss
and the return once each (:class:`provisioner.outage.Outage`), listens again, and hands back at
once the jobs the outage interrupted rather than letting their leases run out.

State machine: ``pending`` → (render; notify) → ``notified`` → (the device fetches the revision
the job was made for) → ``fetched``; or ``failed`` after :attr:`PushWorker.max_attempts`. A
device that restarts to apply a configuration (:meth:`Adapter.needs_maintenance_window`) is
rendered at once but notified only inside its site's maintenance window: its job waits as
``scheduled`` until then (a fetch of the new revision in the meantime completes it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from provisioner import maintenance, provisioning, store
from provisioner.core import Core
from provisioner.devices.base import Adapter, RenderError
from provisioner.metrics import METRICS
from provisioner.notify import ApiAccess, ApiPusher, Notifier, NotifyError, NotifyTarget
from provisioner.outage import DATABASE_BACKOFF, Outage, database_unavailable
from provisioner.outage import Backoff as Backoff  # re-exported: the AMI follower and tests
from provisioner.pushwake import PUSH_CHANNEL
from provisioner.usrloc import LocationLookup, lookup_for
from provisioner.vault import device_api_password_purpose, sip_password_purpose

log = logging.getLogger(__name__)

#: Seconds between committing a device's new revision and notifying it (see ``_attempt``).
#: Phones take longer than this to fetch after a NOTIFY; the phones' caches take less to load.
CACHE_GRACE = 0.1

#: Times the outcomes of a write are tried when PostgreSQL aborts it to end a deadlock.
DEADLOCK_TRIES = 3


@dataclass(frozen=True, slots=True)
class _Claim:
    """A claimed job with what its batch's render left for it: its device's outcome, and the
    device's row and lines as read after that commit (what the notification goes by)."""

    job: Any
    outcome: provisioning.RenderOutcome
    device: Any | None
    lines: list[Any]
    ready: float
    """When the phones' processes have had :data:`CACHE_GRACE` to load the new revision."""


class PushWorker:
    def __init__(
        self,
        core: Core,
        notifier: Notifier,
        *,
        name: str | None = None,
        lease_seconds: float = 60.0,
        max_attempts: int = 6,
        backoff: Backoff | None = None,
        batch: int = 100,
        concurrency: int = 300,
        poll_seconds: float = 5.0,
        locations: LocationLookup | None = None,
    ) -> None:
        """``batch``: jobs claimed (and rendered) at once. ``concurrency``: jobs under way at
        most, each with its notification (NOTIFY, vendor API push) at once: a batch is claimed
        as soon as a whole one fits, so the next batches are claimed and rendered while the
        ones before wait out their grace and are notified (issue 14: one batch at a time, the
        render, the grace and the NOTIFYs took turns, ~600 devices a second at most). No
        claimed job waits for another's notification to end, so none outlives its lease (60 s)
        waiting behind phones that do not answer (32 s each).
        ``locations``: where lines are registered, from Kamailio's table
        (``PROVISIONER_KAMAILIO_LOCATION_URL``) instead of the device's stored contact."""
        self.core = core
        self.notifier = notifier
        self.locations = locations
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._listener: asyncpg.Connection | None = None
        self._listen_refused = False
        self._interrupted: list[Any] = []
        self._finishing: list[tuple[store.PushOutcome, asyncio.Future[str | None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.outage = Outage(log, "push worker")
        """Whether the worker reaches its database (``/healthz`` shows it)."""
        self.running = False
        """Between the start and the end of :meth:`run`."""

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until cancelled; then let running jobs finish briefly and release the rest.

        Never ends by itself: a database outage, or a failure nobody foresaw, is waited out
        with back-off and the loop carries on.
        """
        self.running = True
        try:
            with self.core.push_wake.local_worker(self._wake):
                while True:
                    try:
                        await self._step()
                    except Exception as exc:
                        if database_unavailable(exc):
                            delay = self.outage.lost(exc)
                        else:
                            log.exception("push worker: unexpected failure; carrying on")
                            delay = DATABASE_BACKOFF.cap
                        await asyncio.sleep(delay)
        finally:
            self.running = False
            await self._shutdown()

    async def _step(self) -> None:
        await self._keep_listening()
        await self._release_interrupted()
        claimed = await self._claim()
        self.outage.reached()
        if not claimed:
            await self._sleep()

    async def _keep_listening(self) -> None:
        """Open the LISTEN connection at start, and again after it was lost."""
        if self._listen_refused or (self._listener is not None and not self._listener.is_closed()):
            return
        self._listener = None
        assert self.core.settings.database_url is not None
        conn = await asyncpg.connect(self.core.settings.database_url)
        try:
            await conn.add_listener(PUSH_CHANNEL, lambda *_: self._wake.set())
        except Exception as exc:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            if database_unavailable(exc) or not isinstance(exc, asyncpg.PostgresError):
                raise
            log.warning("push worker polls only: LISTEN failed (%s)", type(exc).__name__)
            self._listen_refused = True
            return
        self._listener = conn
        # A lost connection wakes the loop, which finds the database gone (or listens again).
        conn.add_termination_listener(lambda _conn: self._wake.set())
        # Whatever became due while nobody listened is looked at now, not at the next poll.
        self._wake.set()

    async def _release_interrupted(self) -> None:
        """Hand back the jobs an outage interrupted, due at once: the database is back, and
        their leases would keep them from every worker for up to ``lease_seconds``."""
        while self._interrupted:
            job = self._interrupted[0]
            await self._finish(
                job,
                job["state"],
                None,
                None,
                "interrupted: the database was unavailable",
                retry_in=0,
            )
            self._interrupted.pop(0)

    async def _sleep(self) -> None:
        async with self.core.pool.acquire() as conn:
            due = await store.next_push_due(conn)
        timeout = self.poll_seconds if due is None else min(self.poll_seconds, due + 0.01)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _claim(self) -> int:
        """Claim and render a batch when a whole one fits under :attr:`concurrency`; else wait
        until a job under way ends. How many jobs were claimed (1 after a wait: look again)."""
        room = self.concurrency - len(self._inflight)
        if room < min(self.batch, self.concurrency):
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            return 1
        async with self.core.pool.acquire() as conn:
            jobs = await store.claim_push_jobs(
                conn,
                worker=self.name,
                limit=min(self.batch, room),
                lease_seconds=self.lease_seconds,
            )
        if not jobs:
            return 0
        try:
            outcomes, devices, lines = await self._render(jobs)
        except Exception as exc:
            if database_unavailable(exc):
                # Handed back once the database answers again (the loop logs the outage).
                self._interrupted += jobs
                raise
            log.exception("push worker: rendering %d device(s) failed", len(jobs))
            for job in jobs:
                with contextlib.suppress(Exception):  # else its lease runs out
                    await self._failed_attempt(job, f"internal error ({type(exc).__name__})")
            return len(jobs)
        ready = time.monotonic() + CACHE_GRACE
        for job in jobs:
            mac = job["mac"]
            claim = _Claim(job, outcomes[mac], devices.get(mac), lines.get(mac, []), ready)
            task = asyncio.create_task(self._process(claim))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
        return len(jobs)

    async def _render(
        self, jobs: list[Any]
    ) -> tuple[dict[str, provisioning.RenderOutcome], dict[str, Any], dict[str, list[Any]]]:
        """Render the claimed jobs' devices in one transaction; then read their rows and lines
        as they are after its commit (what the notifications go by), for the whole batch: a
        query per batch, not per job (issue 14)."""
        macs = [job["mac"] for job in jobs]
        async with self.core.pool.acquire() as conn:
            async with conn.transaction():
                outcomes = await provisioning.render_devices_in(self.core, conn, macs)
            devices = {row["mac"]: row for row in await store.list_devices_by_mac(conn, macs)}
            lines = await store.list_assignments_of(conn, macs)
        return outcomes, devices, lines

    async def _shutdown(self) -> None:
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=5)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=5)
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            async with self.core.pool.acquire() as conn:
                released = await store.release_push_jobs(conn, self.name)
            if released:
                log.info("push worker released %d unfinished job(s)", released)
        if self._listener is not None:
            with contextlib.suppress(OSError, asyncpg.InterfaceError):
                await self._listener.close(timeout=2)

    # --- one job -------------------------------------------------------------------------------

    async def _process(self, claim: _Claim) -> None:
        job = claim.job
        try:
            await self._attempt(claim)
        except Exception as exc:
            if database_unavailable(exc):
                # Handed back once the database answers again (the loop logs the outage).
                log.debug("push job %d interrupted: %s", job["id"], type(exc).__name__)
                self._interrupted.append(job)
                return
            log.exception("push job %d for %s: unexpected failure", job["id"], job["mac"])
            with contextlib.suppress(Exception):  # else its lease runs out
                await self._failed_attempt(job, f"internal error ({type(exc).__name__})")

    async def _attempt(self, claim: _Claim) -> None:
        """Notify the device of the claimed job unless nothing is left to push."""
        job, outcome, device, lines = claim.job, claim.outcome, claim.device, claim.lines
        mac = job["mac"]
        if device is None:
            return  # deleted; its jobs went with it
        if outcome.error is not None and device["revision"] == 0:
            await self._failed_attempt(job, f"cannot render: {outcome.error}")
            return
        revision = device["revision"]
        if (
            not outcome.changed
            and job["reason"] != "reprovision"
            and device["fetched_revision"] >= revision
        ):
            await self._finish(job, "fetched", revision, None, None)
            return
        adapter = provisioning.adapter_for(device["vendor"])
        model = adapter.served_model(device["model"])
        if model is not None and adapter.needs_maintenance_window(model):
            opening = await self._window_opening(device)
            if opening is not None:
                wait = (opening - datetime.now(UTC)).total_seconds()
                await self._finish(job, "scheduled", revision, None, None, retry_in=wait)
                log.debug("device %s: push scheduled for %s", mac, opening.isoformat())
                return
        through_api = model is not None and adapter.sip_event(model) is None
        if outcome.changed and not through_api:
            # The phones' processes load a new revision when its commit's notification reaches
            # them, within milliseconds unless they are busy; a phone that fetched before that
            # would get the old files, and its job would wait for its next fetch.
            await asyncio.sleep(claim.ready - time.monotonic())
        started = time.monotonic()
        try:
            if through_api:
                transport = f"{adapter.vendor} API"
                result = await self._push_through_api(adapter, device)
            else:
                transport = type(self.notifier).__name__
                result = await self.notifier.notify(await self._target(device, lines))
        except NotifyError as exc:
            METRICS.notify_attempts.inc(result="failed")
            await self._failed_attempt(job, str(exc))
            return
        METRICS.notify_seconds.observe(time.monotonic() - started)
        METRICS.notify_attempts.inc(result="ok")
        # A vendor API applies the change itself: nothing is left for the device to fetch. A
        # notified device may have fetched already: then the job is stored as fetched.
        await self._finish(
            job,
            "fetched" if through_api else "notified",
            revision,
            transport,
            None,
            notify_result=result,
        )
        log.debug("device %s: %s (revision %d)", mac, result, revision)

    async def _window_opening(self, device: Any) -> datetime | None:
        """When the device's site next opens its maintenance window; None while it is open."""
        async with self.core.pool.acquire() as conn:
            site = await store.get_site(conn, device["site"])
        assert site is not None  # foreign key
        return maintenance.next_opening(site["maintenance_window"], site["timezone"])

    async def _push_through_api(self, adapter: Adapter, device: Any) -> str:
        mac = device["mac"]
        if not isinstance(adapter, ApiPusher):
            raise NotifyError(f"{adapter.vendor} devices can be neither notified nor pushed")
        async with self.core.pool.acquire() as conn:
            row = await store.get_device_api_access(conn, mac)
            if row is None:
                raise NotifyError(
                    "no management API access stored for this device "
                    "(PUT /api/v1/devices/{mac}/api-access)"
                )
            try:
                _, ctx = await provisioning.load_context(self.core, conn, mac)
            except RenderError as exc:
                raise NotifyError(f"cannot build the device's data: {exc}") from None
        access = ApiAccess(
            host=row["host"],
            port=row["port"],
            username=row["username"],
            password=self.core.vault.decrypt(
                row["password_encrypted"], device_api_password_purpose(mac)
            ),
            fingerprint=row["fingerprint"],
        )
        return await adapter.push(ctx, access)

    async def _target(self, device: Any, lines: list[Any]) -> NotifyTarget:
        adapter = provisioning.adapter_for(device["vendor"])
        model = adapter.served_model(device["model"])
        if model is None:
            raise NotifyError(f"unknown model {device['model']}")
        event = adapter.sip_event(model)
        if event is None:
            raise NotifyError(f"{adapter.vendor} devices are not notified over SIP")
        # The NOTIFY goes to the contact the PBX reported, i.e. to the SIP account registered
        # there (some bases ignore a check-sync for any other, e.g. Gigaset's); a digest
        # challenge is answered with that account's credentials.
        if self.locations is None:
            contact = device["sip_contact"]
            registered = [line for line in lines if line["extension"] == device["sip_contact_user"]]
        else:
            contact, registered = await self._kamailio_registration(self.locations, device, lines)
        line = next(iter(registered or lines), None)
        password = None
        if line is not None and line["sip_password_encrypted"] is not None:
            password = self.core.vault.decrypt(
                line["sip_password_encrypted"], sip_password_purpose(device["mac"], line["slot"])
            )
        return NotifyTarget(
            mac=device["mac"],
            event=event,
            contact=contact,
            sip_user=line["sip_auth_user"] if line is not None else None,
            sip_password=password,
        )

    @staticmethod
    async def _kamailio_registration(
        locations: LocationLookup, device: Any, lines: list[Any]
    ) -> tuple[str, list[Any]]:
        """The contact Kamailio's usrloc holds for the device now, and the line registered there."""
        found = await locations.registration([line["sip_user"] for line in lines])
        if found is None:
            raise NotifyError("no line of this device is in Kamailio's location table")
        log.debug(
            "device %s: registered as %s at %s (%s)",
            device["mac"],
            found.sip_user,
            found.contact,
            found.user_agent or "no user agent",
        )
        return found.contact, [line for line in lines if line["sip_user"] == found.sip_user]

    async def _failed_attempt(self, job: Any, error: str) -> None:
        mac = job["mac"]
        result = f"failed: {error}"
        if job["attempts"] >= self.max_attempts:
            log.warning("push job %d for %s failed for good: %s", job["id"], mac, error)
            await self._finish(job, "failed", None, None, error, notify_result=result)
            return
        delay = self.backoff.delay(job["attempts"])
        log.info("push job %d for %s: %s; retry in %.1f s", job["id"], mac, error, delay)
        await self._finish(job, "pending", None, None, error, retry_in=delay, notify_result=result)
        # The loop may be sleeping until the lease of this job would have run out (or the next
        # poll): have it look at the due times again, so the retry starts after ``delay``.
        self._wake.set()

    async def _finish(
        self,
        job: Any,
        state: str,
        revision: int | None,
        transport: str | None,
        error: str | None,
        *,
        retry_in: float | None = None,
        notify_result: str | None = None,
    ) -> None:
        """Store the attempt's outcome (and ``notify_result`` on the device), together with the
        outcomes of the other jobs that end meanwhile (:meth:`_write_finishes`)."""
        outcome = store.PushOutcome(
            job_id=job["id"],
            mac=job["mac"],
            lease_until=job["lease_until"],
            state=state,
            revision=revision,
            transport=transport,
            error=error,
            retry_in=retry_in,
            notify_result=notify_result,
        )
        stored: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._finishing.append((outcome, stored))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_finishes(), name="push-finishes")
        recorded = await stored
        if recorded is None:
            log.debug("push job %d changed while we worked on it; it runs again", job["id"])
        elif recorded in ("fetched", "failed", "notified"):
            METRICS.jobs_finished.inc(state=recorded)

    async def _write_finishes(self) -> None:
        """Write the outcomes waiting, one transaction at a time, until none waits.

        The outcomes that come in while a write is under way go together in the next one
        (issue 14: a burst's 2,000 NOTIFY answers were 2,000 commits, each waiting for its WAL
        flush). So an outcome waits at most for one write before its own, and a quiet worker
        writes each at once. A device's second outcome waits for the next write. A deadlock
        (PostgreSQL chose this transaction to abort) is retried; any other failure goes to
        the outcomes' jobs, as a statement of their own would have.
        """
        while self._finishing:
            batch: list[tuple[store.PushOutcome, asyncio.Future[str | None]]] = []
            later: list[tuple[store.PushOutcome, asyncio.Future[str | None]]] = []
            macs: set[str] = set()
            for entry in self._finishing:
                if entry[0].mac in macs:
                    later.append(entry)
                else:
                    macs.add(entry[0].mac)
                    batch.append(entry)
            self._finishing = later
            try:
                for tries in range(1, DEADLOCK_TRIES + 1):
                    try:
                        async with self.core.pool.acquire() as conn, conn.transaction():
                            stored = await store.finish_push_jobs(
                                conn, self.name, [outcome for outcome, _ in batch]
                            )
                        break
                    except asyncpg.DeadlockDetectedError:
                        if tries == DEADLOCK_TRIES:
                            raise
                        log.info("push worker: writing %d outcome(s) met a deadlock", len(batch))
            except Exception as exc:
                for _, waiting in batch:
                    if not waiting.done():
                        waiting.set_exception(exc)
                continue
            for outcome, waiting in batch:
                if not waiting.done():
                    waiting.set_result(stored.get(outcome.job_id))


def default_notifier(core: Core) -> Notifier:
    """Through Asterisk when ``PROVISIONER_AMI_URL`` is set, else SIP NOTIFY to the contact."""
    if core.settings.ami_url:
        from provisioner.ami import AmiNotifier

        return AmiNotifier(core.settings.ami_url)
    from provisioner.sip import SipNotifier

    return SipNotifier()


@contextlib.asynccontextmanager
async def running_worker(core: Core) -> AsyncIterator[PushWorker]:
    """A push worker running in this process, with the notifier and the contact lookup the
    settings name; on exit it is stopped (releasing what it holds) and both are closed."""
    notifier = default_notifier(core)
    locations = lookup_for(core.settings)  # with PROVISIONER_KAMAILIO_LOCATION_URL
    worker = PushWorker(core, notifier, locations=locations)
    task = asyncio.create_task(worker.run(), name="push-worker")
    try:
        yield worker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await notifier.close()
        if locations is not None:
            await locations.close()

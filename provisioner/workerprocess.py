"""The push worker in a process of its own, started and watched by ``provisioner serve``.

On one event loop the API and the push worker took turns: during a burst of PIN changes the
loop was busy answering requests, and the worker's claims, renders and notifications waited
behind them (issue 14: 2,000 PIN changes, last NOTIFY 3.2 s after the first request with the
worker in ``serve``'s loop, 2.7-2.9 s with it in a process of its own, on 2 cores). So
``serve`` runs the worker as ``python -m provisioner worker``, the command a scaled-out site
runs on other hosts, and restarts it when it exits.

What the parent still shows of it: ``/healthz`` (``push_worker``: ``up``, ``down`` while the
child cannot reach the database, ``starting``, ``stopped``) and ``/metrics`` (the child's
notification counters, added to the parent's). The child reports both on its stdout, one JSON
object a line (:data:`REPORTS_ENV`): its state when it changes, and what its push metrics
gained since its last report, at most every :data:`REPORT_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from provisioner.children import KeptChild, child_env
from provisioner.metrics import METRICS
from provisioner.push import PushWorker

log = logging.getLogger(__name__)

REPORTS_ENV = "PROVISIONER_WORKER_REPORTS"
"""Set (to ``1``) in the child's environment: report to the parent on stdout."""

#: Seconds between the child's looks at its state and metrics.
REPORT_INTERVAL = 0.5


class WorkerProcess(KeptChild):
    """Keeps one ``provisioner worker`` child running until :meth:`stop`, and takes in its
    reports."""

    def __init__(self, database_url: str) -> None:
        super().__init__(
            ("worker",),
            child_env(database_url, **{REPORTS_ENV: "1"}),
            name="push worker process",
            log=log,
            reports=True,
        )
        self.state = "starting"
        """The child's view of the database as it last reported it (``up``, ``down``), or
        ``starting`` until its first report, ``stopped`` while it is not running."""

    def starting(self) -> None:
        self.state = "starting"

    def exited(self) -> None:
        self.state = "stopped"

    async def follow(self, output: asyncio.StreamReader) -> None:
        """Take in the child's reports until it closes its stdout (it exits)."""
        while line := await output.readline():
            try:
                report = json.loads(line)
                if "state" in report:
                    self.state = str(report["state"])
                if "metrics" in report:
                    METRICS.add_push_increments(report["metrics"])
            except (ValueError, TypeError, KeyError, AttributeError):
                log.warning("push worker process: a report not understood: %.80r", line)


@contextlib.asynccontextmanager
async def running_worker_process(database_url: str) -> AsyncIterator[WorkerProcess]:
    child = WorkerProcess(database_url)
    child.start()
    try:
        yield child
    finally:
        await child.stop()


# --- the child's side ----------------------------------------------------------------------------


async def report_to_parent(worker: PushWorker) -> None:
    """Write the worker's state when it changes and its push metrics' gains to stdout, until
    cancelled (in the child, when :data:`REPORTS_ENV` is set)."""
    state = None
    ran = False
    sent = METRICS.push_snapshot()
    try:
        while True:
            ran = ran or worker.running
            now = worker.outage.state if worker.running else "stopped" if ran else "starting"
            if now != state:
                write_report({"state": now})
                state = now
            current = METRICS.push_snapshot()
            gained = METRICS.push_increments(sent, current)
            if gained:
                write_report({"metrics": gained})
                sent = current
            await asyncio.sleep(REPORT_INTERVAL)
    finally:
        gained = METRICS.push_increments(sent, METRICS.push_snapshot())
        if gained:
            write_report({"metrics": gained})


def write_report(report: dict[str, Any]) -> None:
    """One report to the parent, a line of JSON on stdout."""
    with contextlib.suppress(BrokenPipeError):  # the parent is gone: nothing left to tell
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()

"""Process-local metrics in the Prometheus text exposition format (version 0.0.4).

Small on purpose: counters with labels and one histogram type cover what operators watch here.
Values describe this process, and for ``provisioner serve`` also its push worker process
(:mod:`provisioner.workerprocess` reports the worker's gains, added here); database-wide
figures (jobs by state) are read at scrape time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.store import PUSH_JOB_STATES


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    escaped = [f'{k}="{_escape(v)}"' for k, v in pairs]
    return "{" + ",".join(escaped) + "}" if escaped else ""


@dataclass
class Counter:
    name: str
    help: str
    values: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        # Unlabelled counters (one increment per phone's fetch) skip the sort.
        key = tuple(sorted(labels.items())) if labels else ()
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        lines += [f"{self.name}{_labels(k)} {v:g}" for k, v in sorted(self.values.items())]
        return lines


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            cumulative += n
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.total:g}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


@dataclass
class Metrics:
    fetches: Counter = field(
        default_factory=lambda: Counter(
            "provisioner_fetches_total", "Config files served to phones."
        )
    )
    fetch_refusals: Counter = field(
        default_factory=lambda: Counter(
            "provisioner_fetch_refusals_total", "Phone requests refused, by reason."
        )
    )
    notify_attempts: Counter = field(
        default_factory=lambda: Counter(
            "provisioner_notify_attempts_total", "Attempts to make a device fetch now."
        )
    )
    notify_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "provisioner_notify_seconds", "Time from sending a notification to its answer."
        )
    )
    jobs_finished: Counter = field(
        default_factory=lambda: Counter(
            "provisioner_push_jobs_finished_total", "Push job outcomes recorded by this process."
        )
    )
    auth_failures: Counter = field(
        default_factory=lambda: Counter(
            "provisioner_auth_failures_total", "Failed logins and PIN checks, by kind."
        )
    )
    lockouts: Counter = field(
        default_factory=lambda: Counter(
            "provisioner_lockouts_total", "Accounts or PINs locked after repeated failures."
        )
    )

    # --- the push worker's, across processes ----------------------------------------------

    _PUSH_COUNTERS = ("notify_attempts", "jobs_finished")

    def push_snapshot(self) -> dict[str, Any]:
        """The push worker's metrics now (a copy), for :meth:`push_increments`."""
        snapshot: dict[str, Any] = {
            name: dict(getattr(self, name).values) for name in self._PUSH_COUNTERS
        }
        timed = self.notify_seconds
        snapshot["notify_seconds"] = (list(timed.counts), timed.total, timed.count)
        return snapshot

    def push_increments(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """What the push worker's metrics gained from ``before`` to ``after`` (snapshots), as
        JSON for :meth:`add_push_increments`; empty when nothing changed."""
        gained: dict[str, Any] = {}
        for name in self._PUSH_COUNTERS:
            old, new = before[name], after[name]
            changes = [
                [dict(labels), value - old.get(labels, 0.0)]
                for labels, value in new.items()
                if value != old.get(labels, 0.0)
            ]
            if changes:
                gained[name] = changes
        (old_counts, old_total, old_count), (counts, total, count) = (
            before["notify_seconds"],
            after["notify_seconds"],
        )
        if count != old_count:
            gained["notify_seconds"] = {
                "counts": [n - o for n, o in zip(counts, old_counts, strict=True)],
                "total": total - old_total,
                "count": count - old_count,
            }
        return gained

    def add_push_increments(self, gained: Mapping[str, Any]) -> None:
        """Add what another process's push worker reported (:meth:`push_increments`)."""
        for name in self._PUSH_COUNTERS:
            for labels, amount in gained.get(name, []):
                getattr(self, name).inc(
                    float(amount), **{str(k): str(v) for k, v in labels.items()}
                )
        timed = gained.get("notify_seconds")
        if timed is not None:
            counts = [int(n) for n in timed["counts"]]
            if len(counts) != len(self.notify_seconds.counts):
                raise ValueError("histogram buckets differ")
            self.notify_seconds.counts = [
                a + b for a, b in zip(self.notify_seconds.counts, counts, strict=True)
            ]
            self.notify_seconds.total += float(timed["total"])
            self.notify_seconds.count += int(timed["count"])

    def render(self, jobs_by_state: Mapping[str, int]) -> str:
        lines = [
            "# HELP provisioner_push_jobs Push jobs in the database, by state.",
            "# TYPE provisioner_push_jobs gauge",
        ]
        for state in PUSH_JOB_STATES:
            lines.append(f'provisioner_push_jobs{{state="{state}"}} {jobs_by_state.get(state, 0)}')
        for metric in (
            self.fetches,
            self.fetch_refusals,
            self.notify_attempts,
            self.notify_seconds,
            self.jobs_finished,
            self.auth_failures,
            self.lockouts,
        ):
            lines += metric.render()
        return "\n".join(lines) + "\n"


METRICS = Metrics()

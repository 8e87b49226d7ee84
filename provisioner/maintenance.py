"""Maintenance windows: when a site's devices may be made to restart.

A push never reboots a device in use. Devices that can only apply a new configuration by
restarting (see :meth:`Adapter.needs_maintenance_window`) are notified inside their site's
window, written ``HH:MM-HH:MM`` in the site's time zone; a window may run past midnight
(``23:30-01:00``). Wall-clock times are taken as they read on the day: on the night clocks change,
a window starting in the skipped hour starts that much later, and one starting in the repeated
hour starts at its first occurrence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from provisioner.errors import unprocessable

DEFAULT = "02:00-04:00"

_HH_MM = "([01][0-9]|2[0-3]):([0-5][0-9])"
#: ``HH:MM-HH:MM``, spaces around allowed; read by Python and as JSON Schema (ECMA-262).
WINDOW_PATTERN = rf"^\s*{_HH_MM}-{_HH_MM}\s*$"
_WINDOW = re.compile(WINDOW_PATTERN)


@dataclass(frozen=True)
class Window:
    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def length(self) -> timedelta:
        """How long the window lasts; a window from a time to the same time lasts all day."""
        minutes = _minutes(self.end) - _minutes(self.start)
        return timedelta(minutes=minutes % (24 * 60) or 24 * 60)

    def opening(self, now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """The window that is open at ``now``, or else the next one: (start, end) in UTC.

        ``now`` must be timezone-aware. The window lasts :attr:`length` of real time from its
        wall-clock start.
        """
        now = now.astimezone(UTC)
        local = now.astimezone(zone)
        # The window that started yesterday may still be open (it runs past midnight).
        for day in (local.date() - timedelta(days=1), local.date(), local.date() + timedelta(1)):
            start = _wall_clock(datetime.combine(day, self.start), zone)
            end = start + self.length
            if now < end:
                return start, end
        raise AssertionError("unreachable: tomorrow's window always ends after now")

    def is_open(self, now: datetime, zone: ZoneInfo) -> bool:
        start, _ = self.opening(now, zone)
        return start <= now


def parse(text: str) -> Window:
    """``HH:MM-HH:MM`` as a :class:`Window`; ``maintenance_window_invalid`` (422) otherwise."""
    match = _WINDOW.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise unprocessable(
            "maintenance_window_invalid",
            'A maintenance window is "HH:MM-HH:MM" (24-hour clock, site time), e.g. "02:00-04:00".',
        )
    h1, m1, h2, m2 = (int(group) for group in match.groups())
    return Window(time(h1, m1), time(h2, m2))


def next_opening(text: str, zone_name: str, now: datetime | None = None) -> datetime | None:
    """When a device of a site with window ``text`` may be restarted: None when it may now.

    An unknown zone is taken as UTC (a site's zone is validated when it is set).
    """
    window = parse(text)
    zone = _zone(zone_name)
    now = now or datetime.now(UTC)
    start, _ = window.opening(now, zone)
    return None if start <= now else start


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return ZoneInfo("UTC")


def _minutes(value: time) -> int:
    return value.hour * 60 + value.minute


def _wall_clock(naive: datetime, zone: ZoneInfo) -> datetime:
    """``naive`` read in ``zone``, in UTC.

    A time in the hour skipped when clocks go forward is read with the offset before the change
    (PEP 495, ``fold=0``), i.e. it moves forward by the skipped hour; a time that occurs twice
    is its first occurrence.
    """
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)

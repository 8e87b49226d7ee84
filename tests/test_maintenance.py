"""Maintenance windows: parsing, the window open now or next, midnight and clock changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from provisioner import maintenance
from provisioner.errors import Kind, ProvisionerError

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["", "2-4", "02:00", "02:00-", "24:00-01:00", "02:60-03:00", "2:00-04:00", "02:00 - 04:00",
     "02:00-04:00-05:00", "ab:cd-ef:gh", "\uff10\uff12:00-04:00", "02.00-04.00"],
)  # fmt: skip
def test_malformed_windows_are_refused_with_their_code(text: str) -> None:
    with pytest.raises(ProvisionerError) as caught:
        maintenance.parse(text)
    assert (caught.value.kind, caught.value.code) == (
        Kind.UNPROCESSABLE,
        "maintenance_window_invalid",
    )


def test_a_window_reads_back_as_written() -> None:
    assert str(maintenance.parse(" 23:30-01:00 ")) == "23:30-01:00"
    assert maintenance.parse("02:00-04:00").length == timedelta(hours=2)
    assert maintenance.parse("23:30-01:00").length == timedelta(minutes=90)
    assert maintenance.parse("03:00-03:00").length == timedelta(days=1)  # always open


@pytest.mark.parametrize(
    ("now", "opens"),
    [
        # Winter (CET, UTC+1): 02:00-04:00 local is 01:00-03:00 UTC.
        ("2026-12-07T00:59:00", "2026-12-07T01:00:00"),
        ("2026-12-07T01:00:00", None),
        ("2026-12-07T02:59:00", None),
        ("2026-12-07T03:00:00", "2026-12-08T01:00:00"),
        # Summer (CEST, UTC+2): 00:00-02:00 UTC.
        ("2026-07-01T23:00:00", "2026-07-02T00:00:00"),
        ("2026-07-02T01:30:00", None),
        # Clocks go forward at 02:00 on 2026-03-29: the window starts at 03:00 CEST, lasts 2 h.
        ("2026-03-29T00:30:00", "2026-03-29T01:00:00"),
        ("2026-03-29T02:59:00", None),
        ("2026-03-29T03:00:00", "2026-03-30T00:00:00"),
    ],
)
def test_next_opening_in_the_sites_time_zone(now: str, opens: str | None) -> None:
    expected = None if opens is None else utc(opens)
    assert maintenance.next_opening("02:00-04:00", "Europe/Berlin", utc(now)) == expected


def test_a_window_past_midnight_is_open_on_both_sides_of_it() -> None:
    window = "23:30-01:00"
    # 23:30 CET is 22:30 UTC.
    assert maintenance.next_opening(window, "Europe/Berlin", utc("2026-12-07T22:00:00")) == utc(
        "2026-12-07T22:30:00"
    )
    assert maintenance.next_opening(window, "Europe/Berlin", utc("2026-12-07T22:45:00")) is None
    assert maintenance.next_opening(window, "Europe/Berlin", utc("2026-12-07T23:30:00")) is None
    assert maintenance.next_opening(window, "Europe/Berlin", utc("2026-12-08T00:00:00")) == utc(
        "2026-12-08T22:30:00"
    )


def test_a_window_that_always_lasts_is_always_open() -> None:
    for hour in range(24):
        now = utc("2026-12-07T00:00:00") + timedelta(hours=hour, minutes=17)
        assert maintenance.next_opening("04:00-04:00", "America/New_York", now) is None


def test_opening_never_lies_in_the_past_and_comes_within_a_day() -> None:
    start = utc("2026-10-24T00:00:00")  # across the end of summer time in Europe
    for step in range(0, 3 * 24 * 60, 7):
        now = start + timedelta(minutes=step)
        opens = maintenance.next_opening("01:15-02:45", "Europe/Berlin", now)
        if opens is not None:
            assert now < opens <= now + timedelta(hours=25)
            assert opens.astimezone(BERLIN).strftime("%H:%M") == "01:15"

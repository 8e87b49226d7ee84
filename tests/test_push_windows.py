"""Pushes that never reboot a device in use: maintenance windows, end to end with sipp.

A Snom M-series base can only apply handset changes by restarting (no Snom document says
otherwise: docs/vendors/snom.md), so the push worker renders its change at once but holds the
NOTIFY (job state ``scheduled``) until the site's maintenance window; a desk phone's push never
waits. sipp plays the devices; windows are set relative to the current time in the site's zone.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from provisioner.devices import ADAPTERS
from provisioner.phonecache import LAST_SEEN_INTERVAL
from provisioner.web.keys import PHONES
from tests.conftest import Api, ManualClock, bootstrap_admin
from tests.test_push import (  # noqa: F401 (fixtures)
    NEW_PIN,
    SNOM,
    Client,
    Model,
    Pbx,
    Sipp,
    StartService,
    StartSipp,
    call,
    fetch_config,
    job_reaches,
    jobs_of,
    notifies_received,
    provision,
    push_env,
    start_service,
    start_sipp,
    subprocess_env,
)

ZONE = "America/New_York"
BASE = Model(
    vendor="snom",
    model="M700",
    mac="000413b2c3d4",
    user_agent="Mozilla/4.0 (compatible; Snom M700 05.20.0001 000413B2C3D4)",
    line_file="000413B2C3D4.xml",
    event="check-sync;reboot=true",
    scenario="notify_reboot.xml",
)


def window(start_in: timedelta, length: timedelta = timedelta(hours=1)) -> tuple[str, datetime]:
    """A window starting ``start_in`` from now in the site's zone, and its start (UTC)."""
    start = (datetime.now(UTC) + start_in).astimezone(ZoneInfo(ZONE))
    start = start.replace(second=0, microsecond=0)
    end = start + length
    return f"{start:%H:%M}-{end:%H:%M}", start.astimezone(UTC)


async def set_window(api: Any, text: str) -> None:
    site = await call(api, "PUT", "/sites/default", {"maintenance_window": text, "timezone": ZONE})
    assert site["maintenance_window"] == text


def test_the_base_declares_that_it_restarts_and_desk_phones_do_not() -> None:
    snom = ADAPTERS["snom"]
    base, desk = snom.model(BASE.model), snom.model(SNOM.model)
    assert base is not None
    assert desk is not None
    assert snom.needs_maintenance_window(base)
    assert snom.sip_event(base) == BASE.event
    assert not snom.needs_maintenance_window(desk)
    # The current generation of every family applies a change without restarting; a NOTIFY that
    # asks for a restart goes only to a model that waits for the window (e.g. the oldest Yealink
    # firmware, where no document shows a reboot-free resync: docs/vendors/yealink.md).
    current = {"yealink": "T54W", "gigaset": "N870", "poly": "VVX450", "grandstream": "GXP2170"}
    for vendor, name in current.items():
        model = ADAPTERS[vendor].model(name)
        assert model is not None
        assert not ADAPTERS[vendor].needs_maintenance_window(model), vendor
    for vendor, adapter in ADAPTERS.items():
        for model in adapter.models.values():
            event = adapter.sip_event(model) or ""
            restarts = adapter.needs_maintenance_window(model)
            assert "reboot=true" not in event or restarts, (vendor, model.name, event)


async def test_a_base_is_notified_only_inside_the_window(
    start_service: StartService,  # noqa: F811 -- the imported fixture
    start_sipp: StartSipp,  # noqa: F811 -- the imported fixture
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="provisioner.push")
    service = await start_service(worker=True)
    api = await bootstrap_admin(service)
    phone = await start_sipp(BASE.scenario, calls=1)
    closed, opens = window(timedelta(hours=3))
    await set_window(api, closed)

    await provision(api, Pbx(service), BASE, phone.port)

    # Rendered at once (the handset's account is in the file), but held for the window.
    [job] = await jobs_of(api, BASE.mac)
    held = await job_reaches(api, BASE.mac, job["id"], "scheduled")
    assert held["reason"] == "device.assign"
    not_before = await db.fetchval("SELECT not_before FROM push_jobs WHERE id = $1", job["id"])
    assert abs((not_before - opens).total_seconds()) < 60
    said = f"device {BASE.mac}: push scheduled for "
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith(said)][:1]
    assert abs((datetime.fromisoformat(line.removeprefix(said)) - opens).total_seconds()) < 60
    device = await call(api, "GET", f"/devices/{BASE.mac}")
    assert device["revision"] >= 1
    assert device["fetched_revision"] == 0
    assert phone.transactions() == []  # scheduling replaced the NOTIFY

    # A later change folds into the held job and is held again (never sent outside the window).
    await call(api, "POST", f"/devices/{BASE.mac}/reprovision", expect=202)
    again = await job_reaches(api, BASE.mac, job["id"], "scheduled")
    assert again["reason"] == "reprovision"
    assert phone.transactions() == []

    # The window opens (the admin moves it to now): the worker times the job anew and notifies.
    open_now, _ = window(timedelta(minutes=-5))
    await set_window(api, open_now)
    [notify] = await notifies_received(phone, 1)
    assert notify.header("Event") == BASE.event
    await job_reaches(api, BASE.mac, job["id"], "notified")
    await fetch_config(service, BASE)
    await job_reaches(api, BASE.mac, job["id"], "fetched")
    assert await phone.exit_code() == 0, phone.errors()


async def test_a_base_that_fetches_by_itself_completes_its_held_job(
    start_service: StartService,  # noqa: F811 -- the imported fixture
    start_sipp: StartSipp,  # noqa: F811 -- the imported fixture
) -> None:
    service = await start_service(worker=True)
    api = await bootstrap_admin(service)
    phone = await start_sipp(BASE.scenario, calls=1)
    await a_held_base_fetches_by_itself(service, api, phone)
    assert phone.transactions() == []


async def a_held_base_fetches_by_itself(service: Client, api: Api, phone: Sipp) -> None:
    """The base set up outside its window: its job is held (``scheduled``), and the base's own
    fetch completes it."""
    closed, _ = window(timedelta(hours=5))
    await set_window(api, closed)
    await provision(api, Pbx(service), BASE, phone.port)
    [job] = await jobs_of(api, BASE.mac)
    await job_reaches(api, BASE.mac, job["id"], "scheduled")

    # Bases fetch their files on their own schedule (and at boot): that delivers the change.
    await fetch_config(service, BASE)
    await job_reaches(api, BASE.mac, job["id"], "fetched")


async def test_a_desk_phones_pin_push_never_waits_and_the_base_gets_none(
    start_service: StartService,  # noqa: F811 -- the imported fixture
    start_sipp: StartSipp,  # noqa: F811 -- the imported fixture
) -> None:
    service = await start_service(worker=True)
    api = await bootstrap_admin(service)
    desk_phone = await start_sipp(SNOM.scenario, calls=2)
    closed, _ = window(timedelta(hours=4))
    await set_window(api, closed)
    pbx = Pbx(service)
    await provision(api, pbx, SNOM, desk_phone.port)
    await notifies_received(desk_phone, 1)  # the assignment, outside the window: not held

    # Alice also has a handset on the base.
    await call(api, "POST", "/devices", {"mac": BASE.mac, "vendor": "snom", "model": "M700"}, 201)
    await call(api, "PUT", f"/devices/{BASE.mac}/assignments", [{"slot": 1, "username": "alice"}])

    changed = await call(api, "PUT", "/users/alice/pin", {"pin": NEW_PIN})
    [job_id] = changed["push_jobs"]  # the desk phone only: the base carries no PIN
    [job] = [j for j in await jobs_of(api, SNOM.mac) if j["id"] == job_id]
    assert job["reason"] == "pin.change"
    await notifies_received(desk_phone, 2)
    await job_reaches(api, SNOM.mac, job_id, "notified")
    assert NEW_PIN in await fetch_config(service, SNOM)
    await job_reaches(api, SNOM.mac, job_id, "fetched")
    assert all(j["reason"] != "pin.change" for j in await jobs_of(api, BASE.mac))


async def test_reprovision_wait_ends_when_the_rest_is_done_and_names_the_held_base(
    start_service: StartService,  # noqa: F811 -- the imported fixture
    start_sipp: StartSipp,  # noqa: F811 -- the imported fixture
    push_env: dict[str, str],  # noqa: F811 -- the imported fixture
    tmp_path: Path,
) -> None:
    service = await start_service(worker=True)
    api = await bootstrap_admin(service)
    phone = await start_sipp(BASE.scenario, calls=1)
    closed, _ = window(timedelta(hours=2))
    await set_window(api, closed)
    await provision(api, Pbx(service), BASE, phone.port)
    [job] = await jobs_of(api, BASE.mac)
    await job_reaches(api, BASE.mac, job["id"], "scheduled")

    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "provisioner", "reprovision", "--device", BASE.mac),
        *("--wait", "30"),
        env=subprocess_env(push_env, service, tmp_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(40):
        stdout, stderr = await process.communicate()
    out = stdout.decode()
    assert process.returncode == 0, (out, stderr.decode())
    assert out.splitlines()[-1] == (
        "notified 0, fetched 0, failed 0, still pending 0, held for the maintenance window 1"
    )
    assert phone.transactions() == []


async def test_a_held_job_completed_by_a_folded_fetch_is_fetched_once_its_minute_is_over(
    start_service: StartService,  # noqa: F811 -- the imported fixture
    start_sipp: StartSipp,  # noqa: F811 -- the imported fixture
) -> None:
    """A re-provision held for the window, and the base fetches the revision it fetched a
    moment ago: that fetch is folded into the earlier one (same file, revision and source),
    not dropped; once its minute is over it is written and completes the held job."""
    service = await start_service(worker=True)
    api = await bootstrap_admin(service)
    recorder = service.app[PHONES].recorder
    clock = recorder.clock = ManualClock()
    phone = await start_sipp(BASE.scenario, calls=1)
    await a_held_base_fetches_by_itself(service, api, phone)

    queued = await call(api, "POST", f"/devices/{BASE.mac}/reprovision", expect=202)
    [held] = queued["jobs"]
    await job_reaches(api, BASE.mac, held, "scheduled")
    await fetch_config(service, BASE)
    assert recorder.written[BASE.mac].folded is not None
    [still] = [j for j in await jobs_of(api, BASE.mac) if j["id"] == held]
    assert still["state"] == "scheduled"  # the folded fetch waits for its minute

    clock.advance(LAST_SEEN_INTERVAL)
    await job_reaches(api, BASE.mac, held, "fetched")
    assert phone.transactions() == []

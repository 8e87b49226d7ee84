"""``provisioner site``/``device`` as operators run them: real subprocesses against the per-run
PostgreSQL test database (the ``db`` fixture empties its tables).

Every command is a fresh Python process (~1-3 s), so independent invocations run concurrently in
a few stages. The test writes the secret key file itself, so it can decrypt what the commands
stored (the SIP passwords the rendered files must carry).
"""

from __future__ import annotations

import asyncio
import base64
import os
import pty
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from provisioner.vault import Vault, sip_password_purpose
from tests.conftest import stored_files

REGISTRAR = "pbx.example.net"
PIN = "730519"
MAC = "001565aabbcc"
DECT = "001565dec701"
SNOM = "000413aabbcd"
GRANDSTREAM = "000b82aabbce"
YEALINK_FILES = sorted([f"{MAC}.boot", f"{MAC}.cfg", "y000000000000.boot", "y000000000096.cfg"])


@dataclass
class Cli:
    """Runs ``python -m provisioner`` with a fixed environment."""

    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "provisioner", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=90,
            check=False,
        )

    async def __call__(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, *args, stdin=stdin)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def assert_exit(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, output(result)
    assert "Traceback" not in result.stderr, output(result)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr lines that are the command's messages, not log records."""
    return [line for line in result.stderr.splitlines() if line.startswith("provisioner: ")]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.key"
    path.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def cli(database_url: str, tmp_path: Path, key_file: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=database_url,
        PROVISIONER_DATA_DIR=str(tmp_path / "data"),
        PROVISIONER_SECRET_KEY_FILE=str(key_file),
    )
    return Cli(env, tmp_path)


@pytest.fixture
async def users(db: asyncpg.Connection) -> asyncpg.Connection:
    """Empty tables plus users alice (201), bob (202) and carol (203)."""
    for username, extension in [("alice", "201"), ("bob", "202"), ("carol", "203")]:
        await db.execute(
            "INSERT INTO users (username, display_name, extension) VALUES ($1, $2, $3)",
            username,
            username.title(),
            extension,
        )
    return db


async def assignments(db: asyncpg.Connection) -> list[tuple[str, int, str]]:
    rows = await db.fetch(
        "SELECT a.mac, a.slot, u.username FROM device_assignments a "
        "JOIN users u ON u.id = a.user_id ORDER BY a.mac, a.slot"
    )
    return [tuple(r) for r in rows]


async def sip_password(db: asyncpg.Connection, key_file: Path, mac: str, slot: int) -> str:
    encrypted = await db.fetchval(
        "SELECT sip_password_encrypted FROM device_assignments WHERE mac = $1 AND slot = $2",
        mac,
        slot,
    )
    assert encrypted is not None, (mac, slot)
    return Vault.from_key_file(key_file).decrypt(encrypted, sip_password_purpose(mac, slot))


async def stored_file(db: asyncpg.Connection, key_file: Path, mac: str, name: str) -> bytes:
    files = await stored_files(db, Vault.from_key_file(key_file), mac)
    assert name in files, (mac, name)
    return files[name]


# --- site set, device add, device render -------------------------------------------------------


async def test_site_set_device_add_and_render(
    cli: Cli, users: asyncpg.Connection, key_file: Path
) -> None:
    db = users
    await db.execute("INSERT INTO sites (name) VALUES ('branch')")  # no registrar

    # Stage 1: the site's registrar, alice's PIN.
    site, pin = await asyncio.gather(
        cli("site", "set", "--registrar", REGISTRAR),
        cli("user", "set-pin", "alice", stdin=f"{PIN}\n"),
    )
    assert_exit(site, 0)
    assert f"registrar_host={REGISTRAR}" in site.stdout
    assert_exit(pin, 0)
    default = await db.fetchrow("SELECT * FROM sites WHERE name = 'default'")
    assert default is not None
    assert (default["registrar_host"], default["timezone"]) == (REGISTRAR, "Europe/Berlin")

    # Stage 2: devices.
    added, bad_mac, bad_slot, ghost, dect, branch = await asyncio.gather(
        cli("device", "add", "00:15:65:AA:BB:CC", "--vendor", "yealink", "--model", "T54W",
            "--user", "alice:1", "--label", "Empfang"),
        cli("device", "add", "00:15:65:aa:bb", "--vendor", "yealink", "--model", "T54W"),
        cli("device", "add", "001565aabb02", "--vendor", "yealink", "--model", "T54W",
            "--user", "bob:one"),
        cli("device", "add", "001565aabb04", "--vendor", "yealink", "--model", "T54W",
            "--user", "bob", "--user", "ghost:2"),
        cli("device", "add", DECT, "--vendor", "yealink", "--model", "w70b",
            "--user", "bob", "--user", "carol:10"),
        cli("device", "add", SNOM, "--vendor", "snom", "--model", "D785", "--site", "branch"),
    )  # fmt: skip
    assert_exit(added, 0)
    assert MAC in added.stdout
    device = await db.fetchrow("SELECT * FROM devices WHERE mac = $1", MAC)
    assert device is not None
    assert (device["vendor"], device["model"], device["kind"], device["label"]) == (
        "yealink",
        "T54W",
        "desk",
        "Empfang",
    )
    assert device["revision"] >= 1
    assert device["render_error"] is None
    password = await sip_password(db, key_file, MAC, 1)
    cfg = await stored_file(db, key_file, MAC, f"{MAC}.cfg")
    assert f"account.1.password = {password}".encode() in cfg
    assert f"account.1.sip_server.1.address = {REGISTRAR}".encode() in cfg

    for result, expected in [
        (bad_mac, "(mac_invalid)"),
        (bad_slot, "slot must be a number"),
        (ghost, "(user_not_found)"),
    ]:
        assert_exit(result, 2)
        assert expected in result.stderr, output(result)
        assert len(error_lines(result)) == 1, output(result)
        assert result.stdout == "", output(result)
    assert "MAC address" in bad_mac.stderr
    assert_exit(dect, 0)
    assert await db.fetchval("SELECT kind FROM devices WHERE mac = $1", DECT) == "dect"
    # A device at a site without registrar is added, but cannot be rendered.
    assert_exit(branch, 0)
    device = await db.fetchrow("SELECT revision, render_error FROM devices WHERE mac = $1", SNOM)
    assert device is not None
    assert device["revision"] == 0
    assert "registrar" in device["render_error"]
    # A refused add leaves nothing behind, even when only an assignment was refused.
    macs = [r["mac"] for r in await db.fetch("SELECT mac FROM devices ORDER BY mac")]
    assert macs == sorted([MAC, DECT, SNOM])
    assert await assignments(db) == [(MAC, 1, "alice"), (DECT, 1, "bob"), (DECT, 10, "carol")]
    revision = await db.fetchval("SELECT revision FROM devices WHERE mac = $1", MAC)

    # Stage 3: previews.
    everything, one, masked, no_file, no_device, unrenderable = await asyncio.gather(
        cli("device", "render", "00-15-65-aa-bb-cc"),
        cli("device", "render", MAC, f"{MAC}.cfg"),
        cli("device", "render", MAC, "--mask"),
        cli("device", "render", MAC, "nope.cfg"),
        cli("device", "render", "001565ffffff"),
        cli("device", "render", SNOM),
    )
    assert_exit(everything, 0)
    headers = [line for line in everything.stdout.splitlines() if line.startswith("==> ")]
    assert headers == [f"==> {name} <==" for name in YEALINK_FILES]
    assert f"account.1.password = {password}" in everything.stdout
    assert f"phone_setting.phone_lock.unlock_pin = {PIN}" in everything.stdout

    assert_exit(one, 0)
    assert "==>" not in one.stdout
    # The preview is what the device gets.
    assert one.stdout.encode() == await stored_file(db, key_file, MAC, f"{MAC}.cfg")

    assert_exit(masked, 0)
    assert [line for line in masked.stdout.splitlines() if line.startswith("==> ")] == headers
    assert PIN not in masked.stdout
    assert password not in masked.stdout
    assert "phone_setting.phone_lock.unlock_pin = ********" in masked.stdout
    assert "account.1.password = ********" in masked.stdout

    assert_exit(no_file, 2)
    assert no_file.stdout == ""
    assert "nope.cfg" in no_file.stderr
    assert f"{MAC}.cfg" in no_file.stderr  # names the files there are
    assert_exit(no_device, 2)
    assert "(device_not_found)" in no_device.stderr, output(no_device)
    assert_exit(unrenderable, 1)
    assert "registrar" in unrenderable.stderr, output(unrenderable)
    assert len(error_lines(unrenderable)) == 1, output(unrenderable)
    # Previews store nothing.
    assert await db.fetchval("SELECT revision FROM devices WHERE mac = $1", MAC) == revision


# --- device import -----------------------------------------------------------------------------


async def test_device_import_shows_a_progress_bar_on_a_terminal(
    cli: Cli, users: asyncpg.Connection, tmp_path: Path
) -> None:
    rows = "".join(f"0015650000{n:02x},yealink,T54W\n" for n in range(12))
    csv_file = tmp_path / "many.csv"
    csv_file.write_text("mac,vendor,model\n" + rows)

    code, screen = await asyncio.to_thread(run_with_stderr_on_a_terminal, cli, csv_file)

    assert code == 0, screen
    frames = screen.split("\r")
    assert len(frames) >= 12, screen  # redrawn in place, once per device
    bar = re.compile(r"^\[([#.]{30})\] (\d+)/12 devices \([\d.]+/s\) rendered\x1b\[K")
    drawn = [match.groups() for frame in frames if (match := bar.match(frame))]
    assert drawn[-1] == ("#" * 30, "12"), screen
    assert [int(done) for _, done in drawn] == list(range(1, 13)), screen
    assert await users.fetchval("SELECT count(*) FROM devices") == 12


def run_with_stderr_on_a_terminal(cli: Cli, csv_file: Path) -> tuple[int, str]:
    """``device import`` with stderr on a pseudo-terminal; its exit code and what it drew."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "device", "import", str(csv_file)],
        env=cli.env,
        cwd=cli.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
    )
    os.close(secondary)
    screen = b""
    try:
        while chunk := _read_terminal(primary):
            screen += chunk
    finally:
        os.close(primary)
    return process.wait(60), screen.decode(errors="replace")


def _read_terminal(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: every process holding the terminal's other side has exited
        return b""


async def test_device_import(cli: Cli, users: asyncpg.Connection, tmp_path: Path) -> None:
    db = users
    good = tmp_path / "good.csv"
    good.write_text(
        "mac,vendor,model,label,site,user,slot\n"
        "00:15:65:aa:bb:cc,yealink,T54W,Empfang,,alice,1\n"
        "00-04-13-AA-BB-CD,snom,d785,Chef,default,bob,\n"
        "001565dec701,yealink,W70B,Lager,,bob,1\n"
        "001565dec701,yealink,W70B,Lager,,carol,2\n"
        "000b82aabbce,grandstream,GXP2170,,,,\n"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "mac,vendor,model,user,slot\n"
        "001565000001,yealink,T54W,alice,1\n"
        "zz:zz:zz:zz:zz:zz,yealink,T54W,,\n"
        "001565000003,yealink,T99,,\n"
        "001565000004,snom,D785,carol,2\n"
    )
    ghost = tmp_path / "ghost.csv"
    ghost.write_text(
        "mac,vendor,model,user,slot\n"
        "001565000011,yealink,T54W,alice,1\n"
        "001565000012,yealink,T54W,ghost,1\n"
    )
    header = tmp_path / "header.csv"
    header.write_text("mac,vendor,model,colour\n001565000021,yealink,T54W,red\n")

    # Stage 1: the registrar, and files that are refused as a whole.
    site, bad_result, ghost_result, header_result = await asyncio.gather(
        cli("site", "set", "--registrar", REGISTRAR),
        cli("device", "import", str(bad)),
        cli("device", "import", str(ghost)),
        cli("device", "import", str(header)),
    )
    assert_exit(site, 0)
    assert_exit(bad_result, 2)
    assert f"{bad}:3: " in bad_result.stderr, output(bad_result)
    assert f"{bad}:4: " in bad_result.stderr, output(bad_result)
    assert f"{bad}:2:" not in bad_result.stderr
    assert f"{bad}:5:" not in bad_result.stderr
    assert "nothing imported" in bad_result.stderr
    assert_exit(ghost_result, 2)
    assert f"{ghost}:3: " in ghost_result.stderr, output(ghost_result)
    assert "nothing imported" in ghost_result.stderr
    assert_exit(header_result, 2)
    assert "(csv_invalid)" in header_result.stderr, output(header_result)
    assert await db.fetchval("SELECT count(*) FROM devices") == 0
    assert await assignments(db) == []
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'device.%'") == 0

    # Stage 2: a good file.
    result = await cli("device", "import", str(good))
    assert_exit(result, 0)
    assert "imported 4 device(s)" in result.stdout
    # stderr is no terminal: one plain line per device rendered, with counts and rate.
    progress = re.findall(r"^(\d)/4 devices \([\d.]+/s\) rendered$", result.stderr, re.M)
    assert progress == ["1", "2", "3", "4"], output(result)
    devices = await db.fetch("SELECT mac, vendor, model, kind, label FROM devices ORDER BY mac")
    assert [tuple(r) for r in devices] == [
        (SNOM, "snom", "D785", "desk", "Chef"),
        (GRANDSTREAM, "grandstream", "GXP2170", "desk", ""),
        (MAC, "yealink", "T54W", "desk", "Empfang"),
        (DECT, "yealink", "W70B", "dect", "Lager"),
    ]
    assert await assignments(db) == [
        (SNOM, 1, "bob"),
        (MAC, 1, "alice"),
        (DECT, 1, "bob"),
        (DECT, 2, "carol"),
    ]
    rendered = await db.fetch("SELECT mac, revision, render_error FROM devices")
    assert all(r["revision"] >= 1 and r["render_error"] is None for r in rendered), rendered

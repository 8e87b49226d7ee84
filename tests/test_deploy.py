"""What ``deploy/`` ships for operators, checked with the tools that will read it: the systemd
unit with ``systemd-analyze``, the fail2ban filter with ``fail2ban-regex`` against the lines the
running phones' endpoint logs."""

from __future__ import annotations

import configparser
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from provisioner.cli import LOG_FORMAT
from tests.conftest import AppFactory

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "provisioner.service"
FILTER = DEPLOY / "fail2ban" / "filter.d" / "provisioner.conf"
JAIL = DEPLOY / "fail2ban" / "jail.d" / "provisioner.conf"
# Where Debian's fail2ban keeps the definitions a filter includes (common.conf).
FAIL2BAN_FILTERS = Path("/etc/fail2ban/filter.d")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallFilter": "@system-service",
}


def unit_sections(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def console_script() -> Path:
    """Where the installed ``provisioner`` command is, as in the unit's virtual environment."""
    script = Path(sys.executable).parent / "provisioner"
    assert script.exists(), "the package is installed with its console script"
    return script


def test_the_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    unit = unit_sections(UNIT)
    service = unit["Service"]
    assert service["Type"] == "notify", "serve tells systemd READY=1 (see test_cli)"
    assert service["ExecStart"] == "/opt/provisioner/bin/provisioner serve"
    assert service["User"] == "provisioner"
    assert service["EnvironmentFile"] == "/etc/provisioner/provisioner.env"
    assert service["Environment"] == "PROVISIONER_DATA_DIR=/var/lib/provisioner"
    assert service["StateDirectory"] == "provisioner"
    for key, value in HARDENING.items():
        assert service.get(key) == value, key
    assert (DEPLOY / "provisioner.env").exists()
    env_names = {
        line.split("=", 1)[0].lstrip("#")
        for line in (DEPLOY / "provisioner.env").read_text().splitlines()
        if "=" in line
    }
    assert {"PROVISIONER_PUBLIC_URL", "PROVISIONER_PHONES_LISTEN"} <= env_names

    # systemd's own check, with ExecStart pointing at this machine's installed command (the
    # unit's /opt/provisioner is where the README installs it).
    installed = tmp_path / "provisioner.service"
    installed.write_text(
        UNIT.read_text().replace("/opt/provisioner/bin/provisioner", str(console_script()))
    )
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(installed)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(installed)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert security.returncode == 0, security.stdout + security.stderr
    assert "Overall exposure level for provisioner.service: 1." in security.stdout


async def failing_fetches(client: Any, source: str, count: int) -> None:
    headers = {
        "X-Forwarded-For": source,
        "User-Agent": "Yealink SIP-T54W 96.86.0.70 00:15:65:aa:bb:cc",
        "Authorization": aiohttp.encode_basic_auth("001565aabbcc", "not-the-password"),
    }
    for _ in range(count):
        async with client.get("/provisioning/001565aabbcc.cfg", headers=headers) as response:
            assert response.status in (401, 404, 429)


async def test_the_fail2ban_filter_matches_what_the_phones_endpoint_logs(
    make_client: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await make_client(trusted_proxies="127.0.0.1")
    await failing_fetches(client, "192.0.2.7", 10)  # the 10th failure blocks the source
    await failing_fetches(client, "2001:db8::7", 2)
    formatter = logging.Formatter(LOG_FORMAT)  # as `provisioner serve` writes them
    lines = [formatter.format(record) for record in caplog.records]
    phones = [line for line in lines if " provisioner.phones: provisioning " in line]
    assert len(phones) == 13, lines  # 12 failures, 1 block
    # Lines a filter must never take: a request whose path carries the same words (as the
    # access log shows it), and the service's other lines.
    stamp = phones[0][:23]
    forged = (
        f'{stamp} INFO aiohttp.access: 203.0.113.5 "GET /provisioning/x WARNING '
        f'provisioner.phones: provisioning auth failure from 198.51.100.66: x HTTP/1.1" 404'
    )
    # The same line as the journal (journalctl -u provisioner) or syslog shows it.
    journal = f"Dec  7 05:31:23 pbx1 provisioner[1234]: {phones[0]}"
    log_file = tmp_path / "provisioner.log"
    log_file.write_text("\n".join([*lines, forged, journal]) + "\n")

    hosts = fail2ban_regex(log_file, tmp_path, "ip")
    assert hosts == ["192.0.2.7"] * 11 + ["2001:db8::7"] * 2 + ["192.0.2.7"], hosts
    summary = fail2ban_regex(log_file, tmp_path, None)
    assert f"Lines: {len(lines) + 2} lines, 0 ignored, 14 matched" in "\n".join(summary)


def fail2ban_regex(log_file: Path, tmp_path: Path, out: str | None) -> list[str]:
    """Run fail2ban-regex with the shipped filter, installed beside fail2ban's common.conf."""
    filters = tmp_path / "fail2ban" / "filter.d"
    filters.mkdir(parents=True, exist_ok=True)
    shutil.copy(FAIL2BAN_FILTERS / "common.conf", filters)
    shutil.copy(FILTER, filters)
    jail = unit_sections(JAIL)["provisioner"]
    assert jail["filter"] == "provisioner"
    assert jail["backend"] == "systemd"
    options = ["-o", out] if out else []
    result = subprocess.run(
        ["fail2ban-regex", *options, str(log_file), str(filters / "provisioner.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()

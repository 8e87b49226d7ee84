"""Asterisk's side of the PBX contract, against the real service and PostgreSQL.

Asterisk cannot run here (it is not packaged on this machine), so what Asterisk would do is
checked against what Asterisk documents:

- The PJSIP realtime views ``pbx.ps_endpoints``, ``pbx.ps_auths`` and ``pbx.ps_aors`` are
  checked against Asterisk's realtime schema, encoded below as data from Asterisk's alembic
  migrations (``contrib/ast-db-manage/config/versions/`` in asterisk/asterisk): every column a
  view exposes must be a column of Asterisk's table, with a value its type or enum allows; the
  ids must line up (endpoint.auth is an auth's id, endpoint.aors an AOR's); ``md5_cred`` must be
  ``MD5(username:realm:password)`` of the password the phone's rendered config carries. The PBX
  role then runs the statements ``res/res_config_pgsql.c`` sends (its column lookup in
  ``current_schema()``, ``SELECT * FROM <family> WHERE id = '...'``).
- ``contrib/asterisk/provisioner-hotdesk.agi`` runs for real, as a subprocess speaking AGI on
  stdin/stdout to a stand-in for Asterisk (the environment block, then one answer per command,
  as ``res/res_agi.c`` answers them) and over HTTP to the running service.
- ``provisioner hook sign`` and ``provisioner hook call`` run as subprocesses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner import pbx
from provisioner.audit import Actor
from provisioner.vault import Vault
from provisioner.web.hooks import sign
from provisioner.web.keys import CORE
from tests.conftest import Api, bootstrap_admin, stored_files

ROOT = Path(__file__).resolve().parent.parent
CONTRIB = ROOT / "contrib" / "asterisk"
AGI = CONTRIB / "provisioner-hotdesk.agi"

SECRET = "pbx-hook-secret-for-the-asterisk-tests"
REGISTRAR = "pbx.example.net"
DESK = "001565aabb61"  # bob's phone, where alice hot-desks
HOME = "001565aabb62"  # alice's own phone
ALICE_PIN = "480913"
BOB_PIN = "592014"

# --- Asterisk's realtime schema ----------------------------------------------------------------
#
# From asterisk/asterisk contrib/ast-db-manage/config/versions/:
#   43956d550a44_add_tables_for_pjsip.py      creates ps_endpoints, ps_auths, ps_aors (the
#                                              columns below; strings are sa.String(n))
#   31cd4f4891ec_add_auto_dtmf_mode.py         adds 'auto' to pjsip_dtmf_mode_values
#   164abbd708c_add_auto_info_to_endpoint_dtmf_mode.py   adds 'auto_info'
#   465f47f880be_add_pjsip_google_voice_sip_options.py  pjsip_auth_type_values_v2 adds
#                                              'google_oauth'
#   437f004ee12c_incease_pjsip_auth_realm.py   ps_auths.realm becomes String(255)
#   74dc751dfe8e_more_permission_boolean_columns.py      the yes/no columns (direct_media,
#                                              remove_existing, ...) become ast_bool_values
# Later migrations only add columns the views leave out (NULL: Asterisk's default).

YESNO = frozenset({"yes", "no"})
AST_BOOL = frozenset({"0", "1", "off", "on", "false", "true", "no", "yes"})
# A value for a yes/no column must be valid for both: before and after 74dc751dfe8e.
BOOL = YESNO & AST_BOOL


@dataclass(frozen=True)
class Text:
    length: int


@dataclass(frozen=True)
class Integer:
    pass


@dataclass(frozen=True)
class Enum:
    values: frozenset[str]


ASTERISK_SCHEMA: dict[str, dict[str, Text | Integer | Enum]] = {
    "ps_endpoints": {
        "id": Text(40),
        "transport": Text(40),
        "aors": Text(200),
        "auth": Text(40),
        "context": Text(40),
        "disallow": Text(200),
        "allow": Text(200),
        "direct_media": Enum(BOOL),
        "connected_line_method": Enum(frozenset({"invite", "reinvite", "update"})),
        "direct_media_method": Enum(frozenset({"invite", "reinvite", "update"})),
        "direct_media_glare_mitigation": Enum(frozenset({"none", "outgoing", "incoming"})),
        "disable_direct_media_on_nat": Enum(BOOL),
        "dtmf_mode": Enum(frozenset({"rfc4733", "inband", "info", "auto", "auto_info"})),
        "external_media_address": Text(40),
        "force_rport": Enum(BOOL),
        "ice_support": Enum(BOOL),
        "identify_by": Enum(frozenset({"username"})),
        "mailboxes": Text(40),
        "moh_suggest": Text(40),
        "outbound_auth": Text(40),
        "outbound_proxy": Text(40),
        "rewrite_contact": Enum(BOOL),
        "rtp_ipv6": Enum(BOOL),
        "rtp_symmetric": Enum(BOOL),
        "send_diversion": Enum(BOOL),
        "send_pai": Enum(BOOL),
        "send_rpid": Enum(BOOL),
        "timers_min_se": Integer(),
        "timers": Enum(frozenset({"forced", "no", "required", "yes"})),
        "timers_sess_expires": Integer(),
        "callerid": Text(40),
        "callerid_tag": Text(40),
        "100rel": Enum(frozenset({"no", "required", "yes"})),
        "aggregate_mwi": Enum(BOOL),
        "trust_id_inbound": Enum(BOOL),
        "trust_id_outbound": Enum(BOOL),
        "use_ptime": Enum(BOOL),
        "use_avpf": Enum(BOOL),
        "media_encryption": Enum(frozenset({"no", "sdes", "dtls"})),
        "inband_progress": Enum(BOOL),
        "call_group": Text(40),
        "pickup_group": Text(40),
        "named_call_group": Text(40),
        "named_pickup_group": Text(40),
        "device_state_busy_at": Integer(),
        "fax_detect": Enum(BOOL),
        "t38_udptl": Enum(BOOL),
        "tone_zone": Text(40),
        "language": Text(40),
        "from_domain": Text(40),
        "from_user": Text(40),
    },
    "ps_auths": {
        "id": Text(40),
        "auth_type": Enum(frozenset({"md5", "userpass", "google_oauth"})),
        "nonce_lifetime": Integer(),
        "md5_cred": Text(40),
        "password": Text(80),
        "realm": Text(255),
        "username": Text(40),
    },
    "ps_aors": {
        "id": Text(40),
        "contact": Text(40),
        "default_expiration": Integer(),
        "mailboxes": Text(80),
        "max_contacts": Integer(),
        "minimum_expiration": Integer(),
        "remove_existing": Enum(BOOL),
        "qualify_frequency": Integer(),
        "authenticate_qualify": Enum(BOOL),
    },
}

#: Free text the views carry from provisioner's data (a display name, a site's realm). A view has
#: no width and res_config_pgsql reads a value of any length, so only the widths of Asterisk's
#: own tables are not checked for these.
FREE_TEXT = {("ps_endpoints", "callerid"), ("ps_auths", "realm")}


def allowed(spec: Text | Integer | Enum, value: Any) -> bool:
    if isinstance(spec, Integer):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(spec, Enum):
        return value in spec.values
    return isinstance(value, str)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 -- SIP digest is MD5


# --- the service ---------------------------------------------------------------------------------


async def call(api: Api, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    status, data = await api.call(method, path, body)
    assert status == expect, (method, path, data)
    return data


@pytest.fixture
async def service(
    make_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> TestClient[Any, Any]:
    return await make_client(hook_secret=SECRET)


@pytest.fixture
async def api(service: TestClient[Any, Any]) -> Api:
    """alice (201) on line 1 of her phone, bob (202) on line 1 of his desk phone."""
    admin = await bootstrap_admin(service)
    await call(admin, "PUT", "/sites/default", {"registrar_host": REGISTRAR})
    for username, extension, pin in [("alice", "201", ALICE_PIN), ("bob", "202", BOB_PIN)]:
        body = {"username": username, "display_name": username.title(), "extension": extension}
        await call(admin, "POST", "/users", body, expect=201)
        await call(admin, "PUT", f"/users/{username}/pin", {"pin": pin})
    for mac, username in [(HOME, "alice"), (DESK, "bob")]:
        body = {"mac": mac, "vendor": "yealink", "model": "T54W"}
        await call(admin, "POST", "/devices", body, expect=201)
        await call(admin, "PUT", f"/devices/{mac}/assignments", [{"slot": 1, "username": username}])
    return admin


async def rendered_accounts(db: asyncpg.Connection, vault: Vault, mac: str) -> dict[str, str]:
    """auth name -> password, as the phone's rendered config (Yealink ``<mac>.cfg``) has them."""
    text = (await stored_files(db, vault, mac))[f"{mac}.cfg"].decode()
    names = dict(re.findall(r"^account\.(\d+)\.auth_name = (\S+)$", text, re.MULTILINE))
    passwords = dict(re.findall(r"^account\.(\d+)\.password = (\S+)$", text, re.MULTILINE))
    return {names[index]: passwords[index] for index in names if index in passwords}


async def view(db: asyncpg.Connection, name: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetch(f"SELECT * FROM pbx.{name} ORDER BY id")]


# --- (a) the realtime views against Asterisk's schema ------------------------------------------


async def check_views(db: asyncpg.Connection, vault: Vault, realm: str) -> None:
    endpoints = await view(db, "ps_endpoints")
    auths = {r["id"]: r for r in await view(db, "ps_auths")}
    aors = {r["id"]: r for r in await view(db, "ps_aors")}
    assert {e["id"] for e in endpoints} == {f"201-{HOME}-1", f"202-{DESK}-1"}

    for family, rows in [
        ("ps_endpoints", endpoints),
        ("ps_auths", list(auths.values())),
        ("ps_aors", list(aors.values())),
    ]:
        schema = ASTERISK_SCHEMA[family]
        for row in rows:
            unknown = set(row) - set(schema)
            assert not unknown, f"{family} exposes columns Asterisk's table lacks: {unknown}"
            for column, value in row.items():
                assert value is not None, (family, column)  # NULL columns are left out
                spec = schema[column]
                assert allowed(spec, value), (family, column, value, spec)
                if isinstance(spec, Text) and (family, column) not in FREE_TEXT:
                    assert len(value) <= spec.length, (family, column, value)

    rendered = {
        **await rendered_accounts(db, vault, HOME),
        **await rendered_accounts(db, vault, DESK),
    }
    for endpoint in endpoints:
        # The ids line up: sorcery resolves endpoint.auth and endpoint.aors by id.
        auth = auths[endpoint["auth"]]
        for aor in endpoint["aors"].split(","):
            assert aor in aors
        assert endpoint["context"] == "provisioner-phones"
        assert auth["auth_type"] == "md5"
        assert auth["realm"] == realm
        password = rendered[auth["username"]]
        assert auth["md5_cred"] == md5(f"{auth['username']}:{realm}:{password}")
        assert password not in json.dumps([endpoints, list(auths.values())], default=str)
        # The endpoint's name carries the MAC the hot-desk AGI reads from CHANNEL(endpoint).
        extension, mac, slot = endpoint["id"].rsplit("-", 2)
        assert (mac, slot) in {(HOME, "1"), (DESK, "1")}
        assert extension in {"201", "202"}


async def test_realtime_views_fit_asterisks_realtime_schema(
    service: TestClient[Any, Any], api: Api, db: asyncpg.Connection, vault: Vault
) -> None:
    await check_views(db, vault, REGISTRAR)  # the realm defaults to the registrar host
    await call(api, "PUT", "/sites/default", {"sip_realm": "voice.example.org"})
    await api.settled()
    await check_views(db, vault, "voice.example.org")

    # The context the views give every endpoint is the one contrib's dialplan defines.
    dialplan = (CONTRIB / "extensions.conf").read_text()
    assert re.search(r"^\[provisioner-phones\]$", dialplan, re.MULTILINE)
    # And the families the snippets map are the three views, read through res_config_pgsql.
    extconfig = (CONTRIB / "extconfig.conf").read_text()
    sorcery = (CONTRIB / "sorcery.conf").read_text()
    for family, kind in [("ps_endpoints", "endpoint"), ("ps_auths", "auth"), ("ps_aors", "aor")]:
        assert re.search(rf"^{family} => pgsql,", extconfig, re.MULTILINE)
        assert re.search(rf"^{kind}=realtime,{family}$", sorcery, re.MULTILINE)


@pytest.fixture
async def role(db: asyncpg.Connection) -> AsyncIterator[str]:
    """A fresh login role for Asterisk (roles are cluster-wide: random name, dropped after)."""
    name = f"asterisk_test_{secrets.token_hex(4)}"
    await db.execute(f"CREATE ROLE {name} LOGIN")
    yield name
    await db.execute(f"DROP OWNED BY {name}")
    await db.execute(f"DROP ROLE {name}")


async def test_the_pbx_role_reads_the_views_as_res_config_pgsql_does(
    service: TestClient[Any, Any], api: Api, role: str, database_url: str
) -> None:
    await pbx.grant(service.app[CORE], Actor.cli(), role)
    conn = await asyncpg.connect(database_url, user=role)
    try:
        # res_config_pgsql looks the table up in current_schema(): the role's search_path.
        assert await conn.fetchval("SELECT current_schema()") == "pbx"
        for family in ("ps_endpoints", "ps_auths", "ps_aors"):
            # find_table(): the columns of the relation named like the family.
            columns = await conn.fetch(
                """SELECT a.attname, t.typname
                   FROM pg_catalog.pg_class c
                   JOIN pg_catalog.pg_namespace n
                        ON n.oid = c.relnamespace AND c.relname = $1
                           AND n.nspname = current_schema()
                   JOIN pg_catalog.pg_attribute a
                        ON NOT a.attisdropped AND a.attnum > 0 AND a.attrelid = c.oid
                   JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
                   ORDER BY a.attnum""",
                family,
            )
            assert {c["attname"] for c in columns} <= set(ASTERISK_SCHEMA[family])
            # realtime_pgsql() and realtime_multi_pgsql(), as sorcery's realtime wizard asks.
            one = await conn.fetch(f"SELECT * FROM {family} WHERE id = '201-{HOME}-1'")
            assert len(one) == 1
            every = await conn.fetch(f"SELECT * FROM {family} WHERE id LIKE '%' ORDER BY id")
            assert [r["id"] for r in every] == [f"201-{HOME}-1", f"202-{DESK}-1"]
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM ps_aors")
        # Routing to a hot-desked user from the database (the README's "Connect your PBX").
        rows = await conn.fetch(
            "SELECT username, contact FROM extension_accounts WHERE extension = '201'"
            " ORDER BY hotdesk DESC, mac, slot"
        )
        assert [r["username"] for r in rows] == [f"201-{HOME}-1"]
    finally:
        await conn.close()


# --- (b) the hot-desk AGI, run for real ----------------------------------------------------------


@dataclass
class AgiRun:
    commands: list[str]
    variables: dict[str, str]
    verbose: list[str]
    prompts: list[str]
    stderr: str
    returncode: int | None

    @property
    def status(self) -> str | None:
        return self.variables.get("HOTDESK_STATUS")


@dataclass
class FakeAsterisk:
    """Runs the AGI script and answers it as res_agi.c does, from a channel's variables."""

    url: str
    environment: dict[str, str] = field(default_factory=dict)

    async def run(
        self, *args: str, endpoint: str | None = None, digits: tuple[str, ...] = ()
    ) -> AgiRun:
        channel = {"PROVISIONER_URL": self.url}
        if endpoint is not None:
            channel["CHANNEL(endpoint)"] = endpoint
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.environment}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(AGI),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        header = {
            "agi_request": "provisioner-hotdesk.agi",
            "agi_channel": f"PJSIP/{endpoint or 'trunk'}-00000001",
            "agi_language": "en",
            "agi_type": "PJSIP",
            "agi_uniqueid": "1800000000.1",
            "agi_callerid": "202",
            "agi_context": "provisioner-hotdesk",
            "agi_extension": "login",
            "agi_priority": "3",
            "agi_enhanced": "0.0",
            **{f"agi_arg_{i}": arg for i, arg in enumerate(args, start=1)},
        }
        block = "".join(f"{key}: {value}\n" for key, value in header.items()) + "\n"
        process.stdin.write(block.encode())
        await process.stdin.drain()
        run = AgiRun([], {}, [], [], "", None)
        pending = list(digits)
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
            if not line:
                break
            command = line.decode().rstrip("\n")
            run.commands.append(command)
            reply = self.answer(command, channel, pending, run)
            process.stdin.write(f"{reply}\n".encode())
            await process.stdin.drain()
        run.stderr = (await process.stderr.read()).decode()
        run.returncode = await asyncio.wait_for(process.wait(), timeout=30)
        return run

    @staticmethod
    def answer(command: str, channel: dict[str, str], pending: list[str], run: AgiRun) -> str:
        words = shlex.split(command)
        if words[:2] == ["GET", "VARIABLE"] and len(words) == 3:
            value = channel.get(words[2])
            return "200 result=0" if value is None else f"200 result=1 ({value})"
        if words[:3] == ["GET", "FULL", "VARIABLE"] and len(words) == 4:
            match = re.fullmatch(r"\$\{([^}]+)\}", words[3])
            value = channel.get(match.group(1)) if match else None
            return "200 result=0" if value is None else f"200 result=1 ({value})"
        if words[:2] == ["GET", "DATA"] and len(words) == 5:
            run.prompts.append(words[2])
            if not pending:
                return "200 result= (timeout)"
            return f"200 result={pending.pop(0)[: int(words[4])]}"
        if words[:2] == ["SET", "VARIABLE"] and len(words) == 4:
            run.variables[words[2]] = words[3]
            return "200 result=1"
        if words[0] == "VERBOSE" and len(words) == 3:
            run.verbose.append(words[1])
            return "200 result=1"
        return "510 Invalid or unknown command"


@pytest.fixture
def asterisk(service: TestClient[Any, Any]) -> FakeAsterisk:
    return FakeAsterisk(str(service.make_url("")).rstrip("/"), {"PROVISIONER_HOOK_SECRET": SECRET})


async def line_users(db: asyncpg.Connection, mac: str) -> list[tuple[int, str, bool]]:
    rows = await db.fetch(
        """SELECT a.slot, u.username, a.hotdesk FROM device_assignments a
           JOIN users u ON u.id = a.user_id WHERE a.mac = $1 ORDER BY a.slot""",
        mac,
    )
    return [(r["slot"], r["username"], r["hotdesk"]) for r in rows]


def assert_pin_kept_out(runs: list[AgiRun], *pins: str) -> None:
    """What the script writes (AGI commands on stdout, stderr) never carries a PIN."""
    for run in runs:
        for pin in pins:
            assert not any(pin in command for command in run.commands), run.commands
            assert pin not in run.stderr, run.stderr
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr, run.stderr


async def test_agi_login_route_and_logout(
    api: Api, asterisk: FakeAsterisk, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # The secret from a file only Asterisk may read, as installed.
    secret_file = tmp_path / "provisioner-hook.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o640)
    asterisk.environment = {"PROVISIONER_HOOK_SECRET_FILE": str(secret_file)}
    desk_endpoint = f"202-{DESK}-1"

    # Routing before: 201 rings alice's own line.
    route = await asterisk.run("route", "201")
    assert (route.status, route.variables["HOTDESK_DIAL"]) == ("ok", f"PJSIP/201-{HOME}-1")

    # Alice dials *55 at bob's phone: extension and PIN, asked by the script itself.
    login = await asterisk.run(
        "login", "agent-user", "agent-pass", endpoint=desk_endpoint, digits=("201", ALICE_PIN)
    )
    assert login.prompts == ["agent-user", "agent-pass"]
    assert (login.status, login.variables["HOTDESK_USER"]) == ("ok", "alice")
    assert await line_users(db, DESK) == [(1, "alice", True)]
    # The base URL came from the channel ([globals] PROVISIONER_URL), not the environment.
    assert any(c.startswith("GET FULL VARIABLE ${PROVISIONER_URL}") for c in login.commands)
    await api.settled()

    # 201 now rings the hot-desk login first, and her own phone.
    route = await asterisk.run("route", "201")
    assert route.status == "ok"
    assert route.variables["HOTDESK_DIAL"] == f"PJSIP/201-{DESK}-1&PJSIP/201-{HOME}-1"
    nobody = await asterisk.run("route", "999")
    assert (nobody.status, nobody.variables["HOTDESK_DIAL"]) == ("none", "")

    # *56 from the phone, which is alice's line now.
    logout = await asterisk.run("logout", endpoint=f"201-{DESK}-1")
    assert (logout.status, logout.variables["HOTDESK_USER"]) == ("ok", "alice")
    assert await line_users(db, DESK) == [(1, "bob", False)]  # bob's own line is back
    await api.settled()
    route = await asterisk.run("route", "201")
    assert route.variables["HOTDESK_DIAL"] == f"PJSIP/201-{HOME}-1"

    assert_pin_kept_out([route, login, nobody, logout], ALICE_PIN)


async def test_agi_refusals(
    api: Api, asterisk: FakeAsterisk, db: asyncpg.Connection, tmp_path: Path
) -> None:
    endpoint = f"202-{DESK}-1"
    runs = []

    wrong = await asterisk.run("login", endpoint=endpoint, digits=("201", "111222"))
    assert (wrong.status, wrong.variables["HOTDESK_USER"]) == ("pin_invalid", "")
    # An unknown extension is a wrong login too (nothing more is told to the caller).
    unknown = await asterisk.run("login", endpoint=endpoint, digits=("299", ALICE_PIN))
    assert unknown.status == "pin_invalid"
    runs += [wrong, unknown]
    assert await line_users(db, DESK) == [(1, "bob", False)]

    await db.execute(
        "UPDATE users SET pin_locked_until = now() + interval '10 minutes' WHERE username = 'alice'"
    )
    locked = await asterisk.run("login", endpoint=endpoint, digits=("201", ALICE_PIN))
    assert locked.status == "pin_locked"
    runs.append(locked)

    # No digits (timeout), not a provisioned phone, a wrong secret, an unreadable config.
    silent = await asterisk.run("login", endpoint=endpoint)
    assert silent.status == "error"
    trunk = await asterisk.run("login", endpoint="carrier-trunk", digits=("202", BOB_PIN))
    assert trunk.status == "error"
    assert trunk.prompts == []  # refused before asking for anything
    asterisk.environment = {"PROVISIONER_HOOK_SECRET": "not-the-secret"}
    forged = await asterisk.run("login", endpoint=endpoint, digits=("202", BOB_PIN))
    assert forged.status == "error"
    assert any("HTTP 401 signature_invalid" in v for v in forged.verbose), forged.verbose
    readable = tmp_path / "readable.secret"
    readable.write_text(SECRET)
    readable.chmod(0o644)
    asterisk.environment = {"PROVISIONER_HOOK_SECRET_FILE": str(readable)}
    exposed = await asterisk.run("login", endpoint=endpoint, digits=("202", BOB_PIN))
    assert exposed.status == "error"
    assert any("chmod 0640" in v for v in exposed.verbose), exposed.verbose
    assert SECRET not in "\n".join(exposed.commands)
    asterisk.url = "http://127.0.0.1:9"  # nothing listens there
    asterisk.environment = {"PROVISIONER_HOOK_SECRET": SECRET}
    down = await asterisk.run("route", "201")
    assert (down.status, down.variables["HOTDESK_DIAL"]) == ("error", "")
    runs += [silent, trunk, forged, exposed, down]

    assert await line_users(db, DESK) == [(1, "bob", False)]
    assert_pin_kept_out(runs, ALICE_PIN, BOB_PIN, "111222")


# --- provisioner hook sign / hook call ---------------------------------------------------------


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


async def provisioner(*args: str, secret: str | None = SECRET, stdin: str | None = None) -> Result:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(ROOT)}
    if secret is not None:
        env["PROVISIONER_HOOK_SECRET"] = secret
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provisioner",
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    given = None if stdin is None else stdin.encode()
    stdout, stderr = await asyncio.wait_for(process.communicate(given), timeout=90)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


async def test_hook_sign_matches_the_services_signature() -> None:
    for body in ['{"extension": "201", "pin": "480913"}', "", '{"mac": "00:15:65:aa:bb:61"}']:
        before = int(time.time())
        result = await provisioner("hook", "sign", body)
        after = int(time.time())
        assert result.returncode == 0, result.stderr
        header = result.stdout.strip()
        match = re.fullmatch(r"t=(\d+),v1=[0-9a-f]{64}", header)
        assert match, header
        stamp = int(match.group(1))
        assert before <= stamp <= after
        assert header == sign(SECRET, stamp, body.encode())
    missing = await provisioner("hook", "sign", "{}", secret=None)
    assert missing.returncode == 2
    assert "PROVISIONER_HOOK_SECRET" in missing.stderr


async def test_hook_call_against_the_service(
    service: TestClient[Any, Any], api: Api, db: asyncpg.Connection
) -> None:
    url = str(service.make_url("")).rstrip("/")
    valid = await provisioner(
        "hook", "call", "verify-pin", json.dumps({"extension": "201", "pin": ALICE_PIN}),
        "--url", url,
    )  # fmt: skip
    assert valid.returncode == 0, valid.stderr
    assert json.loads(valid.stdout) == {"valid": True}

    # "-": the body (with its PIN) from standard input, so it never shows in ps.
    piped = await provisioner(
        "hook", "call", "verify-pin", "-", "--url", url,
        # (keys in another order than above: the same body in the same second is a replay)
        stdin=json.dumps({"pin": ALICE_PIN, "extension": "201"}),
    )  # fmt: skip
    assert (piped.returncode, json.loads(piped.stdout)) == (0, {"valid": True})

    wrong = await provisioner(
        "hook", "call", "verify-pin", '{"extension": "201", "pin": "000000"}', "--url", url
    )
    assert (wrong.returncode, json.loads(wrong.stdout)) == (0, {"valid": False})

    forged = await provisioner(
        "hook", "call", "verify-pin", '{"extension": "202", "pin": "592014"}', "--url", url,
        secret="not-the-secret",
    )  # fmt: skip
    assert forged.returncode == 2
    assert json.loads(forged.stdout)["error"]["code"] == "signature_invalid"

    broken = await provisioner("hook", "call", "verify-pin", '{"extension": ', "--url", url)
    assert broken.returncode == 2
    assert "JSON" in broken.stderr
    assert broken.stdout == ""

    # A hook that changes something, as a shell script would call it.
    login = await provisioner(
        "hook", "call", "pin-login",
        json.dumps({"extension": "201", "pin": ALICE_PIN, "mac": DESK}), "--url", url,
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    assert json.loads(login.stdout) == {"user": "alice", "device": DESK}
    assert await line_users(db, DESK) == [(1, "alice", True)]
    await api.settled()

    # Where the phone registered (a PBX without AMI tells the service so).
    contact = f"sip:201-{DESK}-1@192.0.2.50:5060"
    registered = await provisioner(
        "hook", "call", "registered",
        json.dumps({"extension": f"201-{DESK}-1", "contact": contact}), "--url", url,
    )  # fmt: skip
    assert (registered.returncode, json.loads(registered.stdout)) == (0, {"device": DESK})
    assert await db.fetchval("SELECT sip_contact FROM devices WHERE mac = $1", DESK) == contact

    # A signed read, as a shell script does it: `provisioner hook sign ''` and curl.
    header = (await provisioner("hook", "sign", "")).stdout.strip()
    async with service.get(
        "/api/v1/pbx/extensions/201", headers={"X-Provisioner-Signature": header}
    ) as response:
        assert response.status == 200
        accounts = (await response.json())["accounts"]
    assert [(a["username"], a["contact"]) for a in accounts] == [
        (f"201-{DESK}-1", contact),
        (f"201-{HOME}-1", None),
    ]

    unreachable = await provisioner(
        "hook", "call", "logout", json.dumps({"mac": DESK}), "--url", "http://127.0.0.1:9"
    )
    assert unreachable.returncode == 1
    assert "Traceback" not in unreachable.stderr


# --- the shell examples of the README's "Connect your PBX", as written -------------------------


def doc_example(needle: str) -> str:
    """The ```sh block of the README's "Connect your PBX" that contains ``needle``."""
    readme = (ROOT / "README.md").read_text()
    doc = readme[readme.index("## Connect your PBX") : readme.index("## Web pages")]
    blocks = [b for b in re.findall(r"```sh\n(.*?)```", doc, re.DOTALL) if needle in b]
    assert len(blocks) == 1, needle
    return blocks[0]


async def shell(script: str, url: str) -> Result:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(ROOT),
        "PROVISIONER_HOOK_SECRET": SECRET,
        "PROVISIONER_URL": url,
    }
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-e",
        "-c",
        script.replace("https://provisioner.example.net", url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


async def test_the_shell_examples_of_the_docs_work(
    service: TestClient[Any, Any], api: Api, db: asyncpg.Connection
) -> None:
    url = str(service.make_url("")).rstrip("/")
    login = await shell(doc_example("hook call pin-login"), url)
    assert login.returncode == 0, login.stderr
    assert json.loads(login.stdout) == {"user": "alice", "device": DESK}
    await api.settled()

    registered = await shell(doc_example("hook call registered"), url)
    assert (registered.returncode, json.loads(registered.stdout)) == (0, {"device": DESK}), (
        registered.stderr
    )

    lookup = await shell(doc_example("/api/v1/pbx/extensions/201"), url)
    assert lookup.returncode == 0, lookup.stderr
    accounts = json.loads(lookup.stdout)["accounts"]
    assert [(a["username"], a["hotdesk"]) for a in accounts] == [
        (f"201-{DESK}-1", True),
        (f"201-{HOME}-1", False),
    ]
    assert accounts[0]["contact"] == f"sip:201-{DESK}-1@192.0.2.50:5060"

    logout = await shell(doc_example("/hooks/pbx/logout"), url)
    assert logout.returncode == 0, logout.stderr
    assert json.loads(logout.stdout) == {"logged_out": ["alice"]}
    assert await line_users(db, DESK) == [(1, "bob", False)]  # bob's own line is back

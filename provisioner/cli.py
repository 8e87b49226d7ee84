"""The ``provisioner`` command.

Exit codes: 0 success, 2 bad input (message on stderr), 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import aiohttp
import asyncpg
from aiohttp import web

from provisioner import (
    devices_service,
    directory_sync,
    discovery,
    passwords,
    pbx,
    pins,
    provisioning,
    sites,
    users,
)
from provisioner.audit import Actor
from provisioner.core import Core, open_core
from provisioner.db import create_pool, migrate
from provisioner.devices import ADAPTERS
from provisioner.embedded import EmbeddedPostgres, EmbeddedPostgresError, NoClusterError
from provisioner.errors import Kind, ProvisionerError
from provisioner.outage import wait_for_database
from provisioner.progress import Progress
from provisioner.settings import LOOPBACK_WARNING, Settings, SettingsError, parse_host_port
from provisioner.signals import die_with_parent, stop_requested
from provisioner.web.hooks import HOOKS, SIGNATURE_HEADER, sign

log = logging.getLogger("provisioner")

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
_BAD_INPUT_KINDS = {Kind.INVALID, Kind.UNPROCESSABLE, Kind.NOT_FOUND, Kind.CONFLICT, Kind.FORBIDDEN}
_JSON = {"Content-Type": "application/json"}


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="provisioner", description="Phone-provisioning integration service for PBXs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="migrate, then run the HTTP service")
    serve.add_argument("--listen", metavar="HOST:PORT", help="overrides PROVISIONER_LISTEN")
    serve.add_argument("--no-worker", action="store_true", help="do not run the push worker")
    serve.set_defaults(handler=cmd_serve)

    sub.add_parser("worker", help="run a push worker only (for scale-out)").set_defaults(
        handler=cmd_worker
    )
    # Started by `serve` for each extra process on PROVISIONER_PHONES_LISTEN. Without `help`,
    # argparse leaves it out of the command list (help=SUPPRESS would show "==SUPPRESS==").
    sub.add_parser("phones-server").set_defaults(handler=cmd_phones_server)

    reprovision = sub.add_parser(
        "reprovision", help="re-render devices and make them fetch now, with a progress bar"
    )
    which = reprovision.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", metavar="MAC")
    which.add_argument("--user", metavar="USERNAME")
    which.add_argument("--all", action="store_true")
    reprovision.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to follow delivery (0: queue and return)",
    )
    reprovision.add_argument(
        "--rotate-sip",
        action="store_true",
        help="with --device: give every line a new SIP password (the registrar's digests follow)",
    )
    reprovision.set_defaults(handler=cmd_reprovision)

    pbx = sub.add_parser("pbx", help="connect the PBX: accounts for its registrar").add_subparsers(
        dest="pbx_command", required=True, metavar="ACTION"
    )
    pbx_grant = pbx.add_parser(
        "grant", help="let an existing database role read the PBX views (schema pbx) only"
    )
    pbx_grant.add_argument("role")
    pbx_grant.set_defaults(handler=cmd_pbx_grant)
    pbx_export = pbx.add_parser(
        "export", help="write the line accounts as a PBX config include (no clear passwords)"
    )
    pbx_export.add_argument("--format", choices=["pjsip"], required=True)
    pbx_export.add_argument("--output", required=True, metavar="FILE")
    pbx_export.add_argument("--force", action="store_true", help="replace an existing FILE")
    pbx_export.set_defaults(handler=cmd_pbx_export)

    hook = sub.add_parser("hook", help="call the PBX hooks from shell scripts").add_subparsers(
        dest="hook_command", required=True, metavar="ACTION"
    )
    hook_sign = hook.add_parser(
        "sign", help="print the X-Provisioner-Signature header value for BODY (now)"
    )
    hook_sign.add_argument("body", metavar="BODY", help="the exact request body ('' for GET)")
    hook_sign.set_defaults(handler=cmd_hook_sign)
    hook_call = hook.add_parser(
        "call", help="call hook NAME with JSON, signed; print the answer (exit 0 on 2xx)"
    )
    hook_call.add_argument("name", choices=HOOKS, metavar="NAME")
    hook_call.add_argument(
        "json", metavar="JSON", help="the body; - reads it from standard input (keeps a PIN off ps)"
    )
    hook_call.add_argument(
        "--url", help="the service's base URL (default: PROVISIONER_PUBLIC_URL)", default=None
    )
    hook_call.set_defaults(handler=cmd_hook_call)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        handler=cmd_migrate
    )
    info = sub.add_parser("info", help="show the settings in effect, secrets masked")
    info.add_argument(
        "--show-secrets",
        action="store_true",
        help="show the phones' bootstrap password in clear",
    )
    info.set_defaults(handler=cmd_info)

    user = sub.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", required=True, metavar="ACTION"
    )
    add = user.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--extension")
    add.add_argument("--email")
    add.add_argument("--name", help="display name (default: the username)")
    add.add_argument("--backend", choices=users.AUTH_BACKENDS, default="local")
    add.add_argument("--language", choices=users.LANGUAGES, default="de")
    add.add_argument("--admin", action="store_true", help="give the user the admin role")
    add.set_defaults(handler=cmd_user_add)

    set_pin = user.add_parser("set-pin", help="set a user's phone PIN (read from stdin)")
    set_pin.add_argument("username")
    set_pin.set_defaults(handler=cmd_user_set_pin)

    set_password = user.add_parser(
        "set-password", help="set a user's client password (read from stdin for set modes)"
    )
    set_password.add_argument("username")
    set_password.add_argument("--mode", choices=passwords.MODES, default="set")
    set_password.add_argument(
        "--permanent",
        action="store_true",
        help="do not ask the user to choose a new password at next login",
    )
    set_password.set_defaults(handler=cmd_user_set_password)

    device = sub.add_parser("device", help="manage devices").add_subparsers(
        dest="device_command", required=True, metavar="ACTION"
    )
    device_add = device.add_parser("add", help="add a device")
    device_add.add_argument("mac")
    device_add.add_argument("--vendor", required=True, choices=sorted(ADAPTERS))
    device_add.add_argument("--model", required=True)
    device_add.add_argument("--label", default="")
    device_add.add_argument("--site", default="default")
    device_add.add_argument(
        "--user",
        action="append",
        default=[],
        metavar="USERNAME[:SLOT]",
        help="put a user on a line or handset (slot 1 by default); repeatable",
    )
    device_add.set_defaults(handler=cmd_device_add)
    device_import = device.add_parser(
        "import", help="import devices from CSV (mac,vendor,model[,label,site,user,slot])"
    )
    device_import.add_argument("file", metavar="FILE.csv")
    device_import.set_defaults(handler=cmd_device_import)
    device_api = device.add_parser(
        "api-access",
        help="how to reach the device's management API (Mitel OMM: OM AXI); password on stdin",
    )
    device_api.add_argument("mac")
    device_api.add_argument("--host", required=True)
    device_api.add_argument("--port", type=int)
    device_api.add_argument("--username", required=True)
    device_api.add_argument(
        "--fingerprint", help="SHA-256 of the device's TLS certificate (pins it)"
    )
    device_api.set_defaults(handler=cmd_device_api_access)
    device_code = device.add_parser(
        "access-code",
        help="show or replace a DECT system's access code for subscribing handsets",
    )
    device_code.add_argument("mac")
    code_action = device_code.add_mutually_exclusive_group()
    code_action.add_argument("--new", action="store_true", help="replace it with a random code")
    code_action.add_argument("--set", dest="code", metavar="NNNN", help="replace it with NNNN")
    device_code.set_defaults(handler=cmd_device_access_code)
    device_render = device.add_parser("render", help="print what the device would get now")
    device_render.add_argument("mac")
    device_render.add_argument("file", nargs="?")
    device_render.add_argument("--mask", action="store_true", help="hide PINs and passwords")
    device_render.set_defaults(handler=cmd_device_render)
    device.add_parser(
        "discovered",
        help="list phones that fetched with the bootstrap credential but were never added",
    ).set_defaults(handler=cmd_device_discovered)

    directory = sub.add_parser(
        "directory", help="the LDAP directory (PROVISIONER_LDAP_*)"
    ).add_subparsers(dest="directory_command", required=True, metavar="ACTION")
    directory_sync_cmd = directory.add_parser(
        "sync", help="bring the directory's users in now, with progress on a terminal"
    )
    directory_sync_cmd.add_argument(
        "--dry-run", action="store_true", help="report what would change, change nothing"
    )
    directory_sync_cmd.set_defaults(handler=cmd_directory_sync)

    site = sub.add_parser("site", help="manage sites").add_subparsers(
        dest="site_command", required=True, metavar="ACTION"
    )
    site_set = site.add_parser("set", help="create or change a site")
    site_set.add_argument("name", nargs="?", default="default")
    site_set.add_argument("--registrar", dest="registrar_host", metavar="HOST")
    site_set.add_argument("--port", dest="registrar_port", type=int, metavar="PORT")
    site_set.add_argument("--transport", choices=sites.TRANSPORTS)
    site_set.add_argument("--timezone", metavar="AREA/CITY")
    site_set.add_argument("--language", choices=users.LANGUAGES)
    site_set.add_argument("--ntp", dest="ntp_server", metavar="HOST")
    site_set.add_argument(
        "--sip-realm",
        dest="sip_realm",
        metavar="DOMAIN",
        help="digest realm of the site's line accounts on the registrar (default: the registrar)",
    )
    site_set.add_argument(
        "--maintenance-window",
        dest="maintenance_window",
        metavar="HH:MM-HH:MM",
        help="when devices that restart to apply a change are pushed (site time; 02:00-04:00)",
    )
    site_set.set_defaults(handler=cmd_site_set)
    return parser


#: How every log line looks (the fail2ban filter in deploy/ matches it).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
INITIAL_ADMIN_PASSWORD_FILE = "initial-admin-password"  # noqa: S105 (a file name)


def main(argv: list[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        settings = Settings.from_env()
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        code = handler(args, settings)
    except SettingsError as exc:
        print(f"provisioner: {exc}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except ProvisionerError as exc:
        print(f"provisioner: {exc.message} ({exc.code})", file=sys.stderr)
        code = EXIT_BAD_INPUT if exc.kind in _BAD_INPUT_KINDS else EXIT_FAILURE
    except NoClusterError as exc:
        print(f"provisioner: {exc}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except (CliError, EmbeddedPostgresError) as exc:
        print(f"provisioner: {exc}", file=sys.stderr)
        code = getattr(exc, "exit_code", EXIT_FAILURE)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Database unreachable or refusing us, listen address in use, unreadable key file, ...:
        # one line, not a traceback.
        print(f"provisioner: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        code = EXIT_FAILURE
    sys.exit(code)


def _embedded(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.data_dir, settings.postgres_binaries)


@contextmanager
def resolved_database(settings: Settings, *, create: bool = False) -> Iterator[Settings]:
    """Settings with a database URL: the configured one, or the embedded cluster's, which only
    ``create`` (serve, migrate) initialises: any other command on a data directory without one
    stops with one line naming the directory, rather than making a second database."""
    if settings.database_url is not None:
        yield settings
        return
    embedded = _embedded(settings)
    dsn = embedded.start(create=create)
    try:
        yield replace(settings, database_url=dsn)
    finally:
        embedded.stop()


def _run_with_core(settings: Settings, work: Callable[[Core], Awaitable[int]]) -> int:
    async def run(resolved: Settings) -> int:
        async with open_core(resolved) as core:
            return await work(core)

    with resolved_database(settings) as resolved:
        return asyncio.run(run(resolved))


def _read_secret(prompt: str) -> str:
    """A secret from the terminal (not echoed) or the first line of piped stdin."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    line = sys.stdin.readline()
    if not line:
        raise CliError("expected the value on standard input", EXIT_BAD_INPUT)
    return line.rstrip("\r\n")


# --- commands ----------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def run(dsn: str) -> list[str]:
        pool = await create_pool(dsn, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await migrate(conn)
        finally:
            await pool.close()

    with resolved_database(settings, create=True) as resolved:
        assert resolved.database_url is not None
        applied = asyncio.run(run(resolved.database_url))
    print("\n".join(f"applied {name}" for name in applied) or "database is up to date")
    return 0


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    described = settings.describe()
    described["phones_bootstrap"] = _bootstrap_description(settings, args.show_secrets)
    width = max(len(k) for k in described)
    for key, value in described.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _bootstrap_description(settings: Settings, show: bool) -> str:
    """The phones' bootstrap credential: configured, generated (masked unless ``show``: phones
    need it, screens and logs do not) or not yet."""
    if settings.provisioning_user and settings.provisioning_password:
        return f"{settings.provisioning_user} / *** (PROVISIONER_PROVISIONING_PASSWORD)"
    not_yet = "generated on first start"
    if not settings.secret_key_file.exists():
        return not_yet
    if settings.database_url is None and not _embedded(settings).exists():
        return not_yet

    async def read(resolved: Settings) -> str:
        async with open_core(resolved, run_migrations=False) as core:
            async with core.pool.acquire() as conn:
                if not await conn.fetchval("SELECT to_regclass('generated_secrets') IS NOT NULL"):
                    return not_yet
            user, password = await provisioning.bootstrap_credential(core)
            if show:
                return f"{user} / {password}"
            return f"{user} / *** (provisioner info --show-secrets shows it)"

    with resolved_database(settings) as resolved:
        return asyncio.run(read(resolved))


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> int:
    new = users.NewUser(
        username=args.username,
        display_name=args.name or args.username,
        extension=args.extension,
        email=args.email,
        auth_backend=args.backend,
        language=args.language,
        role="admin" if args.admin else "user",
    )

    async def work(core: Core) -> int:
        await users.create_user(core, Actor.cli(), new)
        print(f"created user {new.username}")
        return 0

    return _run_with_core(settings, work)


def cmd_user_set_pin(args: argparse.Namespace, settings: Settings) -> int:
    pin = _read_secret("New PIN: ")

    async def work(core: Core) -> int:
        change = await pins.change_pin(core, Actor.cli(), args.username, pin)
        print(f"PIN of {args.username} changed; {len(change.push_jobs)} device push(es) queued")
        return 0

    return _run_with_core(settings, work)


def cmd_user_set_password(args: argparse.Namespace, settings: Settings) -> int:
    password = None if args.mode == "random_and_email" else _read_secret("New password: ")

    async def work(core: Core) -> int:
        change = await passwords.admin_set_password(
            core,
            Actor.cli(),
            args.username,
            mode=args.mode,
            password=password,
            temporary=not args.permanent,
        )
        sent = " and emailed" if change.email_sent else ""
        print(f"password of {args.username} changed{sent}")
        return 0

    return _run_with_core(settings, work)


def _parse_user_slot(text: str) -> devices_service.Assignment:
    username, _, slot = text.partition(":")
    if slot and not slot.isdigit():
        raise CliError(f"--user {text}: the slot must be a number", EXIT_BAD_INPUT)
    return devices_service.Assignment(int(slot or 1), username)


def cmd_device_add(args: argparse.Namespace, settings: Settings) -> int:
    new = devices_service.NewDevice(
        mac=args.mac, vendor=args.vendor, model=args.model, label=args.label, site=args.site
    )
    assignments = [_parse_user_slot(u) for u in args.user]

    async def work(core: Core) -> int:
        row = await devices_service.create_device(core, Actor.cli(), new, assignments)
        print(f"added {row['vendor']} {row['model']} {row['mac']}")
        return 0

    return _run_with_core(settings, work)


def cmd_device_import(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with open(args.file, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{args.file}: {exc}", EXIT_BAD_INPUT) from None

    async def work(core: Core) -> int:
        progress: Progress | None = None

        def rendered(done: int, total: int) -> None:
            nonlocal progress
            progress = progress or Progress(total, "devices")
            progress.update(done, "rendered")

        report = await devices_service.import_csv(core, Actor.cli(), text, rendered)
        if progress is not None:
            progress.finish()
        for line, message in report.errors:
            where = f"{args.file}:{line}" if line else args.file
            print(f"{where}: {message}", file=sys.stderr)
        if report.errors:
            print(f"nothing imported: {len(report.errors)} row(s) refused", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"imported {report.imported} device(s)")
        return 0

    return _run_with_core(settings, work)


def cmd_device_api_access(args: argparse.Namespace, settings: Settings) -> int:
    access = devices_service.ApiAccessInput(
        host=args.host,
        port=args.port,
        username=args.username,
        password=_read_secret("API password: "),
        fingerprint=args.fingerprint,
    )

    async def work(core: Core) -> int:
        await devices_service.set_api_access(core, Actor.cli(), args.mac, access)
        print(f"API access of {devices_service.parse_mac(args.mac)} stored")
        return 0

    return _run_with_core(settings, work)


def cmd_device_access_code(args: argparse.Namespace, settings: Settings) -> int:
    async def work(core: Core) -> int:
        if args.new or args.code is not None:
            code, _ = await devices_service.set_access_code(core, Actor.cli(), args.mac, args.code)
        else:
            details = await devices_service.find_device(core, Actor.cli(), args.mac)
            if details.access_code is None:
                raise CliError(
                    f"{details.device['vendor']} {details.device['model']} has no access code "
                    "(only DECT systems do)",
                    EXIT_BAD_INPUT,
                )
            code = details.access_code
        print(code)
        return 0

    return _run_with_core(settings, work)


def cmd_device_render(args: argparse.Namespace, settings: Settings) -> int:
    async def work(core: Core) -> int:
        mac = devices_service.parse_mac(args.mac)
        try:
            files = await devices_service.preview_device(core, Actor.cli(), mac, mask=args.mask)
        except ProvisionerError as exc:
            if exc.code != "render_failed":
                raise
            # The device's setup, not the command line, is at fault: a failure, not bad input.
            raise CliError(exc.message) from None
        if args.file:
            if args.file not in files:
                raise CliError(
                    f"{mac} has no file {args.file}; it has: {', '.join(sorted(files))}",
                    EXIT_BAD_INPUT,
                )
            sys.stdout.buffer.write(files[args.file])
            return 0
        for name in sorted(files):
            sys.stdout.buffer.write(f"==> {name} <==\n".encode() + files[name] + b"\n")
        return 0

    return _run_with_core(settings, work)


def cmd_device_discovered(args: argparse.Namespace, settings: Settings) -> int:
    """One line per discovered phone, most recently seen first; adopt with ``device add``."""

    def when(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    async def work(core: Core) -> int:
        rows = await discovery.list_discovered(core, Actor.cli())
        if not rows:
            print("no phone discovered")
            return 0
        table = [("MAC", "VENDOR", "MODEL", "FIRMWARE", "SOURCE", "FIRST SEEN", "LAST SEEN")]
        table += [
            (
                r["mac"],
                r["vendor"],
                r["model"] or "-",
                r["firmware"] or "-",
                r["source"],
                when(r["first_seen"]),
                when(r["last_seen"]),
            )
            for r in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        return 0

    return _run_with_core(settings, work)


def cmd_directory_sync(args: argparse.Namespace, settings: Settings) -> int:
    tty = sys.stderr.isatty()

    def progress(report: directory_sync.SyncReport) -> None:
        line = (
            f"page {report.pages}: {report.entries} entries read, {report.created} created, "
            f"{report.updated} updated, {report.unchanged} unchanged"
        )
        print(("\r" if tty else "") + line, end="" if tty else "\n", file=sys.stderr, flush=True)

    async def work(core: Core) -> int:
        report = await directory_sync.sync(
            core, Actor.cli(), dry_run=args.dry_run, progress=progress
        )
        if tty:
            print(file=sys.stderr)
        for item in report.conflicts:
            print(f"conflict: {item['username']} ({item['dn']}): {item['reason']}")
        for item in report.skipped:
            print(f"skipped: {item['dn']}: {item['reason']}")
        print(
            ("dry run: would have " if args.dry_run else "")
            + f"created {report.created}, updated {report.updated}, enabled {report.enabled}, "
            f"disabled {report.disabled}, unchanged {report.unchanged}"
        )
        return 0

    return _run_with_core(settings, work)


def cmd_site_set(args: argparse.Namespace, settings: Settings) -> int:
    changes = {
        name: getattr(args, name) for name in sites.FIELDS if getattr(args, name, None) is not None
    }

    async def work(core: Core) -> int:
        row = await sites.set_site(core, Actor.cli(), args.name, changes)
        print(", ".join(f"{k}={v}" for k, v in sites.site_view(row).items()))
        return 0

    return _run_with_core(settings, work)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run a push worker until SIGINT/SIGTERM. Never exits for want of the database: at start
    it waits for it (logging that once), and the worker rides out outages later on."""
    from provisioner.contacts import following
    from provisioner.outage import Outage, database_unavailable
    from provisioner.push import running_worker
    from provisioner.workerprocess import REPORTS_ENV, report_to_parent, write_report

    # Started by ``serve``: its state and metrics go to ``serve`` (provisioner.workerprocess).
    reporting = os.environ.get(REPORTS_ENV) == "1"
    die_with_parent()

    async def work(core: Core, stop: asyncio.Event) -> None:
        async with running_worker(core) as worker:
            log.info("push worker running")
            reports = asyncio.create_task(report_to_parent(worker)) if reporting else None
            try:
                async with following(core):  # Asterisk's contacts, with PROVISIONER_AMI_URL
                    await stop.wait()
            finally:
                if reports is not None:
                    reports.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reports

    async def run(resolved: Settings) -> int:
        stop = stop_requested()
        start = Outage(log, "push worker")
        while not stop.is_set():
            async with contextlib.AsyncExitStack() as stack:
                try:
                    core = await stack.enter_async_context(open_core(resolved))
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    delay = start.lost(exc)
                    if reporting:
                        write_report({"state": "down"})
                else:
                    start.reached()
                    await work(core, stop)
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        return 0

    _install_uvloop()
    with resolved_database(settings) as resolved:
        return asyncio.run(run(resolved))


def cmd_phones_server(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.app import ssl_context
    from provisioner.web.phoneserver import run_standalone

    if settings.database_url is None or settings.phones_listen is None:
        raise CliError("phones-server is started by serve", EXIT_BAD_INPUT)
    die_with_parent()
    _install_uvloop()
    asyncio.run(run_standalone(settings, ssl_context(settings)))
    return 0


def cmd_pbx_grant(args: argparse.Namespace, settings: Settings) -> int:
    async def work(core: Core) -> int:
        left = await pbx.grant(core, Actor.cli(), args.role)
        print(f"role {args.role} may read schema pbx and nothing else of ours")
        if left:
            print(f"a database superuser must still run: {left}", file=sys.stderr)
        return 0

    return _run_with_core(settings, work)


def cmd_pbx_export(args: argparse.Namespace, settings: Settings) -> int:
    output = Path(args.output)
    if output.exists() and not args.force:
        raise CliError(f"{output} exists; use --force to replace it", EXIT_BAD_INPUT)

    async def work(core: Core) -> int:
        text = await pbx.pjsip_config(core, Actor.cli())
        pbx.write_new_file(output, text, force=args.force)
        print(f"wrote {text.count('type=endpoint')} endpoint(s) to {output}")
        return 0

    return _run_with_core(settings, work)


def _hook_secret(settings: Settings) -> str:
    if not settings.hook_secret:
        raise CliError(
            "set PROVISIONER_HOOK_SECRET (the secret shared with the PBX)", EXIT_BAD_INPUT
        )
    return settings.hook_secret


def cmd_hook_sign(args: argparse.Namespace, settings: Settings) -> int:
    print(sign(_hook_secret(settings), int(time.time()), args.body.encode()))
    return 0


def cmd_hook_call(args: argparse.Namespace, settings: Settings) -> int:
    secret = _hook_secret(settings)
    text = sys.stdin.read() if args.json == "-" else args.json
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"JSON: {exc}", EXIT_BAD_INPUT) from None
    raw = json.dumps(body).encode()
    base = (args.url or settings.public_url).rstrip("/")
    status, answer = asyncio.run(_post_hook(f"{base}/hooks/pbx/{args.name}", secret, raw))
    print(answer)
    if 200 <= status < 300:
        return 0
    return EXIT_BAD_INPUT if 400 <= status < 500 else EXIT_FAILURE


async def _post_hook(url: str, secret: str, raw: bytes) -> tuple[int, str]:
    headers = {SIGNATURE_HEADER: sign(secret, int(time.time()), raw), **_JSON}
    timeout = aiohttp.ClientTimeout(total=15)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=raw, headers=headers) as response,
        ):
            return response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CliError(f"{url}: {type(exc).__name__}: {exc}") from None


def cmd_reprovision(args: argparse.Namespace, settings: Settings) -> int:
    if args.rotate_sip and not args.device:
        raise CliError("--rotate-sip goes with --device", EXIT_BAD_INPUT)

    async def work(core: Core) -> int:
        actor = Actor.cli()
        if args.device:
            jobs = await devices_service.reprovision_device(
                core, actor, args.device, rotate_sip=args.rotate_sip
            )
        elif args.user:
            jobs = await devices_service.reprovision_user(core, actor, args.user)
        else:
            jobs = await devices_service.reprovision_all(core, actor)
        print(f"queued {len(jobs)} push job(s)", file=sys.stderr)
        if not jobs or args.wait <= 0:
            return 0
        states = await _follow(core, jobs, args.wait)
        scheduled = states.get("scheduled", 0)
        print(
            f"notified {states.get('notified', 0)}, fetched {states.get('fetched', 0)}, "
            f"failed {states.get('failed', 0)}, still pending {states.get('pending', 0)}"
            + (f", held for the maintenance window {scheduled}" if scheduled else "")
        )
        # Success means delivery confirmed: every device fetched its new revision, except the
        # ones that restart to apply it, which wait for their site's maintenance window.
        return 0 if states.get("fetched", 0) + scheduled == len(jobs) else EXIT_FAILURE

    return _run_with_core(settings, work)


async def _follow(core: Core, jobs: list[int], wait: float) -> dict[str, int]:
    """Show a progress bar until every job is fetched, failed or held for its maintenance
    window, or ``wait`` runs out."""
    deadline = time.monotonic() + wait
    progress = Progress(len(jobs), "devices notified, held for a window or done")
    while True:
        states = await devices_service.job_states(core, jobs)
        done = states.get("fetched", 0) + states.get("failed", 0) + states.get("scheduled", 0)
        progress.update(
            done + states.get("notified", 0),
            f"(fetched {states.get('fetched', 0)}, failed {states.get('failed', 0)})",
        )
        if done == len(jobs) or time.monotonic() >= deadline:
            progress.finish()
            return states
        await asyncio.sleep(0.5)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.app import create_app, serve

    if args.listen:
        listen = parse_host_port("--listen", args.listen)
        explicit_url = os.environ.get("PROVISIONER_PUBLIC_URL")
        settings = replace(
            settings,
            listen=listen,
            public_url=settings.public_url if explicit_url else f"http://{listen}",
        )
    log.info("data directory %s", settings.data_dir)
    if settings.public_url_is_loopback:
        log.warning("PROVISIONER_PUBLIC_URL %s is %s", settings.public_url, LOOPBACK_WARNING)
    _install_uvloop()

    async def run(app: web.Application, resolved: Settings) -> None:
        # An external database may not be up yet (both starting at boot): wait, then migrate.
        assert resolved.database_url is not None
        if await wait_for_database(resolved.database_url, stop_requested(), log, "serve"):
            await serve(app, resolved)

    with resolved_database(settings, create=True) as resolved:
        app = create_app(resolved, worker_process=not args.no_worker)
        app.on_startup.append(_announce_admin)
        asyncio.run(run(app, resolved))
    return 0


async def _announce_admin(app: web.Application) -> None:
    from provisioner.web.keys import CORE

    core = app[CORE]
    created = await passwords.bootstrap_admin(core, core.settings.admin_password)
    if created is not None:
        hand_over_admin_password(created, core.settings.data_dir)


def hand_over_admin_password(password: str, data_dir: Path) -> None:
    """Show the first admin's one-time password on the terminal; with no terminal (nohup,
    systemd: stdout goes to a log) write it to a file only its owner may read, and log where."""
    if sys.stdout.isatty():
        print(
            f"\nCreated user 'admin' with the one-time password: {password}\n"
            "It must be changed at first login.\n",
            flush=True,
        )
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / INITIAL_ADMIN_PASSWORD_FILE
    path.unlink(missing_ok=True)  # a new file, so it is created with mode 0600
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    log.warning(
        "created user 'admin'; its one-time password is in %s (it must be changed at first "
        "login; delete the file then)",
        path,
    )


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

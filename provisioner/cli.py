"""The ``provisioner`` command.

Exit codes: 0 success, 2 bad input (message on stderr), 1 any other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import NoReturn

import asyncpg
from aiohttp import web

from provisioner import passwords, pins, users
from provisioner.audit import Actor
from provisioner.core import Core, open_core
from provisioner.db import create_pool, migrate
from provisioner.embedded import EmbeddedPostgres, EmbeddedPostgresError
from provisioner.errors import Kind, ProvisionerError
from provisioner.settings import Settings, SettingsError, parse_host_port

log = logging.getLogger("provisioner")

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
_BAD_INPUT_KINDS = {Kind.INVALID, Kind.UNPROCESSABLE, Kind.NOT_FOUND, Kind.CONFLICT, Kind.FORBIDDEN}


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

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        handler=cmd_migrate
    )
    sub.add_parser("info", help="show the settings in effect, secrets masked").set_defaults(
        handler=cmd_info
    )

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
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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


@contextmanager
def resolved_database(settings: Settings) -> Iterator[Settings]:
    """Settings with a database URL: the configured one, or the embedded cluster's."""
    if settings.database_url is not None:
        yield settings
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    dsn = embedded.start()
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

    with resolved_database(settings) as resolved:
        assert resolved.database_url is not None
        applied = asyncio.run(run(resolved.database_url))
    print("\n".join(f"applied {name}" for name in applied) or "database is up to date")
    return 0


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    described = settings.describe()
    if settings.provisioning_user is None:
        described["provisioning_credential"] = "generated on first start"
    width = max(len(k) for k in described)
    for key, value in described.items():
        print(f"{key:<{width}}  {value}")
    return 0


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


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from provisioner.app import create_app

    if args.listen:
        listen = parse_host_port("--listen", args.listen)
        explicit_url = os.environ.get("PROVISIONER_PUBLIC_URL")
        settings = replace(
            settings,
            listen=listen,
            public_url=settings.public_url if explicit_url else f"http://{listen}",
        )
    _install_uvloop()
    with resolved_database(settings) as resolved:
        app = create_app(resolved)
        app.on_startup.append(_announce_admin)
        web.run_app(
            app,
            host=resolved.listen.host,
            port=resolved.listen.port,
            print=lambda *a: log.info("listening on http://%s", resolved.listen),
            access_log_format='%a "%r" %s %b %Tfs',
        )
    return 0


async def _announce_admin(app: web.Application) -> None:
    from provisioner.web.keys import CORE

    core = app[CORE]
    created = await passwords.bootstrap_admin(core, core.settings.admin_password)
    if created is not None:
        # Printed once, to the terminal only: it must not end up in a log file.
        print(
            f"\nCreated user 'admin' with the one-time password: {created}\n"
            "It must be changed at first login.\n",
            flush=True,
        )


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

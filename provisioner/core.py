"""The resources every use case works with, opened once per process and closed in reverse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from provisioner.db import create_pool, migrate
from provisioner.errors import Kind, ProvisionerError
from provisioner.hashing import Hasher
from provisioner.mail import Mailer
from provisioner.pin_verifier import PinVerifier, rekey_argon2_verifiers
from provisioner.pushwake import PushWaker
from provisioner.sealing import seal_clear_files
from provisioner.settings import Settings
from provisioner.vault import Vault

if TYPE_CHECKING:
    from provisioner.directory import Directory


@dataclass(frozen=True)
class Core:
    settings: Settings
    pool: asyncpg.Pool
    vault: Vault
    hasher: Hasher
    pin_verifier: PinVerifier
    mailer: Mailer | None
    push_wake: PushWaker
    """Wakes the push workers after a commit that queued or re-timed push jobs."""
    directory: Directory | None = None
    """The LDAP directory, when ``PROVISIONER_LDAP_URL`` is set."""

    def require_mailer(self) -> Mailer:
        if self.mailer is None:
            raise ProvisionerError(
                Kind.UNAVAILABLE,
                "mail_not_configured",
                "No mail server is configured (PROVISIONER_SMTP_URL).",
            )
        return self.mailer


@asynccontextmanager
async def open_core(
    settings: Settings, *, run_migrations: bool = True, pool_size: tuple[int, int] = (2, 10)
) -> AsyncIterator[Core]:
    """Connect, migrate and yield a :class:`Core`; ``settings.database_url`` must be resolved."""
    if settings.database_url is None:
        raise RuntimeError("the database URL must be resolved before opening the core")
    vault = Vault.from_key_file(settings.secret_key_file)
    pool = await create_pool(settings.database_url, min_size=pool_size[0], max_size=pool_size[1])
    hasher = Hasher()
    try:
        if run_migrations:
            async with pool.acquire() as conn:
                await migrate(conn)
            await seal_clear_files(vault, pool)  # the data step of migration 009
            await rekey_argon2_verifiers(vault, pool)
        mailer = Mailer(settings.smtp, settings.mail_from) if settings.smtp else None
        directory = _open_directory(settings)
        core = Core(
            settings=settings,
            pool=pool,
            vault=vault,
            hasher=hasher,
            pin_verifier=PinVerifier(vault),
            mailer=mailer,
            push_wake=PushWaker(pool),
            directory=directory,
        )
        try:
            yield core
        finally:
            await core.push_wake.close()
            if directory is not None:
                directory.close()
    finally:
        hasher.close()
        await pool.close()


def _open_directory(settings: Settings) -> Directory | None:
    if settings.ldap is None:
        return None
    # Imported only when a directory is configured: python-ldap is an optional dependency.
    from provisioner.directory import Directory

    return Directory(settings.ldap)

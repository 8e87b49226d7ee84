"""Phone PINs: the policy, storage (verifier + encrypted copy) and the change use case."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from provisioner import audit, provisioning, store
from provisioner.audit import Actor
from provisioner.core import Core
from provisioner.errors import Kind, ProvisionerError
from provisioner.settings import PIN_MAX_LENGTH
from provisioner.users import get_user, require_self_or_admin
from provisioner.vault import pin_purpose

MAX_LENGTH = PIN_MAX_LENGTH

# The most chosen PINs in published analyses of leaked PIN sets, beyond the patterns the rules
# below catch anyway (repeated digits, straight runs).
COMMON_PINS = frozenset(
    {
        "1212", "1122", "1313", "2000", "2001", "1010", "1004", "6969", "1984", "2580",
        "0852", "1998", "1999", "1990", "2020", "2021", "2022", "2023", "2024", "2025",
        "121212", "112233", "123123", "123321", "131313", "101010", "696969", "159753",
        "147258", "246810", "202020", "520520", "102030", "010203", "110011", "100100",
        "142536", "252525", "212121", "232323", "654123", "147852", "258258", "369369",
        "12341234", "11223344", "12121212", "69696969", "10203040", "12344321",
        "123654", "789456", "456123", "741852", "963852", "159357", "753951",
    }
)  # fmt: skip


@dataclass(frozen=True)
class PinChange:
    push_jobs: list[int]


def _policy_error(reason: str, message: str) -> ProvisionerError:
    return ProvisionerError(Kind.UNPROCESSABLE, "pin_policy", message, reason=reason)


def check_pin_policy(pin: str, *, min_length: int, extension: str | None) -> None:
    """Raise ``pin_policy`` with the reason when ``pin`` is not acceptable."""
    if not (pin.isascii() and pin.isdigit()):
        raise _policy_error("not_digits", "A PIN consists of digits only.")
    if not min_length <= len(pin) <= MAX_LENGTH:
        raise _policy_error("length", f"A PIN has between {min_length} and {MAX_LENGTH} digits.")
    if len(set(pin)) == 1:
        raise _policy_error("repeated", "A PIN must not repeat one digit.")
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(pin)}
    if steps in ({1}, {9}):
        raise _policy_error("sequence", "A PIN must not be a run of consecutive digits.")
    if extension and pin == extension:
        raise _policy_error("extension", "A PIN must not be your extension.")
    if pin in COMMON_PINS:
        raise _policy_error("common", "This PIN is among the most commonly used; choose another.")


async def change_pin(core: Core, actor: Actor, username: str, pin: str) -> PinChange:
    """Set ``username``'s PIN and queue a push to every device whose config carries it.

    Devices whose vendor has no user-PIN key (most DECT bases) are not touched: the PIN is used
    there through the PBX's hot-desk login, on the server.

    One transaction: the user row (verifier, ciphertext, failure counters reset), the audit row
    and the push jobs commit together or not at all. The jobs come last, with the audit row in
    one statement: a DECT base's open job is one row all its handsets' users' changes update,
    held from there to the commit only. The workers are woken after the commit.
    """
    require_self_or_admin(actor, username)
    async with core.pool.acquire() as conn, conn.transaction():
        # Checked under the row lock only: the policy reads the extension, which may be changing.
        user = await get_user(conn, username, for_update=True)
        check_pin_policy(pin, extension=user["extension"], min_length=core.settings.pin_min_length)
        verifier = core.pin_verifier.make(user["id"], pin)
        encrypted = core.vault.encrypt(pin, pin_purpose(user["id"]))
        macs = [
            row["mac"]
            for row in await store.set_user_pin(conn, user["id"], verifier, encrypted)
            if provisioning.carries_pin(row["vendor"], row["model"])
        ]
        jobs = await audit.record_with_push_jobs(
            conn, actor, "pin.change", username, {}, macs=macs, reason="pin.change"
        )
    if jobs:
        core.push_wake.wake()
    return PinChange(push_jobs=jobs)

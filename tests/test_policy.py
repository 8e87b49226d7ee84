"""PIN and password rules, without the database."""

from __future__ import annotations

import pytest

from provisioner.errors import ProvisionerError
from provisioner.passwords import check_password_policy, generate_password
from provisioner.pins import check_pin_policy


def pin_reason(pin: str, *, min_length: int = 6, extension: str | None = "4711") -> str | None:
    try:
        check_pin_policy(pin, min_length=min_length, extension=extension)
    except ProvisionerError as exc:
        assert exc.code == "pin_policy"
        assert not pin or pin not in exc.message
        return exc.reason
    return None


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        ("480913", None),
        ("90817263", None),
        ("48 913", "not_digits"),
        ("48a913", "not_digits"),
        ("\uff14\uff18\uff10\uff19\uff11\uff13", "not_digits"),  # full-width, isdigit() is True
        ("", "not_digits"),
        ("48091", "length"),
        ("4809135791357", "length"),
        ("777777", "repeated"),
        ("123456", "sequence"),
        ("654321", "sequence"),
        ("890123", "sequence"),
        ("121212", "common"),
        ("147258", "common"),
    ],
)
def test_pin_policy(pin: str, reason: str | None) -> None:
    assert pin_reason(pin) == reason


def test_pin_must_not_be_the_extension() -> None:
    assert pin_reason("470011", extension="470011") == "extension"


def test_pin_min_length_is_configurable() -> None:
    assert pin_reason("4809", min_length=4) is None
    assert pin_reason("4809", min_length=6) == "length"


def password_reason(password: str, username: str = "alice", email: str | None = None) -> str | None:
    try:
        check_password_policy(password, username=username, email=email)
    except ProvisionerError as exc:
        assert exc.code == "password_policy"
        assert password not in exc.message
        return exc.reason
    return None


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("correct horse battery", None),
        ("Tr0ub4dor&3", None),
        ("short1!", "length"),
        ("x" * 257, "length"),
        ("y" * 256, None),
        ("Passwörter-sind-toll", "characters"),
        ("tab\there-is-bad", "characters"),
        ("Password123", "common"),
        ("passwort123", "common"),
        ("ALICE", "length"),
    ],
)
def test_password_policy(password: str, reason: str | None) -> None:
    assert password_reason(password) == reason


def test_password_must_not_be_username_or_email() -> None:
    assert password_reason("alice.smith", username="alice.smith") == "personal"
    assert password_reason("Alice.Smith@example.net", email="alice.smith@example.net") == "personal"
    assert password_reason("alice.smith", email="alice.smith@example.net") == "personal"


def test_random_passwords_pass_the_policy_and_differ() -> None:
    generated = {generate_password() for _ in range(50)}
    assert len(generated) == 50
    for password in generated:
        assert len(password) >= 16
        assert password_reason(password) is None

"""PIN and password rules, without the database."""

from __future__ import annotations

import pytest

from provisioner.devices import ADAPTERS, pin_limit_conflicts
from provisioner.devices.base import PinKey
from provisioner.errors import ProvisionerError
from provisioner.passwords import check_password_policy, generate_password
from provisioner.pins import check_pin_policy
from provisioner.settings import PIN_MAX_LENGTH, Settings, SettingsError


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


# --- the PIN policy against the devices that carry the PIN ------------------------------------


@pytest.mark.parametrize("min_length", range(4, 13))
def test_every_policy_fits_the_built_in_devices(min_length: int) -> None:
    """Any allowed PROVISIONER_PIN_MIN_LENGTH starts: every PIN key takes 4 to 12 digits."""
    env = {"PROVISIONER_PIN_MIN_LENGTH": str(min_length)}
    assert Settings.from_env(env).pin_min_length == min_length
    assert pin_limit_conflicts(4, PIN_MAX_LENGTH) == []


@pytest.mark.parametrize(
    ("key", "min_length", "named"),
    [
        # A key shorter than the longest PIN the policy admits: no setting makes it fit.
        (PinKey("lock.pin", max_digits=8, source="test"), "6", "lock.pin takes 1 to 8 digits"),
        # A key that needs longer PINs than the policy's shortest.
        (PinKey("lock.pin", 15, "test", min_digits=6), "4", "lock.pin takes 6 to 15 digits"),
    ],
)
def test_a_pin_key_the_policy_does_not_fit_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, key: PinKey, min_length: str, named: str
) -> None:
    yealink = ADAPTERS["yealink"]
    monkeypatch.setattr(type(yealink), "pin_key", lambda self, model: key)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PROVISIONER_PIN_MIN_LENGTH": min_length})
    message = str(caught.value)
    assert message.startswith("PROVISIONER_PIN_MIN_LENGTH: ")
    assert "\n" not in message
    assert f"yealink T54W: {named}" in message

"""Rules every adapter keeps (DESIGN, "PIN on devices"), checked across every model.

- Every model renders with the shortest and the longest PIN the policy admits, with every
  allowed minimum length: no valid PIN makes a device unrenderable.
- The PIN reaches a device's files only through its declared user-PIN key, and the DECT access
  code only through its declared key; the two are different secrets.
- A push never reboots a device in use: a NOTIFY that asks for a reboot is only ever sent to a
  model that declares it must wait for the maintenance window.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import pytest

from provisioner.devices import ADAPTERS
from provisioner.devices.base import Adapter, ModelInfo, RenderContext, Templates
from provisioner.settings import PIN_MAX_LENGTH, PIN_MIN_LENGTH_RANGE
from tests.devices.conftest import ContextFactory, make_line

MODELS = [
    pytest.param(adapter, model, id=f"{vendor}-{model.name}")
    for vendor, adapter in ADAPTERS.items()
    for model in adapter.models.values()
]
SHORTEST = "4827"  # PIN_MIN_LENGTH_RANGE[0] digits
LONGEST = "482739165038"  # PIN_MAX_LENGTH digits
ACCESS_CODE_DIGITS = "7351902864"


def context(
    make_context: ContextFactory, adapter: Adapter, model: ModelInfo, pin: str
) -> RenderContext:
    """Two users (slots 1 and 2) with PINs of ``pin``'s length; the access code if any."""
    code_key = adapter.access_code_key(model)
    code = ACCESS_CODE_DIGITS[: code_key.digits] if code_key else None
    mac = "0004f2aabbcc" if adapter.vendor == "poly" else "003042aabbcc"
    ctx = make_context(model, mac=mac, lines=min(2, model.slots), access_code=code)
    lines = tuple(
        dataclasses.replace(make_line(line.slot), pin=pin if line.slot == 1 else pin[::-1])
        for line in ctx.lines
    )
    return dataclasses.replace(ctx, lines=lines)


def test_the_policy_bounds_are_what_these_tests_render() -> None:
    assert len(SHORTEST) == PIN_MIN_LENGTH_RANGE[0]
    assert len(LONGEST) == PIN_MAX_LENGTH


@pytest.mark.parametrize(("adapter", "model"), MODELS)
@pytest.mark.parametrize("pin", [SHORTEST, LONGEST], ids=["shortest-pin", "longest-pin"])
def test_every_model_renders_every_valid_pin_only_where_it_belongs(
    adapter: Adapter, model: ModelInfo, pin: str, make_context: ContextFactory
) -> None:
    ctx = context(make_context, adapter, model, pin)
    files = adapter.render(ctx, Templates(adapter.vendor))
    text = "\n".join(body.decode("utf-8") for body in files.values())

    pin_key = adapter.pin_key(model)
    if pin_key is None:
        assert pin not in text
        assert pin[::-1] not in text
    else:
        assert pin_key.min_digits <= len(pin) <= pin_key.max_digits
        assert pin in text, f"{pin_key.name} does not carry the PIN"

    code_key = adapter.access_code_key(model)
    if code_key is None:
        assert ctx.access_code is None
    else:
        assert model.kind == "dect"
        assert ctx.access_code is not None
        assert ctx.access_code in text
        assert ctx.access_code not in (pin, pin[::-1])

    for name, body in files.items():
        if name.endswith((".xml", ".htm")) or body.lstrip().startswith(b"<?xml"):
            ET.fromstring(body)  # noqa: S314 -- our own output


@pytest.mark.parametrize(("adapter", "model"), MODELS)
def test_desk_phones_have_no_access_code_and_only_desk_or_login_keys_carry_the_pin(
    adapter: Adapter, model: ModelInfo
) -> None:
    if model.kind == "desk":
        assert adapter.access_code_key(model) is None
    key = adapter.pin_key(model)
    if key is not None:
        # A user PIN, never a subscription code: the key is no access-code key too.
        code_key = adapter.access_code_key(model)
        assert code_key is None or code_key.name != key.name
        assert key.source


@pytest.mark.parametrize(("adapter", "model"), MODELS)
def test_no_push_reboots_a_device_that_may_be_in_use(adapter: Adapter, model: ModelInfo) -> None:
    event = adapter.sip_event(model)
    if event is not None and "reboot=true" in event.replace(" ", "").lower():
        assert adapter.needs_maintenance_window(model), event

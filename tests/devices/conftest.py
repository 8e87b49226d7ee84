"""Shared fixtures for adapter tests: realistic devices with awkward names."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from provisioner.devices.base import DeviceInfo, Line, ModelInfo, RenderContext, Site

# Umlauts, XML specials and a quote: every template must survive these.
NAMES = ["Jürgen Müller", "Anna <Ops> & Co", 'Zoë "Z" O\'Neil', "Björn Straße"]

ContextFactory = Callable[..., RenderContext]


def make_line(slot: int, *, pin: str | None = "482916", ipui: str | None = None) -> Line:
    name = NAMES[(slot - 1) % len(NAMES)]
    extension = str(200 + slot)
    return Line(
        slot=slot,
        username=f"user{slot}",
        display_name=name,
        extension=extension,
        sip_user=extension,
        sip_auth_user=f"auth{extension}",
        sip_password=f"Sip&Secret<{slot}>x9Q",
        pin=None if pin is None else str(int(pin) + slot).zfill(len(pin)),
        language="de",
        ipui=ipui,
    )


@pytest.fixture
def make_context() -> ContextFactory:
    """Build a RenderContext for ``model`` with ``lines`` occupied slots (1..lines)."""

    def factory(
        model: ModelInfo,
        *,
        mac: str = "001565aabbcc",
        lines: int = 2,
        ipui: bool = False,
        site: Site | None = None,
    ) -> RenderContext:
        return RenderContext(
            device=DeviceInfo(mac=mac, model=model, label="Empfang & Büro"),
            lines=tuple(
                make_line(slot, ipui=f"0{slot:04d}12345" if ipui else None)
                for slot in range(1, lines + 1)
            ),
            site=site or Site(registrar_host="pbx.example.net", registrar_port=5060),
            provisioning_url="https://prov.example.net/provisioning/",
            provisioning_user=f"dev-{mac}",
            provisioning_password="Pr0v&Pass<word>",
        )

    return factory

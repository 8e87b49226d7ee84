"""Shared fixtures for adapter tests: realistic devices with awkward names."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping

import pytest

from provisioner.devices.base import DeviceInfo, Line, ModelInfo, RenderContext, Site, Templates

# Umlauts, XML specials and a quote: every template must survive these.
NAMES = ["Jürgen Müller", "Anna <Ops> & Co", 'Zoë "Z" O\'Neil', "Björn Straße"]

# One recorded User-Agent per vendor (VENDORS.md), for the tests that an adapter declines requests
# of other vendors' phones.
UA_YEALINK = "Yealink SIP-T54W 96.86.0.70 00:15:65:aa:bb:cc"
UA_SNOM = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 000413922D24)"
UA_POLY = "FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application"
UA_GIGASET = "Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605"
UA_GRANDSTREAM = "Grandstream Model HW GXP2170 SW 1.0.11.3 DevId 000b82aabbcc"
UA_FANVIL = "Fanvil X4 2.10.2.6887 0c383e07e16c"

TEMPLATE_SYNTAX = ("{{", "}}", "{%", "%}", "{#", "#}")

ContextFactory = Callable[..., RenderContext]


def parse_xml(data: bytes | str) -> ET.Element:
    """A rendered XML file (or fragment) as an element tree; fails when it does not parse."""
    # Our own rendered output, not untrusted input: the stdlib parser is good enough.
    return ET.fromstring(data)  # noqa: S314


def assert_no_template_syntax(files: Mapping[str, bytes]) -> None:
    """Every rendered file is UTF-8 and no template delimiter survived rendering."""
    for name, body in files.items():
        text = body.decode("utf-8")
        assert not [tag for tag in TEMPLATE_SYNTAX if tag in text], name


@pytest.fixture
def templates(request: pytest.FixtureRequest) -> Templates:
    """The built-in templates of the vendor whose ``ADAPTER`` the test module tests."""
    return Templates(request.module.ADAPTER.vendor)


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
        access_code: str | None = None,
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
            access_code=access_code,
        )

    return factory

"""The helpers adapters share: MACs and vendors in User-Agents, slots, time zones, URLs, XML."""

from __future__ import annotations

import random
import re
from datetime import timedelta

import jinja2
import pytest
from markupsafe import Markup

from provisioner.devices import ADAPTERS
from provisioner.devices.base import (
    USER_AGENT_VENDORS,
    ModelInfo,
    RenderError,
    check_slots,
    clean_text,
    first_mac,
    free_slots,
    has_oui,
    last_mac_in,
    models_by_name,
    names_other_vendor,
    names_vendor,
    posix_tz_rule,
    slot_table,
    standard_utc_offset,
    with_credentials,
    xml_block,
    xml_text,
)
from tests.devices.conftest import (
    UA_GIGASET,
    UA_GRANDSTREAM,
    UA_POLY,
    UA_SNOM,
    UA_YEALINK,
    make_line,
)

MODEL = ModelInfo("X4", "desk", 4)

RECORDED = {
    "yealink": UA_YEALINK,
    "snom": UA_SNOM,
    "poly": UA_POLY,
    "gigaset": UA_GIGASET,
    "grandstream": UA_GRANDSTREAM,
    "mitel": "SIP-DECT OMM 8.3SP1",
}


def test_first_mac_skips_what_is_no_mac() -> None:
    assert first_mac(["96.86.0.70", "00:15:65:AA:BB:CC", "001565112233"]) == "001565aabbcc"
    assert first_mac(["Handset=3", ""]) is None


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("snomD785-SIP 10.1.33.33 2010.12-00004 000413922D24 SXM:0", "000413922d24"),
        ("(SN:48-25-67-b5-31-3f) Type/Application", "482567b5313f"),
        ("00:04:13:00:00:01 then 000413922d24", "000413922d24"),
        ("0004139222d24", None),  # 13 hex digits are no MAC
        ("", None),
    ],
)
def test_last_mac_in(text: str, mac: str | None) -> None:
    assert last_mac_in(text) == mac


def test_has_oui() -> None:
    assert has_oui("001565aabbcc", {"001565"})
    assert not has_oui("0004f2aabbcc", {"001565"})


def test_every_adapter_has_user_agent_words() -> None:
    assert set(ADAPTERS) <= set(USER_AGENT_VENDORS)


@pytest.mark.parametrize("vendor", RECORDED)
def test_recorded_user_agents_name_their_vendor_only(vendor: str) -> None:
    for other, user_agent in RECORDED.items():
        assert names_vendor(user_agent, vendor) is (other == vendor), other
        assert names_other_vendor(user_agent, vendor) is (other != vendor), other


def test_the_vendor_word_check_answers_as_the_case_insensitive_patterns() -> None:
    """``names_vendor``/``names_other_vendor`` check an ASCII User-Agent with substrings (fast):
    over User-Agents made of every vendor word in every spelling, at word boundaries and inside
    words, and non-ASCII ones, they answer exactly as the patterns of USER_AGENT_VENDORS do."""
    # Non-ASCII: long s, Kelvin sign, dotted capital I (case-folded by the patterns), e-acute.
    pieces = ["", "x", "a", "Poly", "POLYCOM", "apoly", "poly-", "OMM", "omm8", "commodore",
              "SIP-DECT OMM", "yeaLINK", "Snom", "\u017fnom", "\u212aisco", "C\u0130SCO", "htek",
              "Aastra", "grand stream", "gigaset/", " ", "-", "/", "\u0130", "\u00e9"]  # fmt: skip
    rng = random.Random(7)
    user_agents = [*RECORDED.values(), *pieces]
    for _ in range(3_000):
        user_agents.append("".join(rng.choice(pieces) + rng.choice(" -/;.") for _ in range(4)))
    for user_agent in user_agents:
        for vendor, words in USER_AGENT_VENDORS.items():
            named = re.search(words, user_agent, re.IGNORECASE) is not None
            others = "|".join(w for other, w in USER_AGENT_VENDORS.items() if other != vendor)
            other_named = re.search(others, user_agent, re.IGNORECASE) is not None
            assert names_vendor(user_agent, vendor) is named, (user_agent, vendor)
            assert names_other_vendor(user_agent, vendor) is other_named, (user_agent, vendor)


@pytest.mark.parametrize("user_agent", ["", "curl/8.5.0", "Fanvil X4 2.10.2.6887"])
def test_user_agents_of_no_recorded_vendor(user_agent: str) -> None:
    assert not any(names_vendor(user_agent, vendor) for vendor in RECORDED)


def test_check_slots_sorts_and_refuses_what_does_not_fit() -> None:
    lines = (make_line(3), make_line(1))
    assert [line.slot for line in check_slots(lines, MODEL, "Acme X4")] == [1, 3]
    with pytest.raises(RenderError, match="Acme X4 has 4 keys, 5 lines were assigned"):
        check_slots(tuple(make_line(s) for s in range(1, 6)), MODEL, "Acme X4", noun="keys")
    for slots in [(1, 1), (0,), (5,)]:
        with pytest.raises(RenderError, match=r"Acme X4: slots must be distinct and within 1\.\.4"):
            check_slots(tuple(make_line(s) for s in slots), MODEL, "Acme X4")


def test_slot_table_and_free_slots() -> None:
    lines = (make_line(3), make_line(1))
    assert slot_table(lines, MODEL) == [(1, lines[1]), (2, None), (3, lines[0]), (4, None)]
    assert free_slots(lines, MODEL) == [2, 4]


@pytest.mark.parametrize(
    "value",
    [
        "Anna 12",
        "",
        "A & B",
        "<b>",
        'O"Neil',
        "d'Arc",
        "&amp;",
        "tab\tline\nbreak",
        "nul\x00",
        "\x85\u2028\u2029",
        "Müller 😀",
        "{{ x }}",
        " &lt;\x7f> ",
    ],
)
def test_xml_text_writes_what_the_clean_filter_and_autoescape_write(value: str) -> None:
    env = jinja2.Environment(autoescape=True)
    env.filters["clean"] = clean_text
    template = env.from_string("{{ value|clean }}")
    assert xml_text(value) == template.render(value=value)
    block = xml_block([xml_text(value), "<a/>"])
    assert isinstance(block, Markup)  # inserted as is by autoescape
    assert str(block) == template.render(value=value) + "<a/>"


def test_models_by_name() -> None:
    models = models_by_name([MODEL, ModelInfo("x5w", "dect", 8)])
    assert dict(models) == {"X4": MODEL, "X5W": ModelInfo("x5w", "dect", 8)}


@pytest.mark.parametrize(
    ("zone", "offset"),
    [
        ("Europe/Berlin", timedelta(hours=1)),
        ("America/New_York", timedelta(hours=-5)),
        ("Asia/Kolkata", timedelta(hours=5, minutes=30)),
        ("Australia/Sydney", timedelta(hours=10)),  # standard time in the northern summer
        ("UTC", timedelta(0)),
        ("No/Such_Zone", None),
        ("../../etc/passwd", None),
    ],
)
def test_standard_utc_offset(zone: str, offset: timedelta | None) -> None:
    assert standard_utc_offset(zone) == offset


@pytest.mark.parametrize(
    ("zone", "rule"),
    [
        ("Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3"),
        ("Asia/Kolkata", "IST-5:30"),
        ("No/Such_Zone", None),
        ("../../etc/passwd", None),
        ("/etc/localtime", None),
    ],
)
def test_posix_tz_rule(zone: str, rule: str | None) -> None:
    assert posix_tz_rule(zone) == rule


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://prov.example.net/p/", "https://u%401:p%3Aw%26d@prov.example.net/p/"),
        (
            "https://old:pw@prov.example.net:8443/p?x=1",
            "https://u%401:p%3Aw%26d@prov.example.net:8443/p?x=1",
        ),
    ],
)
def test_with_credentials(url: str, expected: str) -> None:
    assert with_credentials(url, "u@1", "p:w&d") == expected

"""Guards that a mutation run of the suite showed could be removed without any test failing.

Each test here fails when its guard is taken out of the code (checked by hand with each
guard removed, and kept honest by ``scripts/mutate``):

- phones' Digest: the answer is bound to the request URI and to our realm;
- phones' ``If-None-Match: *`` (and weak or listed ETags) answers 304;
- PIN failures lock only when *consecutive*: a correct PIN resets the count;
- hook signatures dated too far in the *future* are refused like old ones;
- token revocation: each of the two mechanisms on its own (the session lookup honours only the
  user's current credential version; a password change deletes the dead sessions);
- the PIN policy is checked again under the user's row lock;
- row locks against a change in flight (a transaction of the test holds the row): the PIN
  change, an admin's and a user's own password change, a login, the hot-desk logout;
- push coalescing: a new job waits for more changes (debounce), but at most the maximum wait;
- what the audit rows, fail2ban lines and metrics name (reasons, actors, sources), a session's
  token and lifetime, and the policies' bounds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from provisioner import passwords, pins, store
from provisioner.audit import Actor
from provisioner.errors import Kind, ProvisionerError
from provisioner.phoneauth import NONCE_LIFETIME, FailureLimiter, NonceSigner, client_address
from provisioner.phonecache import REALM
from provisioner.web import phones
from provisioner.web.hooks import MAX_SKEW, SIGNATURE_HEADER, sign
from provisioner.web.keys import CORE
from tests.conftest import Api, MailSink, bootstrap_admin, mailed_password
from tests.test_hooks import SECRET, Pbx
from tests.test_phones import (
    BOOTSTRAP,
    BY_ID,
    Fetched,
    api,
    basic,
    challenge_params,
    digest,
    fetch,
    own_credential,
    phones_client,
    provision,
)

__all__ = ["api", "phones_client"]  # fixtures shared with tests/test_phones.py

Client = TestClient[Any, Any]
PW = "Correct-Horse-7"
T = TypeVar("T")
NEW_PW = "Battery-Staple-9"
DEADLINE = 10.0


# --- phones: Digest bound to the URI and the realm, If-None-Match ------------------------------


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def digest_claiming(
    challenge: str,
    username: str,
    password: str,
    uri: str,
    *,
    realm: str = REALM,
    algorithm: str | None = "MD5",
    qop: str | None = "auth",
) -> str:
    """A Digest answer computed with the right password over our realm, whose header may claim
    another ``realm``, ``algorithm`` (None: no such parameter, meaning MD5) or ``qop`` (None:
    RFC 2069, without ``qop``)."""
    nonce = challenge_params(challenge)["nonce"]
    ha1 = _md5(f"{username}:{REALM}:{password}")
    ha2 = _md5(f"GET:{uri}")
    nc, cnonce = "00000001", secrets.token_hex(8)
    if qop is None:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
        extra = ""
    else:
        response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
        extra = f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
    claimed = "" if algorithm is None else f"algorithm={algorithm}, "
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'{claimed}response="{response}"{extra}'
    )


async def test_a_digest_answer_opens_only_the_uri_it_was_computed_for(
    phones_client: Client, api: Api
) -> None:
    """An answer seen on the wire for the file without secrets must not open the personal one
    (RFC 7616 §3.4.6): the server checks ``uri`` against the request, not just the hash."""
    phone = BY_ID["yealink-T54W"]
    assert phone.shared_file is not None
    await provision(api, phone)
    user, password = await own_credential(phones_client, phone)
    challenge = (await fetch(phones_client, phone, auth=None)).digest_challenge()
    shared_uri = f"/provisioning/{phone.shared_file}"
    captured = digest(challenge, user, password, "GET", shared_uri)
    assert (await fetch(phones_client, phone, phone.shared_file, auth=captured)).status == 200

    replayed = await fetch(phones_client, phone, phone.line_file, auth=captured)
    assert replayed.status == 401, replayed
    assert password.encode() not in replayed.body
    # The same goes for an absolute URL naming another file ...
    host = f"{phones_client.host}:{phones_client.port}"
    elsewhere = digest(challenge, user, password, "GET", f"http://{host}{shared_uri}")
    assert (await fetch(phones_client, phone, phone.line_file, auth=elsewhere)).status == 401
    # ... while an absolute URL naming the requested file is the same URI (some phones send it).
    line_uri = f"/provisioning/{phone.line_file}"
    absolute = digest(challenge, user, password, "GET", f"http://{host}{line_uri}")
    assert (await fetch(phones_client, phone, phone.line_file, auth=absolute)).status == 200
    # A query string is part of the URI the answer covers.
    async with phones_client.get(
        f"{line_uri}?x=1",
        headers={
            "User-Agent": phone.user_agent,
            "Authorization": digest(challenge, user, password, "GET", line_uri),
        },
    ) as response:
        assert response.status == 401


async def test_a_digest_answer_must_name_our_realm_md5_and_a_known_qop(
    phones_client: Client, api: Api
) -> None:
    phone = BY_ID["gigaset-N870"]  # Gigaset answers the Digest challenge
    await provision(api, phone)
    user, password = await own_credential(phones_client, phone)
    uri = f"/provisioning/{phone.line_file}"
    challenge = (await fetch(phones_client, phone, auth=None)).digest_challenge()
    assert challenge_params(challenge)["realm"] == REALM

    async def answered(header: str) -> Fetched:
        return await fetch(phones_client, phone, auth=header, source="198.51.100.50")

    assert (await answered(digest_claiming(challenge, user, password, uri))).status == 200
    # RFC 2069 answers (no qop) are still what some phones send; no algorithm means MD5.
    assert (await answered(digest_claiming(challenge, user, password, uri, qop=None))).status == 200
    without_algorithm = digest_claiming(challenge, user, password, uri, algorithm=None)
    assert (await answered(without_algorithm)).status == 200
    for refused in (
        digest_claiming(challenge, user, password, uri, realm="elsewhere"),
        digest_claiming(challenge, user, password, uri, algorithm="SHA-256"),
        digest_claiming(challenge, user, password, uri, qop="auth-int"),
    ):
        got = await answered(refused)
        assert got.status == 401, refused
        assert password.encode() not in got.body


def test_digest_nonces_are_fresh_from_five_seconds_ahead_to_their_lifetime() -> None:
    signer = NonceSigner(b"k" * 32)
    issued = 1_700_000_000
    nonce = signer.issue(now=issued)
    assert signer.check(nonce, now=issued) == "ok"
    assert signer.check(nonce, now=issued - 5) == "ok", "a phone's clock may run a little ahead"
    assert signer.check(nonce, now=issued - 6) == "stale"
    assert signer.check(nonce, now=issued + NONCE_LIFETIME) == "ok"
    assert signer.check(nonce, now=issued + NONCE_LIFETIME + 1) == "stale"
    assert NonceSigner(b"o" * 32).check(nonce, now=issued) == "bad", "another key's nonce"
    stamp, _, signature = nonce.partition(".")
    assert signer.check(f"{int(stamp, 16) + 1:x}.{signature}", now=issued) == "bad"


async def test_odd_credentials_are_refused_counted_and_logged_for_fail2ban(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A Basic password may hold colons (RFC 7617: only the user-id may not); a Digest answer
    without a username is no answer; a wrong one is logged in fail2ban's shape and counted."""
    password = "Boot:strap:Secret-7f3a"
    client = await make_client(
        provisioning_user="boot", provisioning_password=password, trusted_proxies="127.0.0.1"
    )
    phone = BY_ID["yealink-T54W"]
    await provision(await bootstrap_admin(client), phone)
    assert (await fetch(client, phone, auth=basic("boot", password))).status == 200
    nameless = 'Digest realm="provisioner", nonce="x", uri="/", response="0"'
    assert (await fetch(client, phone, auth=nameless)).status == 401
    before = await metrics(client)
    with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
        wrong = await fetch(client, phone, auth=basic("boot", "Boot"), source="198.51.100.60")
    assert wrong.status == 401
    assert "provisioning auth failure from 198.51.100.60: bad_credentials" in caplog.messages
    series = 'provisioner_fetch_refusals_total{reason="bad_credentials"}'
    assert (await metrics(client))[series] - before.get(series, 0) == 1


async def test_a_blocked_source_is_told_when_to_retry_and_counted(make_client: Any) -> None:
    client = await make_client(
        provisioning_user="boot",
        provisioning_password="Boot-Secret-7f3a",
        trusted_proxies="127.0.0.1",
    )
    phone = BY_ID["yealink-T54W"]
    await provision(await bootstrap_admin(client), phone)
    source = "198.51.100.61"
    for _ in range(10):
        wrong = await fetch(client, phone, auth=basic("boot", "wrong"), source=source)
        assert wrong.status == 401
    before = await metrics(client)
    blocked = await fetch(client, phone, auth=basic("boot", "Boot-Secret-7f3a"), source=source)
    assert blocked.status == 429
    assert int(blocked.headers["Retry-After"]) > 0
    series = 'provisioner_fetch_refusals_total{reason="blocked"}'
    assert (await metrics(client))[series] - before.get(series, 0) == 1


async def test_a_file_name_of_128_characters_is_plausible_and_one_longer_is_not(
    phones_client: Client, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Names phones ask for are short: the longest one a phone may ask for is answered as any
    (a challenge first); a longer one is a failure of its source, before any work."""
    phone = BY_ID["yealink-T54W"]
    with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
        longest = await fetch(phones_client, phone, "a" * 124 + ".cfg", auth=None)
        assert longest.status == 401
        assert not any("unknown_path" in m for m in caplog.messages)
        longer = await fetch(phones_client, phone, "a" * 125 + ".cfg", auth=None)
    assert longer.status == 404
    assert any(m.endswith(": unknown_path") for m in caplog.messages)


SOURCE = "198.51.100.77"


def test_the_failure_limiter_blocks_ten_failures_within_the_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = FailureLimiter()
    with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
        for _ in range(9):
            limiter.fail(SOURCE, "bad_credentials", now=0.0)
        limiter.fail(SOURCE, "bad_credentials", now=60.0)  # the first nine are 60 s old
        assert limiter.retry_after(SOURCE, now=60.0) is None
        for t in range(61, 70):
            limiter.fail(SOURCE, "unknown_device", now=float(t))
        assert limiter.retry_after(SOURCE, now=69.0) == 300
        assert limiter.retry_after(SOURCE, now=368.5) == 1
        assert limiter.retry_after(SOURCE, now=369.0) is None
    # The fixed shapes fail2ban matches.
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"provisioning auth failure from {SOURCE}: bad_credentials"
    assert lines[-2:] == [
        f"provisioning auth failure from {SOURCE}: unknown_device",
        f"provisioning source {SOURCE} blocked for 300s",
    ]


def test_the_failure_limiters_memory_is_counted_and_bounded() -> None:
    source_bytes, failure_bytes = FailureLimiter.SOURCE_BYTES, FailureLimiter.FAILURE_BYTES
    counting = source_bytes + len(SOURCE) + failure_bytes  # one source with one failure
    limiter = FailureLimiter(max_bytes=3 * counting)
    limiter.fail(SOURCE, "x", now=0.0)
    limiter.fail(SOURCE, "x", now=1.0)
    assert limiter.bytes == counting + failure_bytes
    for t in range(2, 10):
        limiter.fail(SOURCE, "x", now=float(t))
    assert limiter.retry_after(SOURCE, now=9.0) == 300
    assert limiter.bytes == source_bytes + len(SOURCE), "a block costs its source only"
    # Blocks expire as soon as they are the oldest, on anyone's failure.
    other = "198.51.100.78"
    limiter.fail(other, "x", now=309.0)  # exactly when the block ends
    assert limiter.bytes == counting
    assert limiter.retry_after(SOURCE, now=309.0) is None
    # Up to the bound everything is kept; past it the oldest counting source goes.
    limiter.fail("198.51.100.79", "x", now=310.0)
    limiter.fail("198.51.100.80", "x", now=311.0)
    assert limiter.bytes == 3 * counting
    limiter.fail("198.51.100.81", "x", now=312.0)
    assert limiter.bytes == 3 * counting
    for t in range(313, 322):  # other's one failure was forgotten: nine more do not block it
        limiter.fail(other, "x", now=float(t))
    assert limiter.retry_after(other, now=322.0) is None

    # With no counting source left to forget, the oldest block goes.
    blocked = source_bytes + len(SOURCE)
    limiter = FailureLimiter(threshold=1, max_bytes=2 * blocked)
    first, second, third = "198.51.100.91", "198.51.100.92", "198.51.100.93"
    limiter.fail(first, "x", now=0.0)
    limiter.fail(second, "x", now=1.0)
    assert limiter.bytes == 2 * blocked, "at the bound, nothing is forgotten"
    limiter.fail(third, "x", now=2.0)
    assert limiter.bytes == 2 * blocked
    assert limiter.retry_after(first, now=3.0) is None
    assert limiter.retry_after(second, now=3.0) == 298
    assert limiter.retry_after(third, now=3.0) == 299


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_if_none_match_star_weak_and_lists_answer_304(
    phones_client: Client, api: Api, method: str
) -> None:
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    first = await fetch(phones_client, phone)
    assert first.status == 200
    etag = first.headers["ETag"]
    listed = (f'"0123456789abcdef", {etag}', f'{etag}, "0123456789abcdef"', f'"x",{etag},"y"')
    for header in ("*", f"W/{etag}", *listed, f" {etag} "):
        got = await fetch(phones_client, phone, method=method, headers={"If-None-Match": header})
        assert got.status == 304, header
        assert got.body == b""
        assert got.headers["ETag"] == etag
    changed = await fetch(
        phones_client, phone, method=method, headers={"If-None-Match": '"0123456789abcdef", "x"'}
    )
    assert changed.status == 200
    assert changed.headers["ETag"] == etag


async def test_a_phones_challenge_carries_the_apis_error_document(
    phones_client: Client, api: Api
) -> None:
    """A 401 on the phones' endpoint says why in the API's error shape, as every refusal does."""
    phone = BY_ID["yealink-T54W"]
    await provision(api, phone)
    for auth in (None, basic("nobody", "wrong")):
        got = await fetch(phones_client, phone, auth=auth)
        assert got.status == 401
        assert got.headers["Content-Type"] == "application/json; charset=utf-8"
        assert json.loads(got.body)["error"]["code"] == "unauthenticated"


async def test_an_allowlist_refuses_sources_that_are_no_address(make_client: Any) -> None:
    """Behind a trusted proxy, a forwarded hop that is not an address (client text) does not
    make a request come from an allowed network."""
    client = await make_client(
        provisioning_user="boot",
        provisioning_password="Bootstrap-Secret-7f3a",
        phones_allow="10.0.0.0/8",
        trusted_proxies="127.0.0.1",
    )
    phone = BY_ID["yealink-T54W"]
    await provision(await bootstrap_admin(client), phone)
    assert (await fetch(client, phone, source="10.1.2.3")).status == 200
    before = await metrics(client)
    for source in ("not-an-address", "10.1.2.3.4", "unknown"):
        refused = await fetch(client, phone, source=source)
        assert refused.status == 403, source
        error = json.loads(refused.body)["error"]
        assert error["code"] == "source_not_allowed"
        assert error["message"], "every error says what happened"
    series = 'provisioner_fetch_refusals_total{reason="source_not_allowed"}'
    assert (await metrics(client))[series] - before.get(series, 0) == 3


# --- hooks: consecutive PIN failures, signatures from the future --------------------------------


@pytest.fixture
async def pbx(make_client: Any) -> Pbx:
    client = await make_client(hook_secret=SECRET)
    admin = await bootstrap_admin(client)
    status, _ = await admin.call(
        "POST", "/users", {"username": "alice", "display_name": "Alice", "extension": "201"}
    )
    assert status == 201
    status, _ = await admin.call("PUT", "/users/alice/pin", {"pin": "480913"})
    assert status == 200
    return Pbx(client)


async def test_only_consecutive_pin_failures_lock(pbx: Pbx) -> None:
    """A correct PIN resets the count: nine typos a day never add up to a lockout."""
    wrong, right = {"extension": "201", "pin": "111222"}, {"extension": "201", "pin": "480913"}
    for _ in range(3):
        for attempt in range(9):
            assert (await pbx.call("verify-pin", wrong)) == (200, {"valid": False}), attempt
        assert (await pbx.call("verify-pin", right)) == (200, {"valid": True})
    for _ in range(9):
        assert (await pbx.call("verify-pin", wrong)) == (200, {"valid": False})
    status, data = await pbx.call("verify-pin", wrong)  # the tenth in a row
    assert (status, data["valid"]) == (200, False)
    assert "locked_until" in data
    status, data = await pbx.call("verify-pin", right)
    assert (status, data["valid"]) == (200, False), "the right PIN is refused while locked"


async def test_hook_signatures_dated_in_the_future_are_refused(pbx: Pbx) -> None:
    body = {"extension": "201", "pin": "480913"}
    now = int(time.time())
    status, data = await pbx.call("verify-pin", body, at=now + MAX_SKEW + 60)
    assert (status, data["error"]["code"]) == (401, "signature_expired")
    status, data = await pbx.call("verify-pin", body, at=now + 86_400 * 365)
    assert (status, data["error"]["code"]) == (401, "signature_expired")
    # A PBX whose clock runs a minute ahead is still heard.
    assert (await pbx.call("verify-pin", body, at=now + 60)) == (200, {"valid": True})


async def test_malformed_signature_headers_are_401_not_500(pbx: Pbx) -> None:
    raw = json.dumps({"extension": "201", "pin": "480913"}).encode()
    now = int(time.time())
    good = sign(SECRET, now - 5, raw)
    mac = good.partition("v1=")[2]
    for header in (
        None,  # no header at all
        f"t={now - 5}",  # no v1
        f"v1={mac}",  # no t
        f"t=abc,v1={mac}",  # t not a number
        f"t=-5,v1={mac}",
        f"t=\u0661\u0662,v1={mac}",  # digits, but not ASCII ones
        f"t={now - 5},v1={mac[:-1]}",  # v1 too short
        f"t={now - 5},v1={'g' * 64}",  # not hex: cannot match
    ):
        headers = {} if header is None else {SIGNATURE_HEADER: header}
        async with pbx.client.post("/hooks/pbx/verify-pin", data=raw, headers=headers) as response:
            data = await response.json()
        assert (response.status, data["error"]["code"]) == (401, "signature_invalid"), header
    # The one well-formed header of them is heard.
    async with pbx.client.post(
        "/hooks/pbx/verify-pin", data=raw, headers={SIGNATURE_HEADER: good}
    ) as response:
        assert (response.status, await response.json()) == (200, {"valid": True})


async def test_hooks_refuse_unknown_fields_and_audit_the_pbx_address(
    pbx: Pbx, db: asyncpg.Connection
) -> None:
    status, data = await pbx.call("verify-pin", {"extension": "201", "pin": "1", "user": "x"})
    assert (status, data["error"]["code"]) == (400, "field_unknown")
    status, data = await pbx.call("verify-pin", {"extension": "201", "pin": "111222"})
    assert (status, data) == (200, {"valid": False})
    row = await db.fetchrow("SELECT * FROM audit_log WHERE action = 'pin.check_failed'")
    assert row is not None
    assert (row["actor"], row["target_user"], row["source"]) == ("pbx", "alice", "127.0.0.1")


async def test_a_registered_contact_is_one_sip_or_sips_uri_of_at_most_512_characters(
    desks: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    """What the PBX reports as a device's contact is stored and later used as a NOTIFY's
    Request-URI: no line break or space may smuggle anything into a SIP message."""
    admin, pbx = desks
    await admin.call("PUT", f"/devices/{DESK_A}/assignments", [{"slot": 1, "username": "alice"}])
    ua = "Yealink SIP-T54W 96.86.0.70 00:15:65:00:00:01"
    refused = (
        "sip:201@10.0.0.5:5060\r\nContact: <sip:evil@203.0.113.9>",
        "sip:201@10.0.0.5:5060\nX: y",
        "sip:201@10.0.0.5 5060",
        "sip:201@" + "a" * 501 + ".net",  # 513 characters
        "http://10.0.0.5/",
    )
    for contact in refused:
        body = {"extension": "201", "contact": contact, "user_agent": ua}
        status, data = await pbx.call("registered", body)
        assert (status, data["error"]["code"]) == (422, "contact_invalid"), contact
    assert await db.fetchval("SELECT sip_contact FROM devices WHERE mac = $1", DESK_A) is None
    longest = "sip:201@" + "a" * 500 + ".net"  # 512 characters
    for contact in ("sips:201@10.0.0.5:5061", "sip:201@PBX.example.net", longest):
        body = {"extension": "201", "contact": contact, "user_agent": ua}
        assert await pbx.call("registered", body) == (200, {"device": DESK_A}), contact
        stored = await db.fetchval("SELECT sip_contact FROM devices WHERE mac = $1", DESK_A)
        assert stored == contact


async def test_the_registered_device_is_the_hooks_mac_else_the_user_agents_else_the_lines(
    desks: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    admin, pbx = desks
    await admin.call("PUT", f"/devices/{DESK_A}/assignments", [{"slot": 1, "username": "alice"}])
    contact, plain = "sip:201@10.0.0.5:5060", "Yealink SIP-T54W 96.86.0.70"
    # No MAC anywhere: the one device with a line for the extension.
    body = {"extension": "201", "contact": contact, "user_agent": plain}
    assert await pbx.call("registered", body) == (200, {"device": DESK_A})
    # The MAC in the User-Agent, when that device exists; else as if there were none.
    for ua_mac, device in (("00:15:65:00:00:02", DESK_B), ("00:15:65:99:99:99", DESK_A)):
        body = {"extension": "201", "contact": contact, "user_agent": f"{plain} {ua_mac}"}
        assert await pbx.call("registered", body) == (200, {"device": device}), ua_mac
    # The hook's own mac first, whatever the User-Agent says; an unknown one is refused.
    body = {
        "extension": "201",
        "contact": contact,
        "user_agent": f"{plain} 00:15:65:00:00:01",
        "mac": DESK_B,
    }
    assert await pbx.call("registered", body) == (200, {"device": DESK_B})
    status, data = await pbx.call("registered", {**body, "mac": "001565777777"})
    assert (status, data["error"]["code"]) == (404, "device_not_found")
    # A User-Agent is stored cut to 512 characters.
    long_agent = plain + " " + "x" * 600
    body = {"extension": "201", "contact": contact, "user_agent": long_agent, "mac": DESK_A}
    assert await pbx.call("registered", body) == (200, {"device": DESK_A})
    stored = await db.fetchval("SELECT sip_user_agent FROM devices WHERE mac = $1", DESK_A)
    assert stored == long_agent[:512]
    # Without a MAC, no device with a line for the extension, or several: refused.
    body = {"extension": "299", "contact": contact, "user_agent": plain}
    status, data = await pbx.call("registered", body)
    assert (status, data["error"]["code"]) == (404, "device_not_found")
    await admin.call("PUT", f"/devices/{DESK_B}/assignments", [{"slot": 1, "username": "alice"}])
    status, data = await pbx.call("registered", {**body, "extension": "201"})
    assert (status, data["error"]["code"]) == (409, "device_ambiguous")


DESK_A, DESK_B = "001565000001", "001565000002"


@pytest.fixture
async def desks(make_client: Any) -> tuple[Api, Pbx]:
    """alice (201) with a PIN, two desk phones, a registrar: the PBX's hot-desk world."""
    client = await make_client(hook_secret=SECRET)
    admin = await bootstrap_admin(client)
    site = {"registrar_host": "pbx.example.net"}
    assert (await admin.call("PUT", "/sites/default", site))[0] == 200
    user = {"username": "alice", "display_name": "Alice", "extension": "201"}
    assert (await admin.call("POST", "/users", user))[0] == 201
    assert (await admin.call("PUT", "/users/alice/pin", {"pin": "480913"}))[0] == 200
    for mac in (DESK_A, DESK_B):
        device = {"mac": mac, "vendor": "yealink", "model": "T54W"}
        assert (await admin.call("POST", "/devices", device))[0] == 201
    return admin, Pbx(client)


async def audit_rows(db: asyncpg.Connection, action: str) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT actor, impersonator, target_user, source, details FROM audit_log "
        "WHERE action = $1 ORDER BY id",
        action,
    )
    return [
        (r["actor"], r["impersonator"], r["target_user"], r["source"], json.loads(r["details"]))
        for r in rows
    ]


async def pending_jobs(db: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    rows = await db.fetch("SELECT id, mac, reason FROM push_jobs WHERE state = 'pending'")
    return {r["mac"]: (r["id"], r["reason"]) for r in rows}


async def test_the_pbxs_hot_desk_actions_are_audited_and_pushed_with_their_reason(
    desks: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    admin, pbx = desks
    pbx_here = ("pbx", None)
    await db.execute("DELETE FROM push_jobs")
    await db.execute("DELETE FROM audit_log")

    status, data = await pbx.call("pin-login", {"extension": "201", "pin": "111222", "mac": DESK_A})
    assert (status, data["error"]["code"]) == (403, "pin_invalid")
    assert await audit_rows(db, "pin.check_failed") == [
        (*pbx_here, "alice", "127.0.0.1", {"failures": 1})
    ]

    status, _ = await pbx.call("pin-login", {"extension": "201", "pin": "480913", "mac": DESK_A})
    assert status == 200
    jobs = await pending_jobs(db)
    assert jobs == {DESK_A: (jobs[DESK_A][0], "hotdesk.login")}
    assert await audit_rows(db, "hotdesk.login") == [
        (
            *pbx_here,
            "alice",
            "127.0.0.1",
            {"mac": DESK_A, "left": [], "push_jobs": [jobs[DESK_A][0]]},
        )
    ]

    # Logging in again where she is keeps her line as it is (same SIP account and password).
    line = "SELECT sip_auth_user, sip_password_encrypted FROM device_assignments WHERE mac = $1"
    before = await db.fetchrow(line, DESK_A)
    again = {"extension": "201", "pin": "480913", "mac": DESK_A}
    assert (await pbx.call("pin-login", again))[0] == 200
    assert tuple(await db.fetchrow(line, DESK_A)) == tuple(before)
    assert await db.fetchval("SELECT count(*) FROM parked_assignments") == 0

    # She moves on: the phone she leaves is pushed too.
    await db.execute("DELETE FROM push_jobs")
    status, _ = await pbx.call("pin-login", {"extension": "201", "pin": "480913", "mac": DESK_B})
    assert status == 200
    jobs = await pending_jobs(db)
    assert {mac: reason for mac, (_, reason) in jobs.items()} == {
        DESK_A: "hotdesk.login",
        DESK_B: "hotdesk.login",
    }
    logins = await audit_rows(db, "hotdesk.login")
    assert logins[-1][4] == {
        "mac": DESK_B,
        "left": [DESK_A],
        "push_jobs": [jobs[DESK_B][0], jobs[DESK_A][0]],
    }

    await admin.settled()  # the login's jobs rendered, as the worker does when they are due
    await db.execute("DELETE FROM push_jobs")
    revision = "SELECT revision FROM devices WHERE mac = $1"
    logged_in_revision = await db.fetchval(revision, DESK_B)
    assert (await pbx.call("logout", {"mac": DESK_B})) == (200, {"logged_out": ["alice"]})
    assert await db.fetchval(revision, DESK_B) > logged_in_revision, "rendered without her"
    jobs = await pending_jobs(db)
    assert jobs == {DESK_B: (jobs[DESK_B][0], "hotdesk.logout")}
    assert await audit_rows(db, "hotdesk.logout") == [
        (*pbx_here, "alice", "127.0.0.1", {"mac": DESK_B, "push_jobs": [jobs[DESK_B][0]]})
    ]
    await admin.settled()
    status, device = await admin.call("GET", f"/devices/{DESK_B}")
    assert (status, device["assignments"]) == (200, [])
    # Logging out a phone nobody is logged in at changes nothing and pushes nothing.
    await db.execute("DELETE FROM push_jobs")
    assert (await pbx.call("logout", {"mac": DESK_B})) == (200, {"logged_out": []})
    assert await pending_jobs(db) == {}
    assert len(await audit_rows(db, "hotdesk.logout")) == 1

    status, data = await pbx.call("reprovision", {"extension": "201"})
    assert (status, data["jobs"]) == (202, [])  # alice sits at no phone now
    status, data = await pbx.call("reprovision", {"mac": DESK_A})
    assert status == 202
    jobs = await pending_jobs(db)
    assert jobs == {DESK_A: (data["jobs"][0], "reprovision")}
    assert (await audit_rows(db, "device.reprovision"))[-1] == (
        *pbx_here,
        None,
        "127.0.0.1",
        {"macs": [DESK_A], "push_jobs": data["jobs"]},
    )


async def metrics(client: Client) -> dict[str, float]:
    """``/metrics`` as {series: value}; the counters are per process, so tests compare."""
    async with client.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    series = (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))
    return {name: float(value) for name, _, value in series if name}


async def test_two_hot_desk_logins_at_one_phone_at_once_both_land(
    desks: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    """The phone's row is locked for a login: the second waits and takes the line over, instead
    of both inserting a line 1 (one of them failing)."""
    admin, pbx = desks
    user = {"username": "bob", "display_name": "Bob", "extension": "202"}
    assert (await admin.call("POST", "/users", user))[0] == 201
    assert (await admin.call("PUT", "/users/bob/pin", {"pin": "592014"}))[0] == 200
    for _ in range(5):
        answers = await asyncio.gather(
            pbx.call("pin-login", {"extension": "201", "pin": "480913", "mac": DESK_A}),
            pbx.call("pin-login", {"extension": "202", "pin": "592014", "mac": DESK_A}),
        )
        assert [status for status, _ in answers] == [200, 200], answers
        lines = await db.fetch("SELECT slot FROM device_assignments WHERE mac = $1", DESK_A)
        assert [line["slot"] for line in lines] == [1]
        assert (await pbx.call("logout", {"mac": DESK_A}))[0] == 200


async def test_a_logout_waits_for_a_login_in_flight_at_the_phone_and_logs_it_out(
    desks: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    """The logout locks the phone's row, as a login does: a login in flight there is then
    undone by it. Without the lock the logout sees no hot-desk line and leaves the login's."""
    _, pbx = desks
    logout = await during_a_change(
        db,
        pbx.call("logout", {"mac": DESK_A}),
        ("SELECT 1 FROM devices WHERE mac = $1 FOR UPDATE", DESK_A),
        (
            "INSERT INTO device_assignments (mac, slot, user_id, hotdesk) "
            "SELECT $1, 1, id, true FROM users WHERE username = 'alice'",
            DESK_A,
        ),
    )
    assert logout == (200, {"logged_out": ["alice"]})
    assert await db.fetchval("SELECT count(*) FROM device_assignments WHERE mac = $1", DESK_A) == 0


async def test_a_locked_pin_says_for_how_long(
    desks: tuple[Api, Pbx], db: asyncpg.Connection
) -> None:
    _, pbx = desks
    before = await metrics(pbx.client)
    wrong = {"extension": "201", "pin": "111222", "mac": DESK_A}
    for _ in range(9):
        assert (await pbx.call("pin-login", wrong))[0] == 403
    for attempt in ("locks", "while locked"):
        stamp = pbx.started - pbx.calls - 1
        raw = json.dumps({**wrong, "pin": "480913" if attempt == "while locked" else "111222"})
        async with pbx.client.post(
            "/hooks/pbx/pin-login",
            data=raw.encode(),
            headers={SIGNATURE_HEADER: sign(SECRET, stamp, raw.encode())},
        ) as response:
            pbx.calls += 1
            data = await response.json()
            assert (response.status, data["error"]["code"]) == (423, "pin_locked"), attempt
            # The first lock lasts LOCK_BASE_SECONDS (300 s).
            assert 298 < int(response.headers["Retry-After"]) <= 300, attempt
    assert await audit_rows(db, "pin.locked") == [
        ("pbx", None, "alice", "127.0.0.1", {"lockouts": 1})
    ]
    after = await metrics(pbx.client)
    for series, increase in (
        ('provisioner_auth_failures_total{kind="pin"}', 10),
        ('provisioner_lockouts_total{kind="pin"}', 1),
    ):
        assert after[series] - before.get(series, 0) == increase, series
    status, data = await pbx.call("verify-pin", {"extension": "201", "pin": "480913"})
    assert (status, data["valid"]) == (200, False)
    until = datetime.fromisoformat(data["locked_until"])
    assert until.tzinfo is not None
    assert 290 < (until - datetime.now(UTC)).total_seconds() <= 300


async def test_pin_locks_escalate_up_to_a_day(pbx: Pbx, db: asyncpg.Connection) -> None:
    await db.execute("UPDATE users SET pin_lockouts = 20 WHERE username = 'alice'")
    for _ in range(10):
        status, data = await pbx.call("verify-pin", {"extension": "201", "pin": "111222"})
    assert (status, data["valid"]) == (200, False)
    until = datetime.fromisoformat(data["locked_until"])
    assert 86_000 < (until - datetime.now(UTC)).total_seconds() <= 86_400


async def test_pins_up_to_the_longest_policy_length_are_checked(pbx: Pbx) -> None:
    assert (await pbx.call("verify-pin", {"extension": "201", "pin": "1" * 12})) == (
        200,
        {"valid": False},
    )
    status, data = await pbx.call("verify-pin", {"extension": "201", "pin": "1" * 13})
    assert (status, data["error"]["code"], data["error"]["reason"]) == (
        422,
        "pin_policy",
        "length",
    )


# --- tokens: each revocation mechanism on its own ------------------------------------------------


async def sessions_of(db: asyncpg.Connection, username: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id "
            "WHERE u.username = $1",
            username,
        )
    )


async def test_a_session_row_left_behind_by_a_credential_change_is_not_honoured(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    """The lookup alone revokes: a session whose credential version is no longer the user's
    (a row another process has not cleaned up yet) opens nothing."""
    await make_user("alice", PW)
    alice = await admin.as_user("alice", PW)
    assert (await alice.call("GET", "/me"))[0] == 200
    await db.execute(
        "UPDATE users SET credential_version = credential_version + 1 WHERE username = 'alice'"
    )
    assert await sessions_of(db, "alice") == 1, "the row is still there"
    status, data = await alice.call("GET", "/me")
    assert (status, data["error"]["code"]) == (401, "token_invalid")
    # Expired sessions open nothing either.
    fresh = await admin.as_user("alice", PW)
    await db.execute("UPDATE sessions SET expires_at = now() - interval '1 second'")
    assert (await fresh.call("GET", "/me"))[0] == 401


async def test_an_impersonation_dies_with_the_admin_role(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", PW)
    await make_user("boss", PW, role="admin")
    boss = await admin.as_user("boss", PW)
    status, session = await boss.call("POST", "/users/alice/impersonate")
    assert status == 200
    lifetime = datetime.fromisoformat(session["expires_at"]) - datetime.now(UTC)
    assert 3500 < lifetime.total_seconds() <= 3600, "an impersonation lasts an hour"
    as_alice = Api(admin.client, session["token"])
    assert (await as_alice.call("GET", "/me"))[0] == 200
    status, _ = await admin.call("PATCH", "/users/boss", {"role": "user"})
    assert status == 200
    status, data = await as_alice.call("GET", "/me")
    assert (status, data["error"]["code"]) == (401, "token_invalid")


async def test_a_password_change_deletes_the_dead_sessions(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    """The deletion alone revokes too: no row of a revoked token stays behind to be honoured
    by a lookup that forgot the version (or by anything else reading the table)."""
    await make_user("alice", PW)
    for _ in range(3):
        assert (await admin.login("alice", PW))[0] == 200
    await db.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE token_hash = "
        "(SELECT token_hash FROM sessions s JOIN users u ON u.id = s.user_id "
        " WHERE u.username = 'alice' LIMIT 1)"
    )
    assert await sessions_of(db, "alice") == 3
    assert await sessions_of(db, "admin") == 1
    status, _ = await admin.call(
        "POST", "/users/alice/password", {"mode": "set", "password": NEW_PW, "temporary": False}
    )
    assert status == 200
    assert await sessions_of(db, "alice") == 0, "an admin's set leaves no session of alice"
    assert await sessions_of(db, "admin") == 1, "the admin's own session is untouched"

    alice = await admin.as_user("alice", NEW_PW)
    assert (await admin.login("alice", NEW_PW))[0] == 200
    assert await sessions_of(db, "alice") == 2
    status, data = await alice.call(
        "PUT", "/me/password", {"current_password": NEW_PW, "new_password": PW}
    )
    assert status == 200, data
    assert await sessions_of(db, "alice") == 1, "only the token the change hands out is left"
    assert (await Api(admin.client, data["token"]).call("GET", "/me"))[0] == 200
    lifetime = datetime.fromisoformat(data["expires_at"]) - datetime.now(UTC)
    assert 11.9 * 3600 < lifetime.total_seconds() <= 12 * 3600
    assert (await audit_rows(db, "password.change"))[-2:] == [
        (
            "admin",
            None,
            "alice",
            "127.0.0.1",
            {"mode": "set", "temporary": False, "email_sent": False},
        ),
        ("alice", None, "alice", "127.0.0.1", {"mode": "self"}),
    ]

    # Under an impersonation the fresh token lasts as long as an impersonation.
    status, session = await admin.call("POST", "/users/alice/impersonate")
    assert status == 200
    status, data = await Api(admin.client, session["token"]).call(
        "PUT", "/me/password", {"new_password": NEW_PW}
    )
    assert status == 200, data
    lifetime = datetime.fromisoformat(data["expires_at"]) - datetime.now(UTC)
    assert 3500 < lifetime.total_seconds() <= 3600


async def test_self_service_refuses_the_own_email_as_password(admin: Api, make_user: Any) -> None:
    await make_user("alice", PW, email="alice@example.net")
    alice = await admin.as_user("alice", PW)
    for personal in ("alice@example.net", "ALICE@example.net"):
        status, data = await alice.call(
            "PUT", "/me/password", {"current_password": PW, "new_password": personal}
        )
        assert (status, data["error"]["code"], data["error"]["reason"]) == (
            422,
            "password_policy",
            "personal",
        )


async def test_a_locked_login_says_for_how_long(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", PW)
    for _ in range(6):  # five free attempts, the sixth locks for 30 s
        assert (await admin.login("alice", "wrong-Passw0rd"))[0] == 401
    async with admin.client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PW}
    ) as response:
        assert response.status == 429
        assert 28 < int(response.headers["Retry-After"]) <= 30
    # A login as nobody is audited with where it came from.
    assert (await admin.login("nobody", PW))[0] == 401
    row = await db.fetchrow(
        "SELECT * FROM audit_log WHERE action = 'auth.login_failed' AND target_user IS NULL"
    )
    assert row is not None
    assert (row["actor"], row["source"]) == (None, "127.0.0.1")
    assert [row[4] for row in await audit_rows(db, "auth.login_failed") if row[2] == "alice"] == [
        {"failures": n} for n in range(1, 7)
    ]
    assert {row[:4] for row in await audit_rows(db, "auth.login_failed") if row[2]} == {
        ("alice", None, "alice", "127.0.0.1")
    }


async def test_login_locks_escalate_up_to_a_quarter_hour(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", PW)
    await db.execute("UPDATE users SET login_failures = 40 WHERE username = 'alice'")
    assert (await admin.login("alice", "wrong-Passw0rd"))[0] == 401
    async with admin.client.post(
        "/api/v1/auth/login", json={"username": "alice", "password": PW}
    ) as response:
        assert response.status == 429
        assert 890 < int(response.headers["Retry-After"]) <= 900


async def test_the_first_admin_is_named_and_its_creation_audited(
    admin: Api, db: asyncpg.Connection
) -> None:
    status, user = await admin.call("GET", "/users/admin")
    assert (status, user["display_name"]) == (200, "Administrator")
    row = await db.fetchrow(
        """SELECT actor, target_user, source, details = '{"bootstrap": true}'::jsonb AS bootstrap
           FROM audit_log WHERE action = 'user.create'"""
    )
    assert row is not None
    assert dict(row) == {
        "actor": None,
        "target_user": "admin",
        "source": "startup",
        "bootstrap": True,
    }


async def test_a_login_is_audited_with_how_the_user_proved_who_they_are(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", PW)
    status, session = await admin.login("alice", PW)
    assert status == 200
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", session["token"]), "256 random bits"
    rows = await audit_rows(db, "auth.login")
    assert rows[-1] == (
        "alice",
        None,
        "alice",
        "127.0.0.1",
        {"via": "password", "password_change_required": False},
    )


async def test_a_login_waits_for_a_password_change_in_flight_and_loses_to_it(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    """The session is opened under the user's row lock: a credential change holding the row
    while the password is checked is seen once it commits, and no session is opened."""
    await make_user("alice", PW)
    status, data = await during_a_change(db, admin.login("alice", PW), CREDENTIAL_CHANGE)
    assert (status, data["error"]["code"]) == (409, "password_changed_meanwhile")
    assert (
        await db.fetchval(
            "SELECT count(*) FROM sessions s JOIN users u "
            "ON u.id = s.user_id WHERE u.username = 'alice'"
        )
        == 0
    )


async def test_a_session_lasts_twelve_hours_and_one_that_must_change_its_password_a_quarter(
    admin: Api, make_user: Any
) -> None:
    await make_user("alice", PW)
    body = {"mode": "set", "password": NEW_PW, "temporary": True}
    assert (await admin.call("POST", "/users/alice/password", body))[0] == 200
    lifetimes = []
    for password in (NEW_PW, "Mine-Passw0rd-3"):
        status, session = await admin.login("alice", password)
        assert status == 200, session
        left = datetime.fromisoformat(session["expires_at"]) - datetime.now(UTC)
        lifetimes.append((session["password_change_required"], left.total_seconds()))
        if session["password_change_required"]:
            change = {"current_password": NEW_PW, "new_password": "Mine-Passw0rd-3"}
            status, _ = await Api(admin.client, session["token"]).call(
                "PUT", "/me/password", change
            )
            assert status == 200
    [(must, temporary), (may, full)] = lifetimes
    assert (must, may) == (True, False)
    assert 14 * 60 < temporary <= 15 * 60
    assert 12 * 3600 - 60 < full <= 12 * 3600


async def test_random_passwords_are_twenty_unambiguous_characters(
    admin: Api, make_user: Any, mail_sink: MailSink
) -> None:
    await make_user("alice", PW, email="alice@example.net")
    sent = []
    for _ in range(2):
        status, _ = await admin.call("POST", "/users/alice/password", {"mode": "random_and_email"})
        assert status == 200
        sent.append(mailed_password(mail_sink.bodies_to("alice@example.net")[-1]))
    assert "alice" in mail_sink.bodies_to("alice@example.net")[-1], "the mail names the account"
    for password in sent:
        assert re.fullmatch(r"[A-Za-z2-9\-_.+!?#]{20}", password), password
        assert not set(password) & set("0O1lI"), password
    assert sent[0] != sent[1]


async def test_the_password_use_case_refuses_an_unknown_mode_itself(
    admin: Api, make_user: Any
) -> None:
    """The API's schema refuses an unknown mode before the use case runs; the CLI and the pages
    call the use case directly, so it checks the mode itself, with the same code."""
    await make_user("alice", PW, email="alice@example.net")
    core = admin.client.app[CORE]
    with pytest.raises(ProvisionerError) as refused:
        await passwords.admin_set_password(core, Actor.cli(), "alice", mode="sms", password=NEW_PW)
    assert (refused.value.kind, refused.value.code) == (Kind.INVALID, "mode_invalid")
    assert (await admin.login("alice", PW))[0] == 200, "nothing changed"


# --- PINs: the policy checked again under the row lock -------------------------------------------


def change_meanwhile(
    monkeypatch: pytest.MonkeyPatch, module: Any, meanwhile: Callable[[], Awaitable[int]]
) -> list[int]:
    """Make ``module``'s first unlocked read of a user run ``meanwhile`` (another change,
    committed) before it returns: the use case then goes on with what it read before.

    Returns the list ``meanwhile``'s status lands in, so a test can tell the race happened."""
    real_get_user: Callable[..., Awaitable[Any]] = module.get_user
    raced: list[int] = []

    async def get_user_then_change(conn: Any, username: str, *, for_update: bool = False) -> Any:
        row = await real_get_user(conn, username, for_update=for_update)
        if not for_update and not raced:
            raced.append(0)  # the change below reads the user through this module too
            raced[0] = await meanwhile()
        return row

    monkeypatch.setattr(module, "get_user", get_user_then_change)
    return raced


async def during_a_change(
    db: asyncpg.Connection, call: Awaitable[T], *statements: tuple[Any, ...]
) -> T:
    """Run ``call`` while a transaction of ``db`` holds the rows ``statements`` change (a change
    in flight), and commit that once ``call``'s work waits for one of them (or is done: a
    mutant that takes no lock must not hang the test)."""
    from tests.test_push import eventually

    async with db.transaction():
        for statement in statements:
            await db.execute(*statement)
        task = asyncio.ensure_future(call)

        async def waiting() -> bool:
            blocked = await db.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"""
            )
            return bool(blocked) or task.done()

        await eventually(waiting, "the change waits for the row this transaction holds", within=10)
    return await task


#: alice's password changed, not yet committed: her credential version raised.
CREDENTIAL_CHANGE = (
    "UPDATE users SET credential_version = credential_version + 1 WHERE username = 'alice'",
)


async def test_the_locked_read_waits_for_an_extension_change_in_flight(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    """The second read of the user must take the row lock: an extension change holding the
    row when the PIN change reads it is then seen once it commits. Read without the lock, the
    old extension passes the policy and the PIN lands equal to the new extension."""
    await make_user("alice", extension="201")
    new_pin = "739251"
    status, data = await during_a_change(
        db,
        admin.call("PUT", "/users/alice/pin", {"pin": new_pin}),
        ("UPDATE users SET extension = $1 WHERE username = 'alice'", new_pin),
    )
    assert (status, data["error"]["code"], data["error"]["reason"]) == (
        422,
        "pin_policy",
        "extension",
    )
    assert await db.fetchval("SELECT pin_hash FROM users WHERE username = 'alice'") is None


def test_a_pin_of_the_longest_length_passes_the_policy() -> None:
    digits = "4809135726481357" * 2
    pins.check_pin_policy(digits[: pins.MAX_LENGTH], min_length=6, extension=None)
    with pytest.raises(ProvisionerError) as refused:
        pins.check_pin_policy(digits[: pins.MAX_LENGTH + 1], min_length=6, extension=None)
    assert refused.value.reason == "length"


async def test_an_admins_password_set_loses_to_a_change_that_landed_meanwhile(
    admin: Api, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_user("alice", PW, email="alice@example.net")

    async def other_admin_sets() -> int:
        body = {"mode": "set", "password": NEW_PW, "temporary": False}
        return (await admin.call("POST", "/users/alice/password", body))[0]

    raced = change_meanwhile(monkeypatch, passwords, other_admin_sets)
    body = {"mode": "set", "password": "Third-Passw0rd-3", "temporary": False}
    status, data = await admin.call("POST", "/users/alice/password", body)
    assert raced == [200]
    assert (status, data["error"]["code"]) == (409, "password_changed_meanwhile")
    assert (await admin.login("alice", NEW_PW))[0] == 200, "the change that landed stands"


async def test_an_admins_password_set_waits_for_a_change_in_flight_and_loses_to_it(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    """The locked read of the user must wait for a credential change that holds the row, and
    then see it: read without the lock, the set overwrites the change that landed."""
    await make_user("alice", PW, email="alice@example.net")
    body = {"mode": "set", "password": NEW_PW, "temporary": False}
    status, data = await during_a_change(
        db, admin.call("POST", "/users/alice/password", body), CREDENTIAL_CHANGE
    )
    assert (status, data["error"]["code"]) == (409, "password_changed_meanwhile")
    assert (await admin.login("alice", PW))[0] == 200, "nothing was set"


async def test_an_own_password_change_waits_for_a_change_in_flight_and_loses_to_it(
    admin: Api, make_user: Any, db: asyncpg.Connection
) -> None:
    await make_user("alice", PW)
    alice = await admin.as_user("alice", PW)
    body = {"current_password": PW, "new_password": NEW_PW}
    status, data = await during_a_change(
        db, alice.call("PUT", "/me/password", body), CREDENTIAL_CHANGE
    )
    assert (status, data["error"]["code"]) == (409, "password_changed_meanwhile")
    assert (await admin.login("alice", PW))[0] == 200, "nothing was set"


async def test_a_mailed_password_is_not_set_when_the_address_changed_meanwhile(
    admin: Api, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_user("alice", PW, email="alice@example.net")

    async def new_address() -> int:
        return (await admin.call("PATCH", "/users/alice", {"email": "alice@example.org"}))[0]

    raced = change_meanwhile(monkeypatch, passwords, new_address)
    status, data = await admin.call("POST", "/users/alice/password", {"mode": "random_and_email"})
    assert raced == [200]
    assert (status, data["error"]["code"]) == (409, "password_changed_meanwhile")
    assert (await admin.login("alice", PW))[0] == 200, "the old password still works"


# --- push coalescing: debounce and its maximum wait -----------------------------------------------

MAC = "001565000001"


async def add_device(db: asyncpg.Connection, mac: str = MAC) -> None:
    await db.execute(
        "INSERT INTO devices (mac, vendor, model, kind) VALUES ($1, 'yealink', 'T54W', 'desk')",
        mac,
    )


async def change_and_claim(db: asyncpg.Connection, reason: str) -> tuple[list[int], float, bool]:
    """One change to the device, and in the same transaction (one ``now()``) a worker's claim:
    (job ids, seconds the job has been pending, whether the worker got it)."""
    async with db.transaction():
        jobs = await store.enqueue_push_jobs(db, [MAC], reason)
        pending_for = await db.fetchval(
            "SELECT extract(epoch FROM now() - pending_since)::float8 FROM push_jobs "
            "WHERE mac = $1 AND state = 'pending'",
            MAC,
        )
        claimed = await store.claim_push_jobs(db, worker="test", limit=10, lease_seconds=60)
    return jobs, float(pending_for), bool(claimed)


async def test_a_burst_of_changes_folds_into_one_job_that_waits_for_the_burst(
    db: asyncpg.Connection,
) -> None:
    """Without the debounce every change would be due at once: a worker would notify the
    device for the first change and again for each later one."""
    await add_device(db)
    first_jobs: list[int] = []
    not_before: list[Any] = []
    for i in range(5):
        jobs, pending_for, claimed = await change_and_claim(db, f"change {i}")
        assert pending_for < store.PUSH_MAX_WAIT, "the burst took longer than the maximum wait"
        assert not claimed, f"change {i} made the job due at once"
        first_jobs = first_jobs or jobs
        assert jobs == first_jobs, "every change folds into the one open job"
        not_before.append(await db.fetchval("SELECT not_before FROM push_jobs"))
    assert not_before == sorted(not_before)
    assert not_before[-1] > not_before[0], "each change extends the wait"
    assert await db.fetchval("SELECT count(*) FROM push_jobs") == 1

    # Once the changes stop, the job falls due by itself.
    deadline = time.monotonic() + DEADLINE
    while not await store.claim_push_jobs(db, worker="test", limit=10, lease_seconds=60):
        assert time.monotonic() < deadline, "the job never fell due"
        await asyncio.sleep(0.05)  # polling interval


async def test_a_device_changed_without_pause_is_pushed_after_the_maximum_wait(
    db: asyncpg.Connection,
) -> None:
    """Each change extends the debounce, but never beyond the maximum wait: a device whose
    users keep changing things is still pushed."""
    await add_device(db)
    # A fixed deadline, not one derived from the maximum wait: a push must leave within
    # seconds of a change (DESIGN.md: the last NOTIFY of a burst within 3 s).
    deadline = time.monotonic() + DEADLINE
    while True:
        _, pending_for, claimed = await change_and_claim(db, "steady stream")
        if pending_for < store.PUSH_MAX_WAIT:
            assert not claimed, f"due after {pending_for:.2f} s, before the maximum wait"
        else:
            assert claimed, f"still not due after {pending_for:.2f} s of changes"
            break
        assert time.monotonic() < deadline, "the stream of changes never reached the maximum wait"
        await asyncio.sleep(0.05)  # the pace of the stream of changes


def test_a_peer_that_is_not_an_address_is_in_no_allowed_network() -> None:
    """A connection aiohttp names no peer for (a UNIX socket) is "unknown": outside
    PROVISIONER_PHONES_ALLOW however wide it is, never let through by a parse error."""
    everything = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    source = client_address(None, None, ())
    assert source == "unknown"
    assert not phones._allowed(source, everything)
    assert phones._allowed("192.0.2.1", everything)
    assert phones._allowed("2001:db8::1", everything)


async def test_a_user_agent_of_512_characters_is_heard_and_a_longer_one_is_a_failure(
    phones_client: Client, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    phone = BY_ID["yealink-T54W"]
    with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
        longest = await fetch(phones_client, phone, auth=None, user_agent="Y" * 512)
        assert longest.status == 401
        assert not any("oversized_user_agent" in m for m in caplog.messages)
        longer = await fetch(phones_client, phone, auth=None, user_agent="Y" * 513)
    assert longer.status == 404
    assert any(m.endswith(": oversized_user_agent") for m in caplog.messages)


async def test_a_user_agent_naming_another_mac_than_the_path_is_a_failure(
    phones_client: Client, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    phone = BY_ID["yealink-T54W"]
    other = phone.user_agent.rsplit(" ", 1)[0] + " 00:15:65:99:99:99"
    with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
        got = await fetch(phones_client, phone, auth=None, user_agent=other)
    assert got.status == 404
    assert any(m.endswith(": mac_mismatch") for m in caplog.messages), caplog.messages


async def test_each_refusal_names_its_reason_in_the_fail2ban_line_and_the_metric(
    phones_client: Client, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """fail2ban's filter and the dashboards go by these words: each refusal gets its own."""
    desk, other = BY_ID["yealink-T54W"], BY_ID["yealink-W70B"]
    await provision(api, desk)
    await provision(api, other, "bob", extension="202")
    own = basic(*await own_credential(phones_client, desk))
    stranger = replace(
        desk,
        mac="001565d4e5f6",
        line_file="001565d4e5f6.cfg",
        user_agent="Yealink SIP-T54W 96.86.0.70 00:15:65:d4:e5:f6",
    )
    refusals = [
        # (reason, request, status); the sources differ so none gets blocked
        ("unknown_user", dict(phone=desk, auth=basic("nobody", "x")), 401),
        ("unknown_device", dict(phone=stranger, auth=own), 404),
        ("other_device", dict(phone=other, auth=own), 404),
        ("bootstrap_retired", dict(phone=desk, auth=BOOTSTRAP), 401),
    ]
    assert (await fetch(phones_client, desk, auth=own)).status == 200  # retires the bootstrap
    for number, (reason, request, status) in enumerate(refusals, start=70):
        source = f"198.51.100.{number}"
        before = await metrics(phones_client)
        with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
            caplog.clear()
            got = await fetch(phones_client, source=source, **request)  # type: ignore[arg-type]
        assert got.status == status, reason
        assert caplog.messages == [f"provisioning auth failure from {source}: {reason}"]
        series = f'provisioner_fetch_refusals_total{{reason="{reason}"}}'
        assert (await metrics(phones_client))[series] - before.get(series, 0) == 1, reason


async def test_a_basic_header_without_a_colon_is_no_attempt_at_a_password(
    phones_client: Client, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """``Basic <base64 of "boot">`` is no user-password pair (RFC 7617): it gets the bare
    challenge, as a request without credentials does, and is no failed login for fail2ban."""
    phone = BY_ID["yealink-T54W"]
    bare = "Basic " + base64.b64encode(b"boot").decode()
    with caplog.at_level(logging.WARNING, logger="provisioner.phones"):
        got = await fetch(phones_client, phone, auth=bare)
    assert got.status == 401
    assert got.headers.getall("WWW-Authenticate")
    assert caplog.messages == []

"""Gigaset Nx70 IP PRO DECT systems (N610, N670, N870, N870E).

One provisioning file describes the whole DECT system: the SIP provider profile, the provisioning
server and one handset entry (``add_hs``) with its SIP account per occupied slot. The base asks for
``provisioning.xml`` when its provisioning URL names a folder and for ``<MAC>.xml`` otherwise; both
get the same content, and the file tells the base to use the direct ``<MAC>.xml`` URL from then on
(Gigaset's preferred form, and one that carries the MAC in the path).

Sources: Gigaset PRO wiki (teamwork.gigaset.com/gigawiki, pro-wiki.gigaset.com) pages "Auto
provisioning - Delete handsets" (``DeleteNotProvisionedHS``, ``add_hs``, ``hs.RegStatus``),
"SIP: Check-sync message" (Nx70, software 2.52+), "SIP Multicast" (``productID="e2"`` for
N610/N670/N870/N870E), "Auto provisioning: HTTP digest" and the N870 Site Planning Guide (250
handsets per DECT manager). What could not be confirmed is listed in the template header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from provisioner.devices.base import (
    Adapter,
    FileRequest,
    Line,
    ModelInfo,
    RenderContext,
    RenderError,
    Templates,
    UserField,
    check_slots,
    first_mac,
    has_oui,
    models_by_name,
    names_other_vendor,
    names_vendor,
    with_credentials,
)

#: Gigaset's MAC prefixes. A request without a Gigaset User-Agent is only accepted for these.
GIGASET_OUIS = frozenset({"7c2f80", "002104", "589ec6"})

#: Model token in the UA's product part, e.g. ``Gigaset N870 IP PRO`` or ``Gigaset N870E IP PRO``.
_UA_MODEL = re.compile(r"gigaset\s+(?P<model>[A-Z]+\d+[A-Z]?)\b", re.IGNORECASE)
_MAC_FILE = re.compile(r"(?P<mac>[0-9a-fA-F]{12})\.xml")
_FOLDER_FILE = "provisioning.xml"

#: DECT access codes are at most 8 digits (32-bit BCD, ETSI EN 300 175-7).
_DECT_AC = re.compile(r"[0-9]{1,8}")
#: A DECT IPUI as Gigaset writes it (e.g. ``02b6ec8aa5``).
_IPUI = re.compile(r"[0-9a-f]{10}")

#: ``SipProvider.N.TransportProtocol`` values; not confirmed in Gigaset's own documentation.
_TRANSPORT = {"udp": "1", "tcp": "2", "tls": "3"}

_MODELS = (
    # family = the provisioning file's productID.
    ModelInfo("N610", "dect", 8, family="e2"),
    ModelInfo("N670", "dect", 20, family="e2"),
    ModelInfo("N870", "dect", 250, family="e2"),
    ModelInfo("N870E", "dect", 250, family="e2"),
)


@dataclass(frozen=True)
class _Handset:
    """One ``add_hs`` entry: the index the base files it under and the account it carries."""

    key: str
    """The IPUI when known, else the slot as five digits (``00001``)."""
    access_code: str | None
    line: Line


class GigasetAdapter(Adapter):
    """Gigaset Nx70 IP PRO single-cell and multicell DECT systems."""

    vendor = "gigaset"
    models = models_by_name(_MODELS)
    user_fields = frozenset[UserField]({"pin", "display_name", "extension", "sip_credentials"})

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``<MAC>.xml`` (either case) and ``provisioning.xml``.

        The Nx70 User-Agent reads ``Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605``,
        sometimes with a ``;Handset=N`` suffix, and old firmware sends no MAC at all.
        """
        is_gigaset = names_vendor(user_agent, self.vendor)
        if names_other_vendor(user_agent, self.vendor) and not is_gigaset:
            return None
        ua_mac = _user_agent_mac(user_agent) if is_gigaset else None
        model = _user_agent_model(user_agent)
        name = path.strip().lstrip("/")

        match = _MAC_FILE.fullmatch(name)
        if match is not None:
            mac = match.group("mac").lower()
            if not is_gigaset and not has_oui(mac, GIGASET_OUIS):
                return None
            return FileRequest(
                file=f"{mac.upper()}.xml", mac=mac, user_agent_mac=ua_mac, model=model
            )
        if name.lower() == _FOLDER_FILE and is_gigaset:
            return FileRequest(file=_FOLDER_FILE, mac=ua_mac, user_agent_mac=ua_mac, model=model)
        return None

    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        """Render the system's file once and serve it under both names the base may request."""
        model = ctx.device.model
        lines = check_slots(ctx.lines, model, f"Gigaset {model.name}", noun="handsets")
        mac_file = f"{ctx.device.mac.upper()}.xml"
        body = templates.render(
            "provisioning.xml",
            product_id=model.family,
            provisioning_server=_provisioning_server(ctx, mac_file),
            site=ctx.site,
            transport=_TRANSPORT[ctx.site.transport],
            handsets=[handset for line in lines if (handset := _handset(line)) is not None],
        )
        return {mac_file: body, _FOLDER_FILE: body}

    def sip_event(self, model: ModelInfo) -> str | None:
        # Nx70 applies provisioned settings without a reboot (Gigaset wiki, software 2.52+).
        return "check-sync;reboot=false"


def _user_agent_mac(user_agent: str) -> str | None:
    """The MAC among the UA's ``;``-separated fields, in whatever form the firmware wrote it."""
    return first_mac(user_agent.strip().strip('"').split(";")[1:])


def _user_agent_model(user_agent: str) -> str | None:
    match = _UA_MODEL.search(user_agent)
    return match.group("model").upper() if match else None


def _handset(line: Line) -> _Handset | None:
    """The handset entry for ``line``, or None when it must not be registrable yet.

    The user's PIN is the access code a handset registers with. Without a PIN, a placeholder
    entry would let any handset in range take the slot and its SIP account, so such a line is
    left out (and ``DeleteNotProvisionedHS`` removes it from the base) unless its IPUI binds the
    registration to one physical handset.
    """
    if line.ipui is not None and not _IPUI.fullmatch(line.ipui.strip().lower()):
        raise RenderError(f"handset slot {line.slot}: IPUI is not 10 hex digits")
    if line.pin is not None and not _DECT_AC.fullmatch(line.pin):
        # Never name the PIN itself: this message ends up in logs and on admin pages.
        raise RenderError(
            f"handset slot {line.slot}: the user's PIN cannot be a DECT access code (1-8 digits)"
        )
    if line.ipui is None:
        if line.pin is None:
            return None
        return _Handset(key=f"{line.slot:05d}", access_code=line.pin, line=line)
    return _Handset(key=line.ipui.strip().lower(), access_code=line.pin, line=line)


def _provisioning_server(ctx: RenderContext, mac_file: str) -> str:
    """The direct URL of this base's file, with its next provisioning credential as userinfo.

    Gigaset documents ``http(s)://<user>:<password>@host/...`` as the form in which the redirect
    service hands a base its HTTP digest credential (software 2.53+); the base keeps them.
    """
    parts = urlsplit(ctx.provisioning_url)
    folder = parts.path if parts.path.endswith("/") else f"{parts.path}/"
    url = urlunsplit((parts.scheme, parts.netloc, f"{folder}{mac_file}", "", ""))
    return with_credentials(url, ctx.provisioning_user, ctx.provisioning_password)


ADAPTER = GigasetAdapter()

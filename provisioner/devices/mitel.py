"""Mitel SIP-DECT: the OpenMobility Manager (OMM) and its users.

The OMM reads configuration files made of OM AXI commands, one XML element per line and no XML
declaration. The user file's format is in the SIP-DECT OM System Manual 6.1 (sections 7.8.4/7.8.5,
user data in configuration files); that ``ipdect.cfg`` carries OM AXI commands is known from
deployments' configuration files, not from a Mitel document. Provisioner serves three files:

``ipdect.cfg``
    Site-wide OMM settings (SIP registrar, NTP, time zone). It carries no secret and is
    ``shared``: every RFP of the system fetches this name as well.
``<MAC>.cfg``
    The settings of one OMM, named after the MAC the OMM is registered under in provisioner: the
    URLs the OMM fetches its configuration and user files from next time, with the per-device
    provisioning credential. The URLs point into a folder named after the MAC
    (``<base>/<mac>/``) so that every later request names its device in the path.
``user_common.cfg``
    One ``CreatePPUser`` record per user slot (``uid`` = slot, 1..512): number, name, SIP
    authentication name and password, and the PIN users log in with at shared DECT phones. Free
    slots get the blank record the manual prescribes for removing a user, so unassigning a user
    really removes them from the OMM. A user who has no PIN yet gets the blank record too: an
    OMM user with an empty PIN could be taken over at any shared phone by whoever knows the
    number.

The OMM's HTTP User-Agent is not documented, so requests are recognised by file name and, for
``<MAC>.cfg`` (a name Yealink, Poly and Fanvil use too), by the RFPs' MAC prefix. Resync does not
go over SIP: the push uses OM AXI, which is a separate transport (``sip_event`` is None).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from provisioner.devices.base import (
    Adapter,
    FileRequest,
    Line,
    ModelInfo,
    RenderContext,
    Templates,
    UserField,
    check_slots,
    has_oui,
    models_by_name,
    names_other_vendor,
    normalise_mac,
    slot_table,
)
from provisioner.notify import ApiAccess
from provisioner.omaxi import OmAxiClient

#: MAC prefix of SIP-DECT base stations (RFPs and RFP-hosted OMMs): 00:30:42, DeTeWe, whose DECT
#: business became Aastra's and then Mitel's. Aastra's own 00:08:5D is deliberately absent: Aastra
#: desk phones fetch ``<MAC>.cfg`` too.
MITEL_OUIS = frozenset({"003042"})

COMMON_FILE = "ipdect.cfg"
USER_FILE = "user_common.cfg"

#: What marks a User-Agent as Mitel's here. The OMM's own User-Agent is undocumented, so this is
#: wider than the words that name Mitel to the other adapters.
_MITEL_UA = re.compile(r"mitel|aastra|sip-dect|\bomm\b|openmobility", re.IGNORECASE)
_MAC_FILE = re.compile(r"(?P<mac>[0-9a-fA-F]{12})\.cfg")

#: ``SetBasicSIP transportProt`` values.
_TRANSPORT = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}

_MODELS = (
    # An OMM on an RFP handles 512 users; the manual's user-file example runs uid 1..512.
    ModelInfo("SIP-DECT", "dect", 512),
)


@dataclass(frozen=True)
class _ServerUrl:
    """A URL in the parts the OMM's ``<url>`` element wants."""

    protocol: str
    host: str
    port: int
    path: str


@dataclass(frozen=True)
class _UserSlot:
    uid: int
    line: Line | None


class MitelAdapter(Adapter):
    """Mitel (formerly Aastra/DeTeWe) SIP-DECT OpenMobility Manager."""

    vendor = "mitel"
    models = models_by_name(_MODELS)
    user_fields = frozenset[UserField]({"pin", "display_name", "extension", "sip_credentials"})

    async def push(self, ctx: RenderContext, access: ApiAccess) -> str:
        """Update every PP user that carries a PIN on the OMM over OM AXI (``SetPPUser``).

        The OMM creates its users from ``user_common.cfg``; this applies a change right away
        instead of waiting for the OMM's next file import. uid = the slot, as in that file.
        OM AXI failures arrive as :class:`NotifyError` (the push worker retries them).
        """
        client = OmAxiClient(
            access.host,
            access.port,
            username=access.username,
            password=access.password,
            fingerprint=access.fingerprint,
        )
        lines = [line for line in ctx.lines if line.pin]
        try:
            for batch in (lines[i : i + 8] for i in range(0, len(lines), 8)):
                await asyncio.gather(
                    *(
                        client.set_pp_user(
                            line.slot,
                            num=line.extension,
                            name=line.display_name,
                            pin=line.pin,
                            sip_auth_id=line.sip_auth_user,
                            sip_password=line.sip_password,
                        )
                        for line in batch
                    )
                )
        finally:
            await client.close()
        return f"OM AXI: {len(lines)} user(s) updated on {client.address}"

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``ipdect.cfg``, ``user_common.cfg`` and ``<MAC>.cfg``.

        Each may come from the configured base URL or, once the OMM has its ``<MAC>.cfg``, from
        the OMM's own folder ``<mac>/``. Without that folder ``ipdect.cfg`` and
        ``user_common.cfg`` name no device: ``mac`` is then None and the caller must know the
        device from its credential.
        """
        if names_other_vendor(user_agent, self.vendor) and not _MITEL_UA.search(user_agent):
            return None
        parts = path.strip().lstrip("/").split("/")
        if len(parts) > 2:
            return None
        folder_mac = normalise_mac(parts[0]) if len(parts) == 2 else None
        if len(parts) == 2 and folder_mac is None:
            return None
        name = parts[-1]

        if name.lower() == COMMON_FILE:
            return FileRequest(file=COMMON_FILE, mac=folder_mac, shared=True)
        if name.lower() == USER_FILE:
            return FileRequest(file=USER_FILE, mac=folder_mac)
        match = _MAC_FILE.fullmatch(name)
        if match is None:
            return None
        mac = match.group("mac").lower()
        if folder_mac is not None and folder_mac != mac:
            return None
        if not has_oui(mac, MITEL_OUIS) and not _MITEL_UA.search(user_agent):
            return None
        return FileRequest(file=f"{mac.upper()}.cfg", mac=mac)

    def render(self, ctx: RenderContext, templates: Templates) -> dict[str, bytes]:
        model = ctx.device.model
        lines = check_slots(ctx.lines, model, f"Mitel {model.name}", noun="users")
        slots = [_UserSlot(uid, _with_pin(line)) for uid, line in slot_table(lines, model)]
        return {
            COMMON_FILE: templates.render(
                "ipdect.cfg.xml", site=ctx.site, transport=_TRANSPORT[ctx.site.transport]
            ),
            f"{ctx.device.mac.upper()}.cfg": templates.render(
                "omm.cfg.xml",
                server=_device_folder(ctx.provisioning_url, ctx.device.mac),
                provisioning_user=ctx.provisioning_user,
                provisioning_password=ctx.provisioning_password,
            ),
            USER_FILE: templates.render("user_common.cfg.xml", slots=slots),
        }

    def sip_event(self, model: ModelInfo) -> str | None:
        # The OMM is told to re-read its files over OM AXI, not by a SIP NOTIFY.
        return None


def _with_pin(line: Line | None) -> Line | None:
    """The line if its user may be provisioned on the OMM, i.e. has a PIN to log in with."""
    return line if line is not None and line.pin is not None else None


def _device_folder(provisioning_url: str, mac: str) -> _ServerUrl:
    """The OMM's own folder below the provisioning base, as the OMM's ``<url>`` element wants it."""
    parts = urlsplit(provisioning_url)
    return _ServerUrl(
        protocol=parts.scheme.upper(),
        host=parts.hostname or "",
        port=parts.port or 0,  # 0: the protocol's default port
        path=f"{parts.path.rstrip('/')}/{mac}",
    )


ADAPTER = MitelAdapter()

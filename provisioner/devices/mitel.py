"""Mitel SIP-DECT: the OpenMobility Manager (OMM) and its users.

The OMM loads configuration files made of OM AXI commands, one XML element per line and no XML
declaration, from the URL it is given (SIP-DECT OM System Manual R6.1, 7.8.1 "Configuration file
URL", p. 243: RFP OMMs apply ``ipdect.cfg`` and ``<mac>.cfg`` as OM AXI commands). Provisioner
serves two files:

``ipdect.cfg``
    Site-wide OMM settings: SIP registrar, NTP server, time zone (only where the site's zone maps
    onto a zone id the OMM is known to take) and the DECT phone login variant ``ID``. It carries
    no secret and is ``shared``: every RFP of the system fetches this name as well.
``<MAC>.cfg``
    The settings of one OMM, named after the MAC the OMM is registered under in provisioner: the
    URL it fetches its configuration from next time, with the per-device provisioning credential
    (pointing into a folder ``<base>/<mac>/`` so that every later request names its device in the
    path); no external user data server (``user_common.cfg`` and ``<user>.cfg`` belong to the
    manual's "External User Data Provisioning", 7.8.5, a format of their own that provisioner
    does not serve); the system's DECT authentication code (``SetDECTAuthCode``); and the
    users, one ``CreatePPUser`` record per user slot (``uid`` = slot, 1..512) in the shape of
    the manual's "user data in configuration files" (7.8.4, p. 247). Free slots get the
    manual's blank record, which is how it removes a user; so does a user who has no PIN yet
    (an OMM user with an empty PIN could be taken over at any shared phone by whoever knows the
    login id).

The PIN: the PP user's ``pin`` attribute, which the OM AXI defines as the "PIN number, for the
DECT phone login process with unbound devices" (the OM AXI type descriptions, as published with
eventphone/mitel-api ``PPUserType.cs``; record shape in the System Manual, p. 247). A user logs
in at a shared handset with a login id and that PIN; the login id is ``addId`` ("User Login Id")
when the OMM's login variant is ``ID`` (``SetPPLoginVariant``, OM AXI schema), which
``ipdect.cfg`` sets. So ``addId`` is the user's extension, the number people know, while ``num``
and ``sipAuthId`` stay the SIP account. No maximum PIN length is documented (the schema types
``pin`` as a plain string; the manual's example PIN has 3 digits): see :data:`PIN_KEY`.

The DECT access code: the OMM's system-wide "DECT authentication code" (``SetDECTAuthCode ac``,
OM AXI schema; a global authentication code handsets must enter to subscribe, System Manual R3.0,
7.7.3), the system's own random code from :attr:`RenderContext.access_code`.

The OMM's HTTP User-Agent is not documented, so requests are recognised by file name and, for
``<MAC>.cfg`` (a name Yealink, Poly and Fanvil use too), by the RFPs' MAC prefix. Changes reach a
running OMM over OM AXI (:meth:`MitelAdapter.push`), not a SIP NOTIFY (``sip_event`` is None).

Models: the device is the OMM, named by the RFP that hosts it. Only an OMM on an RFP applies the
OM AXI commands of these files, from SIP-DECT 6.0 on, and only RFPs with internal flash (the 3rd
and 4th generations) can host an OMM; every such RFP gets the same files, so the models differ
only in name and software image (``family``). ``SIP-DECT`` stands for an OMM on any of them.

Sources, the meaning of every key and what is still unverified: ``docs/vendors/mitel.md``.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from markupsafe import Markup

from provisioner.devices.base import (
    AccessCodeKey,
    Adapter,
    FileRequest,
    Line,
    ModelInfo,
    PinKey,
    RenderContext,
    Templates,
    UserField,
    check_slots,
    has_oui,
    models_by_name,
    names_other_vendor,
    normalise_mac,
    posix_tz_rule,
    slot_table,
    xml_block,
    xml_text,
)
from provisioner.notify import ApiAccess
from provisioner.omaxi import OmAxiClient

#: MAC prefix of SIP-DECT base stations (RFPs and RFP-hosted OMMs): 00:30:42, DeTeWe, whose DECT
#: business became Aastra's and then Mitel's. Aastra's own 00:08:5D is deliberately absent: Aastra
#: desk phones fetch ``<MAC>.cfg`` too.
MITEL_OUIS = frozenset({"003042"})

COMMON_FILE = "ipdect.cfg"

#: The PP user's login PIN. No vendor document found states a length limit: the OM AXI schema
#: types ``pin`` as a plain string, the System Manual's example PIN has 3 digits, and an OMM
#: refuses a value it finds too long with ``errCode="ETooLong"`` and ``maxLen`` (schema), which
#: the push reports. 12 is therefore the PIN policy's own maximum, not a documented one.
PIN_KEY = PinKey(
    name="CreatePPUser/SetPPUser <user pin>",
    max_digits=12,
    min_digits=1,
    source=(
        "SIP-DECT OM System Manual R6.1, 7.8.4 user data in configuration files, p. 247"
        " (record shape, example pin of 3 digits); OM AXI PPUserType 'pin': PIN for the DECT"
        " phone login with unbound devices (eventphone/mitel-api PPUserType.cs, doc/SIP-DECT"
        " OM.xsd: xs:string). No maximum length documented: unverified beyond 3 digits."
    ),
)

#: The OMM's system-wide DECT authentication code. The length is not documented for the OMM;
#: 4 digits is what every DECT handset accepts (see docs/vendors/mitel.md).
ACCESS_CODE_KEY = AccessCodeKey(
    name="SetDECTAuthCode ac",
    source=(
        "OM AXI schema (eventphone/mitel-api doc/SIP-DECT OM.xsd): SetDECTAuthCode,"
        " DECTAuthCodeType/ac; global PP DECT authentication code: SIP-DECT OM System Manual"
        " R3.0, 7.7.3 Subscribing PPs, p. 77"
    ),
    digits=4,
)

#: The OMM's DECT phone login variant: ``ID`` makes ``addId`` ("User Login Id") the id a user
#: logs in with at an unbound handset (OM AXI schema ``PPLoginVariantTypeType``: NUMBER, ID).
LOGIN_VARIANT = "ID"

#: What marks a User-Agent as Mitel's here. The OMM's own User-Agent is undocumented, so this is
#: wider than the words that name Mitel to the other adapters.
_MITEL_UA = re.compile(r"mitel|aastra|sip-dect|\bomm\b|openmobility", re.IGNORECASE)
_MAC_FILE = re.compile(r"(?P<mac>[0-9a-fA-F]{12})\.cfg")

#: ``SetBasicSIP transportProt`` values (OM AXI schema ``TransportProtType``).
_TRANSPORT = {"udp": "UDP", "tcp": "TCP", "tls": "TLS"}

#: OMM time zone ids by the POSIX rule of the IANA zones they stand for. Only ``CET`` is known to
#: be one of the OMM's ids (field configuration files); the OMM's list itself (``GetTimeZoneList``)
#: was not found in a document. A site in any other zone gets no ``SetTimeZone``: the OMM keeps
#: the zone set on it rather than receiving an id it may refuse.
_OMM_TIME_ZONES = {"CET-1CEST,M3.5.0,M10.5.0/3": "CET"}

#: PP users of an OMM on an RFP: the System Manual's user-data example initialises uid 1..512 (R6.1,
#: 7.8.4, p. 247). No other figure for an RFP-hosted OMM was found (docs/vendors/mitel.md).
OMM_USERS = 512

#: The software image each RFP generation runs (dect-e/howto-dect, "Software update").
GEN3_IMAGE = "iprfp3G"
GEN4_IMAGE = "iprfp4G"

_MODELS = (
    # An OMM on any RFP that can host one: the name devices were registered under so far.
    ModelInfo("SIP-DECT", "dect", OMM_USERS),
    # 3rd generation: RFP 35 IP, 36 IP, 37 IP, 43 WLAN.
    ModelInfo("RFP 35", "dect", OMM_USERS, family=GEN3_IMAGE),
    ModelInfo("RFP 36", "dect", OMM_USERS, family=GEN3_IMAGE),
    ModelInfo("RFP 37", "dect", OMM_USERS, family=GEN3_IMAGE),
    ModelInfo("RFP 43", "dect", OMM_USERS, family=GEN3_IMAGE),
    # 4th generation: RFP 44 IP, 45 IP, 47 IP (and 47 IP DRC), 48 WLAN.
    ModelInfo("RFP 44", "dect", OMM_USERS, family=GEN4_IMAGE),
    ModelInfo("RFP 45", "dect", OMM_USERS, family=GEN4_IMAGE),
    ModelInfo("RFP 47", "dect", OMM_USERS, family=GEN4_IMAGE),
    ModelInfo("RFP 48", "dect", OMM_USERS, family=GEN4_IMAGE),
)

#: RFPs that cannot host an OMM that applies these files: the 1st generation (31, 33, 41) works
#: only with OpenCom, the 2nd (32, 34, 42) boots over TFTP without internal flash, cannot run the
#: OMM since SIP-DECT 3.0 and is supported up to SIP-DECT 8.0 only (docs/vendors/mitel.md).
NO_OMM_RFPS = frozenset({31, 32, 33, 34, 41, 42})

#: An RFP as Mitel, Aastra and the OM AXI (``RFPHwTypeType``) write it: ``RFP 35``, ``RFP35 IP``,
#: ``RFP 43 WLAN``, ``RFP 47 IP DRC``, ``RFP L35``, ``RFP SL43``, ``RFP 32 US``.
_RFP_NAME = re.compile(
    r"(?:(?:mitel|aastra)[\s_-]{1,4})?RFP[\s_-]{0,4}(?P<variant>SL|L)?[\s_-]{0,4}(?P<number>\d{2})"
    r"(?:[\s_-]{1,4}(?:IP|WLAN|DRC|US)){0,3}",
    re.IGNORECASE,
)
#: The OMM without its host: ``SIP-DECT``, ``SIP DECT OMM``, ``Mitel SIP-DECT``, ``OMM``.
_OMM_NAME = re.compile(
    r"(?:(?:mitel|aastra)[\s_-]{1,4})?(?:sip[\s_-]{0,4}dect(?:[\s_-]{1,4}omm)?|omm)",
    re.IGNORECASE,
)
#: A User-Agent longer than this, or with control characters, is treated as absent.
_UA_MAX = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class _ServerUrl:
    """A URL in the parts the OMM's ``<url>`` element wants."""

    protocol: str
    host: str
    port: int
    path: str


@dataclass(frozen=True, slots=True)
class _UserSlot:
    uid: int
    line: Line | None
    login_id: str
    """The ``addId`` the user logs in with: the extension, or empty (see :func:`_user_slots`)."""


class MitelAdapter(Adapter):
    """Mitel (formerly Aastra/DeTeWe) SIP-DECT OpenMobility Manager.

    The PIN goes into the PP user's ``pin`` (:data:`PIN_KEY`), the login PIN at unbound handsets
    (OM AXI ``PPUserType``; record shape: SIP-DECT OM System Manual R6.1, p. 247); the login id is
    ``addId`` = the extension. The DECT access code goes into ``SetDECTAuthCode``
    (:data:`ACCESS_CODE_KEY`).
    """

    vendor = "mitel"
    models = models_by_name(_MODELS)
    user_fields = frozenset[UserField]({"display_name", "extension", "sip_credentials"})

    def model(self, name: str) -> ModelInfo | None:
        """Look a model up by name, also as Mitel writes it: ``RFP35``, ``RFP 43 WLAN``,
        ``RFP L35 IP`` (an L-RFP is the same hardware with a bundled licence), ``SIP DECT``."""
        return self.models.get(omm_model_name(name) or name.strip().upper())

    def generic_model(self, name: str) -> ModelInfo | None:
        """An unlisted RFP that can host the OMM (a single-cell ``RFP SL43``, a later RFP) is
        served like the listed ones: the same files, :data:`OMM_USERS` user slots, the software
        image of its generation where the number tells it.

        None for RFPs that cannot host such an OMM (:data:`NO_OMM_RFPS`) and for any other name,
        an OMM on a Linux server included (whether it applies configuration files is not
        documented, docs/vendors/mitel.md).
        """
        model = omm_model_name(name)
        match = _RFP_NAME.fullmatch(name.strip())
        if model is None or model in self.models or match is None:
            return None
        number = int(match["number"])
        if number in NO_OMM_RFPS or number < 35:
            return None
        family = GEN3_IMAGE if number <= 43 else GEN4_IMAGE if number <= 48 else ""
        return ModelInfo(model, "dect", OMM_USERS, family=family)

    async def push(self, ctx: RenderContext, access: ApiAccess) -> str:
        """Update every PP user that carries a PIN on the OMM over OM AXI (``SetPPUser``).

        The OMM creates its users from ``<MAC>.cfg``; this applies a change right away instead
        of waiting for the OMM's next import of that file, with the same attributes the file
        sets (``fixedSipPort`` is left as the file set it). uid = the slot, as in that file.
        OM AXI failures arrive as :class:`NotifyError` (the push worker retries them).
        """
        client = OmAxiClient(
            access.host,
            access.port,
            username=access.username,
            password=access.password,
            fingerprint=access.fingerprint,
        )
        slots = [slot for slot in _user_slots(ctx) if slot.line is not None]
        try:
            for batch in (slots[i : i + 8] for i in range(0, len(slots), 8)):
                await asyncio.gather(
                    *(
                        client.set_pp_user(
                            slot.uid,
                            num=slot.line.sip_user,
                            add_id=slot.login_id,
                            name=slot.line.display_name,
                            pin=slot.line.pin,
                            sip_auth_id=slot.line.sip_auth_user,
                            sip_password=slot.line.sip_password,
                        )
                        for slot in batch
                        if slot.line is not None
                    )
                )
        finally:
            await client.close()
        return f"OM AXI: {len(slots)} user(s) updated on {client.address}"

    def identify(self, path: str, user_agent: str) -> FileRequest | None:
        """Recognise ``ipdect.cfg`` and ``<MAC>.cfg``.

        Each may come from the configured base URL or, once the OMM has its ``<MAC>.cfg``, from
        the OMM's own folder ``<mac>/``. Without that folder ``ipdect.cfg`` names no device:
        ``mac`` is then None and the caller must know the device from its credential.
        """
        if len(user_agent) > _UA_MAX or _CONTROL.search(user_agent):
            user_agent = ""  # no OMM sends that: treated as absent
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
        slots = _user_slots(ctx)
        return {
            COMMON_FILE: templates.render(
                "ipdect.cfg.xml",
                site=ctx.site,
                transport=_TRANSPORT[ctx.site.transport],
                time_zone=omm_time_zone(ctx.site.timezone),
                login_variant=LOGIN_VARIANT,
            ),
            f"{ctx.device.mac.upper()}.cfg": templates.render(
                "omm.cfg.xml",
                server=_device_folder(ctx.provisioning_url, ctx.device.mac),
                provisioning_user=ctx.provisioning_user,
                provisioning_password=ctx.provisioning_password,
                access_code=ctx.access_code,
                slots=slots,
                users=_user_records(slots),
            ),
        }

    def sip_event(self, model: ModelInfo) -> str | None:
        # The OMM takes changes over OM AXI (push), not from a SIP NOTIFY.
        return None

    def needs_maintenance_window(self, model: ModelInfo) -> bool:
        # SetPPUser changes a user record in the running OMM; nothing restarts.
        return False

    def pin_key(self, model: ModelInfo) -> PinKey | None:
        return PIN_KEY

    def access_code_key(self, model: ModelInfo) -> AccessCodeKey | None:
        return ACCESS_CODE_KEY


def omm_model_name(name: str) -> str | None:
    """``name`` as this adapter's model name (``RFP 35``, ``RFP SL43``, ``SIP-DECT``), or None.

    Accepts Mitel's spellings in any case, with or without separators, the vendor word and the
    ``IP``/``WLAN``/``DRC``/``US`` suffixes. An L-RFP (``RFP L35``) is its base model: since
    SIP-DECT 6.0 licences are independent of the RFP (dect-e/howto-dect, "RFP generations").
    """
    text = name.strip()
    if _OMM_NAME.fullmatch(text):
        return "SIP-DECT"
    match = _RFP_NAME.fullmatch(text)
    if match is None:
        return None
    variant = "SL" if (match["variant"] or "").upper() == "SL" else ""
    return f"RFP {variant}{match['number']}"


@functools.lru_cache(maxsize=64)
def omm_time_zone(zone: str) -> str | None:
    """The OMM's id for IANA ``zone``, or None when no known OMM id has the zone's rules."""
    rule = posix_tz_rule(zone)
    return None if rule is None else _OMM_TIME_ZONES.get(rule)


def _user_slots(ctx: RenderContext) -> list[_UserSlot]:
    """Every user slot of the OMM in uid order, with the user to provision there, if any.

    A user without a PIN is not provisioned (the slot gets the blank record). The login id is
    the extension; should one extension occupy two slots, only the first carries it, since a
    login id must name one user.
    """
    model = ctx.device.model
    lines = check_slots(ctx.lines, model, f"Mitel {model.name}", noun="users")
    slots, taken = [], set()
    for uid, line in slot_table(lines, model):
        provisioned = line if line is not None and line.pin is not None else None
        login_id = ""
        if provisioned is not None and provisioned.extension not in taken:
            login_id = provisioned.extension
            taken.add(login_id)
        slots.append(_UserSlot(uid, provisioned, login_id))
    return slots


def _user_records(slots: list[_UserSlot]) -> Markup:
    """The ``CreatePPUser`` records of ``<MAC>.cfg`` (``users`` in ``omm.cfg.xml``), one per
    slot in uid order: the user's, or the blank record that removes one.

    Written here rather than in the template: the Jinja expressions per attribute for 512 users
    made the render miss the target (README, "Performance"; issue 14). Values are escaped as the
    template's autoescape escapes them (:func:`xml_text`).
    """
    records = []
    for slot in slots:
        line = slot.line
        if line is None:
            records.append(
                f'<CreatePPUser plainText="1" replaceData="1"><user uid="{slot.uid}" name="" num=""'
                ' addId="" sipAuthId="" sipPw="" pin="" fixedSipPort="0"/></CreatePPUser>\n'
            )
        else:
            records.append(
                f'<CreatePPUser plainText="1" replaceData="1"><user uid="{slot.uid}"'
                f' name="{xml_text(line.display_name)}" num="{xml_text(line.sip_user)}"'
                f' addId="{xml_text(slot.login_id)}" sipAuthId="{xml_text(line.sip_auth_user)}"'
                f' sipPw="{xml_text(line.sip_password)}" pin="{xml_text(line.pin or "")}"'
                ' fixedSipPort="0"/></CreatePPUser>\n'
            )
    return xml_block(records)


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

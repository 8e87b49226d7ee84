"""Rendered XML files against the vendors' own XML schemas, where a vendor publishes one.

Which vendors publish a schema for the format our files use (details under "Unverified" in
``docs/vendors/<vendor>.md``):

- **Mitel SIP-DECT**: the OM AXI XML schema, namespace
  ``http://www.mitel.com/OmManagementInterface``, from Mitel's "SIP-DECT OM Application XML
  Interface" specification (aad-0384), as carried by the public repository eventphone/mitel-api,
  ``doc/SIP-DECT OM.xsd`` (no header of its own; its page breaks and stray spaces show the text
  was taken from the specification's PDF).
  Checked here.
- **Poly**: ships ``polycomConfig.xsd`` with UC Software, but no copy was in reach: not checked.
- **Snom, Gigaset Nx70, Grandstream**: no schema published; their files are only parsed (the
  adapter tests).

The schema is not copied into the repository. The facts the checks need are the small tables
below, each naming the schema type it comes from ("OM AXI XSD" = eventphone/mitel-api,
``doc/SIP-DECT OM.xsd``). The OMM's configuration files hold one OM AXI command per line without
an XML declaration, so they are parsed line by line. Each command is checked for: its element
name (a protocol element of the schema, in the table), every attribute written being declared
for its type, every child element being declared, enumerated values within the enumeration, and
``xs:integer`` / ``xs:boolean`` values of that type. The schema declares no lengths or ranges for
any attribute the files write, so no length is checked. Namespaces are not checked: the schema
declares a target namespace, but neither the System Manual's examples nor OM AXI clients use it.

Where the schema and our files disagree, the deviation is a strict xfail below
(:data:`SCHEMA_DEVIATIONS`): reported, not fixed here.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest

from provisioner.devices.base import ModelInfo, RenderContext, Site, Templates
from provisioner.devices.mitel import ADAPTER as MITEL
from tests.devices.conftest import ContextFactory, parse_xml

# --- simple types ------------------------------------------------------------------------------

STRING = "string"  # xs:string: any value
INTEGER = "integer"  # xs:integer
BOOLEAN = "boolean"  # xs:boolean

SimpleType = str | frozenset[str]
"""``STRING``, ``INTEGER``, ``BOOLEAN``, or the values of an enumeration (xs:string base)."""

_INTEGER = re.compile(r"[+-]?[0-9]+")
_BOOLEANS = frozenset({"true", "false", "1", "0"})


def value_problem(value: str, simple_type: SimpleType) -> str | None:
    """Why ``value`` is not of ``simple_type``, or None when it is."""
    if isinstance(simple_type, frozenset):
        if value not in simple_type:
            return f"{value!r} not in enumeration {sorted(simple_type)}"
        return None
    # xs:integer and xs:boolean collapse whitespace before checking the lexical form.
    if simple_type == INTEGER and not _INTEGER.fullmatch(value.strip()):
        return f"{value!r} is not an xs:integer"
    if simple_type == BOOLEAN and value.strip() not in _BOOLEANS:
        return f"{value!r} is not an xs:boolean"
    return None


@dataclass(frozen=True)
class ComplexType:
    """What the schema declares for an element: its attributes and its child elements.

    The OM AXI XSD writes child elements as ``<attribute name=".." type="tns:..Type"/>`` with a
    complex type (eventphone/mitel-api serialises ``CreatePPUser``'s ``user`` as an element);
    those are the ``children`` here.
    """

    source: str
    """The schema type(s) these facts come from."""
    attributes: Mapping[str, SimpleType]
    children: Mapping[str, ComplexType] = field(default_factory=dict)


# --- Mitel OM AXI: facts from the OM AXI XSD (eventphone/mitel-api, doc/SIP-DECT OM.xsd) -------

# ReqType: the base of every request type ("seq", optional).
REQ_TYPE = {"seq": INTEGER}

# TransportProtType (SIP-and-PBX section).
TRANSPORT_PROT = frozenset({"UDP", "TCP", "UDPAndTCP", "TLS", "PersistentTLS"})
# ProtocolType (common types).
PROTOCOL = frozenset({"FTP", "FTPS", "HTTP", "HTTPS", "TFTP", "SFTP", "SCP", "None"})
# SSLMethodType (declared as " SSLMethodType ", with spaces, in the file).
SSL_METHOD = frozenset({"Auto", "TLS1.0", "TLS1.1", "TLS1.2"})
# PPLoginVariantTypeType (PP section).
LOGIN_VARIANT = frozenset({"NUMBER", "ID"})
# PPRelTypeType, PPUserCallForwardStateType, PPUserLanguageType, IncominCallHandlingType,
# BTsensitivityType, conferenceServerType, PPUserMonitoringModeType, PPUserMonitoringStateType.
PP_REL_TYPE = frozenset({"Unbound", "Dynamic", "Fixed"})
PP_FORWARD_STATE = frozenset({"Off", "Busy", "NoAnswer", "BusyNoAnswer", "All"})
PP_LANGUAGE = frozenset(
    {
        "English", "German", "French", "Spanish", "Italian", "Dutch", "Swedish", "Portuguese",
        "Danish", "Finnish", "Norwegian", "Czech", "Slovakian", "Hungarian", "Russian",
        "Turkish", "Polish", "Estonian",
    }
)  # fmt: skip
INCOMING_CALL_HANDLING = frozenset({"Off", "On", "Global"})
BT_SENSITIVITY = frozenset({"low", "medium", "high"})
CONFERENCE_SERVER = frozenset({"None", "Integrated", "External", "ExternalBlindTransfer", "Global"})
MONITORING_MODE = frozenset({"Off", "Passive", "Active"})
MONITORING_STATE = frozenset({"Unknown", "Available", "Warning", "Unavailable", "Escalated"})

# URLType. Left out: trustedCertificates, localCertificates and privateKey, typed
# SetSecureSIPListType (certificate lists), which the files never write.
URL_TYPE: Mapping[str, SimpleType] = {
    **dict.fromkeys(
        (
            "enable", "useCommonCerts", "validateCerts", "validateExpires", "validateHostName",
            "allowNonConfTrustCerts", "importCerts",
        ),
        BOOLEAN,
    ),
    **dict.fromkeys(("host", "path", "username", "password", "privateKeyPassword"), STRING),
    **dict.fromkeys(
        ("port", "nTrustedCertificates", "nLocalCertificates", "nPrivateKeys"), INTEGER
    ),
    "protocol": PROTOCOL,
    "sslMethod": SSL_METHOD,
}  # fmt: skip

# PPUserType (PP section): every attribute it declares. "timeStamp" is typed "long integer".
PP_USER_TYPE: Mapping[str, SimpleType] = {
    **dict.fromkeys(
        (
            "name", "num", "hierarchy1", "hierarchy2", "addId", "pin", "sipAuthId", "sipPw",
            "sosNum", "voiceboxNum", "manDownNum", "forwardDest", "conferenceServerURI",
            "credentialPw", "ppData",
        ),
        STRING,
    ),
    **dict.fromkeys(
        (
            "uid", "ppn", "timeStamp", "forwardTime", "holdRingBackTime", "ppProfileId",
            "fixedSipPort", "calculatedSipPort",
        ),
        INTEGER,
    ),
    **dict.fromkeys(
        (
            "callWaitingDisabled", "external", "trackingActive", "locatable", "BTlocatable",
            "locRight", "msgRight", "sendVcardRight", "recvVcardRight", "keepLocalPB", "vip",
            "sipRegisterCheck", "allowVideoStream", "configurationDataLoaded",
        ),
        BOOLEAN,
    ),
    **dict.fromkeys(("autoAnswer", "microphoneMute", "warningTone", "allowBargeIn"),
                    INCOMING_CALL_HANDLING),
    **dict.fromkeys(("CUS", "HAS", "HSS", "HRS", "HCS", "SRS", "SCS", "CDS", "HBS", "BTS", "SWS"),
                    MONITORING_STATE),
    "relType": PP_REL_TYPE,
    "forwardState": PP_FORWARD_STATE,
    "lang": PP_LANGUAGE,
    "BTsensitivity": BT_SENSITIVITY,
    "conferenceServerType": CONFERENCE_SERVER,
    "monitoringMode": MONITORING_MODE,
}  # fmt: skip

URL = ComplexType("URLType", URL_TYPE)

#: The protocol elements the files use (the XSD's "Protocol Elements" section), by element name.
OM_AXI_COMMANDS: Mapping[str, ComplexType] = {
    # element SetBasicSIP: SetBasicSIPType = ReqType + BasicSIPSetType.
    "SetBasicSIP": ComplexType(
        "SetBasicSIPType = ReqType + BasicSIPSetType",
        {
            **REQ_TYPE,
            **dict.fromkeys(
                ("proxyServer", "outboundProxyServer", "regServer", "sipRegisterCheckNum"), STRING
            ),
            **dict.fromkeys(
                ("proxyPort", "outboundProxyPort", "regPort", "regPeriod"), INTEGER
            ),
            "transportProt": TRANSPORT_PROT,
            "gruu": BOOLEAN,
        },
    ),
    # element SetNTPServer: SetNTPServerType, which the XSD names but does not define; its
    # attributes are taken from NTPServerType (the type of EventNTPServerCnf and the responses),
    # after the XSD's pattern SetXType = ReqType + XType.
    "SetNTPServer": ComplexType(
        "SetNTPServerType (undefined) ~ ReqType + NTPServerType",
        {
            **REQ_TYPE,
            "default": BOOLEAN,
            **dict.fromkeys(("ntpServerName1", "ntpServerName2", "ntpServerName3"), STRING),
        },
    ),
    # element SetTimeZone: SetTimeZoneType = ReqType + TimeZoneType.
    "SetTimeZone": ComplexType(
        "SetTimeZoneType = ReqType + TimeZoneType", {**REQ_TYPE, "id": STRING}
    ),
    # element SetPPLoginVariant: SetPPLoginVariantType = ReqType + PPLoginVariantType.
    "SetPPLoginVariant": ComplexType(
        "SetPPLoginVariantType = ReqType + PPLoginVariantType",
        {**REQ_TYPE, "login": LOGIN_VARIANT},
    ),
    # element SetConfigURL: SetConfigURLType = ReqType + ConfigURLType (url: URLType).
    "SetConfigURL": ComplexType(
        "SetConfigURLType = ReqType + ConfigURLType", REQ_TYPE, {"url": URL}
    ),
    # element SetUserDataServer: SetUserDataServerType = ReqType + URLType: the URL's attributes
    # on the command itself, no url child (unlike ConfigURLType).
    "SetUserDataServer": ComplexType(
        "SetUserDataServerType = ReqType + URLType", {**REQ_TYPE, **URL_TYPE}
    ),
    # element SetDECTAuthCode: SetDECTAuthCodeType = ReqType + DECTAuthCodeType.
    "SetDECTAuthCode": ComplexType(
        "SetDECTAuthCodeType = ReqType + DECTAuthCodeType", {**REQ_TYPE, "ac": STRING}
    ),
    # element CreatePPUser: CreateSetPPUserType = ReqType + user: PPUserType.
    "CreatePPUser": ComplexType(
        "CreateSetPPUserType = ReqType + user",
        REQ_TYPE,
        {"user": ComplexType("PPUserType", PP_USER_TYPE)},
    ),
}  # fmt: skip


# --- the checker -------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Deviation:
    """One place where a file says what the schema does not declare or allow."""

    file: str
    element: str
    """Path of the element from the command, e.g. ``CreatePPUser/user``."""
    item: str
    """``@attribute``, a child element name, ``text``, or ``element`` for the command itself."""
    problem: str = field(compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.file, self.element, self.item)


def check_element(
    element: ET.Element, declared: ComplexType, file: str, path: str
) -> Iterator[Deviation]:
    """The deviations of ``element`` (and its children) from what ``declared`` allows."""
    for name, value in element.attrib.items():
        if name not in declared.attributes:
            yield Deviation(file, path, f"@{name}", f"not declared in {declared.source}")
            continue
        problem = value_problem(value, declared.attributes[name])
        if problem is not None:
            yield Deviation(file, path, f"@{name}", f"{problem} ({declared.source})")
    if (element.text or "").strip():
        yield Deviation(file, path, "text", f"text content not declared in {declared.source}")
    for child in element:
        if (child.tail or "").strip():
            yield Deviation(file, path, "text", f"text content not declared in {declared.source}")
        if child.tag not in declared.children:
            yield Deviation(
                file, path, child.tag, f"child element not declared in {declared.source}"
            )
            continue
        yield from check_element(child, declared.children[child.tag], file, f"{path}/{child.tag}")


def omm_file_label(name: str) -> str:
    return "<MAC>.cfg" if name != "ipdect.cfg" else name


def mitel_commands(body: bytes) -> list[ET.Element]:
    """The OM AXI commands of an OMM configuration file: one XML element per line."""
    text = body.decode("utf-8")
    assert not text.lstrip().startswith("<?xml"), "OMM files carry no XML declaration"
    return [parse_xml(line) for line in text.splitlines() if line.strip()]


def mitel_deviations(files: Mapping[str, bytes]) -> list[Deviation]:
    found: list[Deviation] = []
    for name, body in files.items():
        label = omm_file_label(name)
        for command in mitel_commands(body):
            declared = OM_AXI_COMMANDS.get(command.tag)
            if declared is None:
                found.append(
                    Deviation(label, command.tag, "element", "not an OM AXI element in the table")
                )
                continue
            found.extend(check_element(command, declared, label, command.tag))
    return found


# --- what the files get wrong according to the OM AXI XSD (reported, not fixed here) ------------

SCHEMA_DEVIATIONS = [
    pytest.param(
        ("<MAC>.cfg", "CreatePPUser", "@plainText"),
        marks=pytest.mark.xfail(
            strict=True,
            reason=(
                "OM AXI XSD CreateSetPPUserType (ReqType + user) declares no plainText; the"
                " SIP-DECT OM System Manual R6.1 7.8.4 p. 247 writes it in configuration files"
            ),
        ),
        id="CreatePPUser-plainText",
    ),
    pytest.param(
        ("<MAC>.cfg", "CreatePPUser", "@replaceData"),
        marks=pytest.mark.xfail(
            strict=True,
            reason=(
                "OM AXI XSD CreateSetPPUserType (ReqType + user) declares no replaceData; the"
                " SIP-DECT OM System Manual R6.1 7.8.4 p. 247 writes it in configuration files"
            ),
        ),
        id="CreatePPUser-replaceData",
    ),
    pytest.param(
        ("<MAC>.cfg", "SetConfigURL", "@plainText"),
        marks=pytest.mark.xfail(
            strict=True,
            reason="OM AXI XSD SetConfigURLType (ReqType + ConfigURLType) declares no plainText",
        ),
        id="SetConfigURL-plainText",
    ),
    pytest.param(
        ("<MAC>.cfg", "SetUserDataServer", "url"),
        marks=pytest.mark.xfail(
            strict=True,
            reason=(
                "OM AXI XSD SetUserDataServerType is ReqType + URLType: the URL attributes"
                " (enable, ...) belong on SetUserDataServer itself; no url child is declared"
            ),
        ),
        id="SetUserDataServer-url-child",
    ),
]

KNOWN = {param.values[0] for param in SCHEMA_DEVIATIONS}

# --- the rendered files ------------------------------------------------------------------------

ACCESS_CODE = "4827"
MITEL_MODELS = [pytest.param(model, id=name) for name, model in sorted(MITEL.models.items())]

#: Sites that between them make every branch of the templates render: each transport, a zone
#: with an OMM time zone id (SetTimeZone written) and one without.
SITES = [
    Site(registrar_host="pbx.example.net", registrar_port=5060),
    Site(registrar_host="pbx.example.net", registrar_port=5061, transport="tls",
         timezone="America/New_York", ntp_server="ntp.example.net"),
    Site(registrar_host="10.0.0.5", registrar_port=5080, transport="tcp", timezone="UTC"),
]  # fmt: skip


def mitel_contexts(make_context: ContextFactory, model: ModelInfo) -> Iterator[RenderContext]:
    """Every site; users with PINs, one without (blank record), none, and every slot taken."""
    for site in SITES:
        ctx = make_context(model, mac="003042aabbcc", lines=3, site=site, access_code=ACCESS_CODE)
        no_pin = dataclasses.replace(ctx.lines[1], pin=None)
        yield dataclasses.replace(ctx, lines=(ctx.lines[0], no_pin, ctx.lines[2]))
    yield make_context(model, mac="003042aabbcc", lines=0, access_code=ACCESS_CODE)
    yield make_context(model, mac="003042aabbcc", lines=model.slots, access_code=ACCESS_CODE)


def rendered_deviations(make_context: ContextFactory, model: ModelInfo) -> list[Deviation]:
    found: set[Deviation] = set()
    for ctx in mitel_contexts(make_context, model):
        found.update(mitel_deviations(MITEL.render(ctx, Templates(MITEL.vendor))))
    return sorted(found)


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MITEL_MODELS)
def test_mitel_files_keep_to_the_om_axi_schema(
    model: ModelInfo, make_context: ContextFactory
) -> None:
    """Every command, attribute and value of both files, except the reported deviations."""
    unexpected = [d for d in rendered_deviations(make_context, model) if d.key not in KNOWN]
    assert unexpected == []


@pytest.mark.parametrize("model", MITEL_MODELS)
@pytest.mark.parametrize("deviation", SCHEMA_DEVIATIONS)
def test_mitel_schema_deviation(
    model: ModelInfo, deviation: tuple[str, str, str], make_context: ContextFactory
) -> None:
    """A deviation the schema shows (xfail): once the files follow the schema, this passes."""
    assert deviation not in {d.key for d in rendered_deviations(make_context, model)}


@pytest.mark.parametrize("model", MITEL_MODELS)
def test_every_command_in_the_table_is_rendered(
    model: ModelInfo, make_context: ContextFactory
) -> None:
    """The schema table holds no command the files no longer write (and the contexts reach all)."""
    tags: set[str] = set()
    for ctx in mitel_contexts(make_context, model):
        for body in MITEL.render(ctx, Templates(MITEL.vendor)).values():
            tags.update(command.tag for command in mitel_commands(body))
    assert tags == set(OM_AXI_COMMANDS)


def test_the_checker_finds_what_the_schema_does_not_allow() -> None:
    files = {
        "ipdect.cfg": (
            b'<SetBasicSIP transportProt="SCTP" proxyPort="50x" proxy="pbx"/>\n'
            b'<SetPPLoginVariant login="id"/>\n'
            b"<SetFooBar/>\n"
        ),
        "003042AABBCC.cfg": (
            b'<SetConfigURL><url enable="yes" protocol="https" port="443"/></SetConfigURL>\n'
            b'<CreatePPUser seq="1"><user uid="one" lang="Deutsch" pinCode="1"/>x</CreatePPUser>\n'
        ),
    }
    assert {(d.file, d.element, d.item) for d in mitel_deviations(files)} == {
        ("ipdect.cfg", "SetBasicSIP", "@transportProt"),
        ("ipdect.cfg", "SetBasicSIP", "@proxyPort"),
        ("ipdect.cfg", "SetBasicSIP", "@proxy"),
        ("ipdect.cfg", "SetPPLoginVariant", "@login"),
        ("ipdect.cfg", "SetFooBar", "element"),
        ("<MAC>.cfg", "SetConfigURL/url", "@enable"),
        ("<MAC>.cfg", "SetConfigURL/url", "@protocol"),
        ("<MAC>.cfg", "CreatePPUser/user", "@uid"),
        ("<MAC>.cfg", "CreatePPUser/user", "@lang"),
        ("<MAC>.cfg", "CreatePPUser/user", "@pinCode"),
        ("<MAC>.cfg", "CreatePPUser", "text"),
    }


@pytest.mark.parametrize(
    ("value", "simple_type", "ok"),
    [
        ("0", INTEGER, True),
        ("-12", INTEGER, True),
        ("1.5", INTEGER, False),
        ("", INTEGER, False),
        ("1", BOOLEAN, True),
        ("true", BOOLEAN, True),
        ("True", BOOLEAN, False),
        ("ID", LOGIN_VARIANT, True),
        ("", LOGIN_VARIANT, False),
        ("", STRING, True),
    ],
)
def test_value_types(value: str, simple_type: SimpleType, ok: bool) -> None:
    assert (value_problem(value, simple_type) is None) is ok

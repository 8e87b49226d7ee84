"""Settings from the environment, validated once at start.

Every bad value stops the start with one line naming the variable (:class:`SettingsError`).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as parse_xml

from provisioner.attribute_map import AttributeMap, parse_attribute_map
from provisioner.devices import pin_limit_conflicts
from provisioner.embedded import BINARIES_CHOICES

PREFIX = "PROVISIONER_"
PIN_MIN_LENGTH_RANGE = (4, 12)
DEFAULT_PIN_MIN_LENGTH = 6
#: The longest PIN the policy admits.
PIN_MAX_LENGTH = 12


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None

    def __str__(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LDAP_DEFAULT_FILTER = "(objectClass=inetOrgPerson)"
LDAP_DEFAULT_ATTRIBUTES = "username=uid,display_name=cn,email=mail,extension=telephoneNumber"
LDAP_DEFAULT_SYNC_INTERVAL = 900


@dataclass(frozen=True)
class LdapSettings:
    """The directory users of backend ``ldap`` sign in with and are synced from
    (``PROVISIONER_LDAP_*``)."""

    url: str
    bind_dn: str | None
    bind_password: str | None = field(repr=False)
    base_dn: str
    user_filter: str = LDAP_DEFAULT_FILTER
    attributes: AttributeMap = field(
        default_factory=lambda: parse_attribute_map(LDAP_DEFAULT_ATTRIBUTES)
    )
    admin_group: str | None = None
    starttls: bool = False
    ca_file: Path | None = None
    sync_interval: int = LDAP_DEFAULT_SYNC_INTERVAL
    """Seconds between syncs; 0: only on demand."""

    @property
    def owned_fields(self) -> frozenset[str]:
        """The user fields the directory owns (the sync writes them, admins may not): the
        mapped ones but the username, and the role when an admin group decides it."""
        owned = self.attributes.fields - {"username"}
        return owned | {"role"} if self.admin_group else owned

    def __str__(self) -> str:
        tls = " with StartTLS" if self.starttls else ""
        ca = f", CA {self.ca_file}" if self.ca_file else ""
        bind = f"{self.bind_dn} / ***" if self.bind_dn else "anonymous"
        sync = f"every {self.sync_interval} s" if self.sync_interval else "on demand only"
        admins = self.admin_group or "(no admin group)"
        return (
            f"{self.url}{tls}{ca}; bind {bind}; base {self.base_dn}; filter {self.user_filter}; "
            f"attributes {self.attributes}; admins {admins}; sync {sync}"
        )


#: Fits most identity providers: the subject's NameID is the username (``NameID`` names it),
#: the rest by the LDAP/eduPerson names that Keycloak, Shibboleth and SimpleSAMLphp send.
SAML_DEFAULT_ATTRIBUTES = (
    "username=NameID,display_name=displayName,email=mail,extension=telephoneNumber"
)


@dataclass(frozen=True)
class SamlSettings:
    """Single sign-on with one SAML identity provider (``PROVISIONER_SAML_*``)."""

    idp_metadata: Path
    idp_entity_id: str
    """Read from the metadata file, checked at start."""
    create_users: bool
    attributes: AttributeMap
    """User field → attribute name (or ``NameID``), from ``PROVISIONER_SAML_ATTRIBUTES``."""
    sp_key_file: Path | None
    sp_cert_file: Path | None
    """Both or neither; neither: generated once in the data directory."""


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    data_dir: Path
    secret_key_file: Path
    listen: HostPort
    public_url: str
    smtp: SmtpSettings | None
    mail_from: str
    hook_secret: str | None
    provisioning_user: str | None
    provisioning_password: str | None
    ami_url: str | None
    pin_min_length: int
    phones_listen: HostPort | None
    admin_password: str | None
    template_dir: Path | None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    """Proxies whose ``X-Forwarded-For`` is believed (``PROVISIONER_TRUSTED_PROXIES``)."""
    phones_allow: tuple[IPNetwork, ...] = ()
    """When set, only these networks may fetch configs (``PROVISIONER_PHONES_ALLOW``)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    phones_processes: int = 1
    """Processes serving ``phones_listen`` (``PROVISIONER_PHONES_PROCESSES``; default: cores)."""
    kamailio_location_url: str | None = None
    """Kamailio's usrloc database: contacts come from its ``location`` table
    (``PROVISIONER_KAMAILIO_LOCATION_URL``)."""
    discovery: bool = True
    """Record and serve unknown phones of known vendors that fetch with the bootstrap
    credential (``PROVISIONER_DISCOVERY``: ``on`` or ``off``)."""
    ldap: LdapSettings | None = None
    """The directory (``PROVISIONER_LDAP_URL`` and the rest); None: no directory."""
    postgres_binaries: str = "auto"
    """Which ``initdb``/``pg_ctl`` the embedded cluster runs (``PROVISIONER_POSTGRES_BINARIES``:
    ``auto``, ``system``, ``wheel`` or a directory; see :mod:`provisioner.embedded`)."""

    @property
    def public_url_is_loopback(self) -> bool:
        """Whether the URL written into the phones' configs names this machine's loopback,
        which no phone can reach."""
        host = urlsplit(self.public_url).hostname or ""
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    saml: SamlSettings | None = None
    """Set when ``PROVISIONER_SAML_IDP_METADATA`` is."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read and validate every ``PROVISIONER_*`` variable; ``overrides`` come from CLI flags."""
        source = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = source.get(PREFIX + name)
            return value if value else None

        data_dir = Path(get("DATA_DIR") or default_data_dir(source)).expanduser().absolute()
        listen = parse_host_port("PROVISIONER_LISTEN", get("LISTEN") or "127.0.0.1:8080")
        smtp = _parse_smtp(get("SMTP_URL"))
        settings = cls(
            database_url=_parse_database_url("PROVISIONER_DATABASE_URL", get("DATABASE_URL")),
            data_dir=data_dir,
            secret_key_file=Path(get("SECRET_KEY_FILE") or data_dir / "secret.key")
            .expanduser()
            .absolute(),
            listen=listen,
            public_url=_parse_public_url(get("PUBLIC_URL"), listen),
            smtp=smtp,
            mail_from=_parse_mail_from(get("MAIL_FROM")),
            hook_secret=get("HOOK_SECRET"),
            provisioning_user=get("PROVISIONING_USER"),
            provisioning_password=get("PROVISIONING_PASSWORD"),
            ami_url=_parse_ami_url(get("AMI_URL")),
            pin_min_length=_parse_pin_min_length(get("PIN_MIN_LENGTH")),
            phones_listen=(
                parse_host_port("PROVISIONER_PHONES_LISTEN", value)
                if (value := get("PHONES_LISTEN"))
                else None
            ),
            admin_password=get("ADMIN_PASSWORD"),
            template_dir=Path(value).absolute() if (value := get("TEMPLATE_DIR")) else None,
            trusted_proxies=_parse_networks("PROVISIONER_TRUSTED_PROXIES", get("TRUSTED_PROXIES")),
            phones_allow=_parse_networks("PROVISIONER_PHONES_ALLOW", get("PHONES_ALLOW")),
            tls_cert=_parse_file("PROVISIONER_TLS_CERT", get("TLS_CERT")),
            tls_key=_parse_file("PROVISIONER_TLS_KEY", get("TLS_KEY")),
            phones_processes=_parse_processes(get("PHONES_PROCESSES")),
            kamailio_location_url=_parse_database_url(
                "PROVISIONER_KAMAILIO_LOCATION_URL", get("KAMAILIO_LOCATION_URL")
            ),
            discovery=_parse_switch("PROVISIONER_DISCOVERY", get("DISCOVERY"), default=True),
            ldap=_parse_ldap(get),
            postgres_binaries=_parse_postgres_binaries(get("POSTGRES_BINARIES")),
            saml=_parse_saml(get),
        )
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise SettingsError("PROVISIONER_TLS_CERT: set together with PROVISIONER_TLS_KEY")
        if settings.template_dir is not None and not settings.template_dir.is_dir():
            raise SettingsError(
                f"PROVISIONER_TEMPLATE_DIR: {settings.template_dir} is no directory"
            )
        return replace(settings, **overrides) if overrides else settings  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        """The settings in effect for ``provisioner info``, secrets masked."""

        def masked(value: str | None) -> str:
            return "(unset)" if value is None else "***"

        return {
            "database": (
                _mask_url(self.database_url)
                if self.database_url
                else f"embedded (binaries: {self.postgres_binaries})"
            ),
            "data_dir": str(self.data_dir),
            "secret_key_file": str(self.secret_key_file),
            "listen": str(self.listen),
            "public_url": self.public_url
            + (f" ({LOOPBACK_WARNING})" if self.public_url_is_loopback else ""),
            "smtp": str(self.smtp) if self.smtp else "(unset: email modes answer 503)",
            "mail_from": self.mail_from,
            "hook_secret": masked(self.hook_secret),
            "ami_url": _mask_url(self.ami_url) if self.ami_url else "(unset: direct SIP NOTIFY)",
            "kamailio_location": (
                _mask_url(self.kamailio_location_url)
                if self.kamailio_location_url
                else "(unset: contacts from the registered hook or AMI)"
            ),
            "pin_min_length": str(self.pin_min_length),
            "phones_listen": (
                f"{self.phones_listen} ({self.phones_processes} processes)"
                if self.phones_listen
                else "(main listener)"
            ),
            "template_dir": str(self.template_dir) if self.template_dir else "(built-in only)",
            "trusted_proxies": ", ".join(map(str, self.trusted_proxies)) or "(none)",
            "phones_allow": ", ".join(map(str, self.phones_allow)) or "(any address)",
            "tls": f"{self.tls_cert} / {self.tls_key}" if self.tls_cert else "(plain HTTP)",
            "discovery": "on" if self.discovery else "off",
            "ldap": str(self.ldap) if self.ldap else "(unset: no directory)",
            "saml": (
                f"IdP {self.saml.idp_entity_id} ({self.saml.idp_metadata}), create users "
                f"{'on' if self.saml.create_users else 'off'}"
                if self.saml
                else "(unset: no single sign-on)"
            ),
        }


#: Said at start and by ``provisioner info`` when the phones' URL is a loopback address.
LOOPBACK_WARNING = (
    "loopback: phones cannot reach it; set PROVISIONER_PUBLIC_URL to an address on the "
    "phones' network"
)


def default_data_dir(env: Mapping[str, str], euid: int | None = None) -> Path:
    """One place per machine, whatever the working directory: ``/var/lib/provisioner`` for
    root, else ``$XDG_DATA_HOME/provisioner`` (``~/.local/share/provisioner``)."""
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/var/lib/provisioner")
    xdg = env.get("XDG_DATA_HOME", "")
    # The XDG specification ignores a relative value.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "provisioner"


def parse_host_port(name: str, value: str) -> HostPort:
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SettingsError(f"{name}: expected host:port, got {value!r}")
    return HostPort(host, int(port_text))


def _parse_database_url(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port that is no number
    except ValueError:
        raise SettingsError(f"{name}: expected postgresql://user@host/db") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise SettingsError(f"{name}: expected postgresql://user@host/db")
    return value


def _parse_public_url(value: str | None, listen: HostPort) -> str:
    if value is None:
        return f"http://{listen}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(
            f"PROVISIONER_PUBLIC_URL: expected http(s)://host[:port], got {value!r}"
        )
    return value.rstrip("/")


def _parse_smtp(value: str | None) -> SmtpSettings | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise SettingsError(f"PROVISIONER_SMTP_URL: {exc}") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise SettingsError(
            "PROVISIONER_SMTP_URL: expected smtp://host:port or smtps://user:pass@host"
        )
    implicit_tls = parts.scheme == "smtps"
    return SmtpSettings(
        host=parts.hostname,
        port=port or (465 if implicit_tls else 25),
        implicit_tls=implicit_tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _parse_mail_from(value: str | None) -> str:
    if value is None:
        return "provisioner@localhost"
    if "@" not in value or any(c in value for c in "\r\n"):
        raise SettingsError("PROVISIONER_MAIL_FROM: expected an email address")
    return value


def _parse_ami_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "ami" or not parts.hostname or not parts.username:
        raise SettingsError("PROVISIONER_AMI_URL: expected ami://user:secret@host:5038")
    return value


def _parse_pin_min_length(value: str | None) -> int:
    """The policy's shortest PIN; the policy must fit every device key that carries the PIN."""
    low, high = PIN_MIN_LENGTH_RANGE
    value = str(DEFAULT_PIN_MIN_LENGTH) if value is None else value
    if not value.isdigit() or not low <= int(value) <= high:
        raise SettingsError(f"PROVISIONER_PIN_MIN_LENGTH: expected a number from {low} to {high}")
    conflicts = pin_limit_conflicts(int(value), PIN_MAX_LENGTH)
    if conflicts:
        raise SettingsError(
            f"PROVISIONER_PIN_MIN_LENGTH: PINs of {value} to {PIN_MAX_LENGTH} digits do not fit "
            f"every device key that carries the PIN ({'; '.join(conflicts)})"
        )
    return int(value)


def _parse_postgres_binaries(value: str | None) -> str:
    if value is None or value in BINARIES_CHOICES:
        return value or "auto"
    path = Path(value)
    if not path.is_absolute() or not path.is_dir():
        raise SettingsError(
            f"PROVISIONER_POSTGRES_BINARIES: expected {', '.join(BINARIES_CHOICES)} or the "
            f"absolute path of a directory with initdb and pg_ctl, got {value!r}"
        )
    return value


def _parse_processes(value: str | None) -> int:
    if value is None:
        return os.cpu_count() or 1
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise SettingsError("PROVISIONER_PHONES_PROCESSES: expected a number from 1 to 64")
    return int(value)


_SWITCH = {"on": True, "off": False}


def _parse_switch(name: str, value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    switch = _SWITCH.get(value.strip().lower())
    if switch is None:
        raise SettingsError(f"{name}: expected on or off, got {value!r}")
    return switch


def _parse_networks(name: str, value: str | None) -> tuple[IPNetwork, ...]:
    if value is None:
        return ()
    try:
        return tuple(
            ipaddress.ip_network(v.strip(), strict=False) for v in value.split(",") if v.strip()
        )
    except ValueError:
        raise SettingsError(
            f"{name}: expected comma-separated addresses or CIDR networks"
        ) from None


def _parse_file(name: str, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).absolute()
    if not path.is_file():
        raise SettingsError(f"{name}: {path} is not a readable file")
    return path


_LDAP_NAMES = (
    "BIND_DN",
    "BIND_PASSWORD",
    "BIND_PASSWORD_FILE",
    "BASE_DN",
    "USER_FILTER",
    "ATTRIBUTES",
    "ADMIN_GROUP",
    "STARTTLS",
    "CA_FILE",
    "SYNC_INTERVAL",
)


def _parse_ldap(get: Callable[[str], str | None]) -> LdapSettings | None:
    url = get("LDAP_URL")
    if url is None:
        stray = [f"PROVISIONER_LDAP_{n}" for n in _LDAP_NAMES if get(f"LDAP_{n}") is not None]
        if stray:
            raise SettingsError(f"PROVISIONER_LDAP_URL: required when {stray[0]} is set")
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/"):
        raise SettingsError(
            f"PROVISIONER_LDAP_URL: expected ldap://host[:port] or ldaps://..., got {url!r}"
        )
    if importlib.util.find_spec("ldap") is None:
        raise SettingsError(
            "PROVISIONER_LDAP_URL: needs python-ldap: pip install 'provisioner[ldap]' "
            "(to build it: apt-get install libldap-dev libsasl2-dev)"
        )
    starttls = _parse_switch("PROVISIONER_LDAP_STARTTLS", get("LDAP_STARTTLS"), default=False)
    if starttls and parts.scheme == "ldaps":
        raise SettingsError("PROVISIONER_LDAP_STARTTLS: ldaps:// is TLS already; use ldap://")
    base_dn = get("LDAP_BASE_DN")
    if base_dn is None or "=" not in base_dn:
        raise SettingsError("PROVISIONER_LDAP_BASE_DN: expected the DN users are searched under")
    bind_dn = get("LDAP_BIND_DN")
    password = _ldap_bind_password(get)
    if bind_dn is None and password is not None:
        raise SettingsError("PROVISIONER_LDAP_BIND_DN: required with a bind password")
    if bind_dn is not None and password is None:
        raise SettingsError(
            "PROVISIONER_LDAP_BIND_PASSWORD: required with PROVISIONER_LDAP_BIND_DN "
            "(or PROVISIONER_LDAP_BIND_PASSWORD_FILE)"
        )
    user_filter = get("LDAP_USER_FILTER") or LDAP_DEFAULT_FILTER
    if not _balanced_filter(user_filter):
        raise SettingsError(
            "PROVISIONER_LDAP_USER_FILTER: expected an LDAP filter in parentheses, "
            "e.g. (objectClass=inetOrgPerson)"
        )
    try:
        attributes = parse_attribute_map(get("LDAP_ATTRIBUTES") or LDAP_DEFAULT_ATTRIBUTES)
    except ValueError as exc:
        raise SettingsError(f"PROVISIONER_LDAP_ATTRIBUTES: {exc}") from None
    interval = get("LDAP_SYNC_INTERVAL")
    if interval is not None and not (interval.isascii() and interval.isdigit()):
        raise SettingsError("PROVISIONER_LDAP_SYNC_INTERVAL: expected seconds (0: off)")
    return LdapSettings(
        url=url,
        bind_dn=bind_dn,
        bind_password=password,
        base_dn=base_dn,
        user_filter=user_filter,
        attributes=attributes,
        admin_group=get("LDAP_ADMIN_GROUP"),
        starttls=starttls,
        ca_file=_parse_file("PROVISIONER_LDAP_CA_FILE", get("LDAP_CA_FILE")),
        sync_interval=LDAP_DEFAULT_SYNC_INTERVAL if interval is None else int(interval),
    )


def _ldap_bind_password(get: Callable[[str], str | None]) -> str | None:
    password, path = get("LDAP_BIND_PASSWORD"), get("LDAP_BIND_PASSWORD_FILE")
    if password is not None and path is not None:
        raise SettingsError(
            "PROVISIONER_LDAP_BIND_PASSWORD_FILE: set it or PROVISIONER_LDAP_BIND_PASSWORD, "
            "not both"
        )
    if path is None:
        return password
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise SettingsError(
            f"PROVISIONER_LDAP_BIND_PASSWORD_FILE: {path} is not a readable text file"
        ) from None
    # The file's one line; a trailing newline is the editor's, not the password's.
    return text.rstrip("\r\n") or None


def _balanced_filter(text: str) -> bool:
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


_MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
_DS = "{http://www.w3.org/2000/09/xmldsig#}"
_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


def _parse_saml(get: Callable[[str], str | None]) -> SamlSettings | None:
    metadata = get("SAML_IDP_METADATA")
    others = ("SAML_CREATE_USERS", "SAML_ATTRIBUTES", "SAML_SP_KEY_FILE", "SAML_SP_CERT_FILE")
    if metadata is None:
        for name in others:
            if get(name) is not None:
                raise SettingsError(
                    f"PROVISIONER_SAML_IDP_METADATA: needed by PROVISIONER_{name} (unset: no SSO)"
                )
        return None
    path = _parse_file("PROVISIONER_SAML_IDP_METADATA", metadata)
    assert path is not None
    key = _parse_file("PROVISIONER_SAML_SP_KEY_FILE", get("SAML_SP_KEY_FILE"))
    cert = _parse_file("PROVISIONER_SAML_SP_CERT_FILE", get("SAML_SP_CERT_FILE"))
    if (key is None) != (cert is None):
        raise SettingsError(
            "PROVISIONER_SAML_SP_KEY_FILE: set together with PROVISIONER_SAML_SP_CERT_FILE"
        )
    try:
        attributes = parse_attribute_map(get("SAML_ATTRIBUTES") or SAML_DEFAULT_ATTRIBUTES)
    except ValueError as exc:
        raise SettingsError(f"PROVISIONER_SAML_ATTRIBUTES: {exc}") from None
    return SamlSettings(
        idp_metadata=path,
        idp_entity_id=_idp_entity_id(path),
        create_users=_parse_switch(
            "PROVISIONER_SAML_CREATE_USERS", get("SAML_CREATE_USERS"), default=False
        ),
        attributes=attributes,
        sp_key_file=key,
        sp_cert_file=cert,
    )


def _idp_entity_id(path: Path) -> str:
    """The entity id of the one identity provider ``path`` describes, after checking that it
    offers what this service needs: HTTP-Redirect sign-on and a signing certificate."""

    def bad(problem: str) -> SettingsError:
        return SettingsError(f"PROVISIONER_SAML_IDP_METADATA: {path}: {problem}")

    try:
        root = parse_xml(path.read_bytes())
    except (OSError, ParseError, DefusedXmlException) as exc:
        raise bad(f"not readable SAML metadata ({type(exc).__name__})") from None
    entities = (
        [root] if root.tag == f"{_MD}EntityDescriptor" else root.iter(f"{_MD}EntityDescriptor")
    )
    idps = [
        (entity, descriptor)
        for entity in entities
        if (descriptor := entity.find(f"{_MD}IDPSSODescriptor")) is not None
    ]
    if len(idps) != 1:
        raise bad(f"expected one identity provider, found {len(idps)}")
    entity, descriptor = idps[0]
    services = descriptor.findall(f"{_MD}SingleSignOnService")
    if not any(s.get("Binding") == _HTTP_REDIRECT for s in services):
        raise bad("the identity provider offers no HTTP-Redirect single sign-on service")
    if not any(_signs(key) for key in descriptor.findall(f"{_MD}KeyDescriptor")):
        raise bad("the identity provider's signing certificate is missing")
    entity_id = entity.get("entityID")
    if not entity_id:
        raise bad("the identity provider has no entityID")
    return entity_id


def _signs(key: Element) -> bool:
    return (
        key.get("use", "signing") == "signing" and key.find(f".//{_DS}X509Certificate") is not None
    )

"""Outgoing mail: rendering the "New password" message and sending it over SMTP."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import jinja2

from provisioner.errors import Kind, ProvisionerError
from provisioner.settings import SmtpSettings

log = logging.getLogger(__name__)

LANGUAGES = ("de", "en")
_SEND_TIMEOUT = 15.0

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("provisioner", "templates/mail"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # plain-text mail  # noqa: S701
    trim_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Mail:
    to: str
    to_name: str
    subject: str
    body: str


def render_new_password(
    *, to: str, display_name: str, username: str, password: str, temporary: bool, language: str
) -> Mail:
    """The "New password" message in the user's language (German when unknown)."""
    lang = language if language in LANGUAGES else "de"
    text = _templates.get_template(f"new_password.{lang}.txt").render(
        display_name=display_name, username=username, password=password, temporary=temporary
    )
    subject, _, body = text.partition("\n")
    return Mail(to=to, to_name=display_name, subject=subject.strip(), body=body)


class Mailer:
    def __init__(self, smtp: SmtpSettings, sender: str) -> None:
        self._smtp = smtp
        self._sender = sender

    async def send(self, mail: Mail) -> None:
        """Hand ``mail`` to the SMTP server; raise ``mail_failed`` when it is not accepted."""
        message = EmailMessage()
        message["From"] = self._sender
        # An Address, not a formatted string: no display name (quotes, commas, "<...>", encoded
        # words) can change the header's structure or add a recipient.
        message["To"] = Address(display_name=mail.to_name, addr_spec=mail.to)
        message["Subject"] = mail.subject
        message["Message-ID"] = make_msgid(domain=self._sender.rpartition("@")[2] or None)
        message.set_content(mail.body)
        try:
            await aiosmtplib.send(
                message,
                hostname=self._smtp.host,
                port=self._smtp.port,
                use_tls=self._smtp.implicit_tls,
                username=self._smtp.username,
                password=self._smtp.password,
                timeout=_SEND_TIMEOUT,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # The exception text names the server and its reply, never the message body.
            log.warning("mail to %s not sent: %s: %s", mail.to, type(exc).__name__, exc)
            raise ProvisionerError(
                Kind.UPSTREAM, "mail_failed", "The mail server did not accept the message."
            ) from None

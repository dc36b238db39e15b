"""Email for events: which template and recipient each event type gets, and sending over SMTP."""

from __future__ import annotations

import contextlib
import quopri
import smtplib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import jinja2
from opentelemetry.trace import SpanKind

from functions.shared import events, flags, tracing

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=False,  # plain-text mail
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
SUBJECTS = {
    # The original system's wording for a placed order.
    events.ORDER_PLACED: "Your Order with OrderNumber {orderNumber} is placed successfully",
    events.ORDER_CANCELLED: "Your Order with OrderNumber {orderNumber} has been cancelled",
    events.INVENTORY_LOW: "Low stock: {sku} has {available} left",
}
NOTIFIED_TYPES = frozenset(SUBJECTS)


@dataclass(frozen=True)
class Email:
    recipient: str
    subject: str
    body: str
    message_id: str


def compose(event_type: str, event_id: str, data: dict[str, Any], *, operations: str, domain: str) -> Email:
    """The email for an event: the customer's for orders (the checkout's contact address, when given),
    the operations address for stock."""
    contact = data.get("contact") or {}
    recipient = operations if event_type == events.INVENTORY_LOW else contact.get("email") or data["email"]
    # Optional properties the event left out are None (falsy in a template's `if`); a name that is
    # not in the event's schema at all still fails loudly (StrictUndefined).
    schema = events.schema_validator(event_type).schema
    optional = dict.fromkeys(schema.get("properties", {}) if isinstance(schema, Mapping) else ())
    body = TEMPLATES.get_template(f"{event_type}.txt").render(**{**optional, **data})
    # A Message-ID derived from the event id: mail clients drop a duplicate too.
    return Email(recipient, SUBJECTS[event_type].format(**data), body, f"<{event_id}@{domain}>")


class Mailer(Protocol):
    def send(self, email: Email) -> None: ...


class SmtpMailer:
    """SMTP_URL: smtp://[user:password@]host:port (STARTTLS when offered) or smtps:// (TLS).

    Each worker thread keeps its connection open between emails: connecting, greeting and
    logging in per email would cost more than the email itself.
    """

    def __init__(self, url: str, sender: str, timeout: float = 10.0, idle_seconds: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"SMTP_URL must look like smtp://host:port, got {url!r}")
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.tls else 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self._local = threading.local()

    def send(self, email: Email) -> None:
        message = self._message(email)
        sender, recipient = self.sender, email.recipient
        attributes: dict[str, str | int] = {
            "server.address": self.host,
            "server.port": self.port,
            "smtp.message_id": email.message_id,
        }
        with tracing.span("smtp send", SpanKind.CLIENT, attributes=attributes):
            if flags.check(flags.SMTP_REFUSING):  # as a server refusing for now would: a 4xx, retried
                raise smtplib.SMTPResponseException(451, b"4.3.0 Refused: fault flag smtpRefusing is on")
            try:
                self._send(message, sender, recipient)
            except smtplib.SMTPServerDisconnected:
                # The server closed an idle connection before taking anything: open a new one, once.
                self._drop()
                self._send(message, sender, recipient)
            except (smtplib.SMTPException, OSError):
                self._drop()
                raise
        self._local.last_used = time.monotonic()

    def _send(self, message: EmailMessage | bytes, sender: str, recipient: str) -> None:
        if isinstance(message, bytes):
            self._connection().sendmail(sender, [recipient], message)
        else:
            self._connection().send_message(message)

    def _message(self, email: Email) -> EmailMessage | bytes:
        """The message as it goes on the wire. Python's `EmailMessage` parses every header it is
        given into objects and folds them again: it was the largest share of notification-send's
        CPU. The mails here are one text part, so they are written directly (RFC 5322 and 2045:
        an RFC 2047 Subject when it is not ASCII, a quoted-printable body when it is not short
        ASCII lines); addresses that are not ASCII take the general path."""
        addresses = (self.sender, email.recipient, email.message_id)
        if not all(value.isascii() and "\n" not in value and "\r" not in value for value in addresses):
            return self._general(email)
        subject = " ".join(email.subject.split())  # one line, as a header must be
        if not subject.isascii():
            subject = Header(subject, "utf-8").encode(linesep="\r\n")
        lines = email.body.replace("\r\n", "\n").split("\n")
        if email.body.isascii() and "\r" not in email.body and all(len(line) <= 998 for line in lines):
            encoding, body = "7bit", "\r\n".join(lines)
        else:
            encoded = quopri.encodestring(email.body.replace("\r\n", "\n").encode("utf-8"))
            encoding, body = "quoted-printable", encoded.decode("ascii").replace("\n", "\r\n")
        headers = (
            f"From: {self.sender}\r\nTo: {email.recipient}\r\nSubject: {subject}\r\n"
            f"Date: {formatdate(usegmt=True)}\r\nMessage-ID: {email.message_id}\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: {encoding}\r\n'
        )
        return (headers + "\r\n" + body.rstrip("\r\n") + "\r\n").encode("ascii")

    def _general(self, email: Email) -> EmailMessage:
        # Headers up to RFC 5322's 998 characters stay on one line: Python's folding of a long
        # Subject leaves a leading space that some readers keep.
        message = EmailMessage(policy=SMTP_POLICY.clone(max_line_length=998))
        message["From"] = self.sender
        message["To"] = email.recipient
        message["Subject"] = email.subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = email.message_id
        message.set_content(email.body)
        return message

    def _connection(self) -> smtplib.SMTP:
        smtp: smtplib.SMTP | None = getattr(self._local, "smtp", None)
        if smtp is not None and time.monotonic() - self._local.last_used > self.idle_seconds:
            self._drop()
            smtp = None
        if smtp is None:
            smtp = (
                smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout)
                if self.tls
                else smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            )
            if not self.tls:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password or "")
            self._local.smtp = smtp
            self._local.last_used = time.monotonic()
        return smtp

    def _drop(self) -> None:
        smtp = getattr(self._local, "smtp", None)
        self._local.smtp = None
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()

"""Wires notification-send to its real collaborators once per process, on first use."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial
from typing import Any

from cloudevents.http import CloudEvent

from functions.notifications import service
from functions.notifications.mail import SmtpMailer
from functions.notifications.store import Claim, PostgresNotificationStore
from functions.shared import health
from functions.shared.config import config


@cache
def ledger() -> PostgresNotificationStore:
    return PostgresNotificationStore(config().required("DATABASE_URL"))


@cache
def mailer() -> SmtpMailer:
    settings = config()
    return SmtpMailer(settings.required("SMTP_URL"), settings.optional("MAIL_FROM", "The Shop <orders@shop.example>"))


def operations_address() -> str:
    return config().optional("OPERATIONS_EMAIL", "operations@shop.example")


def mail_domain() -> str:
    return config().optional("MAIL_DOMAIN", "shop.example")


@cache
def send() -> Callable[[CloudEvent, dict[str, Any]], Claim]:
    """The one use case: the mail an event asks for, sent once."""
    return partial(
        service.send_notification,
        ledger=ledger(),
        mailer=mailer(),
        operations=operations_address(),
        domain=mail_domain(),
    )


def dependencies() -> list[health.Dependency]:
    """notification-send is ready when its ledger and its mail server answer."""
    settings = config()
    return [health.postgres(settings.required("DATABASE_URL")), health.smtp(settings.required("SMTP_URL"))]

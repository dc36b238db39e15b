"""Wires the notifications area's real collaborators once per process, on first use."""

from __future__ import annotations

from functools import cache

from functions.notifications.mail import SmtpMailer
from functions.notifications.store import PostgresNotificationStore
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


def dependencies() -> list[health.Dependency]:
    """notification-send is ready when its ledger and its mail server answer."""
    settings = config()
    return [health.postgres(settings.required("DATABASE_URL")), health.smtp(settings.required("SMTP_URL"))]

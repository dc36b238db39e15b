"""Sends the email an event asks for, at most once per event."""

from __future__ import annotations

import logging
import smtplib
from typing import Any

from cloudevents.http import CloudEvent

from functions.notifications.mail import Mailer, compose
from functions.notifications.store import Claim, NotificationStore
from functions.shared import metrics
from functions.shared.errors import Conflict, Rejected, Unavailable
from functions.shared.logs import mask_email

log = logging.getLogger("shop.notifications")


class MailInFlight(Conflict):
    """Another delivery of the same event is sending its mail right now (409: Knative delivers again)."""

    slug = "in-flight"
    title = "Being sent"


class MailRejected(Rejected):
    """The mail server refused the mail for good (an SMTP 5xx): 422, dead-lettered at once, not retried."""

    slug = "mail-rejected"


def send_notification(
    event: CloudEvent, data: dict[str, Any], *, ledger: NotificationStore, mailer: Mailer, operations: str, domain: str
) -> Claim:
    """CLAIMED: sent now; SENT: sent before (a redelivery); IN_FLIGHT raises 409 so delivery retries."""
    email = compose(event["type"], event["id"], data, operations=operations, domain=domain)
    claim = ledger.claim(event, email)
    if claim is Claim.SENT:
        metrics.note_duplicate_delivery()
        log.info("email for event %s was sent before; skipping", event["id"], extra={"event_id": event["id"]})
        return claim
    if claim is Claim.IN_FLIGHT:
        raise MailInFlight(f"the email for event {event['id']} is being sent by another delivery", retry_after=1)
    try:
        mailer.send(email)
    except (smtplib.SMTPException, OSError) as error:
        ledger.forget(event)
        if _refused_for_good(error):
            # A 5xx reply will be the same on every retry: 422, which Knative dead-letters at once
            # (from where an operator can replay it once the cause is fixed).
            raise MailRejected(f"the mail server refused this mail for good: {error}") from None
        # 503: Knative retries it with backoff (the Trigger waits out a minute's outage), then dead-letters it.
        raise Unavailable(f"the mail server refused or failed: {error}", retry_after=2) from None
    ledger.sent(event)
    metrics.EMAILS_SENT.labels(event["type"]).inc()
    log.info(
        "sent %r to %s",
        email.subject,
        mask_email(email.recipient),
        extra={"event_id": event["id"], "event_type": event["type"], "order_number": data.get("orderNumber")},
    )
    return claim


def _refused_for_good(error: BaseException) -> bool:
    """An SMTP 5xx reply (RFC 5321 §4.2.1: permanent) rather than a 4xx or a lost connection."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        return bool(codes) and all(code >= 500 for code in codes)
    return isinstance(error, smtplib.SMTPResponseException) and error.smtp_code >= 500

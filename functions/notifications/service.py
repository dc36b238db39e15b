"""Sends the email an event asks for, at most once per event."""

from __future__ import annotations

import logging
import smtplib
from typing import Any

from cloudevents.http import CloudEvent

from functions.notifications.mail import Mailer, compose
from functions.notifications.store import Claim, NotificationStore
from functions.shared import metrics, problems
from functions.shared.logs import mask_email

log = logging.getLogger("shop.notifications")


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
        raise problems.Problem(
            409,
            "Being sent",
            f"the email for event {event['id']} is being sent by another delivery",
            "in-flight",
            headers={"Retry-After": "1"},
        )
    try:
        mailer.send(email)
    except (smtplib.SMTPException, OSError) as error:
        ledger.forget(event)
        # 503: Knative retries it with backoff, then dead-letters it.
        raise problems.unavailable(f"the mail server refused or failed: {error}", retry_after=2) from None
    ledger.sent(event)
    metrics.EMAILS_SENT.labels(event["type"]).inc()
    log.info(
        "sent %r to %s",
        email.subject,
        mask_email(email.recipient),
        extra={"event_id": event["id"], "event_type": event["type"], "order_number": data.get("orderNumber")},
    )
    return claim

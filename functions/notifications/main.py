"""Notification functions: notification-send."""

import functions_framework
from cloudevents.http import CloudEvent

from functions.notifications import bootstrap
from functions.notifications.mail import NOTIFIED_TYPES
from functions.shared import events, flags, problems, web

web.install(bootstrap.dependencies)


@functions_framework.cloud_event
def notification_send(event: CloudEvent) -> None:
    """order.placed, order.cancelled, inventory.low -> one email each, never two for one event."""
    data = events.accept(event, NOTIFIED_TYPES)
    flags.refuse_if(
        flags.NOTIFICATION_SEND_FAILURE,
        problems.unprocessable("fault flag notificationSendFailure fails every event for good", "injected-fault"),
    )
    bootstrap.send()(event, data)

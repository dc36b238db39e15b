"""Delivering an event as Knative's dispatchers do: POST in binary mode, retries with backoff, dead-letter sink."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from opentelemetry.trace import SpanKind

from functions.shared import events as shop_events
from functions.shared import tracing
from local.manifests import DeliverySpec, Destination
from local.metrics import DELIVERIES, RETRIES

log = logging.getLogger("local.eventing")
T = TypeVar("T")
ERROR_DATA_MAX = 1024


class Answer(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


# How the runtime reaches a destination: (destination, headers, body, timeout) -> answer.
Sender = Callable[[Destination, dict[str, str], bytes, float], Awaitable[Answer]]
# Stores an event in a Broker of this runtime: (namespace, name, event) -> (status, text).
Store = Callable[[str, str, CloudEvent], Awaitable[tuple[int, str]]]


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status: int  # 0: no HTTP answer
    body: bytes = b""
    reply: CloudEvent | None = None
    attempts: int = 1


async def forever(action: Callable[[], Awaitable[T]], what: str, cap: float = 30.0) -> T:
    """Never gives up on what must not be lost: retries with capped backoff until `action` works."""
    delay = 0.5
    while True:
        try:
            return await action()
        except Exception as error:  # noqa: BLE001 - whatever failed, the next attempt may work
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)


class Delivery:
    """Delivers events to their destinations through `send`, counting outcomes in `stats`."""

    def __init__(self, send: Sender, stats: dict[str, int], store: Store | None = None) -> None:
        self.send = send
        self.stats = stats
        self.store = store

    async def deliver(
        self,
        event: CloudEvent,
        destination: Destination,
        delivery: DeliverySpec,
        on_attempt: Callable[[int, int | None], None] | None = None,
    ) -> Outcome:
        """POSTs with retries; after the last failure, hands the event to the dead-letter sink.
        `on_attempt(n, last status)` is told of each attempt as it starts."""
        outcome = Outcome(False, 0)
        for attempt in range(delivery.retry + 1):
            if attempt:
                self.stats["retries"] += 1
                RETRIES.labels(destination.logical_url).inc()
                await asyncio.sleep(delivery.backoff(attempt))
            if on_attempt is not None:
                on_attempt(attempt + 1, outcome.status if attempt else None)
            outcome = await self._post(event, destination, delivery.timeout)
            outcome = Outcome(outcome.delivered, outcome.status, outcome.body, outcome.reply, attempt + 1)
            if outcome.delivered or not shop_events.delivery_retried(outcome.status):
                break
        if outcome.delivered:
            self.stats["delivered"] += 1
            DELIVERIES.labels(destination.logical_url, "delivered").inc()
            return outcome
        if delivery.dead_letter is None:
            self.stats["dropped"] += 1
            DELIVERIES.labels(destination.logical_url, "dropped").inc()
            log.error(
                "dropped %s for %s after %d attempts (status %s)",
                event["id"],
                destination.logical_url,
                outcome.attempts,
                outcome.status,
            )
            return outcome
        dead = _with_error(event, destination, outcome)
        dls = delivery.dead_letter
        await forever(lambda: self._post_or_raise(dead, dls, delivery.timeout), f"dead-letter of {event['id']}")
        self.stats["dead_lettered"] += 1
        DELIVERIES.labels(destination.logical_url, "dead_lettered").inc()
        return outcome

    async def _post_or_raise(self, event: CloudEvent, destination: Destination, timeout: float) -> None:
        outcome = await self._post(event, destination, timeout)
        if not outcome.delivered:
            raise RuntimeError(f"{destination.logical_url} answered {outcome.status}")

    async def _post(self, event: CloudEvent, destination: Destination, timeout: float) -> Outcome:
        if destination.kind == "Broker" and self.store is not None:
            # A Broker of this very runtime: the event goes into its topic as it is, rather than
            # encoded to HTTP and parsed back in the same process (in a cluster, the KafkaSource's
            # adapter POSTs to the Broker's ingress).
            with tracing.span(f"POST {destination.logical_url}", SpanKind.CLIENT) as current:
                traceparent = tracing.traceparent_of(current)
                if traceparent:  # the Broker continues this delivery's span, as over HTTP
                    event = CloudEvent({**event.get_attributes(), "traceparent": traceparent}, event.get_data())
                status, text = await self.store(destination.namespace, destination.name, event)
                current.set_attribute("http.response.status_code", status)
            return Outcome(200 <= status < 300, status, text.encode())
        headers, body = to_binary(event)
        with tracing.span(f"POST {destination.logical_url}", SpanKind.CLIENT) as current:
            sent = dict(headers)
            traceparent = tracing.traceparent_of(current)
            if traceparent:  # the subscriber continues this delivery's span
                sent["ce-traceparent"] = sent["traceparent"] = traceparent
            answer = await self.send(destination, sent, body if isinstance(body, bytes) else b"", timeout)
            current.set_attribute("http.response.status_code", answer.status)
        if not 200 <= answer.status < 300:
            return Outcome(False, answer.status, answer.body)
        return Outcome(True, answer.status, answer.body, _reply(answer.headers, answer.body))


def _reply(headers: Mapping[str, str], payload: bytes) -> CloudEvent | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    if "ce-id" not in lowered and not lowered.get("content-type", "").startswith("application/cloudevents"):
        return None
    try:
        return from_http(dict(headers), payload)
    except Exception:  # noqa: BLE001 - a reply that is not a CloudEvent is just a response body
        return None


def _with_error(event: CloudEvent, destination: Destination, outcome: Outcome) -> CloudEvent:
    """The event as the dead-letter sink receives it: Knative's three error extensions added."""
    attributes = dict(event.get_attributes())
    attributes["knativeerrordest"] = destination.logical_url
    attributes["knativeerrorcode"] = str(outcome.status)
    if outcome.body:
        attributes["knativeerrordata"] = base64.b64encode(outcome.body[:ERROR_DATA_MAX]).decode()
    return CloudEvent(attributes, event.get_data())

"""CloudEvent types, declared once, and how events are built, checked and carried over Kafka."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage
from cloudevents.kafka import from_binary as kafka_from_binary
from cloudevents.kafka import to_binary as kafka_to_binary

from functions.shared import problems, tracing
from functions.shared.schema_errors import field_error

if TYPE_CHECKING:
    import jsonschema

PRODUCT_CREATED: Final = "com.shop.product.created"
PRODUCT_UPDATED: Final = "com.shop.product.updated"
ORDER_PLACED: Final = "com.shop.order.placed"
ORDER_CANCELLED: Final = "com.shop.order.cancelled"
INVENTORY_LOW: Final = "com.shop.inventory.low"

# Topic per aggregate: one order's (or SKU's) events share a topic and, through
# the partitionkey, a partition, so they stay in order.
TOPIC_BY_TYPE: Final[Mapping[str, str]] = {
    PRODUCT_CREATED: "shop.catalog",
    PRODUCT_UPDATED: "shop.catalog",
    ORDER_PLACED: "shop.orders",
    ORDER_CANCELLED: "shop.orders",
    INVENTORY_LOW: "shop.inventory",
}
EVENT_TYPES: Final = frozenset(TOPIC_BY_TYPE)
# What a Knative PingSource sends; it drives the scheduled functions.
PING: Final = "dev.knative.sources.ping"
TOPICS: Final = tuple(sorted(set(TOPIC_BY_TYPE.values())))

SCHEMA_DIR: Final = Path(__file__).resolve().parents[2] / "eventing" / "schemas"
# dataschema must be an absolute URI; the gateway serves the same files under this path.
SCHEMA_BASE_URI: Final = "https://shop.example/eventing/schemas/"
REQUIRED_ATTRIBUTES: Final = ("id", "source", "type", "specversion")


def new_event(
    event_type: str,
    *,
    service: str,
    subject: str,
    data: Mapping[str, Any],
    partition_key: str | None = None,
) -> CloudEvent:
    """A CloudEvent ready for the outbox; the data must match the type's schema."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"undeclared event type {event_type!r}")
    attributes: dict[str, Any] = {
        "type": event_type,
        "source": f"/shop/{service}",
        "subject": subject,
        "id": str(uuid.uuid4()),
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "dataschema": schema_uri(event_type),
        "partitionkey": partition_key or subject,
    }
    traceparent = tracing.current_traceparent()
    if traceparent:
        attributes["traceparent"] = traceparent
    event = CloudEvent(attributes, dict(data))
    check_data(event_type, event.data)
    return event


def schema_uri(event_type: str) -> str:
    return f"{SCHEMA_BASE_URI}{event_type}.json"


@cache
def schema_validator(event_type: str) -> jsonschema.protocols.Validator:
    """The event type's schema, compiled on first use: a target that never builds nor reads an event
    does not import jsonschema at all. The schemas are checked against their meta-schema by
    tests/contract/test_event_schemas.py, not here: that check was 30 ms of a function's first event."""
    import jsonschema

    schema = json.loads((SCHEMA_DIR / f"{event_type}.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def check_data(event_type: str, data: Any) -> None:
    """Raises a 400 problem naming each place where `data` breaks the type's schema."""
    errors = sorted(schema_validator(event_type).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        raise problems.invalid([field_error(e, "/data") for e in errors])


# Answers Knative's delivery retries (then dead-letters); any other 4xx is dead-lettered at once.
RETRIED_STATUSES = frozenset({404, 408, 409, 429})


def delivery_retried(status: int) -> bool:
    """Whether a subscriber's answer makes Knative deliver again (0: no answer at all)."""
    return status == 0 or status >= 500 or status in RETRIED_STATUSES


def accept(event: CloudEvent, expected: frozenset[str] | set[str]) -> dict[str, Any]:
    """Checks an incoming event's context and data; returns its data as a dict.

    A missing attribute, an unexpected type or data off its schema is the sender's
    fault: a 400 problem, which Knative does not retry but dead-letters.
    """
    missing = [name for name in REQUIRED_ATTRIBUTES if not event.get(name)]
    if missing:
        raise problems.invalid(
            [problems.FieldError(name, "required CloudEvent attribute is missing") for name in missing]
        )
    if event["specversion"] != "1.0":
        raise problems.invalid_field("specversion", f"unsupported {event['specversion']!r}, want '1.0'")
    event_type = event["type"]
    if event_type not in expected:
        raise problems.invalid_field(
            "type", f"this function does not consume {event_type!r}; it takes {sorted(expected)}"
        )
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError):
            raise problems.invalid_field("data", "is not JSON") from None
    if event_type == PING:
        return {}
    check_data(event_type, data)
    return dict(data or {})


def to_structured(event: CloudEvent) -> dict[str, Any]:
    """The structured-mode JSON object (attributes plus `data`), as stored in outboxes."""
    document = dict(event.get_attributes())
    document["data"] = event.get_data()
    return document


def from_structured(document: Mapping[str, Any]) -> CloudEvent:
    attributes = {k: v for k, v in document.items() if k != "data"}
    return CloudEvent(attributes, document.get("data"))


def to_kafka(event: CloudEvent, traceparent: str | None = None) -> KafkaMessage:
    """Kafka binary binding: `ce_*` headers, JSON value, key = partitionkey.

    `traceparent`, when given, names the span that sends the record (the producer span),
    which consumers continue; otherwise the event's own traceparent travels.
    """
    content_type = event.get("datacontenttype")
    data = event.get_data()
    if not content_type:
        # Optional in CloudEvents (the SDK's Kafka binding assumes it): say what the value holds.
        content_type = "application/octet-stream" if isinstance(data, bytes | bytearray) else "application/json"
        event = CloudEvent({**event.get_attributes(), "datacontenttype": content_type}, data)
    message = kafka_to_binary(event, data_marshaller=_marshaller(content_type, data))
    headers = dict(message.headers)
    context = traceparent or event.get("traceparent")
    if context:
        headers["ce_traceparent"] = str(context).encode()
        # Plain W3C header as well, for Kafka tooling that knows nothing of CloudEvents.
        headers["traceparent"] = str(context).encode()
    return KafkaMessage(headers=headers, key=message.key, value=message.value)


def from_kafka(headers: Mapping[str, bytes], key: str | bytes | None, value: bytes) -> CloudEvent:
    ce_headers = {k: v for k, v in headers.items() if k.startswith("ce_") or k == "content-type"}
    # The SDK would put the raw key bytes into partitionkey; the attribute is a string.
    text_key = key.decode() if isinstance(key, bytes) else key
    content_type = (ce_headers.get("content-type") or b"application/json").decode(errors="replace")
    return kafka_from_binary(
        KafkaMessage(headers=ce_headers, key=text_key, value=value), data_unmarshaller=_unmarshaller(content_type)
    )


def kafka_attributes(headers: Mapping[str, bytes], key: str | bytes | None) -> dict[str, str] | None:
    """A binary-mode record's CloudEvent attributes, read from its headers as `from_kafka` reads them
    but without decoding its value: what a Trigger filters on. None for a record in another mode."""
    attributes: dict[str, str] = {}
    for header, value in headers.items():
        name = header.lower()
        if name == "content-type":
            attributes["datacontenttype"] = value.decode(errors="replace")
        elif name.startswith("ce_"):
            attributes[name[3:]] = value.decode(errors="replace")
    if "specversion" not in attributes:
        return None
    if key is not None:
        attributes["partitionkey"] = key.decode() if isinstance(key, bytes) else key
    return attributes


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _marshaller(content_type: str, data: Any) -> Callable[[Any], bytes | str]:
    """JSON for JSON data; bytes and non-JSON text travel as they are (json.dumps would quote them)."""
    if isinstance(data, bytes | bytearray):
        return bytes
    if isinstance(data, str) and not _is_json(content_type):
        return str
    return lambda value: b"" if value is None else json.dumps(value)


def _unmarshaller(content_type: str) -> Callable[[bytes], Any]:
    """JSON values decoded; any other content type left as bytes, as it was sent."""
    if not _is_json(content_type):
        return lambda value: value
    return lambda value: json.loads(value) if value else None

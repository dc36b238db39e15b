"""CloudEvent helpers: declared types, building, the Kafka binding and the consumer-side checks."""

from __future__ import annotations

import pytest
from cloudevents.http import CloudEvent

from functions.shared import events
from functions.shared.problems import Problem

EXAMPLE = {"sku": "pixel_8", "available": 3, "threshold": 5, "orderNumber": "ORD-20261124-7F3A9C"}


def test_new_event_fills_the_contract_attributes() -> None:
    event = events.new_event(events.INVENTORY_LOW, service="inventory", subject="pixel_8", data=EXAMPLE)
    attributes = event.get_attributes()
    assert attributes["source"] == "/shop/inventory" and attributes["subject"] == "pixel_8"
    assert attributes["partitionkey"] == "pixel_8" and attributes["specversion"] == "1.0"
    assert attributes["dataschema"].endswith("/com.shop.inventory.low.json")
    assert attributes["datacontenttype"] == "application/json"


def test_undeclared_types_and_data_off_schema_are_refused_at_the_source() -> None:
    with pytest.raises(ValueError, match="undeclared"):
        events.new_event("com.shop.made.up", service="x", subject="y", data={})
    with pytest.raises(Problem) as caught:
        events.new_event(events.INVENTORY_LOW, service="inventory", subject="x", data={**EXAMPLE, "available": -1})
    assert caught.value.errors[0].field == "/data/available"


def test_the_kafka_binding_is_binary_with_the_partitionkey_as_key() -> None:
    event = events.new_event(events.INVENTORY_LOW, service="inventory", subject="pixel_8", data=EXAMPLE)
    message = events.to_kafka(event)
    assert message.key == "pixel_8"
    assert message.headers["ce_type"] == b"com.shop.inventory.low"
    assert message.headers["ce_id"] == event["id"].encode()
    back = events.from_kafka(message.headers, b"pixel_8", message.value)
    assert back["partitionkey"] == "pixel_8" and back.get_data() == EXAMPLE


@pytest.mark.parametrize(
    ("content_type", "data", "value"),
    [
        (None, {"x": 1}, b'{"x": 1}'),  # datacontenttype is optional: JSON data is sent as JSON
        (None, b"\x00\x01", b"\x00\x01"),  # and bytes as they are
        ("text/plain", "hello", b"hello"),  # text is not quoted as a JSON string would be
        ("application/cloudevents-batch+json", [1, 2], b"[1, 2]"),
        ("application/json", None, b""),
    ],
)
def test_any_cloudevent_survives_the_kafka_binding(content_type: str | None, data: object, value: bytes) -> None:
    """What a Broker stores is whatever a sender posted: the binding must not need our own conventions."""
    attributes = {
        "type": "com.example.any",
        "source": "/elsewhere",
        "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    }
    if content_type:
        attributes["datacontenttype"] = content_type
    message = events.to_kafka(CloudEvent(attributes, data))
    assert (message.value.encode() if isinstance(message.value, str) else message.value) == value
    back = events.from_kafka(message.headers, message.key, message.value)
    # Non-JSON data comes back as the bytes that were sent (as the SDK's HTTP binding gives it).
    assert back["type"] == "com.example.any" and back.get_data() == (data.encode() if isinstance(data, str) else data)
    assert message.headers["traceparent"] == attributes["traceparent"].encode()  # also a plain W3C header


@pytest.mark.parametrize(
    "event",
    [
        events.new_event(events.INVENTORY_LOW, service="inventory", subject="pixel_8", data=EXAMPLE),
        CloudEvent(
            {
                "type": "com.example.any",
                "source": "/elsewhere",
                "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
            },
            b"x",
        ),
        CloudEvent(
            {"type": "com.example.text", "source": "/t", "datacontenttype": "text/plain", "origin": "shelf"}, "hi"
        ),
    ],
)
def test_a_records_headers_give_the_attributes_its_event_has(event: CloudEvent) -> None:
    """What a Trigger filters on before decoding a record is what it would see after decoding it."""
    message = events.to_kafka(event)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    back = events.from_kafka(message.headers, key, message.value)
    assert events.kafka_attributes(message.headers, key) == {k: str(v) for k, v in back.get_attributes().items()}


def test_a_record_in_no_binary_mode_has_no_header_attributes() -> None:
    assert events.kafka_attributes({"content-type": b"application/cloudevents+json"}, b"k") is None


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"type": events.INVENTORY_LOW, "source": "/x", "id": "", "specversion": "1.0"}, "id"),
        ({"type": events.ORDER_PLACED, "source": "/x", "id": "1", "specversion": "1.0"}, "type"),
        ({"type": events.INVENTORY_LOW, "source": "/x", "id": "1", "specversion": "0.3"}, "specversion"),
    ],
)
def test_accept_names_what_is_wrong(attributes: dict[str, str], field: str) -> None:
    event = CloudEvent(attributes, EXAMPLE)
    with pytest.raises(Problem) as caught:
        events.accept(event, {events.INVENTORY_LOW})
    assert caught.value.status == 400 and caught.value.errors[0].field == field


def test_every_type_has_a_topic_named_after_its_aggregate() -> None:
    for event_type, topic in events.TOPIC_BY_TYPE.items():
        aggregate = event_type.split(".")[2]
        assert topic == {"product": "shop.catalog", "order": "shop.orders", "inventory": "shop.inventory"}[aggregate]

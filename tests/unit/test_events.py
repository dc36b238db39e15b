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

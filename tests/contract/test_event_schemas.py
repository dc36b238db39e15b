"""Event contracts: eventing/schemas/ against functions/shared/events.py, tested both ways."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any, cast

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http
from jsonschema import Draft202012Validator

from functions.notifications.mail import NOTIFIED_TYPES, compose
from functions.shared import events
from functions.shared.problems import Problem

TYPES = sorted(events.EVENT_TYPES)
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# The aggregate id each type is about: its subject and partitionkey (the Kafka key), as the
# emitting services set them and the schemas' descriptions say.
SUBJECT_FIELD = {
    events.PRODUCT_CREATED: "sku",
    events.PRODUCT_UPDATED: "sku",
    events.ORDER_PLACED: "orderNumber",
    events.ORDER_CANCELLED: "orderNumber",
    events.INVENTORY_LOW: "sku",
}


@cache
def _schema(event_type: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((events.SCHEMA_DIR / f"{event_type}.json").read_text(encoding="utf-8"))
    return schema


def _examples(event_type: str) -> list[dict[str, Any]]:
    path = events.SCHEMA_DIR / f"{event_type}.json"
    return list(_schema(event_type).get("examples", [])) if path.is_file() else []


def _example_cases() -> list[Any]:
    return [
        pytest.param(event_type, example, id=f"{event_type}[{index}]")
        for event_type in TYPES
        for index, example in enumerate(_examples(event_type))
    ]


def _required_paths(
    schema: Mapping[str, Any], instance: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[str | int, ...]]:
    """The path of every required property the instance holds, nested objects and array items included."""
    if isinstance(instance, Mapping):
        for name in schema.get("required", []):
            if name in instance:
                yield (*path, name)
        for name, sub in schema.get("properties", {}).items():
            if name in instance:
                yield from _required_paths(sub, instance[name], (*path, name))
    elif isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(instance):
            yield from _required_paths(schema["items"], item, (*path, index))


def _required_cases() -> list[Any]:
    cases = []
    for event_type in TYPES:
        examples = _examples(event_type)
        if not examples:
            continue  # test_examples_validate_against_their_schema reports it
        for path in _required_paths(_schema(event_type), examples[0]):
            where = "/".join(str(part) for part in path)
            cases.append(pytest.param(event_type, path, id=f"{event_type}:{where}"))
    return cases


def _without(example: Mapping[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    broken = copy.deepcopy(dict(example))
    parent: Any = broken
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return broken


def _wire(value: str | bytes) -> bytes:
    """What Kafka hands a consumer: bytes, whatever the producer passed."""
    return value.encode() if isinstance(value, str) else value


def _incoming(event_type: str, data: Mapping[str, Any]) -> CloudEvent:
    """The event as a consumer sees it: what new_event builds."""
    return events.new_event(event_type, service="test", subject=str(data[SUBJECT_FIELD[event_type]]), data=data)


# --- the schema files ------------------------------------------------------------------------


def test_schema_folder_holds_exactly_the_declared_types() -> None:
    files = {path.name.removesuffix(".json") for path in events.SCHEMA_DIR.glob("*.json")}
    assert files == set(events.EVENT_TYPES), (
        f"without a schema: {sorted(events.EVENT_TYPES - files)}; undeclared: {sorted(files - events.EVENT_TYPES)}"
    )


def test_every_type_has_a_subject_field() -> None:
    assert set(SUBJECT_FIELD) == set(events.EVENT_TYPES)


@pytest.mark.parametrize("event_type", TYPES)
def test_schema_is_valid_draft_2020_12(event_type: str) -> None:
    path = events.SCHEMA_DIR / f"{event_type}.json"
    assert path.is_file(), f"eventing/schemas/{event_type}.json is missing"
    schema = _schema(event_type)
    assert schema.get("$schema") == DRAFT_2020_12
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("event_type", TYPES)
def test_schema_id_names_its_type(event_type: str) -> None:
    schema_id = _schema(event_type)["$id"]
    assert schema_id.endswith(f"/{event_type}.json")
    # Events carry it as their dataschema attribute.
    assert schema_id == events.schema_uri(event_type)


@pytest.mark.parametrize("event_type", TYPES)
def test_examples_validate_against_their_schema(event_type: str) -> None:
    examples = _examples(event_type)
    assert examples, f"{event_type}.json has no examples"
    validator = Draft202012Validator(_schema(event_type), format_checker=Draft202012Validator.FORMAT_CHECKER)
    for index, example in enumerate(examples):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(example)]
        assert errors == [], f"example {index}"


# --- the code against the schemas ------------------------------------------------------------


@pytest.mark.parametrize(("event_type", "example"), _example_cases())
def test_new_event_takes_the_example_and_survives_kafka(event_type: str, example: dict[str, Any]) -> None:
    event = _incoming(event_type, example)
    assert event["dataschema"] == events.schema_uri(event_type)
    assert event["partitionkey"] == example[SUBJECT_FIELD[event_type]]
    message = events.to_kafka(event)
    assert message.key == event["partitionkey"]
    # The key exactly as to_kafka made it (a str); the next test passes bytes, as consumers read it.
    back = events.from_kafka(message.headers, cast(Any, message.key), _wire(message.value))
    assert back.get_attributes() == event.get_attributes()
    assert back.get_data() == example


@pytest.mark.parametrize(("event_type", "example"), _example_cases())
def test_kafka_round_trip_with_the_key_as_consumers_read_it(event_type: str, example: dict[str, Any]) -> None:
    event = _incoming(event_type, example)
    message = events.to_kafka(event)
    assert message.key is not None
    back = events.from_kafka(message.headers, _wire(message.key), _wire(message.value))
    assert back.get_attributes() == event.get_attributes()


@pytest.mark.parametrize(("event_type", "path"), _required_cases())
def test_missing_required_field_is_rejected(event_type: str, path: tuple[str | int, ...]) -> None:
    example = _examples(event_type)[0]
    events.check_data(event_type, example)
    with pytest.raises(Problem) as caught:
        events.check_data(event_type, _without(example, path))
    assert caught.value.status == 400
    # The error points at the missing field itself, and its message names it.
    field = "/data/" + "/".join(str(part) for part in path)
    assert any(e.field == field and repr(path[-1]) in e.message for e in caught.value.errors), caught.value.errors


def test_required_fields_are_found_in_nested_items() -> None:
    paths = {path for path in _required_paths(_schema(events.ORDER_PLACED), _examples(events.ORDER_PLACED)[0])}
    assert ("orderNumber",) in paths and ("items", 0, "skuCode") in paths


@pytest.mark.parametrize(
    ("event_type", "field"), [(events.ORDER_PLACED, "placedAt"), (events.ORDER_CANCELLED, "cancelledAt")]
)
def test_date_time_fields_are_checked(event_type: str, field: str) -> None:
    with pytest.raises(Problem):
        events.check_data(event_type, {**_examples(event_type)[0], field: "yesterday"})


@pytest.mark.parametrize("mode", ["object", "binary", "structured"])
@pytest.mark.parametrize(("event_type", "example"), _example_cases())
def test_consumer_parser_accepts_the_example(event_type: str, example: dict[str, Any], mode: str) -> None:
    event = _incoming(event_type, example)
    if mode != "object":
        # Over HTTP, as Knative delivers it and the framework decodes it.
        headers, body = (to_binary if mode == "binary" else to_structured)(event)
        event = from_http(dict(headers), body)
    assert events.accept(event, {event_type}) == example


@pytest.mark.parametrize(("event_type", "example"), _example_cases())
def test_consumer_parser_refuses_a_type_it_does_not_take(event_type: str, example: dict[str, Any]) -> None:
    others = events.EVENT_TYPES - {event_type}
    with pytest.raises(Problem) as caught:
        events.accept(_incoming(event_type, example), others)
    assert caught.value.status == 400


def _required_only(event_type: str, example: dict[str, Any]) -> dict[str, Any]:
    required = events.schema_validator(event_type).schema.get("required", [])
    return {key: value for key, value in example.items() if key in required}


@pytest.mark.parametrize("shape", ["example", "required only"])
@pytest.mark.parametrize(
    ("event_type", "example"), [case for case in _example_cases() if case.values[0] in NOTIFIED_TYPES]
)
def test_every_valid_event_makes_an_email(event_type: str, example: dict[str, Any], shape: str) -> None:
    """notification-send's templates take any event its schema allows, optional properties left out too."""
    data = example if shape == "example" else _required_only(event_type, example)
    events.check_data(event_type, data)  # still a valid event
    email = compose(event_type, "evt-1", data, operations="ops@shop.example", domain="shop.example")
    number = data["orderNumber"]
    assert number in email.subject or number in email.body
    assert email.recipient == ("ops@shop.example" if event_type == events.INVENTORY_LOW else data["email"])
    assert "None" not in email.body  # a left-out property prints nothing, not Python's None

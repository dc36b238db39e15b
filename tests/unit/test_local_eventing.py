"""The local Eventing runtime's pure parts: durations, cron, backoff and Trigger filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cloudevents.http import CloudEvent

from local.manifests import DeliverySpec, Destination, Trigger, dialect_matches, iso_seconds, next_fire, seconds


@pytest.mark.parametrize(("text", "value"), [("PT0.2S", 0.2), ("PT1M", 60), ("PT1H30M", 5400), ("P1D", 86400)])
def test_iso_durations(text: str, value: float) -> None:
    assert iso_seconds(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "P", "PT", "0.2s", "PT-1S"])
def test_malformed_iso_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        iso_seconds(text)


def test_go_durations() -> None:
    assert seconds("60s") == 60 and seconds("1m30s") == 90 and seconds("2h") == 7200


def test_exponential_and_linear_backoff_follow_knative() -> None:
    exponential = DeliverySpec(retry=5, backoff_policy="exponential", backoff_delay=0.2)
    assert [exponential.backoff(n) for n in range(1, 6)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])
    linear = DeliverySpec(retry=3, backoff_policy="linear", backoff_delay=0.5)
    assert [linear.backoff(n) for n in range(1, 4)] == pytest.approx([0.5, 1.0, 1.5])


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("* * * * *", datetime(2026, 11, 24, 10, 15, 30, tzinfo=UTC), datetime(2026, 11, 24, 10, 16, tzinfo=UTC)),
        ("*/15 * * * *", datetime(2026, 11, 24, 10, 15, tzinfo=UTC), datetime(2026, 11, 24, 10, 30, tzinfo=UTC)),
        ("0 3 * * 1", datetime(2026, 11, 24, 10, 0, tzinfo=UTC), datetime(2026, 11, 30, 3, 0, tzinfo=UTC)),
        ("30 9 1 1 *", datetime(2026, 11, 24, tzinfo=UTC), datetime(2027, 1, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_next_fire(schedule: str, after: datetime, expected: datetime) -> None:
    assert next_fire(schedule, after) == expected


@pytest.mark.parametrize("schedule", ["* * * *", "61 * * * *", "* * 0 * *", "*/0 * * * *"])
def test_bad_schedules_are_refused(schedule: str) -> None:
    with pytest.raises(ValueError):
        next_fire(schedule, datetime(2026, 1, 1, tzinfo=UTC))


EVENT = {"type": "com.shop.order.placed", "source": "/shop/orders", "subject": "ORD-1"}


@pytest.mark.parametrize(
    ("expression", "matches"),
    [
        ({"exact": {"type": "com.shop.order.placed"}}, True),
        ({"exact": {"type": "com.shop.order.placed", "source": "/other"}}, False),
        ({"prefix": {"type": "com.shop.order."}}, True),
        ({"suffix": {"type": ".placed"}}, True),
        ({"suffix": {"missing": ""}}, False),
        ({"all": [{"prefix": {"type": "com."}}, {"exact": {"subject": "ORD-1"}}]}, True),
        ({"any": [{"exact": {"type": "nope"}}, {"exact": {"subject": "ORD-1"}}]}, True),
        ({"not": {"exact": {"type": "com.shop.order.placed"}}}, False),
    ],
)
def test_filters_dialect(expression: dict[str, object], matches: bool) -> None:
    assert dialect_matches(expression, EVENT) is matches


def test_cesql_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ValueError, match="cesql"):
        dialect_matches({"cesql": "type = 'x'"}, EVENT)


def test_filters_take_precedence_over_filter_attributes() -> None:
    trigger = Trigger(
        "t",
        "shop",
        "shop",
        Destination("Service", "x", "shop"),
        DeliverySpec(),
        attributes={"type": "something.else"},
        filters=({"exact": {"type": EVENT["type"]}},),
    )
    assert trigger.matches(CloudEvent(EVENT, None))
    legacy = Trigger(
        "t", "shop", "shop", Destination("Service", "x", "shop"), DeliverySpec(), attributes={"type": "something.else"}
    )
    assert not legacy.matches(CloudEvent(EVENT, None))

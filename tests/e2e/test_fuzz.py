"""The public API fuzzed from its own OpenAPI document: no 5xx, and a refused request writes nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from functions.shared import mongo
from tests.conftest import Ingress, eventually
from tests.e2e.conftest import quiet
from tests.e2e.eureka_app import registered


def snapshot(stack: Any) -> dict[str, Any]:
    """What a request could write synchronously, in every store."""
    state: dict[str, Any] = {}
    queries = {
        "orders": "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM orders WHERE status = 'CANCELLED'),"
        " (SELECT count(*) FROM outbox), (SELECT count(*) FROM idempotency_keys)",
        "inventory": "SELECT (SELECT coalesce(sum(available), 0) FROM stock), (SELECT count(*) FROM reservations),"
        " (SELECT count(*) FROM outbox)",
        "eventing": "SELECT (SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL)",
    }
    for database, query in queries.items():
        with psycopg.connect(stack.database_urls[database]) as conn:
            state[database] = conn.execute(query).fetchone()
    catalog = mongo.client(stack.mongodb_uri)["catalog"]
    versions = list(catalog.products.aggregate([{"$group": {"_id": None, "v": {"$sum": "$version"}}}]))
    state["catalog"] = (
        catalog.products.count_documents({}),
        versions[0]["v"] if versions else 0,
        catalog.outbox.count_documents({}),
    )
    return state


def unsent(stack: Any) -> int:
    """Events still in the outboxes: an accepted request's are on their way to Kafka."""
    count = mongo.client(stack.mongodb_uri)["catalog"].outbox.count_documents({"sentAt": None})
    for database in ("orders", "inventory"):
        with psycopg.connect(stack.database_urls[database]) as conn:
            row = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
            count += row[0] if row else 0
    return count


def settled(stack: Any) -> None:
    """Waits until the events an accepted request caused have reached their consumers: out of the
    outboxes (the fast path relays them at once), then settled by every Trigger."""
    eventually(lambda: unsent(stack) == 0, timeout=30)
    quiet(stack)


@pytest.mark.slow
def test_the_public_api_answers_every_input_without_a_5xx(stack: Any, ingress: Ingress) -> None:
    """Every operation of /openapi.json, with inputs hypothesis derives from its schemas.

    Routes to apps outside Knative (routes.yaml `upstream: eureka:...`) get a running app
    registered in the registry, as a real deployment has; without one they rightly answer 503.
    """
    with registered(ingress, "fuzz"):
        eventually(lambda: requests.get(f"{stack.url}/api/recommendations", timeout=30).ok, timeout=20, interval=1)
        fuzz(stack)


def fuzz(stack: Any) -> None:
    token = stack.issuer.token_for("admin")["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    api = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        )
        def exercise(case: Any) -> None:
            before = snapshot(stack)
            response = case.call(base_url=stack.url, headers=headers, timeout=60)
            where = (case.method, case.formatted_path, response.status_code, response.text[:300])
            assert response.status_code < 500, where
            if response.status_code >= 400:
                content_type = response.headers.get("content-type", [""])[0]  # schemathesis: lower-case, lists
                assert content_type.startswith("application/problem+json"), where
                assert snapshot(stack) == before, where
            elif case.method.upper() != "GET":
                settled(stack)

        exercise()

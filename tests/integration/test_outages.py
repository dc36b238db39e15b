"""A server a function needs is down or restarting: 503 with Retry-After (never 500), readiness says which, and
the function heals by itself once the server is back."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient

from functions import migrate
from local.servers import EmbeddedPostgres, free_port
from tests.conftest import EVENTS_DIR, People, eventually, problem_of

NOBODY_LISTENS = f"127.0.0.1:{free_port()}"


def client(source: str, target: str, signature: str = "http") -> FlaskClient:
    return functions_framework.create_app(target, source, signature).test_client()


def assert_outage(answer: Any, server: str) -> None:
    assert answer.status_code == 503, answer.get_data(as_text=True)
    problem = problem_of(answer)
    assert server in problem["detail"]
    assert int(answer.headers["Retry-After"]) >= 1


@pytest.mark.timeout(60)
def test_a_database_that_is_down_is_a_503_and_readiness_names_it(
    function_env: Callable[..., None], people: People
) -> None:
    function_env(DATABASE_URL=f"postgresql://postgres@{NOBODY_LISTENS}/orders", IDENTITY_SECRET=people.secret)
    order_get = client("functions/orders/main.py", "order_get")
    assert_outage(order_get.get("/api/orders/ORD-20261206-0000000000", headers=people.customer()), "PostgreSQL")
    ready = order_get.get("/readyz")
    assert_outage(ready, "PostgreSQL database orders is unreachable")
    # Liveness is about the process, which is fine: restarting it would not bring the database back.
    assert order_get.get("/healthz").status_code == 200


@pytest.mark.timeout(60)
def test_mongodb_down_is_a_503_and_readiness_names_it(function_env: Callable[..., None], people: People) -> None:
    function_env(
        MONGODB_URI=f"mongodb://{NOBODY_LISTENS}/?directConnection=true",
        IDENTITY_SECRET=people.secret,
        KAFKA_BOOTSTRAP_SERVERS=NOBODY_LISTENS,
    )
    create = client("functions/catalog/main.py", "product_create")
    body = {"sku": "outage_phone", "name": "Outage phone", "category": "phones", "price": 10}
    assert_outage(create.post("/api/products", json=body, headers=people.admin()), "MongoDB")
    assert_outage(create.get("/readyz"), "MongoDB is unreachable")


@pytest.mark.timeout(60)
def test_readiness_names_a_missing_setting_and_an_unreachable_mail_server(
    stack: Any, function_env: Callable[..., None]
) -> None:
    function_env(DATABASE_URL=stack.database_urls["notifications"], SMTP_URL=f"smtp://{NOBODY_LISTENS}")
    send = client("functions/notifications/main.py", "notification_send", "cloudevent")
    assert_outage(send.get("/readyz"), f"SMTP server {NOBODY_LISTENS} is unreachable")
    function_env(SMTP_URL="")
    assert_outage(
        client("functions/notifications/main.py", "notification_send", "cloudevent").get("/readyz"), "SMTP_URL"
    )
    function_env(SMTP_URL=stack.smtp_url)
    ready = client("functions/notifications/main.py", "notification_send", "cloudevent").get("/readyz")
    assert ready.status_code == 200, ready.get_data(as_text=True)


@pytest.fixture
def restartable_postgres(tmp_path: Path) -> Iterator[tuple[EmbeddedPostgres, dict[str, str]]]:
    # Durable: with synchronous_commit off, a crash may take the last commits (the schema) with it.
    with EmbeddedPostgres(tmp_path / "pg", log_dir=tmp_path, durable=True).supervise() as postgres:
        yield postgres, migrate.migrate_postgres(postgres.url())


@pytest.mark.timeout(120)
def test_functions_heal_by_themselves_after_the_database_restarts(
    restartable_postgres: tuple[EmbeddedPostgres, dict[str, str]],
    function_env: Callable[..., None],
    people: People,
) -> None:
    postgres, urls = restartable_postgres
    function_env(DATABASE_URL=urls["orders"], IDENTITY_SECRET=people.secret)
    order_list = client("functions/orders/main.py", "order_list")
    who = people.customer("heal-1")
    # Several pooled connections, all of which the restart kills.
    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(lambda _: order_list.get("/api/orders", headers=who).status_code, range(32))) == {200}
    old = postgres.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    eventually(lambda: postgres.pid not in (None, old) and postgres.lifecycle.state.value == "Running")
    statuses: list[int] = []

    def served() -> bool:
        statuses.append(order_list.get("/api/orders", headers=who).status_code)
        return statuses[-1] == 200

    eventually(served, timeout=30, interval=0.05)
    assert set(statuses) <= {200, 503}, statuses
    # Healed: the pool dropped every dead connection, so no later request meets one.
    with ThreadPoolExecutor(8) as pool:
        later = list(pool.map(lambda _: order_list.get("/api/orders", headers=who).status_code, range(32)))
    assert set(later) == {200}, later


@pytest.mark.timeout(120)
def test_a_mail_sent_while_the_ledger_restarts_is_recorded_not_sent_twice(
    restartable_postgres: tuple[EmbeddedPostgres, dict[str, str]],
    stack: Any,
    function_env: Callable[..., None],
) -> None:
    """SMTP accepted the mail, then the database went away before it was marked sent: the mark is
    retried until the database is back, so a redelivery finds it sent instead of sending again."""
    postgres, urls = restartable_postgres
    function_env(DATABASE_URL=urls["notifications"], SMTP_URL=stack.smtp_url)
    send = client("functions/notifications/main.py", "notification_send", "cloudevent")
    number = f"ORD-20261206-{uuid.uuid4().hex[:10].upper()}"
    golden = json.loads((EVENTS_DIR / "com.shop.order.placed.json").read_text())
    attributes = {k: v for k, v in golden.items() if k != "data"}
    attributes.update(id=f"ledger-{number}", subject=number, partitionkey=number)
    event = CloudEvent(attributes, {**golden["data"], "orderNumber": number})
    headers, body = to_binary(event)
    from functions.notifications import bootstrap

    mailer = bootstrap.mailer()
    original = mailer.send

    def send_then_kill(email: Any) -> None:
        original(email)
        os.kill(postgres.pid or 0, signal.SIGKILL)

    mailer.send = send_then_kill  # type: ignore[method-assign]
    try:
        first = send.post("/", headers=headers, data=body)
    finally:
        mailer.send = original  # type: ignore[method-assign]
    assert first.status_code in (200, 204), first.get_data(as_text=True)
    # Redelivered as the Broker would: retried while the pool still hands out a connection of the dead server.
    statuses: list[int] = []
    eventually(lambda: statuses.append(send.post("/", headers=headers, data=body).status_code) or statuses[-1] < 300)
    assert set(statuses[:-1]) <= {503}, statuses
    assert len([m for m in stack.smtp.messages() if number in str(m["Subject"])]) == 1

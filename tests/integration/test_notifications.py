"""notification-send through functions_framework.create_app: golden events in binary and structured mode,
its ledger in the real PostgreSQL server, its mail to a real SMTP server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import functions_framework
import psycopg
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient

from functions.shared import events
from local.servers import EmbeddedSmtp
from tests.conftest import EVENTS_DIR, problem_of

SOURCE = "functions/notifications/main.py"
OPERATIONS = "operations-it@shop.example"
ENCODINGS = {"binary": to_binary, "structured": to_structured}


@pytest.fixture
def notify(stack: Any, function_env: Callable[..., None]) -> Callable[..., FlaskClient]:
    """notification-send's test client, mailing through the stack's SMTP server unless given another."""

    def client(smtp_url: str = stack.smtp_url) -> FlaskClient:
        function_env(DATABASE_URL=stack.database_urls["notifications"], SMTP_URL=smtp_url, OPERATIONS_EMAIL=OPERATIONS)
        return functions_framework.create_app("notification_send", SOURCE).test_client()

    return client


@pytest.fixture(scope="module")
def refusing_smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedSmtp]:
    """A mail server of this module's own: it refuses on purpose, which the stack's mail must not meet."""
    with EmbeddedSmtp(tmp_path_factory.mktemp("smtp") / "mail") as smtp:
        yield smtp


def golden(event_type: str) -> CloudEvent:
    """The golden event of `event_type` with a new id and its own order number (and SKU)."""
    example = json.loads((EVENTS_DIR / f"{event_type}.json").read_text())
    number = f"ORD-20261124-{uuid.uuid4().hex[:10].upper()}"
    attributes = {name: value for name, value in example.items() if name != "data"}
    attributes.update(id=str(uuid.uuid4()), subject=number, partitionkey=number)
    data = {**example["data"], "orderNumber": number}
    if event_type == events.INVENTORY_LOW:
        data["sku"] = f"low_{uuid.uuid4().hex[:10]}"
    return CloudEvent(attributes, data)


def expected_mail(event: CloudEvent) -> tuple[str, str]:
    """(Subject, To) of the mail the event asks for."""
    data = event.get_data()
    assert isinstance(data, dict)
    if event["type"] == events.INVENTORY_LOW:
        return f"Low stock: {data['sku']} has {data['available']} left", OPERATIONS
    done = {events.ORDER_PLACED: "is placed successfully", events.ORDER_CANCELLED: "has been cancelled"}
    return f"Your Order with OrderNumber {data['orderNumber']} {done[event['type']]}", data["email"]


def deliver(client: FlaskClient, event: CloudEvent, mode: str) -> Any:
    headers, body = ENCODINGS[mode](event)
    return client.post("/", headers=dict(headers), data=body)


def mails(smtp: Any, event: CloudEvent) -> list[Any]:
    subject, _ = expected_mail(event)
    return [m for m in smtp.messages() if m["Subject"] == subject]


def ledger(stack: Any, event: CloudEvent) -> list[tuple[Any, ...]]:
    with psycopg.connect(stack.database_urls["notifications"]) as conn:
        return conn.execute(
            "SELECT status, recipient FROM notifications WHERE event_source = %s AND event_id = %s",
            (event["source"], event["id"]),
        ).fetchall()


@pytest.mark.parametrize("mode", list(ENCODINGS))
@pytest.mark.parametrize("event_type", [events.ORDER_PLACED, events.ORDER_CANCELLED, events.INVENTORY_LOW])
def test_each_event_is_one_mail_even_when_delivered_twice(
    stack: Any, notify: Callable[..., FlaskClient], event_type: str, mode: str
) -> None:
    event = golden(event_type)
    _, recipient = expected_mail(event)
    client = notify()
    for _ in range(2):  # a redelivery
        answered = deliver(client, event, mode)
        assert answered.status_code == 200, answered.data
    [mail] = mails(stack.smtp, event)
    assert mail["To"] == recipient and mail["Message-ID"] == f"<{event['id']}@shop.example>"
    assert event["subject"] in mail.get_content()
    assert ledger(stack, event) == [("SENT", recipient)]


@pytest.mark.parametrize(
    ("first", "item"),
    [("Ada", "Plain ASCII phone"), ("Zoë", "Café crème grinder"), ("Ada", ". a line that starts with a dot " * 40)],
    ids=["ascii (7bit)", "accented (quoted-printable)", "long line with a leading dot"],
)
def test_the_mail_reads_back_as_it_was_written(
    stack: Any, notify: Callable[..., FlaskClient], first: str, item: str
) -> None:
    """The mail written straight to the wire reads back, through a real SMTP server and Python's parser,
    with every header and every character of the body as the template rendered it."""
    event = golden(events.ORDER_PLACED)
    data = event.get_data()
    assert isinstance(data, dict)
    data = {**data, "firstName": first, "items": [{**data["items"][0], "name": item}]}
    event = CloudEvent({k: v for k, v in event.get_attributes().items() if k != "data"}, data)
    assert deliver(notify(), event, "binary").status_code == 200
    [mail] = mails(stack.smtp, event)
    subject, recipient = expected_mail(event)
    assert (mail["Subject"], mail["To"], mail["Message-ID"]) == (
        subject,
        recipient,
        f"<{event['id']}@shop.example>",
    )
    assert mail.get_content_type() == "text/plain" and mail.get_content_charset() == "utf-8"
    body = mail.get_content()
    assert body.startswith(f"Hello {first} {data['lastName']},\n") and item in body and body.endswith("The Shop\n")


@pytest.mark.parametrize(("code", "status", "slug"), [(554, 422, "mail-rejected"), (451, 503, "unavailable")])
def test_a_refused_mail_is_forgotten_so_that_the_next_delivery_sends_it(
    stack: Any, notify: Callable[..., FlaskClient], refusing_smtp: EmbeddedSmtp, code: int, status: int, slug: str
) -> None:
    """An SMTP 5xx is 422 (dead-lettered at once), a 4xx is 503 (retried); either way nothing is kept."""
    event = golden(events.ORDER_PLACED)
    client = notify(refusing_smtp.url)
    refusing_smtp.fail_next(1, code=code)
    refused = deliver(client, event, "binary")
    assert refused.status_code == status, refused.data
    assert problem_of(refused)["type"] == f"/problems/{slug}"
    if status == 503:
        assert int(refused.headers["Retry-After"]) >= 1
    assert refusing_smtp.fail_next_remaining() == 0
    assert mails(refusing_smtp, event) == [] and ledger(stack, event) == []
    assert deliver(client, event, "structured").status_code == 200
    assert len(mails(refusing_smtp, event)) == 1
    assert ledger(stack, event) == [("SENT", expected_mail(event)[1])]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": events.PRODUCT_CREATED}, "type"),
        ({"data": {"orderNumber": "ORD-20261124-0000000000"}}, "/data/email"),
        ({"specversion": "0.3"}, None),
    ],
    ids=["a type it does not take", "a required field missing", "another specversion"],
)
def test_an_event_it_does_not_take_is_a_400_and_mails_nothing(
    stack: Any, notify: Callable[..., FlaskClient], change: dict[str, Any], field: str | None
) -> None:
    event = golden(events.ORDER_PLACED)
    document = {**events.to_structured(event), **change}
    refused = notify().post("/", data=json.dumps(document), content_type="application/cloudevents+json")
    assert refused.status_code == 400, refused.data
    problem = problem_of(refused)
    if field:
        assert field in [e["field"] for e in problem["errors"]]
    assert ledger(stack, event) == []
    assert mails(stack.smtp, event) == []

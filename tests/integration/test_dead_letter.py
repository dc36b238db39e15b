"""dead-letter through functions_framework.create_app: it keeps what a Trigger's deadLetterSink sends (golden
events in binary and structured mode, with Knative's error extensions), lists it for admins, and replays
it over HTTP to a real destination."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient

from functions import migrate
from functions.shared import events
from tests.conftest import EVENTS_DIR, People, problem_of, scratch_database

SOURCE = "functions/eventing/main.py"
ENCODINGS = {"binary": to_binary, "structured": to_structured}


@dataclass
class Destination:
    """A subscriber of the test's own on a free port: records what it is sent, answers `status`."""

    status: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def destination() -> Iterator[Destination]:
    here = Destination()

    class Subscriber(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            here.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(here.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Subscriber)
    here.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield here
    server.shutdown()
    server.server_close()


@pytest.fixture
def dead_letter(stack: Any, function_env: Callable[..., None]) -> Iterator[FlaskClient]:
    """dead-letter on a database of the test's own: its dead letters (to destinations that are gone
    once the test ends) must not be in the shop's listing, where other tests replay what they find."""
    schema = Path(events.__file__).parents[1] / "eventing" / "schema.sql"
    with scratch_database(stack, "dead_letter_test", migrate.SHARED_SCHEMA, schema) as url:
        function_env(DATABASE_URL=url, IDENTITY_SECRET=stack.identity_secret, SERVICE_INGRESS_URL=stack.url)
        yield functions_framework.create_app("dead_letter", SOURCE).test_client()


def failed(event_type: str, destination: str, code: int = 503, body: bytes = b"") -> tuple[CloudEvent, CloudEvent]:
    """A golden event with its own id and order number, and that event as a deadLetterSink receives it."""
    example = json.loads((EVENTS_DIR / f"{event_type}.json").read_text())
    number = f"ORD-20261124-{uuid.uuid4().hex[:10].upper()}"
    attributes = {name: value for name, value in example.items() if name != "data"}
    attributes.update(id=str(uuid.uuid4()), subject=number, partitionkey=number)
    original = CloudEvent(attributes, {**example["data"], "orderNumber": number})
    extensions = {"knativeerrordest": destination, "knativeerrorcode": str(code)}
    if body:
        extensions["knativeerrordata"] = base64.b64encode(body).decode()
    return original, CloudEvent({**attributes, **extensions}, original.get_data())


def keep(client: FlaskClient, dead: CloudEvent, mode: str) -> int:
    headers, body = ENCODINGS[mode](dead)
    kept = client.post("/", headers=dict(headers), data=body)
    assert kept.status_code == 202, kept.data
    return int(kept.get_json()["id"])


def listed(client: FlaskClient, people: People, event_type: str) -> dict[int, dict[str, Any]]:
    """This event type's dead letters, by id (the first page is enough: the newest come first)."""
    listing = client.get(f"/deadletters?type={event_type}&size=100", headers=people.admin())
    assert listing.status_code == 200, listing.data
    return {item["id"]: item for item in listing.get_json()["items"]}


@pytest.mark.parametrize("mode", list(ENCODINGS))
@pytest.mark.parametrize("event_type", [events.ORDER_PLACED, events.ORDER_CANCELLED, events.INVENTORY_LOW])
def test_a_dead_letter_is_kept_once_with_its_error_and_listed_for_admins(
    dead_letter: FlaskClient, people: People, event_type: str, mode: str
) -> None:
    original, dead = failed(event_type, "http://inventory-confirm.shop.svc.cluster.local", 422, b'{"detail": "no"}')
    number = keep(dead_letter, dead, mode)
    assert keep(dead_letter, dead, mode) == number  # delivered twice, kept once
    item = listed(dead_letter, people, event_type)[number]
    assert item["eventId"] == original["id"] and item["subject"] == original["subject"]
    assert item["destination"] == "http://inventory-confirm.shop.svc.cluster.local"
    assert (item["errorCode"], item["errorData"]) == (422, '{"detail": "no"}')
    assert item["replayedAt"] is None and item["replayStatus"] is None
    # The event as it was before it failed: Knative's error extensions are not part of it.
    assert item["event"] == events.to_structured(original)


def test_only_admins_list_or_replay(dead_letter: FlaskClient, people: People) -> None:
    for path, method in (("/deadletters", "GET"), ("/deadletters/1/replay", "POST")):
        anonymous = dead_letter.open(path, method=method)
        assert anonymous.status_code == 401
        problem_of(anonymous)
        customer = dead_letter.open(path, method=method, headers=people.customer())
        assert customer.status_code == 403
        problem_of(customer)


def test_a_replay_posts_the_original_event_in_binary_mode_and_records_the_answer(
    dead_letter: FlaskClient, people: People, destination: Destination
) -> None:
    original, dead = failed(events.ORDER_PLACED, destination.url)
    number = keep(dead_letter, dead, "structured")
    replayed = dead_letter.post(f"/deadletters/{number}/replay", headers=people.admin())
    assert replayed.status_code == 200, replayed.data
    assert replayed.get_json()["replayStatus"] == 200 and replayed.get_json()["replayedAt"]
    [(headers, body)] = destination.received
    assert headers["ce-id"] == original["id"] and headers["ce-type"] == original["type"]
    assert headers["ce-source"] == original["source"] and headers["ce-partitionkey"] == original["partitionkey"]
    assert not [name for name in headers if name.startswith("ce-knativeerror")]
    assert json.loads(body) == original.get_data()
    assert listed(dead_letter, people, events.ORDER_PLACED)[number]["replayStatus"] == 200


def test_a_replay_the_destination_refuses_again_is_a_502_and_is_recorded(
    dead_letter: FlaskClient, people: People, destination: Destination
) -> None:
    destination.status = 500
    _, dead = failed(events.ORDER_CANCELLED, destination.url)
    number = keep(dead_letter, dead, "binary")
    refused = dead_letter.post(f"/deadletters/{number}/replay", headers=people.admin())
    assert refused.status_code == 502
    assert problem_of(refused)["destinationStatus"] == 500
    assert len(destination.received) == 1
    assert listed(dead_letter, people, events.ORDER_CANCELLED)[number]["replayStatus"] == 500
    missing = dead_letter.post(f"/deadletters/{10**12}/replay", headers=people.admin())
    assert missing.status_code == 404
    problem_of(missing)


def test_a_replay_to_a_shop_function_goes_through_the_ingress_and_does_its_work(
    stack: Any, dead_letter: FlaskClient, people: People
) -> None:
    """notification-send, reached through the stack's ingress as Knative's would route it, mails the order."""
    original, dead = failed(events.ORDER_PLACED, "http://notification-send.shop.svc.cluster.local")
    number = keep(dead_letter, dead, "binary")
    replayed = dead_letter.post(f"/deadletters/{number}/replay", headers=people.admin())
    assert replayed.status_code == 200, replayed.data
    assert replayed.get_json()["replayStatus"] == 200
    subject = f"Your Order with OrderNumber {original['subject']} is placed successfully"
    assert [m["Subject"] for m in stack.smtp.messages() if m["Subject"] == subject] == [subject]

"""The local Broker on the real Kafka-protocol broker: a subscriber's CloudEvent reply goes back into
the Broker and reaches the Trigger that wants it, as Knative's Broker does."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http

from local import manifests
from local.eventing import Eventing
from tests.conftest import eventually


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


def topology(folder: Path, namespace: str) -> manifests.Topology:
    """A Broker with two Triggers: `asker` replies to com.example.ask, `catcher` takes com.example.answer."""
    delivery = {"retry": 2, "backoffPolicy": "exponential", "backoffDelay": "PT0.1S"}
    documents = [
        {
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Broker",
            "metadata": {"name": "replies", "namespace": namespace},
            "spec": {"delivery": delivery},
        },
        *(
            {
                "apiVersion": "eventing.knative.dev/v1",
                "kind": "Trigger",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "broker": "replies",
                    "filter": {"attributes": {"type": event_type}},
                    "subscriber": {"uri": f"http://{name}.example/"},
                },
            }
            for name, event_type in (("asker", "com.example.ask"), ("catcher", "com.example.answer"))
        ),
    ]
    path = folder / "replies.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return manifests.topology([path])


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_a_subscribers_reply_goes_back_into_the_broker(
    stack: Any, tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    namespace = f"replies-{uuid.uuid4().hex[:8]}"
    caught: list[CloudEvent] = []

    async def send(destination: manifests.Destination, headers: dict[str, str], body: bytes, _: float) -> Any:
        event = from_http(headers, body)
        if destination.uri.startswith("http://asker."):
            reply = CloudEvent(
                {"type": "com.example.answer", "source": "/asker", "subject": event["id"]}, {"answer": 42}
            )
            reply_headers, reply_body = to_binary(reply)
            return Answer(200, dict(reply_headers), reply_body)
        caught.append(event)
        return Answer(202)

    runtime = Eventing(topology(tmp_path, namespace), stack.kafka_bootstrap, loop, send)

    def run(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(60)

    run(runtime.start())
    try:
        run(runtime.wait_ready())
        question = CloudEvent({"type": "com.example.ask", "source": "/test"}, {"question": "?"})
        headers, body = to_binary(question)
        assert run(runtime.accept(namespace, "replies", dict(headers), body)) == (202, "")
        eventually(lambda: caught, timeout=30, interval=0.2)
        (answer,) = caught
        assert answer["type"] == "com.example.answer" and answer["subject"] == question["id"]
        assert answer.get_data() in ({"answer": 42}, b'{"answer": 42}')
    finally:
        run(runtime.stop())

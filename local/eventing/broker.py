"""The Kafka-backed Broker, its Triggers, the KafkaSource and the PingSources, run as Knative Eventing runs them.

- Broker ingress: accepts a CloudEvent over HTTP (binary or structured), stores it in the broker's
  Kafka topic and answers 202.
- Trigger: a consumer group on that topic; events that pass the filter are delivered
  (local.eventing.delivery); a CloudEvent in the reply goes back into the Broker. Offsets are
  committed once each event is settled.
- KafkaSource: a consumer group on the source topics posting each record (CloudEvents Kafka binary
  binding) to its sink.
- PingSource: cron schedules posting dev.knative.sources.ping events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from cloudevents.http import CloudEvent, from_http
from confluent_kafka import KafkaError, Message, Producer
from opentelemetry.trace import SpanKind

from functions.shared import events as shop_events
from functions.shared import kafka as shop_kafka
from functions.shared import tracing
from local.eventing.consumers import ConsumerLoop
from local.eventing.delivery import Delivery, Outcome, Sender, forever
from local.eventing.flow import EventFlow
from local.eventing.journal import BrokerJournal
from local.eventing.replay import Replay
from local.manifests import Broker, DeliverySpec, KafkaSource, PingSource, Topology, Trigger, next_fire
from local.metrics import RECEIVED

log = logging.getLogger("local.eventing")
BROKER_PATH_PREFIX = "/_broker/"


class Eventing:
    """Runs the topology on the runtime's asyncio loop, with Kafka consumers in threads."""

    def __init__(
        self,
        topology: Topology,
        bootstrap: str,
        loop: asyncio.AbstractEventLoop,
        send: Sender,
        journal: BrokerJournal | None = None,
        flow: EventFlow | None = None,
    ) -> None:
        self.topology = topology
        self.bootstrap = bootstrap
        self.loop = loop
        self.send = send
        # Set for the embedded in-memory broker only: what the ingress acknowledges is kept there too.
        self.journal = journal
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "linger.ms": 1,
                "message.timeout.ms": 10000,
                "reconnect.backoff.max.ms": 1000,
                "logger": shop_kafka.client_logger("broker-ingress"),
            }
        )
        self._polling = threading.Event()
        self._poller = threading.Thread(target=self._poll_producer, name="broker-producer", daemon=True)
        self.consumers: list[ConsumerLoop] = []
        self._trigger_consumers: list[ConsumerLoop] = []
        self._source_consumers: list[ConsumerLoop] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.stats: dict[str, int] = {"received": 0, "delivered": 0, "retries": 0, "dead_lettered": 0, "dropped": 0}
        # A Broker sink (the KafkaSource's) takes the event as it is: no HTTP encoding to parse back.
        self.delivery = Delivery(send, self.stats, store=self.store)
        self.flow = flow or EventFlow()  # the last events through the Broker, for /_local/events and the admin console
        self.replay = Replay(self._trigger_consumers, self._source_consumers, journal, self.produce)

    # lifecycle (called from the runtime's loop)

    def topics(self) -> dict[str, int]:
        wanted = dict(self.topology.topics)
        for broker in self.topology.brokers.values():
            wanted.setdefault(broker.topic, 3)
        return wanted

    def _poll_producer(self) -> None:
        """Serves delivery reports of the broker ingress's producer."""
        while not self._polling.is_set():
            self.producer.poll(0.05)

    async def start(self) -> None:
        await asyncio.to_thread(self.ensure_topics)
        self._poller.start()
        for trigger in self.topology.triggers:
            broker = self.topology.brokers[f"{trigger.namespace}/{trigger.broker}"]
            group = f"knative-trigger-{trigger.namespace}-{trigger.name}"
            self._trigger_consumers.append(
                ConsumerLoop(
                    trigger.name,
                    self.bootstrap,
                    group,
                    [broker.topic],
                    self._settler(self._dispatch_trigger, trigger, group),
                )
            )
        for source in self.topology.kafka_sources:
            self._source_consumers.append(
                ConsumerLoop(
                    source.name,
                    self.bootstrap,
                    source.consumer_group,
                    source.topics,
                    self._settler(self._dispatch_source, source, source.consumer_group),
                    initial_offset=source.initial_offset,
                )
            )
        self.consumers = self._trigger_consumers + self._source_consumers
        for consumer in self.consumers:
            consumer.start()
        for ping in self.topology.ping_sources:
            self.tasks.append(asyncio.create_task(self._run_ping(ping)))
        self.tasks.append(asyncio.create_task(self._reconcile_topics()))
        if self.journal is not None:
            self.tasks.append(asyncio.create_task(self.replay.prune_journal()))

    def ensure_topics(self) -> None:
        by_partitions: dict[int, list[str]] = {}
        for topic, partitions in self.topics().items():
            by_partitions.setdefault(partitions, []).append(topic)
        for partitions, topics in by_partitions.items():
            shop_kafka.ensure_topics(self.bootstrap, topics, partitions)

    async def _reconcile_topics(self) -> None:
        """Like Strimzi's topic operator: topics come back if the broker lost them (restart)."""
        while True:
            await asyncio.sleep(2)
            try:
                await asyncio.to_thread(self.ensure_topics)
            except Exception as error:  # noqa: BLE001 - Kafka down: try again next round
                log.debug("topics not reconciled: %s", error)

    async def wait_ready(self, timeout: float = 30) -> None:
        """Until every consumer has its partitions (groups join in a few seconds)."""
        deadline = time.monotonic() + timeout
        while not all(c.assigned.is_set() for c in self.consumers):
            if time.monotonic() > deadline:
                missing = [c.group for c in self.consumers if not c.assigned.is_set()]
                raise TimeoutError(f"consumer groups not assigned after {timeout}s: {missing}")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for consumer in self.consumers:
            consumer.stop()
        await asyncio.gather(*(asyncio.to_thread(c.join, 10) for c in self.consumers))
        self._polling.set()
        await asyncio.to_thread(self.producer.flush, 5)

    # broker ingress

    def broker_for(self, namespace: str, name: str) -> Broker | None:
        return self.topology.brokers.get(f"{namespace}/{name}")

    async def ingress(self, request: web.Request, namespace: str, name: str) -> web.Response:
        """The Broker's HTTP ingress: 202 once the event is stored in the broker's topic."""
        if request.method != "POST":
            return web.Response(status=405, headers={"Allow": "POST"})
        status, text = await self.accept(namespace, name, dict(request.headers), await request.read(), journal=True)
        return web.Response(status=status, text=text, headers={"Retry-After": "1"} if status == 503 else None)

    async def accept(
        self, namespace: str, name: str, headers: Mapping[str, str], body: bytes, *, journal: bool = False
    ) -> tuple[int, str]:
        """Stores an event in a broker's topic. `journal`: it has no outbox behind it (it came over
        HTTP), so the local journal keeps it too, for a restart of the in-memory broker."""
        if self.broker_for(namespace, name) is None:
            return 404, f"no broker {namespace}/{name}"
        try:
            event = from_http(dict(headers), body)
        except Exception as error:  # noqa: BLE001 - anything unparseable is the sender's fault
            return 400, f"not a valid CloudEvent: {error}"
        return await self.store(namespace, name, event, journal=journal)

    async def store(self, namespace: str, name: str, event: CloudEvent, *, journal: bool = False) -> tuple[int, str]:
        """Stores a parsed event in a broker's topic: what the ingress does once it has read the request."""
        broker = self.broker_for(namespace, name)
        if broker is None:
            return 404, f"no broker {namespace}/{name}"
        missing = [a for a in ("id", "source", "type") if not event.get(a)]
        if missing:
            return 400, f"not a valid CloudEvent: missing {missing}"
        try:
            if journal:
                await self._journal(broker.topic, event)
            await self.produce(broker.topic, event)
        except Exception as error:  # noqa: BLE001
            log.warning("broker %s could not store an event: %s", name, error)
            return 503, "the broker could not store the event"
        self.stats["received"] += 1
        self.flow.received(event)
        RECEIVED.labels(f"{namespace}/{name}").inc()
        return 202, ""

    async def _journal(self, topic: str, event: CloudEvent) -> None:
        if self.journal is not None:
            await asyncio.to_thread(self.journal.record, topic, event)

    async def produce(self, topic: str, event: CloudEvent) -> None:
        done: asyncio.Future[None] = self.loop.create_future()

        def settle(error: KafkaError | None) -> None:
            if done.done():  # timed out meanwhile
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(RuntimeError(str(error)))

        def delivered(error: KafkaError | None, _: Any) -> None:
            self.loop.call_soon_threadsafe(settle, error)

        with shop_kafka.sending(topic, event) as message:
            self.producer.produce(
                topic,
                key=message.key,
                value=message.value,
                headers=list(message.headers.items()),
                on_delivery=delivered,
            )
        await asyncio.wait_for(done, 15)

    # dispatch

    def _settler(
        self, dispatch: Callable[[Any, CloudEvent], Awaitable[None]], spec: Any, group: str
    ) -> Callable[[list[Message]], None]:
        def settle(records: list[Message]) -> None:
            async def all_of() -> None:
                await asyncio.gather(*(self._one(dispatch, spec, group, r) for r in records))

            asyncio.run_coroutine_threadsafe(all_of(), self.loop).result()

        return settle

    async def _one(
        self, dispatch: Callable[[Any, CloudEvent], Awaitable[None]], spec: Any, group: str, record: Message
    ) -> None:
        pairs = record.headers() or []
        headers = {k: v for k, v in (pairs.items() if isinstance(pairs, dict) else pairs) if isinstance(v, bytes)}
        if isinstance(spec, Trigger):
            # Every Trigger's group reads every event of its Broker: one its filter refuses is passed
            # over on its headers, without decoding the event or making a span for it.
            filtered_on = shop_events.kafka_attributes(headers, _as_bytes(record.key()))
            if filtered_on is not None and not spec.matches_attributes(filtered_on):
                return
        try:
            if isinstance(spec, KafkaSource) and "ce_specversion" not in headers:
                event = _plain_record_event(spec, record)
            else:
                event = shop_events.from_kafka(headers, _as_bytes(record.key()), _as_bytes(record.value()) or b"")
        except Exception as error:  # noqa: BLE001 - a record that is no CloudEvent cannot be delivered
            log.warning("%s: skipping a record that is not a CloudEvent: %s", getattr(spec, "name", "?"), error)
            self.stats["dropped"] += 1
            return
        traceparent = headers.get("traceparent", b"").decode(errors="replace") or event.get("traceparent")
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": record.topic() or "",
            "messaging.consumer.group.name": group,
            "messaging.kafka.offset": record.offset() or 0,
            "messaging.message.id": str(event.get("id", "")),
        }
        parent = tracing.parent_of(traceparent)
        with tracing.span(f"process {record.topic()}", SpanKind.CONSUMER, parent=parent, attributes=attributes):
            await dispatch(spec, event)

    async def _dispatch_trigger(self, trigger: Trigger, event: CloudEvent) -> None:
        if not trigger.matches(event):
            return
        subscriber = trigger.subscriber.logical_url

        def attempt(number: int, status: int | None) -> None:
            self.flow.attempt(event, trigger.name, subscriber, number, status)

        outcome = await self.delivery.deliver(event, trigger.subscriber, trigger.delivery, attempt)
        settled = "delivered" if outcome.delivered else "dead-lettered" if trigger.delivery.dead_letter else "dropped"
        self.flow.settled(event, trigger.name, settled, outcome.attempts, outcome.status)
        if outcome.delivered and outcome.reply is not None:
            broker = self.topology.brokers[f"{trigger.namespace}/{trigger.broker}"]
            reply = outcome.reply

            async def store_reply() -> None:
                await self._journal(broker.topic, reply)
                await self.produce(broker.topic, reply)

            await forever(store_reply, f"reply of {trigger.name}")

    async def _dispatch_source(self, source: KafkaSource, event: CloudEvent) -> None:
        await self.delivery.deliver(event, source.sink, source.delivery)

    # ping sources

    async def _run_ping(self, ping: PingSource) -> None:
        zone = ZoneInfo(ping.timezone)
        while True:
            now = datetime.now(zone)
            fire_at = next_fire(ping.schedule, now)
            await asyncio.sleep((fire_at - now).total_seconds())
            await self.fire(ping)

    async def fire(self, ping: PingSource) -> Outcome:
        event = CloudEvent(
            {
                "type": "dev.knative.sources.ping",
                "source": ping.source,
                "id": str(uuid.uuid4()),
                "datacontenttype": ping.content_type,
            },
            ping.data.encode() if ping.data else None,
        )
        return await self.delivery.deliver(event, ping.sink, DeliverySpec(retry=2))

    def ping_source(self, namespace: str, name: str) -> PingSource | None:
        return next((p for p in self.topology.ping_sources if p.namespace == namespace and p.name == name), None)


def _plain_record_event(source: KafkaSource, record: Message) -> CloudEvent:
    """A record without CloudEvent headers, wrapped as Knative's KafkaSource wraps it."""
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    attributes = {
        "type": "dev.knative.kafka.event",
        "source": f"/apis/v1/namespaces/{source.namespace}/kafkasources/{source.name}#{topic}",
        "subject": f"partition:{partition}#{offset}",
        "id": f"partition:{partition}/offset:{offset}",
    }
    key = record.key()
    if key:
        attributes["key"] = key.decode(errors="replace") if isinstance(key, bytes) else key
    return CloudEvent(attributes, record.value())


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value

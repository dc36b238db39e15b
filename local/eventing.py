"""Knative Eventing on a laptop, read from eventing/: Kafka-backed Broker, Triggers, KafkaSource, PingSource.

What it does, as the Knative Kafka Broker does:
- Broker ingress: accepts a CloudEvent over HTTP (binary or structured), stores it in
  the broker's Kafka topic and answers 202.
- Trigger: a consumer group on that topic; events that pass the filter are POSTed
  (binary mode) to the subscriber, retried per the delivery spec, then sent to the
  dead-letter sink with knativeerrordest/-code/-data; a CloudEvent in the reply goes
  back into the Broker. Offsets are committed once each event is settled.
- KafkaSource: a consumer group on the source topics posting each record (CloudEvents
  Kafka binary binding) to its sink.
- PingSource: cron schedules posting dev.knative.sources.ping events.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge

from functions.shared import events as shop_events
from functions.shared import kafka as shop_kafka
from functions.shared import tracing
from local import manifests
from local.eventflow import EventFlow
from local.journal import BrokerJournal

log = logging.getLogger("local.eventing")
# The runtime's own metrics (served at /_local/metrics), apart from any function's.
REGISTRY = CollectorRegistry()
RECEIVED = Counter(
    "shop_eventing_events_received_total", "Events the Broker ingress stored, by broker.", ["broker"], registry=REGISTRY
)
DELIVERIES = Counter(
    "shop_eventing_deliveries_total",
    "Events settled by a Trigger or source, by destination and outcome (delivered, dead_lettered, dropped).",
    ["destination", "outcome"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "shop_eventing_delivery_retries_total",
    "Delivery attempts after the first, by destination.",
    ["destination"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "shop_eventing_consumer_lag_messages",
    "Records not yet consumed, by consumer group and topic.",
    ["group", "topic"],
    registry=REGISTRY,
)
ERROR_DATA_MAX = 1024
LAG_INTERVAL_SECONDS = 2.0
# An outbox row is marked sent when its relay's transaction began; the broker acknowledged it up to
# a publish timeout (5 s) later. Replays reach this far before the settled moment, to be safe.
REPLAY_MARGIN_SECONDS = 30.0
JOURNAL_PRUNE_SECONDS = 30.0
# Ten minutes of "caught up" moments at one per LAG_INTERVAL_SECONDS.
CAUGHT_UP_HISTORY = 300
ISO_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")
BROKER_INGRESS_HOST = "kafka-broker-ingress.knative-eventing"
BROKER_PATH_PREFIX = "/_broker/"


def iso_seconds(duration: str) -> float:
    """ISO 8601 durations as Knative's delivery spec writes them: PT0.2S, PT1M, P1D."""
    match = ISO_DURATION.match(duration.strip())
    if not match or duration.strip() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration: {duration!r}")
    return (
        int(match["d"] or 0) * 86400 + int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + float(match["s"] or 0)
    )


# --- destinations and delivery ------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """A sink/subscriber: a Knative Service, a Broker, or a URI."""

    kind: str  # "Service" | "Broker" | "uri"
    name: str = ""
    namespace: str = ""
    uri: str = ""

    @classmethod
    def parse(cls, spec: Mapping[str, Any], namespace: str) -> Destination:
        if "ref" in spec:
            ref = spec["ref"]
            kind = ref["kind"]
            if kind not in ("Service", "Broker"):
                raise ValueError(f"unsupported destination kind {kind!r}")
            return cls(kind, ref["name"], ref.get("namespace", namespace))
        return cls("uri", uri=spec["uri"])

    @property
    def logical_url(self) -> str:
        """The URL this destination has in a cluster (what knativeerrordest carries)."""
        if self.kind == "Service":
            return f"http://{self.name}.{self.namespace}.svc.cluster.local"
        if self.kind == "Broker":
            return f"http://{BROKER_INGRESS_HOST}.svc.cluster.local/{self.namespace}/{self.name}"
        return self.uri


@dataclass(frozen=True)
class DeliverySpec:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 0.2
    timeout: float = 30.0
    dead_letter: Destination | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None, namespace: str, default: DeliverySpec | None = None) -> DeliverySpec:
        base = default or cls()
        if not spec:
            return base
        dls = spec.get("deadLetterSink")
        return cls(
            retry=int(spec.get("retry", base.retry)),
            backoff_policy=spec.get("backoffPolicy", base.backoff_policy),
            backoff_delay=iso_seconds(spec["backoffDelay"]) if "backoffDelay" in spec else base.backoff_delay,
            timeout=iso_seconds(spec["timeout"]) if "timeout" in spec else base.timeout,
            dead_letter=Destination.parse(dls, namespace) if dls else base.dead_letter,
        )

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based), as Knative computes it."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * attempt
        return self.backoff_delay * (2 ** (attempt - 1))


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status: int  # 0: no HTTP answer
    body: bytes = b""
    reply: CloudEvent | None = None
    attempts: int = 1


# --- filters -----------------------------------------------------------------------------


def attributes_of(event: CloudEvent) -> dict[str, str]:
    return {k: str(v) for k, v in event.get_attributes().items()}


def dialect_matches(expression: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
    """One expression of the Trigger `filters` dialect (exact, prefix, suffix, all, any, not)."""
    if len(expression) != 1:
        raise ValueError(f"a filter expression has exactly one dialect key, got {sorted(expression)}")
    ((dialect, operand),) = expression.items()
    if dialect == "exact":
        return all(attributes.get(k) == v for k, v in operand.items())
    if dialect == "prefix":
        return all(k in attributes and attributes[k].startswith(v) for k, v in operand.items())
    if dialect == "suffix":
        return all(k in attributes and attributes[k].endswith(v) for k, v in operand.items())
    if dialect == "all":
        return all(dialect_matches(e, attributes) for e in operand)
    if dialect == "any":
        return any(dialect_matches(e, attributes) for e in operand)
    if dialect == "not":
        return not dialect_matches(operand, attributes)
    raise ValueError(f"filter dialect {dialect!r} is not supported locally (cesql is not)")


@dataclass(frozen=True)
class Trigger:
    name: str
    namespace: str
    broker: str
    subscriber: Destination
    delivery: DeliverySpec
    attributes: Mapping[str, str] = field(default_factory=dict)
    filters: Sequence[Mapping[str, Any]] = ()

    def matches(self, event: CloudEvent) -> bool:
        attributes = attributes_of(event)
        if self.filters:  # the newer dialect wins when both are given, as in Knative
            return all(dialect_matches(e, attributes) for e in self.filters)
        return all(attributes.get(k) == v for k, v in self.attributes.items())


@dataclass(frozen=True)
class Broker:
    name: str
    namespace: str
    delivery: DeliverySpec

    @property
    def topic(self) -> str:
        return f"knative-broker-{self.namespace}-{self.name}"


@dataclass(frozen=True)
class KafkaSource:
    name: str
    namespace: str
    topics: tuple[str, ...]
    consumer_group: str
    sink: Destination
    delivery: DeliverySpec
    initial_offset: str = "latest"


@dataclass(frozen=True)
class PingSource:
    name: str
    namespace: str
    schedule: str
    timezone: str
    content_type: str
    data: str
    sink: Destination

    @property
    def source(self) -> str:
        return f"/apis/v1/namespaces/{self.namespace}/pingsources/{self.name}"


@dataclass(frozen=True)
class Topology:
    brokers: dict[str, Broker]
    triggers: list[Trigger]
    kafka_sources: list[KafkaSource]
    ping_sources: list[PingSource]
    topics: dict[str, int]  # KafkaTopic name -> partitions


def load(paths: Sequence[manifests.Path] = (manifests.EVENTING_DIR,)) -> Topology:
    brokers: dict[str, Broker] = {}
    for doc in manifests.resources("Broker", paths):
        ns = doc["metadata"].get("namespace", "default")
        broker = Broker(doc["metadata"]["name"], ns, DeliverySpec.parse(doc.get("spec", {}).get("delivery"), ns))
        brokers[f"{ns}/{broker.name}"] = broker
    triggers = []
    for doc in manifests.resources("Trigger", paths):
        ns = doc["metadata"].get("namespace", "default")
        spec = doc["spec"]
        parent = brokers.get(f"{ns}/{spec['broker']}")
        if parent is None:
            raise ValueError(f"trigger {doc['metadata']['name']} names an unknown broker {spec['broker']}")
        trigger = Trigger(
            name=doc["metadata"]["name"],
            namespace=ns,
            broker=spec["broker"],
            subscriber=Destination.parse(spec["subscriber"], ns),
            delivery=DeliverySpec.parse(spec.get("delivery"), ns, parent.delivery),
            attributes=dict(spec.get("filter", {}).get("attributes", {})),
            filters=tuple(spec.get("filters", ())),
        )
        trigger.matches(CloudEvent({"type": "probe", "source": "/probe"}, None))  # fails early on bad dialects
        triggers.append(trigger)
    sources = []
    for doc in manifests.resources("KafkaSource", paths):
        ns = doc["metadata"].get("namespace", "default")
        spec = doc["spec"]
        sources.append(
            KafkaSource(
                name=doc["metadata"]["name"],
                namespace=ns,
                topics=tuple(spec["topics"]),
                consumer_group=spec.get("consumerGroup", f"knative-kafkasource-{doc['metadata']['name']}"),
                sink=Destination.parse(spec["sink"], ns),
                delivery=DeliverySpec.parse(spec.get("delivery"), ns),
                initial_offset=spec.get("initialOffset", "latest"),
            )
        )
    pings = []
    for doc in manifests.resources("PingSource", paths):
        ns = doc["metadata"].get("namespace", "default")
        spec = doc["spec"]
        pings.append(
            PingSource(
                name=doc["metadata"]["name"],
                namespace=ns,
                schedule=spec["schedule"],
                timezone=spec.get("timezone", "UTC"),
                content_type=spec.get("contentType", "application/json"),
                data=spec.get("data", ""),
                sink=Destination.parse(spec["sink"], ns),
            )
        )
    topics = {
        doc["metadata"]["name"]: int(doc["spec"].get("partitions", 1))
        for doc in manifests.resources("KafkaTopic", paths)
    }
    return Topology(brokers, triggers, sources, pings, topics)


# --- cron ---------------------------------------------------------------------------------

CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _cron_field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            start, end = (int(x) for x in body.split("-", 1))
        else:
            start = end = int(body)
            if step_text:
                end = high
        if start < low or end > high or step < 1:
            raise ValueError(f"cron field {text!r} is out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def cron_fields(schedule: str) -> list[set[int]]:
    parts = schedule.split()
    if len(parts) != 5:
        raise ValueError(f"a cron schedule has 5 fields, got {schedule!r}")
    fields = [_cron_field(p, lo, hi) for p, (lo, hi) in zip(parts, CRON_RANGES, strict=True)]
    fields[4] = {0 if d == 7 else d for d in fields[4]}
    return fields


def next_fire(schedule: str, after: datetime) -> datetime:
    """The first minute after `after` that the 5-field cron schedule names."""
    minutes, hours, days, months, weekdays = cron_fields(schedule)
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60):
        if (
            moment.minute in minutes
            and moment.hour in hours
            and moment.day in days
            and moment.month in months
            and (moment.weekday() + 1) % 7 in weekdays
        ):
            return moment
        moment += timedelta(minutes=1)
    raise ValueError(f"cron schedule {schedule!r} never fires")


# --- Kafka consumers ----------------------------------------------------------------------


class ConsumerLoop(threading.Thread):
    """A consumer group member polling in its own thread; each batch is settled before commit."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        settle: Callable[[list[Message]], None],
        initial_offset: str = "earliest",
    ) -> None:
        super().__init__(name=f"consumer-{name}", daemon=True)
        self.group = group
        self.topics = list(topics)
        self.settle = settle
        self.stopping = threading.Event()
        self.assigned = threading.Event()
        self.from_the_start = threading.Event()
        self._lag_measured = 0.0
        # Wall-clock times at which this group was seen to have settled every record its topics
        # held (lag 0 on every partition): what the broker-restart replay starts from.
        self.caught_up: deque[float] = deque(maxlen=CAUGHT_UP_HISTORY)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": initial_offset,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1000,
                "fetch.wait.max.ms": 20,
                "topic.metadata.refresh.interval.ms": 2000,
                "allow.auto.create.topics": False,
                # A restarted broker is found again within a second, not librdkafka's default 10 s.
                "reconnect.backoff.max.ms": 1000,
                "logger": shop_kafka.client_logger(f"trigger.{name}"),
            }
        )

    def run(self) -> None:
        self.consumer.subscribe(self.topics, on_assign=lambda *_: self.assigned.set())
        try:
            while not self.stopping.is_set():
                self._round()
        finally:
            self.consumer.close()

    def _measure_lag(self) -> None:
        """Records behind the end of each topic, measured between polls in this consumer's own thread.

        Between polls every record polled so far is settled, so a position at the end of every
        partition (the end asked of the broker now, not a cached one) proves that everything the
        broker had acknowledged before this measurement began is settled.
        """
        now = time.monotonic()
        if now - self._lag_measured < LAG_INTERVAL_SECONDS:
            return
        self._lag_measured = now
        began = time.time()
        lag: dict[str, int] = {}
        settled = True
        try:
            assignment = self.consumer.assignment()
            for partition in assignment:
                low, high = self.consumer.get_watermark_offsets(partition, timeout=1, cached=False)
                position = self.consumer.position([partition])[0].offset
                # Nothing fetched from a partition yet (no position): caught up only if it holds nothing.
                behind = max(0, high - position) if position >= 0 else max(0, high - low)
                lag[partition.topic] = lag.get(partition.topic, 0) + behind
                settled = settled and behind == 0
        except KafkaException:
            return
        if settled and assignment and not self.from_the_start.is_set():
            self.caught_up.append(began)
        for topic, behind in lag.items():
            CONSUMER_LAG.labels(self.group, topic).set(behind)

    def _round(self) -> None:
        """Polls a batch, settles every record, commits; a failure rewinds to redeliver the batch."""
        if self.from_the_start.is_set():
            self._seek_to_beginning()
        self._measure_lag()
        first = self.consumer.poll(0.2)
        if first is None:
            return
        batch = [first]
        while len(batch) < 64:
            more = self.consumer.poll(0)
            if more is None:
                break
            batch.append(more)
        records = []
        for message in batch:
            error = message.error()
            if error is None:
                records.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.debug("%s: %s", self.name, error)
        if not records:
            return
        try:
            self.settle(records)
        except Exception:
            log.exception("%s: settling a batch failed; it will be delivered again", self.name)
            self._rewind(records)
            time.sleep(1)
            return
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as error:
            # A rebalance (or a restarted broker) took the partitions away: the next owner
            # may deliver these again, which idempotent consumers absorb.
            log.warning("%s: commit failed (%s); records may be redelivered", self.name, error)

    def _rewind(self, records: list[Message]) -> None:
        first_offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic() or "", record.partition() or 0)
            first_offsets[key] = min(first_offsets.get(key, record.offset() or 0), record.offset() or 0)
        for (topic, partition), offset in first_offsets.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as error:
                log.warning("%s: could not rewind %s[%d]: %s", self.name, topic, partition, error)

    def _seek_to_beginning(self) -> None:
        """The broker restarted empty: the positions held from before point into (or past) the
        records it has taken since, so every assigned partition is read again from its start.
        What was already delivered comes again, and idempotent consumers absorb it."""
        try:
            for partition in self.consumer.assignment():
                self.consumer.seek(TopicPartition(partition.topic, partition.partition, OFFSET_BEGINNING))
        except KafkaException as error:
            log.info("%s: not rewound yet (%s); trying again", self.name, error)
            return
        self.from_the_start.clear()

    def stop(self) -> None:
        self.stopping.set()


# --- the runtime ---------------------------------------------------------------------------


class Answer(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...


# How the runtime reaches a destination: (destination, headers, body, timeout) -> answer.
Sender = Callable[[Destination, dict[str, str], bytes, float], Awaitable[Answer]]


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
        self._lost_since: float | None = None
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
        self.flow = flow or EventFlow()  # the last events through the Broker, for /_local/events and the admin console

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
            self.tasks.append(asyncio.create_task(self._prune_journal()))

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

    def broker_lost_its_records(self) -> None:
        """After the embedded (in-memory) broker restarts: every consumer reads its topics from the start."""
        for consumer in self.consumers:
            consumer.from_the_start.set()

    # what the broker held, when it forgets it

    def settled_through(self) -> float | None:
        """A wall-clock time before which every event the broker acknowledged has been settled by every
        consumer group (delivered, dead-lettered or replied), so that losing the broker cannot lose
        it; None when that is not known yet.

        Each group notes when it was last seen with nothing left to read (ConsumerLoop.caught_up).
        A KafkaSource forwards into the Broker's topic before it commits, so its moment counts
        only if every Trigger caught up after it: then whatever it forwarded was delivered too.
        """
        if any(not c.caught_up for c in self._trigger_consumers):
            return None
        through = min((c.caught_up[-1] for c in self._trigger_consumers), default=time.time())
        triggers_through = through
        for source in self._source_consumers:
            earlier = [moment for moment in source.caught_up if moment <= triggers_through]
            if not earlier:
                return None
            through = min(through, earlier[-1])
        return through

    def broker_down(self, fallback: float) -> None:
        """The broker process ended: note from when on what it held may not have been delivered
        (`fallback`, when it started, if no consumer has been seen caught up since)."""
        if self._lost_since is None:
            settled = self.settled_through()
            self._lost_since = max(settled, fallback) if settled is not None else fallback

    def broker_back(self) -> float | None:
        """The broker is up again and empty: consumers read from the start; returns the moment from
        which the events it had acknowledged must be sent again (None: it did not go down)."""
        self.broker_lost_its_records()
        since, self._lost_since = self._lost_since, None
        return since

    async def replay_journal(self, since: datetime) -> int:
        """Stores again what the ingress acknowledged since `since` (idempotent consumers absorb repeats)."""
        if self.journal is None:
            return 0
        kept = await asyncio.to_thread(self.journal.since, since)
        for topic, event in kept:
            await self._forever(functools.partial(self.produce, topic, event), f"replay of {event['id']}")
        return len(kept)

    async def _prune_journal(self) -> None:
        """Drops journal rows every consumer group has settled past (with the replay margin)."""
        assert self.journal is not None
        while True:
            await asyncio.sleep(JOURNAL_PRUNE_SECONDS)
            settled = self.settled_through()
            if settled is None:
                continue
            try:
                before = datetime.fromtimestamp(settled - REPLAY_MARGIN_SECONDS, UTC)
                await asyncio.to_thread(self.journal.prune_before, before)
            except Exception as error:  # noqa: BLE001 - PostgreSQL restarting: prune next round
                log.debug("journal not pruned: %s", error)

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
        broker = self.broker_for(namespace, name)
        if broker is None:
            return 404, f"no broker {namespace}/{name}"
        try:
            event = from_http(dict(headers), body)
            missing = [a for a in ("id", "source", "type") if not event.get(a)]
            if missing:
                raise ValueError(f"missing {missing}")
        except Exception as error:  # noqa: BLE001 - anything unparseable is the sender's fault
            return 400, f"not a valid CloudEvent: {error}"
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

        outcome = await self.deliver(event, trigger.subscriber, trigger.delivery, attempt)
        settled = "delivered" if outcome.delivered else "dead-lettered" if trigger.delivery.dead_letter else "dropped"
        self.flow.settled(event, trigger.name, settled, outcome.attempts, outcome.status)
        if outcome.delivered and outcome.reply is not None:
            broker = self.topology.brokers[f"{trigger.namespace}/{trigger.broker}"]
            reply = outcome.reply

            async def store_reply() -> None:
                await self._journal(broker.topic, reply)
                await self.produce(broker.topic, reply)

            await self._forever(store_reply, f"reply of {trigger.name}")

    async def _dispatch_source(self, source: KafkaSource, event: CloudEvent) -> None:
        await self.deliver(event, source.sink, source.delivery)

    async def deliver(
        self,
        event: CloudEvent,
        destination: Destination,
        delivery: DeliverySpec,
        on_attempt: Callable[[int, int | None], None] | None = None,
    ) -> Outcome:
        """POSTs with retries; after the last failure, hands the event to the dead-letter sink.
        `on_attempt(n, last status)` is told of each attempt as it starts."""
        outcome = Outcome(False, 0)
        for attempt in range(delivery.retry + 1):
            if attempt:
                self.stats["retries"] += 1
                RETRIES.labels(destination.logical_url).inc()
                await asyncio.sleep(delivery.backoff(attempt))
            if on_attempt is not None:
                on_attempt(attempt + 1, outcome.status if attempt else None)
            outcome = await self._post(event, destination, delivery.timeout)
            outcome = Outcome(outcome.delivered, outcome.status, outcome.body, outcome.reply, attempt + 1)
            if outcome.delivered or not shop_events.delivery_retried(outcome.status):
                break
        if outcome.delivered:
            self.stats["delivered"] += 1
            DELIVERIES.labels(destination.logical_url, "delivered").inc()
            return outcome
        if delivery.dead_letter is None:
            self.stats["dropped"] += 1
            DELIVERIES.labels(destination.logical_url, "dropped").inc()
            log.error(
                "dropped %s for %s after %d attempts (status %s)",
                event["id"],
                destination.logical_url,
                outcome.attempts,
                outcome.status,
            )
            return outcome
        dead = _with_error(event, destination, outcome)
        dls = delivery.dead_letter
        await self._forever(lambda: self._post_or_raise(dead, dls, delivery.timeout), f"dead-letter of {event['id']}")
        self.stats["dead_lettered"] += 1
        DELIVERIES.labels(destination.logical_url, "dead_lettered").inc()
        return outcome

    async def _post_or_raise(self, event: CloudEvent, destination: Destination, timeout: float) -> None:
        outcome = await self._post(event, destination, timeout)
        if not outcome.delivered:
            raise RuntimeError(f"{destination.logical_url} answered {outcome.status}")

    async def _forever(self, action: Callable[[], Awaitable[None]], what: str) -> None:
        """Never loses an event: retries with capped backoff until it works."""
        delay = 0.5
        while True:
            try:
                await action()
                return
            except Exception as error:  # noqa: BLE001
                log.warning("%s failed, retrying in %.1fs: %s", what, delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)

    async def _post(self, event: CloudEvent, destination: Destination, timeout: float) -> Outcome:
        headers, body = to_binary(event)
        with tracing.span(f"POST {destination.logical_url}", SpanKind.CLIENT) as current:
            sent = dict(headers)
            traceparent = tracing.traceparent_of(current)
            if traceparent:  # the subscriber continues this delivery's span
                sent["ce-traceparent"] = sent["traceparent"] = traceparent
            answer = await self.send(destination, sent, body if isinstance(body, bytes) else b"", timeout)
            current.set_attribute("http.response.status_code", answer.status)
        if not 200 <= answer.status < 300:
            return Outcome(False, answer.status, answer.body)
        return Outcome(True, answer.status, answer.body, _reply(answer.headers, answer.body))

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
        return await self.deliver(event, ping.sink, DeliverySpec(retry=2))

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


def _reply(headers: Mapping[str, str], payload: bytes) -> CloudEvent | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    if "ce-id" not in lowered and not lowered.get("content-type", "").startswith("application/cloudevents"):
        return None
    try:
        return from_http(dict(headers), payload)
    except Exception:  # noqa: BLE001 - a reply that is not a CloudEvent is just a response body
        return None


def _with_error(event: CloudEvent, destination: Destination, outcome: Outcome) -> CloudEvent:
    """The event as the dead-letter sink receives it: Knative's three error extensions added."""
    attributes = dict(event.get_attributes())
    attributes["knativeerrordest"] = destination.logical_url
    attributes["knativeerrorcode"] = str(outcome.status)
    if outcome.body:
        attributes["knativeerrordata"] = base64.b64encode(outcome.body[:ERROR_DATA_MAX]).decode()
    return CloudEvent(attributes, event.get_data())

"""A Trigger's or KafkaSource's consumer group member: polls in its own thread, settles each batch, then commits.

It also notes when its group last had nothing left to read, which is how the runtime knows how
far back to send events again after the in-memory broker restarts (local.eventing.replay).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from functions.shared import kafka as shop_kafka
from local.metrics import CONSUMER_LAG

log = logging.getLogger("local.eventing")
LAG_INTERVAL_SECONDS = 2.0
# Settled offsets are committed at most this often while records keep coming (at once when they
# stop): one commit per batch was a broker round trip per event and group. A consumer that dies
# in between gets up to this much again, which idempotent subscribers absorb.
COMMIT_INTERVAL_SECONDS = 0.2
# A member with no partitions, or whose partitions the broker does not know, this long (a broker
# restarted under it can leave librdkafka holding topic ids of its former life) subscribes anew.
STUCK_SECONDS = 8.0
# Ten minutes of "caught up" moments at one per LAG_INTERVAL_SECONDS.
CAUGHT_UP_HISTORY = 300


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
        self._measured_at = time.monotonic()  # the last lag measurement with partitions that succeeded
        # Per (topic, partition): the offset after the last settled record, not yet committed.
        self._settled: dict[tuple[str, int], int] = {}
        self._committed_at = 0.0
        # The last time a record came in or a batch was settled; the last lag measured, per topic.
        self._progressed_at = time.monotonic()
        self._rewind_asked_at: float | None = None
        self.lag: dict[str, int] = {}
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
                # Tansu answers an empty fetch only when this runs out, even once records arrive:
                # 20 ms cost it 0.12 of a core polled idle by five groups; 100 ms costs 0.04 and
                # about 17 ms more per hop (p50, measured).
                "fetch.wait.max.ms": 100,
                "topic.metadata.refresh.interval.ms": 2000,
                "allow.auto.create.topics": False,
                # A restarted broker is found again within a second, not librdkafka's default 10 s.
                "reconnect.backoff.max.ms": 1000,
                "logger": shop_kafka.client_logger(f"trigger.{name}"),
            }
        )

    def run(self) -> None:
        self._subscribe()
        try:
            while not self.stopping.is_set():
                self._round()
            self._commit(due=True)
        finally:
            self.consumer.close()

    def _subscribe(self) -> None:
        self.consumer.subscribe(self.topics, on_assign=self._on_assign)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions handed to this member; after a broker restart they are read from their start."""
        if self.from_the_start.is_set():
            for partition in partitions:
                partition.offset = OFFSET_BEGINNING
            consumer.assign(partitions)
            self._settled = {}
            self._rewind_asked_at = None
            self.from_the_start.clear()
        self._progressed_at = time.monotonic()
        self.assigned.set()

    def _unstick(self, now: float, since: float, why: str) -> None:
        """Subscribes anew when this member could not read for STUCK_SECONDS (since `since`); what it
        is assigned then starts from the group's committed offsets, or from the beginning of each
        topic if a broker restart is still to be caught up with (it kept no committed offsets)."""
        if now - since < STUCK_SECONDS:
            return
        log.warning("%s: %s for %.0f s; subscribing again", self.name, why, now - since)
        self._measured_at = self._progressed_at = now
        self._rewind_asked_at = None
        self._commit(due=True)
        try:
            self.consumer.unsubscribe()
            self._subscribe()
        except KafkaException as error:
            log.warning("%s: could not subscribe again: %s", self.name, error)

    def state(self) -> dict[str, object]:
        """What this member knows, for a report when the pipeline does not settle."""
        now = time.time()
        return {
            "consumer": self.name,
            "group": self.group,
            "lag": dict(self.lag),
            "caughtUpSecondsAgo": round(now - self.caught_up[-1], 1) if self.caught_up else None,
            "rewindPending": self.from_the_start.is_set(),
            "secondsSinceProgress": round(time.monotonic() - self._progressed_at, 1),
            "alive": self.is_alive(),
        }

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
            positions = {(p.topic, p.partition): p.offset for p in self.consumer.position(assignment)}
            unread = [p for p in assignment if positions[(p.topic, p.partition)] < 0]
            if unread:
                # Nothing consumed from these since they were assigned: where the group committed
                # is where it stands (offsets are committed only once their records are settled).
                for p in self.consumer.committed(unread, timeout=1):
                    positions[(p.topic, p.partition)] = p.offset
            for partition in assignment:
                low, high = self.consumer.get_watermark_offsets(partition, timeout=1, cached=False)
                position = positions[(partition.topic, partition.partition)]
                # No position and nothing committed: caught up only if the partition holds nothing.
                behind = max(0, high - position) if position >= 0 else max(0, high - low)
                lag[partition.topic] = lag.get(partition.topic, 0) + behind
                settled = settled and behind == 0
        except KafkaException:
            self._unstick(now, self._measured_at, "no lag it can measure")
            return
        if not assignment:
            self._unstick(now, self._measured_at, "no partitions assigned")
            return
        self._measured_at = now
        self.lag = lag
        for topic, behind in lag.items():
            CONSUMER_LAG.labels(self.group, topic).set(behind)
        if settled and not self.from_the_start.is_set():
            self.caught_up.append(began)
            self._progressed_at = now
        elif not settled:
            # Records wait and none has come in: fetching is stuck (a partition whose leader or
            # topic id librdkafka still holds from the broker's former life).
            self._unstick(now, self._progressed_at, f"{sum(lag.values())} records behind and none coming in")

    def _round(self) -> None:
        """Polls a batch, settles every record, commits; a failure rewinds to redeliver the batch."""
        if self.from_the_start.is_set():
            self._settled = {}  # offsets of the broker's former life: never to be committed to the new one
            self._seek_to_beginning()
        self._measure_lag()
        first = self.consumer.poll(0.2)
        if first is not None:
            self._progressed_at = time.monotonic()
        if first is None:
            self._commit(due=True)  # nothing more for now: commit what is settled
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
            self._progressed_at = time.monotonic()
            return
        self._progressed_at = time.monotonic()
        for record in records:
            key = (record.topic() or "", record.partition() or 0)
            self._settled[key] = max(self._settled.get(key, 0), (record.offset() or 0) + 1)
        self._commit(due=time.monotonic() - self._committed_at >= COMMIT_INTERVAL_SECONDS)

    def _commit(self, due: bool) -> None:
        """Commits the offsets after the settled records (never past one not yet settled)."""
        if not self._settled or not due:
            return
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._settled.items()]
        self._settled = {}
        self._committed_at = time.monotonic()
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
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
        now = time.monotonic()
        if self._rewind_asked_at is None:
            self._rewind_asked_at = now
        try:
            assignment = self.consumer.assignment()
            if not assignment:  # partitions not (yet) assigned: rewound as they are (_on_assign)
                return
            for partition in assignment:
                self.consumer.seek(TopicPartition(partition.topic, partition.partition, OFFSET_BEGINNING))
        except KafkaException as error:
            log.info("%s: not rewound yet (%s); trying again", self.name, error)
            # Seeking keeps failing: partitions assigned anew are rewound as they are assigned.
            self._unstick(now, self._rewind_asked_at, "partitions it cannot rewind")
            return
        self._rewind_asked_at = None
        self.from_the_start.clear()

    def stop(self) -> None:
        self.stopping.set()

"""After the in-memory broker restarts: what it had acknowledged and not yet delivered is sent again.

The embedded Kafka broker keeps records in memory, so its restart loses whatever it held. Each
consumer group notes when it last had nothing left to read (ConsumerLoop.caught_up); from that,
`Replay.settled_through` knows when the broker last held nothing undelivered. When it goes down,
that moment is kept; when it is back, the outboxes' rows sent since then (less a margin) are
marked unsent and their relays fired at once, and what the Broker's HTTP ingress and the
subscribers' replies put in since then is stored again from the journal. Subscribers are
idempotent on (source, id), so whatever comes twice is absorbed. A real Kafka keeps what it
acknowledged: in a cluster none of this runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cloudevents.http import CloudEvent

from functions.shared.outbox import Relay
from local.eventing.consumers import ConsumerLoop
from local.eventing.delivery import forever
from local.eventing.journal import BrokerJournal

log = logging.getLogger("local.eventing")
# An outbox row is marked sent when its relay's transaction began; the broker acknowledged it up to
# a publish timeout (5 s) later. Replays reach this far before the settled moment, to be safe.
REPLAY_MARGIN_SECONDS = 30.0
JOURNAL_PRUNE_SECONDS = 30.0


class Replay:
    """Knows how far back the broker's contents matter, and sends them again after it lost them."""

    def __init__(
        self,
        triggers: Sequence[ConsumerLoop],
        sources: Sequence[ConsumerLoop],
        journal: BrokerJournal | None,
        produce: Callable[[str, CloudEvent], Awaitable[None]],
    ) -> None:
        self.triggers = triggers
        self.sources = sources
        self.journal = journal
        self.produce = produce
        self.reports: list[dict[str, Any]] = []
        self._lost_since: float | None = None

    def settled_through(self) -> float | None:
        """A wall-clock time before which every event the broker acknowledged has been settled by every
        consumer group (delivered, dead-lettered or replied), so that losing the broker cannot lose
        it; None when that is not known yet.

        A KafkaSource forwards into the Broker's topic before it commits, so its moment counts
        only if every Trigger caught up after it: then whatever it forwarded was delivered too.
        """
        if any(not c.caught_up for c in self.triggers):
            return None
        through = min((c.caught_up[-1] for c in self.triggers), default=time.time())
        triggers_through = through
        for source in self.sources:
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
        """The broker is up again and empty: every consumer reads its topics from the start; returns
        the moment from which what it had acknowledged must be sent again (None: it never went down)."""
        for consumer in (*self.triggers, *self.sources):
            consumer.from_the_start.set()
        since, self._lost_since = self._lost_since, None
        return since

    async def send_again(
        self,
        settled: float,
        outboxes: Mapping[str, Relay],
        fire_relay: Callable[[str], Awaitable[None]],
        ensure_topics: Callable[[], None],
    ) -> dict[str, Any]:
        """Sends again everything the lost broker had acknowledged after `settled` (less the margin):
        `outboxes` (by relay service) get their rows sent since then marked unsent and their relay
        fired; the journal's events are stored again."""
        since = datetime.fromtimestamp(settled - REPLAY_MARGIN_SECONDS, UTC)
        began = time.monotonic()
        await forever(lambda: asyncio.to_thread(ensure_topics), "topics after the broker restart", cap=10)
        requeued: dict[str, int] = {}
        for service, relay in outboxes.items():
            requeue = functools.partial(asyncio.to_thread, relay.requeue_since, since)
            requeued[relay.name] = await forever(requeue, f"requeue of {relay.name}", cap=10)
            await fire_relay(service)
        journaled = await self._replay_journal(since)
        report = {
            "at": datetime.now(UTC).isoformat(),
            "since": since.isoformat(),
            "outboxEvents": requeued,
            "journalEvents": journaled,
            "seconds": round(time.monotonic() - began, 2),
        }
        self.reports.append(report)
        log.warning(
            "the broker restarted empty: sent again what it had acknowledged since %s: %d outbox events %s, "
            "%d ingress events, in %.1f s",
            since.isoformat(timespec="seconds"),
            sum(requeued.values()),
            requeued,
            journaled,
            report["seconds"],
        )
        return report

    async def _replay_journal(self, since: datetime) -> int:
        if self.journal is None:
            return 0
        kept = await asyncio.to_thread(self.journal.since, since)
        for topic, event in kept:
            await forever(functools.partial(self.produce, topic, event), f"replay of {event['id']}")
        return len(kept)

    async def prune_journal(self) -> None:
        """Drops journal rows every consumer group has settled past (with the margin), every half minute."""
        if self.journal is None:
            return
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

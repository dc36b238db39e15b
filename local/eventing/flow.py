"""The live event flow of the local Broker: its last events and, per Trigger, how their delivery went.

    GET /_local/events?limit=50      newest first: id, type, source, subject, when the Broker took it,
                                     and per matching Trigger its subscriber, outcome (delivering,
                                     retrying, delivered, dead-lettered, dropped), attempts and last status

Kept in memory (the last KEEP events), on the runtime's event loop. In a cluster the Broker keeps no
such record: the traces (Broker and Trigger spans) and the dead letters tell the same story there.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cloudevents.http import CloudEvent

from local.serving import problem

PATH = "/_local/events"
KEEP = 200


class EventFlow:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._events: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def _entry(self, event: CloudEvent) -> dict[str, Any]:
        key = (str(event.get("source", "")), str(event.get("id", "")))
        entry = self._events.get(key)
        if entry is None:
            entry = self._events[key] = {
                "id": key[1],
                "source": key[0],
                "type": event.get("type"),
                "subject": event.get("subject"),
                "receivedAt": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "deliveries": {},
            }
            while len(self._events) > self.keep:
                self._events.popitem(last=False)
        return entry

    def received(self, event: CloudEvent) -> None:
        """The Broker stored the event."""
        self._entry(event)

    def attempt(self, event: CloudEvent, trigger: str, subscriber: str, attempt: int, status: int | None) -> None:
        """A Trigger is delivering the event: attempt 1, or a retry after `status`."""
        delivery = self._entry(event)["deliveries"].setdefault(trigger, {"subscriber": subscriber})
        delivery.update(outcome="delivering" if attempt == 1 else "retrying", attempts=attempt)
        if status is not None:
            delivery["status"] = status

    def settled(self, event: CloudEvent, trigger: str, outcome: str, attempts: int, status: int) -> None:
        delivery = self._entry(event)["deliveries"].setdefault(trigger, {})
        delivery.update(outcome=outcome, attempts=attempts, status=status)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        newest = list(self._events.values())[::-1][:limit]
        return [
            {**entry, "deliveries": [{"trigger": name, **d} for name, d in entry["deliveries"].items()]}
            for entry in newest
        ]

    def routes(self) -> list[web.RouteDef]:
        return [web.get(PATH, self._list)]

    async def _list(self, request: web.Request) -> web.Response:
        raw = request.query.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= self.keep:
            return problem(400, "Invalid request", f"limit must be between 1 and {self.keep}, got {raw!r}")
        return web.json_response({"events": self.recent(int(raw))}, headers={"Cache-Control": "no-store"})

"""The one idempotency state machine, over an in-memory record table: new, replay, in flight, taken over, mismatch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from functions.shared import idempotency
from functions.shared.idempotency import Claim, Record


@dataclass
class Row:
    fingerprint: str | None
    response: Any = None
    stale: bool = False


@dataclass
class MemoryRecords:
    rows: dict[str, Row] = field(default_factory=dict)

    def insert(self, conn: Any, key: str, fingerprint: str | None) -> Any:
        if key in self.rows:
            return None
        self.rows[key] = Row(fingerprint)
        return True

    def load(self, conn: Any, key: str, timeout: timedelta) -> Record:
        row = self.rows[key]
        return Record(row.fingerprint, row.response is not None, row.stale, row.response)

    def reclaim(self, conn: Any, key: str) -> None:
        self.rows[key].stale = False

    def complete(self, conn: Any, key: str, response: Any) -> bool:
        row = self.rows[key]
        if row.response is not None:
            return False
        row.response = response
        return True

    def release(self, conn: Any, key: str) -> None:
        if self.rows[key].response is None:
            del self.rows[key]


def test_the_first_attempt_claims_then_its_answer_is_replayed() -> None:
    records = MemoryRecords()
    assert idempotency.claim(None, records, "k", "body-1").claim is Claim.NEW  # type: ignore[arg-type]
    assert idempotency.claim(None, records, "k", "body-1").claim is Claim.IN_FLIGHT  # type: ignore[arg-type]
    idempotency.complete(None, records, "k", {"order": 1})  # type: ignore[arg-type]
    replay = idempotency.claim(None, records, "k", "body-1")  # type: ignore[arg-type]
    assert replay.claim is Claim.REPLAY and replay.response == {"order": 1}


def test_a_key_sent_with_another_request_is_a_mismatch_whatever_its_state() -> None:
    records = MemoryRecords()
    idempotency.claim(None, records, "k", "body-1")  # type: ignore[arg-type]
    with pytest.raises(idempotency.Mismatch):
        idempotency.claim(None, records, "k", "body-2")  # type: ignore[arg-type]
    idempotency.complete(None, records, "k", "done")  # type: ignore[arg-type]
    with pytest.raises(idempotency.Mismatch):
        idempotency.claim(None, records, "k", "body-2")  # type: ignore[arg-type]


def test_a_stale_claim_is_taken_over_and_the_slow_attempt_is_overtaken() -> None:
    records = MemoryRecords()
    idempotency.claim(None, records, "k", "body")  # type: ignore[arg-type]
    records.rows["k"].stale = True  # the first attempt's process died, or it is only slow
    assert idempotency.claim(None, records, "k", "body").claim is Claim.NEW  # type: ignore[arg-type]
    idempotency.complete(None, records, "k", "second")  # type: ignore[arg-type]
    with pytest.raises(idempotency.Overtaken):
        idempotency.complete(None, records, "k", "first, late")  # type: ignore[arg-type]
    assert records.rows["k"].response == "second"


def test_a_released_claim_lets_the_retry_go_ahead_at_once() -> None:
    records = MemoryRecords()
    idempotency.claim(None, records, "k", "body")  # type: ignore[arg-type]
    records.release(None, "k")
    assert idempotency.claim(None, records, "k", "body").claim is Claim.NEW  # type: ignore[arg-type]


def test_first_time_is_claim_and_complete_at_once() -> None:
    records = MemoryRecords()
    records.load = lambda conn, key, timeout: Record(None, completed=True)  # type: ignore[method-assign]
    assert idempotency.first_time(None, records, "event-1") is True  # type: ignore[arg-type]
    assert idempotency.first_time(None, records, "event-1") is False  # type: ignore[arg-type]

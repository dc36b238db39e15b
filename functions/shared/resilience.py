"""Resilience for calls to another service, the gateway's and the functions' alike: one policy, breaker, backoff.

The breaker decides like the original system's Resilience4j configuration: it opens when at
least `failure_rate` % of the last `window` calls failed, once `minimum_calls` were seen; after
`open_seconds` it lets `half_open_calls` trial calls through, closes when they all succeed and
opens again on the first that fails. The `circuitbreaker` library holds the state, driven only
through its public API: with a threshold of one failure, raising a private exception inside
`with breaker:` opens it and a clean `with breaker:` closes it; its recovery timeout is the
open time, after which it reports itself half-open; its monitor lists every breaker.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from circuitbreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN, CircuitBreaker, CircuitBreakerMonitor
from prometheus_client import Gauge

# The architecture's defaults (section 5) for one call to another service.
TIMEOUT_SECONDS = 3.0
IDEMPOTENT_RETRIES = 3
STATE_VALUES = {STATE_CLOSED: 0, STATE_HALF_OPEN: 1, STATE_OPEN: 2}


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and how it recovers."""

    window: int = 10
    failure_rate: float = 50.0
    minimum_calls: int = 5
    open_seconds: float = 5.0
    half_open_calls: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.minimum_calls <= self.window:
            raise ValueError(f"a breaker needs 1 <= minimum_calls <= window, got {self.minimum_calls}, {self.window}")
        if not 0 < self.failure_rate <= 100:
            raise ValueError(f"a breaker's failure_rate is a percentage above 0, got {self.failure_rate}")
        # The library reads a recovery timeout of 0 as "use my default" (30 s).
        if self.open_seconds <= 0 or self.half_open_calls < 1:
            raise ValueError("a breaker needs open_seconds > 0 and at least one half-open call")


class _Trip(Exception):
    """Raised inside the library's breaker to open it: the only failure it counts."""


class WindowBreaker:
    """A breaker for one upstream: `allow()` before a call, `record(success)` after it. Thread-safe."""

    def __init__(self, name: str, policy: BreakerPolicy | None = None) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self.circuit = CircuitBreaker(
            failure_threshold=1, recovery_timeout=self.policy.open_seconds, expected_exception=_Trip, name=name
        )
        CircuitBreakerMonitor.register(self.circuit)
        self._outcomes: deque[bool] = deque(maxlen=self.policy.window)
        self._trials_started = 0
        self._trials_passed = 0
        self._guard = threading.Lock()

    @property
    def state(self) -> str:
        """closed, open or half_open (the library's names)."""
        return str(self.circuit.state)

    @property
    def state_value(self) -> int:
        """The state as the circuit-state gauges show it: 0 closed, 1 half-open, 2 open."""
        return STATE_VALUES[self.state]

    def publish_state(self, gauge: Gauge) -> None:
        """Makes `gauge`, labelled with this breaker's name, read its state at every scrape."""
        gauge.labels(self.name).set_function(lambda: self.state_value)

    def allow(self) -> bool:
        """Whether a call may go out now: closed, or half-open with a trial slot free."""
        with self._guard:
            state = self.state
            if state == STATE_CLOSED:
                return True
            if state == STATE_OPEN:
                return False
            if self._trials_started < self.policy.half_open_calls:
                self._trials_started += 1
                return True
            return False

    def record(self, success: bool) -> None:
        """The outcome of a call that `allow()` let through."""
        with self._guard:
            state = self.state
            if state == STATE_HALF_OPEN:
                if not success:
                    self._open()
                    return
                self._trials_passed += 1
                if self._trials_passed >= self.policy.half_open_calls:
                    self._close()
                return
            if state == STATE_OPEN:
                return
            self._outcomes.append(success)
            calls = len(self._outcomes)
            failures = calls - sum(self._outcomes)
            if calls >= self.policy.minimum_calls and 100.0 * failures / calls >= self.policy.failure_rate:
                self._open()

    def retry_after(self) -> int:
        """Whole seconds until the breaker lets a trial call through (at least 1)."""
        return max(1, int(self.circuit.open_remaining)) if self.state == STATE_OPEN else 1

    def _open(self) -> None:
        try:
            with self.circuit:
                raise _Trip
        except _Trip:
            pass
        self._outcomes.clear()
        self._trials_started = self._trials_passed = 0

    def _close(self) -> None:
        with self.circuit:
            pass
        self._outcomes.clear()
        self._trials_started = self._trials_passed = 0


def backoff(retry: int) -> float:
    """Seconds to wait before retry number `retry` (0 for the first): doubling from 0.1 s up to 1 s, jittered."""
    return min(0.1 * 2**retry, 1.0) * random.uniform(0.5, 1.0)


def pause_before_retry(retry: int, deadline: float | None = None) -> None:
    """Sleeps `backoff(retry)`, never past `deadline` (a `time.monotonic()` value)."""
    delay = backoff(retry)
    if deadline is not None:
        delay = min(delay, max(0.0, deadline - time.monotonic()))
    time.sleep(delay)

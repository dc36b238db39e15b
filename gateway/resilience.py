"""Resilience at the edge: a windowed circuit breaker per upstream and a token bucket per client.

The breaker keeps the `circuitbreaker` library's states and monitor (so its state is
visible in one place) and decides like the original system's Resilience4j configuration:
open when at least `failure_rate` % of the last `window` calls failed, after at least
`minimum_calls`; after `open_seconds`, let `half_open_calls` trial calls through; close when
they all succeed, open again on the first that fails.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

from circuitbreaker import STATE_CLOSED, STATE_HALF_OPEN, STATE_OPEN, CircuitBreaker, CircuitBreakerMonitor

from gateway.routing import BreakerPolicy, RatePolicy

STATE_VALUES = {STATE_CLOSED: 0, STATE_HALF_OPEN: 1, STATE_OPEN: 2}


class UpstreamFailure(Exception):
    """A call the breaker counts as failed: no answer, a timeout, or a 5xx."""


class WindowBreaker(CircuitBreaker):
    def __init__(self, name: str, policy: BreakerPolicy) -> None:
        super().__init__(
            failure_threshold=policy.minimum_calls,
            recovery_timeout=policy.open_seconds,
            expected_exception=UpstreamFailure,
            name=name,
        )
        self.policy = policy
        self._outcomes: deque[bool] = deque(maxlen=policy.window)
        self._trials_started = 0
        self._trials_passed = 0
        self._guard = threading.Lock()
        CircuitBreakerMonitor.register(self)

    def allow(self) -> bool:
        """Whether a call may go out now (closed; or half-open with a trial slot free)."""
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
        with self._guard:
            if self.state == STATE_HALF_OPEN:
                if not success:
                    self._trip()
                    return
                self._trials_passed += 1
                if self._trials_passed >= self.policy.half_open_calls:
                    self._close()
                return
            if self.state == STATE_OPEN:
                return
            self._outcomes.append(success)
            failures = self._outcomes.count(False)
            if len(self._outcomes) >= self.policy.minimum_calls and (
                100.0 * failures / len(self._outcomes) >= self.policy.failure_rate
            ):
                self._trip()

    def retry_after(self) -> int:
        return max(1, int(self.open_remaining + 0.999)) if self.state == STATE_OPEN else 1

    @property
    def state_value(self) -> int:
        return STATE_VALUES[self.state]

    def _trip(self) -> None:
        self._state = STATE_OPEN
        self._opened = time.monotonic()
        self._outcomes.clear()
        self._trials_started = self._trials_passed = 0

    def _close(self) -> None:
        self._state = STATE_CLOSED
        self._outcomes.clear()
        self._trials_started = self._trials_passed = 0


class RateLimiter:
    """Token buckets per (client, bucket name), refilled continuously; the least recent are forgotten."""

    def __init__(self, max_clients: int = 100_000) -> None:
        self.max_clients = max_clients
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, bucket: str, policy: RatePolicy) -> float:
        """0 when a token was taken; otherwise the seconds until one is available."""
        now = time.monotonic()
        key = (client, bucket)
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(policy.burst), now))
            tokens = min(float(policy.burst), tokens + (now - last) * policy.per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / policy.per_second
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

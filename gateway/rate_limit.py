"""The gateway's rate limit: a token bucket per client and route."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from gateway.routing import RatePolicy


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

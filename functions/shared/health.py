"""Readiness and outages: which servers a function depends on, whether they answer, and how an outage is told.

Liveness (`/healthz`) says the process serves; readiness (`/readyz`) says it can do its work:
its settings are there and the servers it needs answer. Knative stops routing to a revision
that is not ready. An error from a server that is down or restarting becomes a 503 problem with
Retry-After (never a 500), and the log names the server.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from functions.shared.config import ConfigError

# A cheap probe: one answer per this many seconds, whatever the probing rate.
READY_CACHE_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Dependency:
    """A server this function needs; `check` raises when it does not answer."""

    name: str
    check: Callable[[], None]


def postgres(url: str) -> Dependency:
    def check() -> None:
        from functions.shared import db

        with db.pool(url).connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
            conn.execute("SELECT 1")

    return Dependency(f"PostgreSQL database {urlsplit(url).path.lstrip('/') or 'postgres'}", check)


def mongodb(uri: str) -> Dependency:
    def check() -> None:
        from functions.shared import mongo

        mongo.client(uri).admin.command("ping")

    return Dependency("MongoDB", check)


def smtp(url: str) -> Dependency:
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or (465 if parts.scheme == "smtps" else 25)

    def check() -> None:
        with socket.create_connection((host, port), timeout=CHECK_TIMEOUT_SECONDS):
            pass

    return Dependency(f"SMTP server {host}:{port}", check)


Dependencies = Callable[[], Sequence[Dependency]]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]


class ReadinessProbe:
    """Answers whether the function is ready, at most once per READY_CACHE_SECONDS."""

    def __init__(self, dependencies: Dependencies | None) -> None:
        self.dependencies = dependencies
        self._lock = threading.Lock()
        self._last: tuple[float, Readiness] | None = None

    def __call__(self) -> Readiness:
        with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < READY_CACHE_SECONDS:
                return self._last[1]
            answer = self._probe()
            self._last = (time.monotonic(), answer)
            return answer

    def _probe(self) -> Readiness:
        if self.dependencies is None:
            return Readiness(True, ())
        try:
            needed = self.dependencies()
        except ConfigError as error:
            return Readiness(False, (f"not configured: {error}",))
        reasons = []
        for dependency in needed:
            try:
                dependency.check()
            except Exception as error:  # noqa: BLE001 - whatever it raises, the server did not answer
                reasons.append(f"{dependency.name} is unreachable ({type(error).__name__}: {error})")
        return Readiness(not reasons, tuple(reasons))


def outage(error: BaseException) -> str | None:
    """The server an error says is down or restarting, or None if it is no such error.

    Looks the driver modules up where they are already imported: a function that never
    loads a driver never pays for importing it here.
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(error, psycopg.OperationalError):
        return "PostgreSQL"
    pool = sys.modules.get("psycopg_pool")
    if pool is not None and isinstance(error, pool.PoolTimeout):
        return "PostgreSQL"
    pymongo_errors = sys.modules.get("pymongo.errors")
    if pymongo_errors is not None:
        if isinstance(error, pymongo_errors.ConnectionFailure):
            return "MongoDB"
        # Shutting down or stepping down mid-operation: the server's way of saying "not now".
        if isinstance(error, pymongo_errors.OperationFailure) and error.code in _MONGO_UNAVAILABLE_CODES:
            return "MongoDB"
    kafka = sys.modules.get("confluent_kafka")
    if kafka is not None and isinstance(error, kafka.KafkaException):
        return "Kafka"
    shop_kafka = sys.modules.get("functions.shared.kafka")
    if shop_kafka is not None and isinstance(error, shop_kafka.PublishError):
        return "Kafka"
    return None


# InterruptedAtShutdown, ShutdownInProgress, NotWritablePrimary, PrimarySteppedDown, NotPrimaryNoSecondaryOk,
# InterruptedDueToReplStateChange, HostUnreachable, HostNotFound, NetworkTimeout, SocketException.
_MONGO_UNAVAILABLE_CODES = frozenset({11600, 91, 10107, 189, 13435, 11602, 6, 7, 89, 9001})

"""Fault flags at run time: OpenFeature, with flagd's provider evaluating a flags file in-process (file mode).

The file is in flagd's flag definition format (knative/config/shop-flags.yaml holds it as the
ConfigMap `shop-flags`, mounted into the functions that read flags). The provider reads it again
whenever it changes (it looks every POLL_MS), so a flag takes effect without a restart: in a
cluster when the kubelet updates the mounted ConfigMap, locally at once (the runtime writes the
file; `/_local/flags` and the admin console change it).

Without FLAGD_OFFLINE_FLAG_SOURCE_PATH every flag is off and OpenFeature is never imported: the
provider brings gRPC with it, about 100 ms of imports, paid by the first flag read of a process
rather than by every cold start. SHOP_FAULTS (functions/shared/faults.py) stays for what tests need
at start-up only (a process killed mid-saga).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from opentelemetry import trace
from prometheus_client import Counter

from functions.shared import problems
from functions.shared.config import config

log = logging.getLogger("shop.flags")
POLL_MS = 500

# Every flag, declared once: key -> what it does. The flags file names the same keys.
INVENTORY_RESERVE_LATENCY = "inventoryReserveLatency"
INVENTORY_RESERVE_FAILURE = "inventoryReserveFailure"
PRODUCT_GET_LATENCY = "productGetLatency"
SMTP_REFUSING = "smtpRefusing"
NOTIFICATION_SEND_FAILURE = "notificationSendFailure"
KAFKA_PRODUCE_FAILURE = "kafkaProduceFailure"
FLAGS = {
    INVENTORY_RESERVE_LATENCY: "inventory-reserve waits this many milliseconds before it answers",
    INVENTORY_RESERVE_FAILURE: "share of inventory-reserve requests answered 500 (0 to 1)",
    PRODUCT_GET_LATENCY: "product-get waits this many milliseconds before it answers",
    SMTP_REFUSING: "notification-send's mail server refuses every mail for now (451): deliveries are retried",
    NOTIFICATION_SEND_FAILURE: "notification-send fails every event for good (422): dead-lettered at once",
    KAFKA_PRODUCE_FAILURE: "every Kafka produce fails: events stay queued in the outboxes",
}

INJECTED = Counter(
    "shop_fault_injections_total", "Faults injected because a fault flag asked for them, by flag.", ["flag"]
)

_lock = threading.Lock()
_client: Any = None
_path: str | None = None


def _flag_client() -> Any:
    """The OpenFeature client, its provider set up on first use; None when no flags file is configured."""
    global _client, _path
    path = config().optional("FLAGD_OFFLINE_FLAG_SOURCE_PATH", "")
    if not path:
        return None
    with _lock:
        if _client is None or path != _path:
            from openfeature import api
            from openfeature.contrib.provider.flagd import FlagdProvider
            from openfeature.contrib.provider.flagd.config import ResolverType
            from openfeature.exception import OpenFeatureError

            started = time.perf_counter()
            provider = FlagdProvider(
                resolver_type=ResolverType.FILE, offline_flag_source_path=path, deadline_ms=POLL_MS
            )
            try:
                # Waits for the file's first read: a flag read before it would answer its default (off).
                api.set_provider_and_wait(provider)
            except OpenFeatureError as error:  # no file (yet): every flag off until the provider reads one
                log.warning("fault flags file %s not readable (%s): every flag off until it is", path, error)
            _client, _path = api.get_client("shop"), path
            log.info("fault flags read from %s (set up in %.0f ms)", path, (time.perf_counter() - started) * 1000)
    return _client


def _noted(key: str, value: Any) -> None:
    """A fault is being injected: counted, and an OpenTelemetry feature_flag event on the current span."""
    INJECTED.labels(key).inc()
    trace.get_current_span().add_event(
        "feature_flag.evaluation", {"feature_flag.key": key, "feature_flag.provider.name": "flagd", "value": str(value)}
    )


def number(key: str) -> float:
    """A numeric flag's value (0 when off, unknown or unreadable)."""
    client = _flag_client()
    if client is None:
        return 0.0
    return float(client.get_float_value(key, 0.0))


def enabled(key: str) -> bool:
    """A boolean flag's value (False when off, unknown or unreadable)."""
    client = _flag_client()
    if client is None:
        return False
    return client.get_boolean_value(key, False) is True


def delay(key: str) -> None:
    """Waits as many milliseconds as the flag says."""
    milliseconds = number(key)
    if milliseconds > 0:
        _noted(key, milliseconds)
        time.sleep(milliseconds / 1000)


def fail_sometimes(key: str) -> None:
    """Answers 500 for the share of requests the flag says (0 to 1)."""
    rate = number(key)
    if rate > 0 and random.random() < rate:
        _noted(key, rate)
        raise problems.Problem(500, "Injected fault", f"fault flag {key} failed this request", "injected-fault")


def refuse_if(key: str, problem: problems.Problem) -> None:
    """Raises `problem` while the boolean flag is on."""
    if enabled(key):
        _noted(key, True)
        raise problem


def check(key: str) -> bool:
    """Whether a boolean flag is on, noted as an injected fault when it is (for callers raising their own error)."""
    on = enabled(key)
    if on:
        _noted(key, True)
    return on

"""Wires the registry's real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

import time
from functools import cache

from functions.registry.kubernetes import KnativeServiceLister
from functions.registry.store import PostgresRegistryStore
from functions.shared import health
from functions.shared.config import ConfigError, config

DEFAULT_LEASE_SECONDS = 90
# Eureka keeps recently changed instances for about three minutes (retentionTimeInMSInDeltaQueue).
DEFAULT_DELTA_RETENTION_SECONDS = 180
DEFAULT_KUBERNETES_API_URL = "https://kubernetes.default.svc"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@cache
def registry() -> PostgresRegistryStore:
    return PostgresRegistryStore(config().required("DATABASE_URL"))


@cache
def lease_seconds() -> int:
    """The lease of an instance that does not say how long its lease is (leaseInfo.durationInSecs)."""
    seconds = config().integer("LEASE_DURATION_SECONDS", DEFAULT_LEASE_SECONDS)
    if not 1 <= seconds <= 86400:
        raise ConfigError(f"setting LEASE_DURATION_SECONDS must be between 1 and 86400, got {seconds}")
    return seconds


@cache
def delta_retention_seconds() -> float:
    return config().seconds("DELTA_RETENTION_SECONDS", DEFAULT_DELTA_RETENTION_SECONDS)


def namespace() -> str:
    return config().namespace


@cache
def knative_services() -> KnativeServiceLister:
    return KnativeServiceLister(config().optional("KUBERNETES_API_URL", DEFAULT_KUBERNETES_API_URL), namespace())


def dependencies() -> list[health.Dependency]:
    """What the registry functions need to be ready (their readiness answer)."""
    return [health.postgres(config().required("DATABASE_URL"))]

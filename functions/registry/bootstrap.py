"""Wires the registry's use cases to their real collaborators once per process, on first use (never at import)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

from functions.registry import service
from functions.registry.kubernetes import KnativeServiceLister
from functions.registry.model import (
    Applications,
    Instance,
    InstanceRef,
    OverrideStatus,
    Register,
    RemoveOverride,
    Renew,
)
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


@dataclass(frozen=True)
class Registry:
    """The registry's use cases, ready to call. Every read evicts expired leases and prunes old changes first."""

    register: Callable[[Register], Instance]
    renew: Callable[[Renew], None]
    cancel: Callable[[InstanceRef], None]
    override_status: Callable[[OverrideStatus], Instance]
    remove_override: Callable[[RemoveOverride], Instance]
    full_registry: Callable[[], Applications]
    delta: Callable[[], Applications]
    application: Callable[[str], list[Instance]]
    instance: Callable[[str, str | None], Instance]
    vip: Callable[[str, bool], Applications]
    sync: Callable[[], None]


@cache
def use_cases() -> Registry:
    store = registry()
    writes: dict[str, Any] = {"registry": store, "clock": now_ms}
    reads: dict[str, Any] = {**writes, "retention_seconds": delta_retention_seconds()}

    def sync() -> None:
        """registry-sync's sweep: evict expired leases, then list the namespace's Knative Services."""
        service.evict_expired(**reads)
        service.sync_knative_services(
            namespace(), services=knative_services(), registry=store, clock=now_ms, lease_seconds=lease_seconds()
        )

    return Registry(
        register=partial(service.register, **writes),
        renew=partial(service.renew, **writes),
        cancel=partial(service.cancel, **writes),
        override_status=partial(service.override_status, **writes),
        remove_override=partial(service.remove_override, **writes),
        full_registry=partial(service.full_registry, **reads),
        delta=partial(service.delta, **reads),
        application=partial(service.application, **reads),
        instance=partial(service.instance, **reads),
        vip=partial(service.vip, **reads),
        sync=sync,
    )


def dependencies() -> list[health.Dependency]:
    """What the registry functions need to be ready (their readiness answer)."""
    return [health.postgres(config().required("DATABASE_URL"))]

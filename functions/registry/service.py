"""Registry use cases: register, renew, cancel, override statuses, fetch, list Knative Services, evict."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from functions.registry.model import (
    Applications,
    Instance,
    InstanceRef,
    KnativeService,
    ManagedInstance,
    OverrideStatus,
    Register,
    RemoveOverride,
    Renew,
    RenewOutcome,
    SyncReport,
    hashcode,
    overridden,
    override_removed,
    serves_vip,
)
from functions.registry.store import RegistryStore
from functions.shared.errors import Conflict, NotFound, Unavailable
from functions.shared.service_client import UpstreamUnavailable

Clock = Callable[[], int]  # epoch milliseconds
log = logging.getLogger("shop.registry")

RENEW_REFUSALS = {
    RenewOutcome.UNKNOWN_INSTANCE: "not registered (never, or its lease ran out); register again",
    RenewOutcome.STATUS_UNKNOWN: "its status is UNKNOWN (its override was removed); register again",
    RenewOutcome.CLIENT_NEWER: "the client changed since it registered (newer lastDirtyTimestamp); register again",
}


def _not_found(ref: InstanceRef) -> NotFound:
    return NotFound(f"no instance {ref.instance_id!r} of {ref.app} is registered")


def register(cmd: Register, *, registry: RegistryStore, clock: Clock) -> Instance:
    try:
        instance = registry.register(cmd, clock())
    except ManagedInstance:
        raise Conflict(
            f"{cmd.info.app} is a Knative Service listed by registry-sync; register under another application name"
        ) from None
    log.info(
        "registered %s/%s (%s)",
        instance.info.app,
        instance.info.instance_id,
        instance.status.value,
        extra={"app": instance.info.app, "instance_id": instance.info.instance_id},
    )
    return instance


def renew(cmd: Renew, *, registry: RegistryStore, clock: Clock) -> None:
    """A heartbeat; 404 (the client's cue to register again) unless the lease was renewed."""
    outcome = registry.renew(cmd, clock())
    if outcome is not RenewOutcome.RENEWED:
        raise NotFound(f"{cmd.ref.app}/{cmd.ref.instance_id}: {RENEW_REFUSALS[outcome]}")


def cancel(ref: InstanceRef, *, registry: RegistryStore, clock: Clock) -> None:
    try:
        gone = registry.cancel(ref, clock())
    except ManagedInstance:
        raise Conflict(
            f"{ref.instance_id!r} is a Knative Service's entry, kept by registry-sync while the service exists"
        ) from None
    if gone is None:
        raise _not_found(ref)
    log.info("cancelled %s/%s", ref.app, ref.instance_id, extra={"app": ref.app, "instance_id": ref.instance_id})


def override_status(cmd: OverrideStatus, *, registry: RegistryStore, clock: Clock) -> Instance:
    now = clock()
    instance = registry.change(cmd.ref, lambda existing: overridden(existing, cmd, now))
    if instance is None:
        raise _not_found(cmd.ref)
    return instance


def remove_override(cmd: RemoveOverride, *, registry: RegistryStore, clock: Clock) -> Instance:
    now = clock()
    instance = registry.change(cmd.ref, lambda existing: override_removed(existing, cmd, now))
    if instance is None:
        raise _not_found(cmd.ref)
    return instance


# --- reads: each evicts expired leases first, so no reader sees a lease that ran out ---------


def evict_expired(*, registry: RegistryStore, clock: Clock, retention_seconds: float) -> list[Instance]:
    """Removes instances that stopped renewing (lease duration after their last renewal) and prunes
    change records older than the delta retention."""
    now = clock()
    evicted = registry.evict(now, now - int(retention_seconds * 1000))
    for instance in evicted:
        log.info(
            "evicted %s/%s: no renewal for %ss",
            instance.info.app,
            instance.info.instance_id,
            instance.info.lease_duration_seconds,
            extra={"app": instance.info.app},
        )
    return evicted


def full_registry(*, registry: RegistryStore, clock: Clock, retention_seconds: float) -> Applications:
    evict_expired(registry=registry, clock=clock, retention_seconds=retention_seconds)
    return registry.applications()


def delta(*, registry: RegistryStore, clock: Clock, retention_seconds: float) -> Applications:
    """Instances changed within the retention window, in their latest state, with the full registry's
    hashcode: a client that applies them and gets another hashcode fetches everything again."""
    evict_expired(registry=registry, clock=clock, retention_seconds=retention_seconds)
    return registry.delta(clock() - int(retention_seconds * 1000))


def application(app: str, *, registry: RegistryStore, clock: Clock, retention_seconds: float) -> list[Instance]:
    evict_expired(registry=registry, clock=clock, retention_seconds=retention_seconds)
    instances = registry.application(app)
    if not instances:
        raise NotFound(f"no instance of application {app} is registered")
    return instances


def instance(
    instance_id: str, app: str | None, *, registry: RegistryStore, clock: Clock, retention_seconds: float
) -> Instance:
    evict_expired(registry=registry, clock=clock, retention_seconds=retention_seconds)
    found = registry.instance(instance_id, app)
    if found is None:
        raise NotFound(f"no instance {instance_id!r}" + (f" of {app}" if app else "") + " is registered")
    return found


def vip(address: str, secure: bool, *, registry: RegistryStore, clock: Clock, retention_seconds: float) -> Applications:
    """The instances serving a (secure) VIP address, with the hashcode of that part of the registry."""
    everything = full_registry(registry=registry, clock=clock, retention_seconds=retention_seconds)
    matching = tuple(i for i in everything.instances if serves_vip(i, address, secure))
    return Applications(everything.version, hashcode(i.status for i in matching), matching)


# --- Knative Services ----------------------------------------------------------------------


def sync_knative_services(
    namespace: str,
    *,
    services: Callable[[], Sequence[KnativeService]],
    registry: RegistryStore,
    clock: Clock,
    lease_seconds: int,
) -> SyncReport:
    """Lists the namespace's Knative Services into the registry: one UP instance each at its stable URL.

    When the list cannot be read the registry is left as it is (503): an API outage must not
    look like every service was deleted.
    """
    try:
        listed = services()
    except UpstreamUnavailable as error:
        raise Unavailable(f"cannot list Knative Services: {error.reason}", retry_after=30) from None
    report = registry.sync_knative(namespace, [s for s in listed if s.namespace == namespace], clock(), lease_seconds)
    if report.added or report.modified or report.removed:
        log.info(
            "Knative Services in %s: %d added, %d modified, %d removed, %d unchanged",
            namespace,
            report.added,
            report.modified,
            report.removed,
            report.unchanged,
        )
    return report

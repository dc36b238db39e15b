"""Eureka's rules without a database: statuses and overrides, leases, the hashcode, Knative entries."""

from __future__ import annotations

from dataclasses import replace

import pytest

from functions.registry.model import (
    Action,
    Instance,
    InstanceInfo,
    InstanceRef,
    KnativeService,
    OverrideStatus,
    Port,
    Register,
    RemoveOverride,
    Renew,
    RenewOutcome,
    Status,
    cancelled,
    effective_status,
    hashcode,
    knative_instance,
    overridden,
    override_removed,
    registered,
    renewal,
    serves_vip,
)

NOW = 1_800_000_000_000
REF = InstanceRef("ORDERS", "10.0.0.7:orders:8080")


def info(**changes: object) -> InstanceInfo:
    base = InstanceInfo(
        app="ORDERS",
        instance_id="10.0.0.7:orders:8080",
        host_name="orders-7.example",
        ip_addr="10.0.0.7",
        port=Port(8080, True),
        secure_port=Port(8443, False),
        lease_duration_seconds=90,
        vip_address="orders,orders-v2",
        secure_vip_address="orders-secure",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def register(existing: Instance | None = None, at: int = NOW, **command: object) -> Instance:
    return registered(existing, Register(info(), **command), at)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("reported", "override", "expected"),
    [
        (Status.UP, Status.UNKNOWN, Status.UP),
        (Status.UP, Status.OUT_OF_SERVICE, Status.OUT_OF_SERVICE),
        (Status.DOWN, Status.OUT_OF_SERVICE, Status.DOWN),
        (Status.STARTING, Status.UP, Status.STARTING),
        (Status.OUT_OF_SERVICE, Status.UP, Status.UP),
        (Status.UNKNOWN, Status.UNKNOWN, Status.UNKNOWN),
    ],
)
def test_an_instance_that_says_it_is_down_or_starting_beats_an_override(
    reported: Status, override: Status, expected: Status
) -> None:
    assert effective_status(reported, override) is expected


def test_a_registration_is_added_up_with_its_lease() -> None:
    instance = register(last_dirty_ms=NOW - 5)
    assert (instance.status, instance.overridden_status, instance.action) == (Status.UP, Status.UNKNOWN, Action.ADDED)
    assert instance.lease.registered_ms == instance.lease.last_renewal_ms == instance.lease.service_up_ms == NOW
    assert instance.last_dirty_ms == NOW - 5 and instance.expires_ms == NOW + 90_000


def test_an_override_survives_heartbeats_and_registering_again() -> None:
    out = overridden(register(), OverrideStatus(REF, Status.OUT_OF_SERVICE), NOW + 1)
    assert (out.status, out.overridden_status, out.action) == (Status.OUT_OF_SERVICE, Status.OUT_OF_SERVICE, "MODIFIED")
    outcome, renewed = renewal(out, Renew(REF), NOW + 2)
    assert outcome is RenewOutcome.RENEWED and renewed.status is Status.OUT_OF_SERVICE
    assert renewed.lease.last_renewal_ms == NOW + 2
    again = register(out, at=NOW + 3, status=Status.UP)
    assert (again.status, again.overridden_status) == (Status.OUT_OF_SERVICE, Status.OUT_OF_SERVICE)
    assert again.lease.service_up_ms == NOW  # the first time it came up


def test_a_registration_may_carry_its_own_override() -> None:
    instance = register(overridden_status=Status.OUT_OF_SERVICE)
    assert instance.status is Status.OUT_OF_SERVICE and instance.lease.service_up_ms == 0


def test_removing_the_override_makes_the_next_heartbeat_ask_for_a_registration() -> None:
    out = overridden(register(), OverrideStatus(REF, Status.OUT_OF_SERVICE), NOW + 1)
    removed = override_removed(out, RemoveOverride(REF), NOW + 2)
    assert (removed.status, removed.overridden_status) == (Status.UNKNOWN, Status.UNKNOWN)
    assert renewal(removed, Renew(REF), NOW + 3)[0] is RenewOutcome.STATUS_UNKNOWN
    assert register(removed, at=NOW + 4).status is Status.UP
    explicit = override_removed(out, RemoveOverride(REF, Status.UP), NOW + 2)
    assert explicit.status is Status.UP and renewal(explicit, Renew(REF), NOW + 3)[0] is RenewOutcome.RENEWED


def test_a_client_newer_than_its_entry_must_register_again() -> None:
    instance = register(last_dirty_ms=NOW)
    assert renewal(instance, Renew(REF, last_dirty_ms=NOW), NOW + 1)[0] is RenewOutcome.RENEWED
    assert renewal(instance, Renew(REF, last_dirty_ms=NOW - 1), NOW + 1)[0] is RenewOutcome.RENEWED
    assert renewal(instance, Renew(REF, last_dirty_ms=NOW + 1), NOW + 1)[0] is RenewOutcome.CLIENT_NEWER


def test_a_late_registration_with_an_older_dirty_time_keeps_the_newer_description() -> None:
    current = register(last_dirty_ms=NOW)
    stale = Register(info(host_name="stale.example"), status=Status.STARTING, last_dirty_ms=NOW - 1000)
    late = registered(current, stale, NOW + 5)
    assert (late.info.host_name, late.status, late.last_dirty_ms) == ("orders-7.example", Status.UP, NOW)
    fresh = registered(current, Register(info(host_name="new.example"), last_dirty_ms=NOW + 1), NOW + 5)
    assert fresh.info.host_name == "new.example"


def test_a_cancelled_instance_is_reported_deleted_with_its_eviction_time() -> None:
    gone = cancelled(register(), NOW + 9)
    assert gone.action is Action.DELETED and gone.lease.eviction_ms == NOW + 9


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], ""),
        ([Status.UP], "UP_1_"),
        ([Status.UP, Status.DOWN, Status.UP], "DOWN_1_UP_2_"),
        (
            [Status.OUT_OF_SERVICE, Status.UP, Status.STARTING, Status.UNKNOWN],
            "OUT_OF_SERVICE_1_STARTING_1_UNKNOWN_1_UP_1_",
        ),
    ],
)
def test_hashcode_counts_instances_per_status_in_order(statuses: list[Status], expected: str) -> None:
    assert hashcode(statuses) == expected


def test_vips_are_comma_separated_and_case_insensitive() -> None:
    instance = register()
    assert serves_vip(instance, "ORDERS-V2", False) and serves_vip(instance, "orders", False)
    assert not serves_vip(instance, "orders-v", False)
    assert serves_vip(instance, "orders-secure", True) and not serves_vip(instance, "orders", True)


def test_a_knative_service_is_an_up_managed_instance_at_its_stable_url() -> None:
    service = KnativeService("product-get", "shop", "http://product-get.shop.svc.cluster.local", True)
    instance, changed = knative_instance(service, None, NOW, 90)
    assert changed and instance.managed and instance.expires_ms is None
    assert instance.key == ("PRODUCT-GET", "product-get.shop")
    assert instance.info.host_name == "product-get.shop.svc.cluster.local"
    assert instance.info.port == Port(80, True) and not instance.info.secure_port.enabled
    assert instance.info.home_page_url == "http://product-get.shop.svc.cluster.local/"
    assert instance.info.health_check_url == "http://product-get.shop.svc.cluster.local/healthz"
    assert dict(instance.info.metadata) == {"knative": "true"}
    assert (instance.status, instance.action) == (Status.UP, Action.ADDED)


def test_a_knative_service_changes_only_when_its_listing_does() -> None:
    service = KnativeService("order-get", "shop")
    first, _ = knative_instance(service, None, NOW, 90)
    assert first.info.home_page_url == "http://order-get.shop.svc.cluster.local/"
    same, changed = knative_instance(service, first, NOW + 60_000, 90)
    assert not changed and same.lease.last_renewal_ms == NOW + 60_000 and same.last_updated_ms == NOW
    not_ready, changed = knative_instance(replace(service, ready=False), same, NOW + 120_000, 90)
    assert changed and not_ready.status is Status.DOWN and not_ready.action is Action.MODIFIED
    moved, changed = knative_instance(replace(service, url="https://order-get.example.com"), first, NOW + 1, 90)
    assert changed and moved.info.home_page_url == "https://order-get.example.com/"


def test_an_override_on_a_knative_service_outlives_the_sync_and_its_removal_brings_it_back_up() -> None:
    service = KnativeService("order-get", "shop")
    first, _ = knative_instance(service, None, NOW, 90)
    out = overridden(first, OverrideStatus(InstanceRef("ORDER-GET", "order-get.shop"), Status.OUT_OF_SERVICE), NOW)
    synced, changed = knative_instance(service, out, NOW + 60_000, 90)
    assert not changed and synced.status is Status.OUT_OF_SERVICE
    back = override_removed(synced, RemoveOverride(InstanceRef("ORDER-GET", "order-get.shop")), NOW + 1)
    assert back.status is Status.UP


def test_records_round_trip() -> None:
    instance = overridden(register(), OverrideStatus(REF, Status.DOWN), NOW)
    assert Instance.from_record(instance.as_record()) == instance
    managed, _ = knative_instance(KnativeService("a", "b"), None, NOW, 90)
    assert Instance.from_record(managed.as_record()) == managed

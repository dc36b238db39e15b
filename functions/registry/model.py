"""Registry domain: instances and their leases, Eureka's status rules, the registry hashcode."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

DEFAULT_RENEWAL_INTERVAL_SECONDS = 30
DEFAULT_DATA_CENTER_CLASS = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"
AMAZON_DATA_CENTER_CLASS = "com.netflix.appinfo.AmazonInfo"
KNATIVE_METADATA = {"knative": "true"}


class Status(StrEnum):
    UP = "UP"
    DOWN = "DOWN"
    STARTING = "STARTING"
    OUT_OF_SERVICE = "OUT_OF_SERVICE"
    UNKNOWN = "UNKNOWN"


class Action(StrEnum):
    """Eureka's actionType: what last happened to an instance, as deltas report it."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True)
class Port:
    number: int
    enabled: bool


@dataclass(frozen=True)
class DataCenter:
    name: str = "MyOwn"
    class_name: str = DEFAULT_DATA_CENTER_CLASS
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceInfo:
    """What an instance says about itself when it registers (Eureka's InstanceInfo, less the server's fields)."""

    app: str
    instance_id: str
    host_name: str
    ip_addr: str
    port: Port
    secure_port: Port
    lease_duration_seconds: int
    renewal_interval_seconds: int = DEFAULT_RENEWAL_INTERVAL_SECONDS
    country_id: int = 1
    data_center: DataCenter = field(default_factory=DataCenter)
    metadata: Mapping[str, str] = field(default_factory=dict)
    home_page_url: str = ""
    status_page_url: str = ""
    health_check_url: str = ""
    secure_health_check_url: str = ""
    vip_address: str = ""
    secure_vip_address: str = ""
    app_group_name: str = ""
    asg_name: str = ""
    is_coordinating_discovery_server: bool = False

    def as_record(self) -> dict[str, Any]:
        """The JSON document stored in PostgreSQL (and inside change records)."""
        return {
            "app": self.app,
            "instanceId": self.instance_id,
            "hostName": self.host_name,
            "ipAddr": self.ip_addr,
            "port": [self.port.number, self.port.enabled],
            "securePort": [self.secure_port.number, self.secure_port.enabled],
            "leaseDuration": self.lease_duration_seconds,
            "renewalInterval": self.renewal_interval_seconds,
            "countryId": self.country_id,
            "dataCenter": [self.data_center.name, self.data_center.class_name, dict(self.data_center.metadata)],
            "metadata": dict(self.metadata),
            "homePageUrl": self.home_page_url,
            "statusPageUrl": self.status_page_url,
            "healthCheckUrl": self.health_check_url,
            "secureHealthCheckUrl": self.secure_health_check_url,
            "vipAddress": self.vip_address,
            "secureVipAddress": self.secure_vip_address,
            "appGroupName": self.app_group_name,
            "asgName": self.asg_name,
            "isCoordinatingDiscoveryServer": self.is_coordinating_discovery_server,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> InstanceInfo:
        name, class_name, dc_metadata = record["dataCenter"]
        return cls(
            app=record["app"],
            instance_id=record["instanceId"],
            host_name=record["hostName"],
            ip_addr=record["ipAddr"],
            port=Port(*record["port"]),
            secure_port=Port(*record["securePort"]),
            lease_duration_seconds=record["leaseDuration"],
            renewal_interval_seconds=record["renewalInterval"],
            country_id=record["countryId"],
            data_center=DataCenter(name, class_name, dc_metadata),
            metadata=record["metadata"],
            home_page_url=record["homePageUrl"],
            status_page_url=record["statusPageUrl"],
            health_check_url=record["healthCheckUrl"],
            secure_health_check_url=record["secureHealthCheckUrl"],
            vip_address=record["vipAddress"],
            secure_vip_address=record["secureVipAddress"],
            app_group_name=record["appGroupName"],
            asg_name=record["asgName"],
            is_coordinating_discovery_server=record["isCoordinatingDiscoveryServer"],
        )


@dataclass(frozen=True)
class Lease:
    """Server-side times of an instance, in epoch milliseconds as Eureka's wire format has them."""

    registered_ms: int
    last_renewal_ms: int
    service_up_ms: int = 0
    eviction_ms: int = 0


@dataclass(frozen=True)
class Instance:
    """One entry of the registry: the instance's description, its effective status and its lease."""

    info: InstanceInfo
    status: Status
    overridden_status: Status
    lease: Lease
    last_updated_ms: int
    last_dirty_ms: int
    action: Action
    # A Knative Service listed by registry-sync: it has no lease to lose, it goes when the service goes.
    managed: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return self.info.app, self.info.instance_id

    @property
    def expires_ms(self) -> int | None:
        if self.managed:
            return None
        return self.lease.last_renewal_ms + self.info.lease_duration_seconds * 1000

    def as_record(self) -> dict[str, Any]:
        return {
            "info": self.info.as_record(),
            "status": self.status.value,
            "overriddenStatus": self.overridden_status.value,
            "lease": [
                self.lease.registered_ms,
                self.lease.last_renewal_ms,
                self.lease.service_up_ms,
                self.lease.eviction_ms,
            ],
            "lastUpdated": self.last_updated_ms,
            "lastDirty": self.last_dirty_ms,
            "action": self.action.value,
            "managed": self.managed,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Instance:
        return cls(
            info=InstanceInfo.from_record(record["info"]),
            status=Status(record["status"]),
            overridden_status=Status(record["overriddenStatus"]),
            lease=Lease(*record["lease"]),
            last_updated_ms=record["lastUpdated"],
            last_dirty_ms=record["lastDirty"],
            action=Action(record["action"]),
            managed=record["managed"],
        )


# --- commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Register:
    """POST /eureka/apps/{APP}: the instance's description, the status it reports and its dirty time."""

    info: InstanceInfo
    status: Status = Status.UP
    overridden_status: Status = Status.UNKNOWN
    last_dirty_ms: int | None = None


@dataclass(frozen=True)
class InstanceRef:
    app: str
    instance_id: str


@dataclass(frozen=True)
class Renew:
    """PUT /eureka/apps/{APP}/{id}: the heartbeat (the status a client reports is checked, not kept)."""

    ref: InstanceRef
    last_dirty_ms: int | None = None


@dataclass(frozen=True)
class OverrideStatus:
    """PUT .../{id}/status?value=: an operator's (or the instance's own) status that beats the reported one."""

    ref: InstanceRef
    status: Status
    last_dirty_ms: int | None = None


@dataclass(frozen=True)
class RemoveOverride:
    """DELETE .../{id}/status[?value=]: drop the override; the status becomes `value` (default UNKNOWN)."""

    ref: InstanceRef
    status: Status | None = None
    last_dirty_ms: int | None = None


class RenewOutcome(StrEnum):
    RENEWED = "RENEWED"
    # 404 for all three: the client re-registers, which is what each case needs.
    UNKNOWN_INSTANCE = "UNKNOWN_INSTANCE"
    STATUS_UNKNOWN = "STATUS_UNKNOWN"
    CLIENT_NEWER = "CLIENT_NEWER"


class ManagedInstance(Exception):
    """A Knative Service's entry (kept by registry-sync) or application: clients can neither cancel the entry
    nor register into the application (an instance there would receive the service's traffic)."""


# --- Eureka's status rules -----------------------------------------------------------------


def effective_status(reported: Status, override: Status) -> Status:
    """What discovery clients see: DOWN and STARTING from the instance itself always win (it knows it is
    not ready); otherwise an override in effect; otherwise what the instance reports."""
    if reported in (Status.DOWN, Status.STARTING):
        return reported
    if override is not Status.UNKNOWN:
        return override
    return reported


def registered(existing: Instance | None, cmd: Register, now_ms: int) -> Instance:
    """The registry entry after a (re-)registration.

    An override in effect survives re-registration (only cancel or eviction forgets it), as
    does the time the instance first came UP. A registration carrying an older dirty time
    than the entry already holds is a late duplicate: Eureka keeps the newer description.
    """
    dirty = cmd.last_dirty_ms if cmd.last_dirty_ms is not None else now_ms
    info, reported = cmd.info, cmd.status
    if existing is not None and existing.last_dirty_ms > dirty:
        info, reported, dirty = existing.info, existing.status, existing.last_dirty_ms
    override = Status.UNKNOWN
    if existing is not None and existing.overridden_status is not Status.UNKNOWN:
        override = existing.overridden_status
    elif cmd.overridden_status is not Status.UNKNOWN:
        override = cmd.overridden_status
    status = effective_status(reported, override)
    service_up = existing.lease.service_up_ms if existing is not None else 0
    if not service_up and status is Status.UP:
        service_up = now_ms
    return Instance(
        info=info,
        status=status,
        overridden_status=override,
        lease=Lease(registered_ms=now_ms, last_renewal_ms=now_ms, service_up_ms=service_up),
        last_updated_ms=now_ms,
        last_dirty_ms=dirty,
        action=Action.ADDED,
    )


def renewal(instance: Instance, cmd: Renew, now_ms: int) -> tuple[RenewOutcome, Instance]:
    """A heartbeat. The status the client sends does not change the entry: an override stays in effect.

    It fails (404, so the client registers again) when the entry's status is UNKNOWN with no
    override — the state a removed override leaves — or when the client's dirty time is newer
    than the entry's, i.e. the client changed since it last registered.
    """
    if instance.status is Status.UNKNOWN and instance.overridden_status is Status.UNKNOWN:
        return RenewOutcome.STATUS_UNKNOWN, instance
    if cmd.last_dirty_ms is not None and cmd.last_dirty_ms > instance.last_dirty_ms and not instance.managed:
        return RenewOutcome.CLIENT_NEWER, instance
    return RenewOutcome.RENEWED, replace(instance, lease=replace(instance.lease, last_renewal_ms=now_ms))


def overridden(instance: Instance, cmd: OverrideStatus, now_ms: int) -> Instance:
    return replace(
        instance,
        status=cmd.status,
        overridden_status=cmd.status,
        last_updated_ms=now_ms,
        last_dirty_ms=max(instance.last_dirty_ms, cmd.last_dirty_ms or 0),
        action=Action.MODIFIED,
    )


def override_removed(instance: Instance, cmd: RemoveOverride, now_ms: int) -> Instance:
    """Without `value` the status becomes UNKNOWN, so the next heartbeat fails and the client registers
    its own status again. A Knative Service never heartbeats: it goes straight back to UP."""
    status = cmd.status or (Status.UP if instance.managed else Status.UNKNOWN)
    return replace(
        instance,
        status=status,
        overridden_status=Status.UNKNOWN,
        last_updated_ms=now_ms,
        last_dirty_ms=max(instance.last_dirty_ms, cmd.last_dirty_ms or 0),
        action=Action.MODIFIED,
    )


def cancelled(instance: Instance, now_ms: int) -> Instance:
    """The entry as deltas report it once it is gone (cancelled or evicted)."""
    return replace(
        instance,
        lease=replace(instance.lease, eviction_ms=now_ms),
        last_updated_ms=now_ms,
        action=Action.DELETED,
    )


def hashcode(statuses: Iterable[Status]) -> str:
    """Eureka's apps__hashcode: the count of instances per status, statuses in order, e.g. DOWN_1_UP_2_."""
    counts = Counter(status.value for status in statuses)
    return "".join(f"{status}_{count}_" for status, count in sorted(counts.items()))


# --- Knative Services ----------------------------------------------------------------------


@dataclass(frozen=True)
class KnativeService:
    """A Knative Service as the Kubernetes API lists it."""

    name: str
    namespace: str
    url: str | None = None
    ready: bool | None = None  # None: the Ready condition is not reported (yet)

    @property
    def host(self) -> str:
        return f"{self.name}.{self.namespace}.svc.cluster.local"

    @property
    def base_url(self) -> str:
        return (self.url or f"http://{self.host}").rstrip("/")


def knative_instance(
    service: KnativeService, existing: Instance | None, now_ms: int, lease_seconds: int
) -> tuple[Instance, bool]:
    """The registry entry of a Knative Service, and whether it differs from `existing` (a change for deltas).

    App = the service's name upper-cased, reachable at its stable URL. It is UP while the service
    exists (scaled to zero or not: the activator wakes it), DOWN only when Knative reports the
    service not Ready. An operator's override still applies.
    """
    info = InstanceInfo(
        app=service.name.upper(),
        instance_id=f"{service.name}.{service.namespace}",
        host_name=service.host,
        ip_addr=service.host,
        port=Port(80, True),
        secure_port=Port(443, False),
        lease_duration_seconds=lease_seconds,
        home_page_url=service.base_url + "/",
        status_page_url=service.base_url + "/",
        # Every function of the shop answers /healthz (functions/shared/web.py).
        health_check_url=service.base_url + "/healthz",
        vip_address=service.name,
        secure_vip_address=service.name,
        metadata=dict(KNATIVE_METADATA),
    )
    reported = Status.DOWN if service.ready is False else Status.UP
    if existing is not None and existing.managed:
        override = existing.overridden_status
        status = effective_status(reported, override)
        renewed = replace(existing.lease, last_renewal_ms=now_ms)
        if existing.info == info and existing.status is status:
            return replace(existing, lease=renewed), False
        modified = replace(
            existing,
            info=info,
            status=status,
            lease=replace(renewed, service_up_ms=renewed.service_up_ms or (now_ms if status is Status.UP else 0)),
            last_updated_ms=now_ms,
            last_dirty_ms=now_ms,
            action=Action.MODIFIED,
        )
        return modified, True
    # New, or a client had registered under the service's id: the Knative Service takes it over.
    added = Instance(
        info=info,
        status=reported,
        overridden_status=Status.UNKNOWN,
        lease=Lease(now_ms, now_ms, now_ms if reported is Status.UP else 0),
        last_updated_ms=now_ms,
        last_dirty_ms=now_ms,
        action=Action.ADDED if existing is None else Action.MODIFIED,
        managed=True,
    )
    return added, True


@dataclass(frozen=True)
class Applications:
    """A view of the registry (all of it, or one VIP's part) as Eureka serves it."""

    version: int
    hashcode: str
    instances: tuple[Instance, ...]

    def by_app(self) -> list[tuple[str, list[Instance]]]:
        grouped: dict[str, list[Instance]] = {}
        for instance in sorted(self.instances, key=lambda i: i.key):
            grouped.setdefault(instance.info.app, []).append(instance)
        return list(grouped.items())


@dataclass(frozen=True)
class SyncReport:
    added: int
    modified: int
    removed: int
    unchanged: int


def serves_vip(instance: Instance, vip: str, secure: bool) -> bool:
    """Eureka's VIP match: the (secure) VIP address is a comma-separated list, compared case-insensitively."""
    addresses = instance.info.secure_vip_address if secure else instance.info.vip_address
    return vip.strip().upper() in {a.strip().upper() for a in addresses.split(",") if a.strip()}

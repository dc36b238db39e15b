"""Reads knative/ and eventing/, the single source of truth for what runs and how events flow: every manifest the
local runtime uses is read here, into Knative Services and the eventing topology."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import isodate
import yaml
from cloudevents.http import CloudEvent
from croniter import croniter

from functions.shared.validation import YAML_LOADER
from local import admission

ROOT = Path(__file__).resolve().parents[1]
KNATIVE_DIR = ROOT / "knative"
EVENTING_DIR = ROOT / "eventing"
DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$")


def documents(paths: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every YAML document under the given files or folders, in path order."""
    for path in paths:
        files = sorted(path.rglob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            for document in yaml.load_all(file.read_text(), Loader=YAML_LOADER):
                if isinstance(document, dict) and document.get("kind"):
                    yield file, document


def seconds(duration: str) -> float:
    """Knative durations as Go writes them: '60s', '1m30s', '2h'."""
    match = DURATION.match(duration.strip())
    if not match or not duration.strip():
        raise ValueError(f"not a duration: {duration!r}")
    return int(match["h"] or 0) * 3600 + int(match["m"] or 0) * 60 + float(match["s"] or 0)


@dataclass(frozen=True)
class EnvVar:
    """A container env entry: a literal value or a reference the runtime must resolve."""

    name: str
    value: str | None = None
    secret: tuple[str, str] | None = None  # (secret name, key)
    config_map: tuple[str, str] | None = None  # (config map name, key)


@dataclass(frozen=True)
class KnativeService:
    name: str
    namespace: str
    source_file: Path
    env: tuple[EnvVar, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    container_concurrency: int = 0
    timeout_seconds: float = 300.0
    readiness_path: str = "/"
    # (ConfigMap name, mount path) of each ConfigMap volume the container mounts.
    config_map_mounts: tuple[tuple[str, str], ...] = ()

    @property
    def min_scale(self) -> int:
        return int(self.annotations.get("autoscaling.knative.dev/min-scale", "0"))

    @property
    def window_seconds(self) -> float:
        """The autoscaler's stable window: idle this long, the service scales to zero."""
        return seconds(self.annotations.get("autoscaling.knative.dev/window", "60s"))

    @property
    def cluster_local(self) -> bool:
        return self.labels.get("networking.knative.dev/visibility") == "cluster-local"

    def literal_env(self, name: str) -> str | None:
        return next((e.value for e in self.env if e.name == name), None)


def _env(entries: list[dict[str, Any]]) -> tuple[EnvVar, ...]:
    result = []
    for entry in entries:
        ref = entry.get("valueFrom", {})
        if "secretKeyRef" in ref:
            secret = ref["secretKeyRef"]
            result.append(EnvVar(entry["name"], secret=(secret["name"], secret["key"])))
        elif "configMapKeyRef" in ref:
            config_map = ref["configMapKeyRef"]
            result.append(EnvVar(entry["name"], config_map=(config_map["name"], config_map["key"])))
        else:
            result.append(EnvVar(entry["name"], value=str(entry.get("value", ""))))
    return tuple(result)


def knative_service(path: Path, document: Mapping[str, Any]) -> KnativeService:
    admission.admit(path, document)  # refuses what Knative's admission webhook would
    metadata = document["metadata"]
    template = document["spec"]["template"]
    spec = template["spec"]
    container = spec["containers"][0]
    probe = container.get("readinessProbe", {}).get("httpGet", {})
    return KnativeService(
        name=metadata["name"],
        namespace=metadata.get("namespace", "default"),
        source_file=path,
        env=_env(container.get("env", [])),
        annotations=dict(template.get("metadata", {}).get("annotations", {})),
        labels=dict(metadata.get("labels", {})),
        container_concurrency=int(spec.get("containerConcurrency", 0)),
        timeout_seconds=float(spec.get("timeoutSeconds", 300)),
        readiness_path=probe.get("path", "/"),
        config_map_mounts=_config_map_mounts(spec, container),
    )


def _config_map_mounts(spec: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    config_maps = {v["name"]: v["configMap"]["name"] for v in spec.get("volumes") or [] if "configMap" in v}
    return tuple(
        (config_maps[m["name"]], m["mountPath"].rstrip("/"))
        for m in container.get("volumeMounts") or []
        if m.get("name") in config_maps
    )


def services(paths: Iterable[Path] = (KNATIVE_DIR,)) -> dict[str, KnativeService]:
    """Knative Services by name."""
    found: dict[str, KnativeService] = {}
    for path, document in documents(paths):
        if document.get("apiVersion") == "serving.knative.dev/v1" and document["kind"] == "Service":
            service = knative_service(path, document)
            if service.name in found:
                raise ValueError(f"service {service.name} defined twice ({path}, {found[service.name].source_file})")
            found[service.name] = service
    return found


def resources(kind: str, paths: Iterable[Path] = (EVENTING_DIR,)) -> list[dict[str, Any]]:
    """Every document of one kind (Broker, Trigger, KafkaSource, PingSource, ...)."""
    return [document for _, document in documents(paths) if document["kind"] == kind]


# --- eventing/: Broker, Triggers, KafkaSource, PingSources, topics ---------------------------------

BROKER_INGRESS_HOST = "kafka-broker-ingress.knative-eventing"


def iso_seconds(duration: str) -> float:
    """ISO 8601 durations as Knative's delivery spec writes them: PT0.2S, PT1M, P1D."""
    text = duration.strip()
    try:
        # isodate takes a bare "P" or "PT" for zero; ISO 8601 wants at least one component.
        parsed = isodate.parse_duration(text) if text not in ("P", "PT") else None
    except (isodate.ISO8601Error, ValueError):
        parsed = None
    if parsed is None:
        raise ValueError(f"not an ISO 8601 duration: {duration!r}")
    if not isinstance(parsed, timedelta):  # months or years: no fixed length in seconds
        raise ValueError(f"a delivery duration has no months or years: {duration!r}")
    if parsed < timedelta(0):
        raise ValueError(f"a duration is not negative: {duration!r}")
    return parsed.total_seconds()


def next_fire(schedule: str, after: datetime) -> datetime:
    """The first moment after `after` that a PingSource's cron schedule names (5 fields, as Knative's)."""
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise ValueError(f"not a 5-field cron schedule: {schedule!r}")
    fire: datetime = croniter(schedule, after).get_next(datetime)
    return fire


# --- destinations and delivery ------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """A sink/subscriber: a Knative Service, a Broker, or a URI."""

    kind: str  # "Service" | "Broker" | "uri"
    name: str = ""
    namespace: str = ""
    uri: str = ""

    @classmethod
    def parse(cls, spec: Mapping[str, Any], namespace: str) -> Destination:
        if "ref" in spec:
            ref = spec["ref"]
            kind = ref["kind"]
            if kind not in ("Service", "Broker"):
                raise ValueError(f"unsupported destination kind {kind!r}")
            return cls(kind, ref["name"], ref.get("namespace", namespace))
        return cls("uri", uri=spec["uri"])

    @property
    def logical_url(self) -> str:
        """The URL this destination has in a cluster (what knativeerrordest carries)."""
        if self.kind == "Service":
            return f"http://{self.name}.{self.namespace}.svc.cluster.local"
        if self.kind == "Broker":
            return f"http://{BROKER_INGRESS_HOST}.svc.cluster.local/{self.namespace}/{self.name}"
        return self.uri


@dataclass(frozen=True)
class DeliverySpec:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 0.2
    timeout: float = 30.0
    dead_letter: Destination | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None, namespace: str, default: DeliverySpec | None = None) -> DeliverySpec:
        base = default or cls()
        if not spec:
            return base
        dls = spec.get("deadLetterSink")
        return cls(
            retry=int(spec.get("retry", base.retry)),
            backoff_policy=spec.get("backoffPolicy", base.backoff_policy),
            backoff_delay=iso_seconds(spec["backoffDelay"]) if "backoffDelay" in spec else base.backoff_delay,
            timeout=iso_seconds(spec["timeout"]) if "timeout" in spec else base.timeout,
            dead_letter=Destination.parse(dls, namespace) if dls else base.dead_letter,
        )

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based), as Knative computes it."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * attempt
        return self.backoff_delay * (2 ** (attempt - 1))


# --- filters -----------------------------------------------------------------------------


def attributes_of(event: CloudEvent) -> dict[str, str]:
    return {k: str(v) for k, v in event.get_attributes().items()}


def dialect_matches(expression: Mapping[str, Any], attributes: Mapping[str, str]) -> bool:
    """One expression of the Trigger `filters` dialect (exact, prefix, suffix, all, any, not)."""
    if len(expression) != 1:
        raise ValueError(f"a filter expression has exactly one dialect key, got {sorted(expression)}")
    ((dialect, operand),) = expression.items()
    if dialect == "exact":
        return all(attributes.get(k) == v for k, v in operand.items())
    if dialect == "prefix":
        return all(k in attributes and attributes[k].startswith(v) for k, v in operand.items())
    if dialect == "suffix":
        return all(k in attributes and attributes[k].endswith(v) for k, v in operand.items())
    if dialect == "all":
        return all(dialect_matches(e, attributes) for e in operand)
    if dialect == "any":
        return any(dialect_matches(e, attributes) for e in operand)
    if dialect == "not":
        return not dialect_matches(operand, attributes)
    raise ValueError(f"filter dialect {dialect!r} is not supported locally (cesql is not)")


@dataclass(frozen=True)
class Trigger:
    name: str
    namespace: str
    broker: str
    subscriber: Destination
    delivery: DeliverySpec
    attributes: Mapping[str, str] = field(default_factory=dict)
    filters: Sequence[Mapping[str, Any]] = ()

    def matches(self, event: CloudEvent) -> bool:
        return self.matches_attributes(attributes_of(event))

    def matches_attributes(self, attributes: Mapping[str, str]) -> bool:
        if self.filters:  # the newer dialect wins when both are given, as in Knative
            return all(dialect_matches(e, attributes) for e in self.filters)
        return all(attributes.get(k) == v for k, v in self.attributes.items())


@dataclass(frozen=True)
class Broker:
    name: str
    namespace: str
    delivery: DeliverySpec

    @property
    def topic(self) -> str:
        return f"knative-broker-{self.namespace}-{self.name}"


@dataclass(frozen=True)
class KafkaSource:
    name: str
    namespace: str
    topics: tuple[str, ...]
    consumer_group: str
    sink: Destination
    delivery: DeliverySpec
    initial_offset: str = "latest"


@dataclass(frozen=True)
class PingSource:
    name: str
    namespace: str
    schedule: str
    timezone: str
    content_type: str
    data: str
    sink: Destination

    @property
    def source(self) -> str:
        return f"/apis/v1/namespaces/{self.namespace}/pingsources/{self.name}"


@dataclass(frozen=True)
class Topology:
    brokers: dict[str, Broker]
    triggers: list[Trigger]
    kafka_sources: list[KafkaSource]
    ping_sources: list[PingSource]
    topics: dict[str, int]  # KafkaTopic name -> partitions


def topology(paths: Sequence[Path] = (EVENTING_DIR,)) -> Topology:
    """Brokers, Triggers, sources and Kafka topics declared under eventing/ (what Knative Eventing runs)."""
    brokers: dict[str, Broker] = {}
    for doc in resources("Broker", paths):
        ns = doc["metadata"].get("namespace", "default")
        broker = Broker(doc["metadata"]["name"], ns, DeliverySpec.parse(doc.get("spec", {}).get("delivery"), ns))
        brokers[f"{ns}/{broker.name}"] = broker
    triggers = []
    for doc in resources("Trigger", paths):
        ns = doc["metadata"].get("namespace", "default")
        spec = doc["spec"]
        parent = brokers.get(f"{ns}/{spec['broker']}")
        if parent is None:
            raise ValueError(f"trigger {doc['metadata']['name']} names an unknown broker {spec['broker']}")
        trigger = Trigger(
            name=doc["metadata"]["name"],
            namespace=ns,
            broker=spec["broker"],
            subscriber=Destination.parse(spec["subscriber"], ns),
            delivery=DeliverySpec.parse(spec.get("delivery"), ns, parent.delivery),
            attributes=dict(spec.get("filter", {}).get("attributes", {})),
            filters=tuple(spec.get("filters", ())),
        )
        trigger.matches(CloudEvent({"type": "probe", "source": "/probe"}, None))  # fails early on bad dialects
        triggers.append(trigger)
    sources = []
    for doc in resources("KafkaSource", paths):
        ns = doc["metadata"].get("namespace", "default")
        spec = doc["spec"]
        sources.append(
            KafkaSource(
                name=doc["metadata"]["name"],
                namespace=ns,
                topics=tuple(spec["topics"]),
                consumer_group=spec.get("consumerGroup", f"knative-kafkasource-{doc['metadata']['name']}"),
                sink=Destination.parse(spec["sink"], ns),
                delivery=DeliverySpec.parse(spec.get("delivery"), ns),
                initial_offset=spec.get("initialOffset", "latest"),
            )
        )
    pings = []
    for doc in resources("PingSource", paths):
        ns = doc["metadata"].get("namespace", "default")
        spec = doc["spec"]
        pings.append(
            PingSource(
                name=doc["metadata"]["name"],
                namespace=ns,
                schedule=spec["schedule"],
                timezone=spec.get("timezone", "UTC"),
                content_type=spec.get("contentType", "application/json"),
                data=spec.get("data", ""),
                sink=Destination.parse(spec["sink"], ns),
            )
        )
    topics = {doc["metadata"]["name"]: int(doc["spec"].get("partitions", 1)) for doc in resources("KafkaTopic", paths)}
    return Topology(brokers, triggers, sources, pings, topics)

"""Knative Eventing manifests under eventing/: they parse, pass the CRD schemas, agree with knative/ and the code."""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cloudevents.http import CloudEvent

from functions.shared import events
from local import manifests as local_manifests

from . import crd, tooling

EVENTING = crd.REPO_ROOT / "eventing"
KNATIVE = crd.REPO_ROOT / "knative"
SCHEMAS = EVENTING / "schemas"
KUSTOMIZATION = EVENTING / "kustomization.yaml"
# Manifests only: schemas/ holds JSON Schemas, a kustomization.yaml is build input.
EVENTING_FILES = sorted(
    path for path in EVENTING.rglob("*.yaml") if SCHEMAS not in path.parents and path != KUSTOMIZATION
)

BROKER = ("eventing.knative.dev/v1", "Broker")
TRIGGER = ("eventing.knative.dev/v1", "Trigger")
KAFKA_SOURCE = ("sources.knative.dev/v1", "KafkaSource")
PING_SOURCE = ("sources.knative.dev/v1", "PingSource")
KNATIVE_KINDS = (BROKER, TRIGGER, KAFKA_SOURCE, PING_SOURCE)
# Not Knative CRDs: Strimzi's topics (against Strimzi's CRD) and the Kafka Broker's ConfigMap (by shape).
KAFKA_TOPIC = ("kafka.strimzi.io/v1", "KafkaTopic")
CONFIG_MAP = ("v1", "ConfigMap")
SERVICE = ("serving.knative.dev/v1", "Service")

# Declared types no Trigger consumes, on purpose. product.updated is published for the
# record (and for consumers to come, e.g. search indexing); nothing reacts to it yet.
# A new Trigger for one of these must remove it here: the test checks both directions.
UNCONSUMED_TYPES = frozenset({events.PRODUCT_UPDATED})
# http (not cloudevent) functions that Eventing delivers to: they tell a CloudEvent from
# a plain request per request (web.is_cloud_event). inventory-release also takes
# order-place's compensation call; dead-letter also serves the admin list and replay.
HTTP_CLOUDEVENT_CONSUMERS = frozenset({"inventory-release", "dead-letter"})

Kind = tuple[str, str]
Located = tuple[Path, crd.Document]
Mutation = Callable[[crd.Document], object]


# --- reading the manifests -------------------------------------------------------------------


@cache
def _located() -> tuple[Located, ...]:
    """Every manifest document under eventing/."""
    return tuple((path, document) for path in EVENTING_FILES for document in crd.load_documents(path))


def _kind(document: crd.Document) -> Kind:
    return document["apiVersion"], document["kind"]


def _of(kind: Kind) -> list[crd.Document]:
    return [document for _, document in _located() if _kind(document) == kind]


def _namespace(document: crd.Document) -> str:
    namespace: str = document["metadata"].get("namespace", "default")
    return namespace


def _label(document: crd.Document) -> str:
    return f"{document['kind']}/{document['metadata']['name']}"


def _ids(documents: list[crd.Document]) -> list[str]:
    return [_label(document) for document in documents]


@cache
def _services() -> dict[tuple[str, str], crd.Document]:
    """(namespace, name) -> every Knative Service under knative/services/."""
    found: dict[tuple[str, str], crd.Document] = {}
    for path in sorted((KNATIVE / "services").glob("*.yaml")):
        for document in crd.load_documents(path):
            if _kind(document) == SERVICE:
                found[(_namespace(document), document["metadata"]["name"])] = document
    return found


def _service(namespace: str, name: str) -> crd.Document:
    service = _services().get((namespace, name))
    assert service is not None, f"no Knative Service {namespace}/{name} under knative/services/"
    return service


def _env_value(service: crd.Document, name: str) -> str | None:
    for entry in service["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if entry["name"] == name:
            value = entry.get("value")
            return value if isinstance(value, str) else None
    return None


def _refs(node: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(JSON path, ref) of every `ref:` destination in a manifest: subscriber, sink, deadLetterSink."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "ref" and isinstance(value, Mapping) and "kind" in value:
                yield where, value
            else:
                yield from _refs(value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _refs(item, f"{path}[{index}]")


def _service_refs(role: str) -> list[tuple[crd.Document, Mapping[str, Any]]]:
    """(manifest, ref) of every Service ref under a field named `role` (subscriber, sink, deadLetterSink)."""
    found = []
    for _, document in _located():
        for where, ref in _refs(document.get("spec", {})):
            if ref["kind"] == "Service" and where.endswith(f"{role}.ref"):
                found.append((document, ref))
    return found


def _ref_target(document: crd.Document, ref: Mapping[str, Any]) -> tuple[str, str]:
    return ref.get("namespace", _namespace(document)), ref["name"]


def _deliveries() -> list[tuple[crd.Document, Mapping[str, Any]]]:
    return [
        (document, document["spec"]["delivery"])
        for _, document in _located()
        if _kind(document) in KNATIVE_KINDS and "delivery" in document.get("spec", {})
    ]


# --- Trigger filters ---------------------------------------------------------------------------

Mention = tuple[str, str, bool]  # (dialect, value of `type`, positive: not under an odd number of `not`)


def _filter_mentions(expression: Mapping[str, Any], positive: bool = True) -> Iterator[Mention]:
    """Every `type` a `filters`-dialect expression names, walking all / any / not."""
    for dialect, operand in expression.items():
        if dialect in ("exact", "prefix", "suffix"):
            if "type" in operand:
                yield dialect, operand["type"], positive
        elif dialect in ("all", "any"):
            for nested in operand:
                yield from _filter_mentions(nested, positive)
        elif dialect == "not":
            yield from _filter_mentions(operand, not positive)
        else:
            raise AssertionError(f"filter dialect {dialect!r} cannot be checked against the declared types")


def _trigger_mentions(trigger: crd.Document) -> list[Mention]:
    spec = trigger["spec"]
    mentions: list[Mention] = []
    attribute_type = spec.get("filter", {}).get("attributes", {}).get("type")
    if attribute_type is not None:
        mentions.append(("exact", attribute_type, True))
    for expression in spec.get("filters", []):
        mentions.extend(_filter_mentions(expression))
    return mentions


def _types_matching(dialect: str, value: str) -> set[str]:
    if dialect == "prefix":
        return {t for t in events.EVENT_TYPES if t.startswith(value)}
    if dialect == "suffix":
        return {t for t in events.EVENT_TYPES if t.endswith(value)}
    return {value} & events.EVENT_TYPES


def _consumed_types(trigger: crd.Document) -> set[str]:
    """The declared types a Trigger lets through; one that does not select by type takes them all."""
    mentions = _trigger_mentions(trigger)
    if any(p for _, _, p in mentions):
        return set().union(*(_types_matching(d, v) for d, v, p in mentions if p))
    excluded = set().union(*(_types_matching(d, v) for d, v, p in mentions if not p))
    return set(events.EVENT_TYPES) - excluded


def _filtered_attributes(trigger: crd.Document) -> set[str]:
    """Every attribute name a Trigger's filters look at."""
    spec = trigger["spec"]
    names = set(spec.get("filter", {}).get("attributes", {}))

    def walk(expression: Mapping[str, Any]) -> None:
        for dialect, operand in expression.items():
            if dialect in ("all", "any"):
                for nested in operand:
                    walk(nested)
            elif dialect == "not":
                walk(operand)
            elif isinstance(operand, Mapping):
                names.update(operand)

    for expression in spec.get("filters", []):
        walk(expression)
    return names


@pytest.fixture(scope="module")
def crds() -> Path:
    found = crd.crds_dir()
    if found is None:
        tooling.unavailable(f"Knative CRDs not found at {crd.crds_location()}; set {crd.CRDS_ENV}")
    return found


@pytest.fixture(scope="module")
def platform_crds() -> Path:
    found = crd.crds_dir(crd.PLATFORM_CRDS_ENV)
    if found is None:
        tooling.unavailable(
            f"platform CRDs not found at {crd.crds_location(crd.PLATFORM_CRDS_ENV)}; set {crd.PLATFORM_CRDS_ENV}"
        )
    return found


# --- parsing -----------------------------------------------------------------------------------


def test_eventing_folder_holds_every_kind() -> None:
    kinds = {_kind(document) for _, document in _located()}
    assert set(KNATIVE_KINDS) <= kinds, f"missing: {set(KNATIVE_KINDS) - kinds}"
    assert {KAFKA_TOPIC, CONFIG_MAP} <= kinds


@pytest.mark.parametrize("path", EVENTING_FILES, ids=[path.name for path in EVENTING_FILES])
def test_every_yaml_document_parses(path: Path) -> None:
    documents = crd.load_documents(path)
    assert documents, f"{path.name} holds no document"
    for document in documents:
        assert isinstance(document.get("apiVersion"), str) and isinstance(document.get("kind"), str)
        assert isinstance(document.get("metadata", {}).get("name"), str), f"{path.name}: a document without a name"
        # Anything else would be checked by nothing below.
        assert _kind(document) in {*KNATIVE_KINDS, KAFKA_TOPIC, CONFIG_MAP}, (
            f"{path.name}: unexpected {_kind(document)}"
        )


def test_names_are_unique_per_kind_and_namespace() -> None:
    keys = Counter((d["kind"], _namespace(d), d["metadata"]["name"]) for _, d in _located())
    assert not [key for key, count in keys.items() if count > 1]


# --- CRD schemas (Knative kinds) and shapes (the rest) ---------------------------------------

KNATIVE_DOCUMENTS = [document for kind in KNATIVE_KINDS for document in _of(kind)]


@pytest.mark.parametrize("document", KNATIVE_DOCUMENTS, ids=_ids(KNATIVE_DOCUMENTS))
def test_knative_document_validates_strictly_against_the_crd(document: crd.Document, crds: Path) -> None:
    assert crd.validate(document) == []


def _first(kind: Kind) -> crd.Document:
    documents = _of(kind)
    assert documents, f"no {kind[1]} under eventing/"
    return copy.deepcopy(documents[0])


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [
        (TRIGGER, lambda d: d["spec"].update(filter={"attribute": {"type": "x"}}), "unknown field 'attribute'"),
        (TRIGGER, lambda d: d["spec"]["subscriber"]["ref"].update(nam="x"), "subscriber.ref.nam: unknown field"),
        (TRIGGER, lambda d: d["spec"].update(filters=[{"exactt": {"type": "x"}}]), "unknown field 'exactt'"),
        (PING_SOURCE, lambda d: d["spec"].update(schedul="* * * * *"), "spec.schedul: unknown field"),
        (KAFKA_SOURCE, lambda d: d["spec"].update(topic=["shop.orders"]), "spec.topic: unknown field"),
        (KAFKA_SOURCE, lambda d: d["spec"].update(delivery={"retry": "10"}), "delivery.retry: expected integer"),
        (BROKER, lambda d: d["spec"].update(brokr="x"), "spec.brokr: unknown field"),
    ],
    ids=[
        "trigger-filter",
        "trigger-ref",
        "trigger-dialect",
        "ping-field",
        "kafka-source-field",
        "retry-type",
        "broker",
    ],
)
def test_validator_bites_on_eventing_kinds(kind: Kind, mutate: Mutation, expected: str, crds: Path) -> None:
    document = _first(kind)
    mutate(document)
    errors = crd.validate(document)
    assert any(expected in error for error in errors), errors


TOPICS = _of(KAFKA_TOPIC)


@pytest.mark.parametrize("topic", TOPICS, ids=_ids(TOPICS))
def test_kafka_topic_validates_strictly_against_strimzis_crd(topic: crd.Document, platform_crds: Path) -> None:
    assert crd.validate(topic) == []


def test_validator_bites_on_kafka_topics(platform_crds: Path) -> None:
    topic = _first(KAFKA_TOPIC)
    topic["spec"]["partitons"] = 3
    assert crd.validate(topic) == ["spec.partitons: unknown field 'partitons'"]


@pytest.mark.parametrize("topic", TOPICS, ids=_ids(TOPICS))
def test_kafka_topic_is_well_formed(topic: crd.Document) -> None:
    meta = topic["metadata"]
    # Strimzi names the Kafka topic after metadata.name (a DNS-1123 subdomain); Kafka allows 249 characters.
    assert re.fullmatch(crd.DNS_1123_SUBDOMAIN, meta["name"]) and len(meta["name"]) <= 249, meta["name"]
    assert meta.get("namespace"), "Strimzi watches one namespace: say which"
    assert meta.get("labels", {}).get("strimzi.io/cluster"), "the Strimzi cluster that owns the topic"
    spec = topic.get("spec", {})
    for field in ("partitions", "replicas"):
        value = spec.get(field)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"{field}: {value!r}"


CONFIG_MAPS = _of(CONFIG_MAP)


@pytest.mark.parametrize("config_map", CONFIG_MAPS, ids=_ids(CONFIG_MAPS))
def test_config_map_is_well_formed(config_map: crd.Document) -> None:
    assert config_map["metadata"].get("namespace"), "a ConfigMap lives in the namespace of what reads it"
    data = config_map.get("data") or {}
    assert data, "an empty ConfigMap configures nothing"
    for key, value in data.items():
        # An unquoted number or boolean here is rejected by the API server.
        assert isinstance(value, str), f"data.{key} is not a string: {value!r}"


def test_broker_config_is_a_config_map_defined_here() -> None:
    defined = {(_namespace(c), c["metadata"]["name"]) for c in CONFIG_MAPS}
    for broker in _of(BROKER):
        config = broker["spec"].get("config")
        if config is None:
            continue
        assert (config["apiVersion"], config["kind"]) == CONFIG_MAP
        assert (config.get("namespace", _namespace(broker)), config["name"]) in defined, _label(broker)


def test_kafka_bootstrap_is_the_same_everywhere() -> None:
    shop_config = crd.load_documents(KNATIVE / "config" / "shop-config.yaml")[0]
    expected = shop_config["data"]["kafka.bootstrap"]
    for source in _of(KAFKA_SOURCE):
        assert source["spec"]["bootstrapServers"] == [expected], _label(source)
    for config_map in CONFIG_MAPS:
        if "bootstrap.servers" in config_map.get("data", {}):
            assert config_map["data"]["bootstrap.servers"] == expected, _label(config_map)


# --- Triggers against the declared event types -----------------------------------------------

TRIGGERS = _of(TRIGGER)


def test_filter_walk_reads_nested_dialects() -> None:
    expression = {
        "all": [
            {"any": [{"exact": {"type": "a"}}, {"prefix": {"type": "b"}}]},
            {"not": {"exact": {"type": "c", "source": "/x"}}},
            {"exact": {"source": "/only-source"}},
        ]
    }
    assert list(_filter_mentions(expression)) == [("exact", "a", True), ("prefix", "b", True), ("exact", "c", False)]
    with pytest.raises(AssertionError, match="cesql"):
        list(_filter_mentions({"cesql": "type = 'a'"}))


@pytest.mark.parametrize("trigger", TRIGGERS, ids=_ids(TRIGGERS))
def test_trigger_filter_types_are_declared(trigger: crd.Document) -> None:
    mentions = _trigger_mentions(trigger)
    assert mentions, "a Trigger without a type filter would hand its subscriber every event"
    for dialect, value, _ in mentions:
        if dialect == "exact":
            assert value in events.EVENT_TYPES, f"{value!r} is not declared in functions/shared/events.py"
        else:
            assert _types_matching(dialect, value), f"{dialect} {value!r} matches no declared type"


def test_every_event_type_is_consumed_or_deliberately_not() -> None:
    consumed = set().union(*(_consumed_types(trigger) for trigger in TRIGGERS))
    assert UNCONSUMED_TYPES <= events.EVENT_TYPES
    assert events.EVENT_TYPES - consumed == UNCONSUMED_TYPES, (
        f"without a Trigger: {sorted(events.EVENT_TYPES - consumed)}; allowed: {sorted(UNCONSUMED_TYPES)}"
    )


@pytest.mark.parametrize("trigger", TRIGGERS, ids=_ids(TRIGGERS))
def test_trigger_filters_agree_with_the_local_runtime(trigger: crd.Document) -> None:
    if _filtered_attributes(trigger) != {"type"}:
        pytest.skip("filters on more than the type: a probe event carrying only a type says nothing")
    loaded = {t.name: t for t in local_manifests.topology().triggers}[trigger["metadata"]["name"]]
    for event_type in sorted(events.EVENT_TYPES):
        probe = CloudEvent({"type": event_type, "source": "/probe"}, None)
        assert loaded.matches(probe) == (event_type in _consumed_types(trigger)), event_type


def test_trigger_names_an_existing_broker() -> None:
    brokers = {(_namespace(b), b["metadata"]["name"]) for b in _of(BROKER)}
    for trigger in TRIGGERS:
        assert (_namespace(trigger), trigger["spec"]["broker"]) in brokers, _label(trigger)


# --- destinations against knative/ -------------------------------------------------------------


def test_every_service_ref_names_a_knative_service() -> None:
    refs = [(document, where, ref) for _, document in _located() for where, ref in _refs(document.get("spec", {}))]
    assert refs
    for document, where, ref in refs:
        if ref["kind"] != "Service":
            continue
        assert ref["apiVersion"] == SERVICE[0], f"{_label(document)} {where}: not a Knative Service"
        assert _ref_target(document, ref) in _services(), (
            f"{_label(document)} {where}: no Knative Service {ref['name']} under knative/services/"
        )


def test_every_broker_ref_names_a_broker() -> None:
    brokers = {(_namespace(b), b["metadata"]["name"]) for b in _of(BROKER)}
    for _, document in _located():
        for where, ref in _refs(document.get("spec", {})):
            if ref["kind"] == "Broker":
                assert (ref["apiVersion"], ref["kind"]) == BROKER
                assert _ref_target(document, ref) in brokers, f"{_label(document)} {where}"


def test_kafka_source_topics_match_the_kafka_topics_and_the_code() -> None:
    sources = _of(KAFKA_SOURCE)
    assert sources
    listed = [topic for source in sources for topic in source["spec"]["topics"]]
    assert len(listed) == len(set(listed)), f"a topic is consumed twice: {listed}"
    assert set(listed) == {topic["metadata"]["name"] for topic in TOPICS}
    assert set(listed) == set(events.TOPIC_BY_TYPE.values())


PINGS = _of(PING_SOURCE)


@pytest.mark.parametrize("ping", PINGS, ids=_ids(PINGS))
def test_ping_source_sink_is_a_cloudevent_function(ping: crd.Document) -> None:
    ref = ping["spec"]["sink"]["ref"]
    service = _service(*_ref_target(ping, ref))
    assert _env_value(service, "FUNCTION_SIGNATURE_TYPE") == "cloudevent"


@pytest.mark.parametrize("ping", PINGS, ids=_ids(PINGS))
def test_ping_schedule_is_a_valid_cron(ping: crd.Document) -> None:
    schedule = ping["spec"]["schedule"]
    after = datetime(2026, 1, 1, tzinfo=UTC)
    assert local_manifests.next_fire(schedule, after) > after, schedule
    if "timezone" in ping["spec"]:
        ZoneInfo(ping["spec"]["timezone"])


def test_cron_check_bites() -> None:
    for schedule in ("* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *"):
        with pytest.raises(ValueError):
            local_manifests.next_fire(schedule, datetime(2026, 1, 1, tzinfo=UTC))


def test_outbox_relays_sweep_the_outbox_their_ping_names() -> None:
    pinged: set[tuple[str, str]] = set()
    for ping in PINGS:
        target = _ref_target(ping, ping["spec"]["sink"]["ref"])
        service = _service(*target)
        if _env_value(service, "FUNCTION_TARGET") != "outbox_relay":
            continue
        pinged.add(target)
        assert json.loads(ping["spec"]["data"]).get("outbox") == _env_value(service, "OUTBOX_NAME"), _label(ping)
    relays = {key for key, service in _services().items() if _env_value(service, "FUNCTION_TARGET") == "outbox_relay"}
    assert relays and relays == pinged, f"outbox relays no PingSource drives: {sorted(relays - pinged)}"


def _cloudevent_consumers() -> dict[tuple[str, str], str]:
    """Services Eventing POSTs CloudEvents to (Trigger subscribers, dead-letter sinks) -> why."""
    found: dict[tuple[str, str], str] = {}
    for role in ("subscriber", "deadLetterSink"):
        for document, ref in _service_refs(role):
            found[_ref_target(document, ref)] = f"{role} of {_label(document)}"
    return found


def _calls_is_cloud_event(source: Path, target: str) -> bool:
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == target)
    return any(
        isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "is_cloud_event")
            or (isinstance(node.func, ast.Name) and node.func.id == "is_cloud_event")
        )
        for node in ast.walk(function)
    )


def test_cloudevent_consumers_take_cloudevents() -> None:
    consumers = _cloudevent_consumers()
    assert consumers
    for (namespace, name), why in consumers.items():
        service = _service(namespace, name)
        signature = _env_value(service, "FUNCTION_SIGNATURE_TYPE")
        if signature == "cloudevent":
            continue
        assert name in HTTP_CLOUDEVENT_CONSUMERS, f"{name} ({why}) is an {signature} function, not cloudevent"
        source = crd.REPO_ROOT / str(_env_value(service, "FUNCTION_SOURCE"))
        target = str(_env_value(service, "FUNCTION_TARGET"))
        assert _calls_is_cloud_event(source, target), f"{name}: {target} never checks web.is_cloud_event"


def test_http_cloudevent_allowance_is_not_stale() -> None:
    consumers = {name for _, name in _cloudevent_consumers()}
    for name in HTTP_CLOUDEVENT_CONSUMERS:
        assert name in consumers, f"{name} receives no CloudEvents any more: drop it from the set"
        assert _env_value(_service("shop", name), "FUNCTION_SIGNATURE_TYPE") == "http"


def test_dead_letter_sinks_stay_warm() -> None:
    sinks = _service_refs("deadLetterSink")
    assert sinks, "undeliverable events need somewhere to go"
    for document, ref in sinks:
        annotations = _service(*_ref_target(document, ref))["spec"]["template"]["metadata"]["annotations"]
        assert int(annotations["autoscaling.knative.dev/min-scale"]) >= 1, f"{ref['name']} ({_label(document)})"


@pytest.mark.parametrize(
    ("document", "delivery"), _deliveries(), ids=[_label(document) for document, _ in _deliveries()]
)
def test_delivery_spec_is_understood(document: crd.Document, delivery: Mapping[str, Any]) -> None:
    assert isinstance(delivery.get("retry", 0), int) and delivery.get("retry", 0) >= 0
    assert delivery.get("backoffPolicy", "exponential") in ("linear", "exponential")
    for field in ("backoffDelay", "timeout"):
        if field in delivery:
            assert local_manifests.iso_seconds(delivery[field]) > 0, field


# --- the local runtime reads the same files ----------------------------------------------------


def test_local_runtime_loads_the_same_topology() -> None:
    topology = local_manifests.topology()
    assert sorted(topology.brokers) == sorted(f"{_namespace(b)}/{b['metadata']['name']}" for b in _of(BROKER))
    assert sorted(t.name for t in topology.triggers) == sorted(t["metadata"]["name"] for t in TRIGGERS)
    assert sorted(s.name for s in topology.kafka_sources) == sorted(s["metadata"]["name"] for s in _of(KAFKA_SOURCE))
    assert sorted(p.name for p in topology.ping_sources) == sorted(p["metadata"]["name"] for p in PINGS)
    assert topology.topics == {t["metadata"]["name"]: t["spec"]["partitions"] for t in TOPICS}


def test_kustomization_lists_every_manifest() -> None:
    # The cluster overlays (cluster/) build on it.
    assert KUSTOMIZATION.is_file(), "eventing/kustomization.yaml is missing"
    (kustomization,) = crd.load_documents(KUSTOMIZATION)
    # No `namespace:` override: the KafkaTopics live in Strimzi's namespace, the rest in shop.
    assert "namespace" not in kustomization
    listed = [(EVENTING / resource).resolve() for resource in kustomization.get("resources", [])]
    assert sorted(listed) == [path.resolve() for path in EVENTING_FILES]
    rendered = subprocess.run(
        [tooling.kubectl(), "kustomize", str(EVENTING)], capture_output=True, text=True, timeout=120, check=False
    )
    assert rendered.returncode == 0, rendered.stderr

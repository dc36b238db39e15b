"""The shop namespace's NetworkPolicies (cluster/network/) as a matrix: each flow the architecture needs is
allowed, each other one tried here is refused, judged by a NetworkPolicy evaluator (netpol.py) over the
policies the production overlay renders, with pods labelled as Knative and the operators label them."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import pytest

from local import manifests

from . import crd, netpol, tooling

NETWORK = crd.REPO_ROOT / "cluster" / "network"
PRODUCTION = crd.REPO_ROOT / "cluster" / "production"
EVENTING = crd.REPO_ROOT / "eventing"

# The functions that call other services (through the ingress's cluster-local listener), and why:
# the gateway routes every /api request; order-place asks product-get for prices and
# inventory-reserve/-release for stock; inventory-expire asks order-get about stale reservations;
# inventory-restock asks product-get whether a SKU it has no stock for is a product; dead-letter
# replays an event to where its delivery failed. No other function calls a service.
CALLERS = frozenset({"gateway", "order-place", "inventory-expire", "inventory-restock", "dead-letter"})
# The one function that calls the Kubernetes API (it lists the namespace's Knative Services).
API_CLIENTS = frozenset({"registry-sync"})
# Settings whose presence in a Knative Service's env means it talks to that server.
STORE_SETTINGS = {
    "postgres": "DATABASE_URL",
    "mongodb": "MONGODB_URI",
    "kafka-broker": "KAFKA_BOOTSTRAP_SERVERS",
    "smtp-relay": "SMTP_URL",
    "otel-collector": "OTEL_EXPORTER_OTLP_ENDPOINT",
}
STORE_PORTS = {"postgres": 5432, "mongodb": 27017, "kafka-broker": 9092, "smtp-relay": 587, "otel-collector": 4318}

NAMESPACES = (
    "shop",
    "default",
    "kube-system",
    "kourier-system",
    "istio-system",
    "knative-serving",
    "knative-eventing",
    "kafka",
    "observability",
    "cnpg-system",
)
# Knative's queue-proxy ports and the function's own, as named on a revision's pod.
KNATIVE_PORTS = {"user-port": 8080, "queue-port": 8012, "http-autometric": 9090, "http-usermetric": 9091}


# --- the world: policies and endpoints -----------------------------------------------------------


@cache
def _rendered() -> tuple[dict[str, Any], ...]:
    return tooling.kustomize(PRODUCTION)


def _template_labels(kind: str, name: str) -> dict[str, str]:
    """The pod labels a rendered workload (Deployment, Job) gives its pods."""
    for document in _rendered():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return dict(document["spec"]["template"]["metadata"]["labels"])
    raise AssertionError(f"no {kind} {name} in the production render")


def _mongodb_pod_labels() -> dict[str, str]:
    (mongodb,) = [d for d in _rendered() if d["kind"] == "MongoDBCommunity"]
    labels = dict(mongodb["spec"]["statefulSet"]["spec"]["template"]["metadata"]["labels"])
    # The operator's own label on its pods.
    return {**labels, "app": f"{mongodb['metadata']['name']}-svc"}


@cache
def services() -> dict[str, manifests.KnativeService]:
    return manifests.services()


@cache
def world() -> dict[str, netpol.Endpoint]:
    """Every endpoint the matrix names, with the labels its pods really carry."""
    addresses = (f"10.244.{i // 250}.{i % 250 + 2}" for i in itertools.count())
    found: dict[str, netpol.Endpoint] = {}

    def pod(name: str, namespace: str, labels: Mapping[str, str], **ports: int) -> None:
        found[name] = netpol.Endpoint(name, next(addresses), namespace, dict(labels), ports)

    for name in services():
        labels = {"serving.knative.dev/service": name, "serving.knative.dev/revision": f"{name}-00001"}
        found[name] = netpol.Endpoint(name, next(addresses), "shop", labels, KNATIVE_PORTS)
    postgres = {"cnpg.io/cluster": "shop-postgres", "cnpg.io/podRole": "instance"}
    pod("postgres", "shop", {**postgres, "cnpg.io/instanceRole": "primary"})
    pod("postgres-replica", "shop", {**postgres, "cnpg.io/instanceRole": "replica"})
    pod("mongodb", "shop", _mongodb_pod_labels())
    pod("mongodb-secondary", "shop", _mongodb_pod_labels())
    pod("keycloak", "shop", _template_labels("Deployment", "keycloak"))
    for job in ("migrate-orders", "migrate-inventory", "migrate-catalog"):
        pod(job, "shop", _template_labels("Job", job))
    pod("stray-pod-in-shop", "shop", {"run": "debug"})
    pod("intruder", "default", {"app": "intruder"})
    pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
    pod("kourier", "kourier-system", {"app": "3scale-kourier-gateway"})
    pod("istio-ingress", "istio-system", {"istio": "ingressgateway", "app": "istio-ingressgateway"})
    pod("activator", "knative-serving", {"app": "activator"})
    pod("autoscaler", "knative-serving", {"app": "autoscaler"})
    pod("broker-dispatcher", "knative-eventing", {"app": "kafka-broker-dispatcher"})
    pod("broker-receiver", "knative-eventing", {"app": "kafka-broker-receiver"})
    pod("source-dispatcher", "knative-eventing", {"app": "kafka-source-dispatcher"})
    pod("ping-adapter", "knative-eventing", {"app": "pingsource-mt-adapter"})
    pod("kafka-broker", "kafka", {"strimzi.io/cluster": "shop-kafka", "strimzi.io/broker-role": "true"})
    pod("other-kafka", "kafka", {"strimzi.io/cluster": "someone-elses", "strimzi.io/broker-role": "true"})
    pod("prometheus", "observability", _template_labels("Deployment", "prometheus"))
    pod("otel-collector", "observability", _template_labels("Deployment", "otel-collector"))
    pod("grafana", "observability", _template_labels("Deployment", "grafana"))
    pod("cnpg-operator", "cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"})
    # Outside the pod network: kind's API server, a mail relay, anything else on the internet.
    found["kubernetes-api"] = netpol.Endpoint("kubernetes-api", "172.18.0.2")
    found["smtp-relay"] = netpol.Endpoint("smtp-relay", "203.0.113.25")
    found["website"] = netpol.Endpoint("website", "198.51.100.7")
    return found


@cache
def evaluator() -> netpol.Evaluator:
    labels = {namespace: {"kubernetes.io/metadata.name": namespace} for namespace in NAMESPACES}
    return netpol.Evaluator(_rendered(), labels)


def allowed(source: str, destination: str, port: int, protocol: str = "TCP") -> bool:
    endpoints = world()
    return evaluator().allows(endpoints[source], endpoints[destination], port, protocol)


# --- the matrix ---------------------------------------------------------------------------------

ALLOWED = [
    # the ingress to the gateway (queue-proxy port), and the activator while it scales from zero
    ("kourier", "gateway", 8012),
    ("istio-ingress", "gateway", 8012),
    ("activator", "gateway", 8012),
    # the cluster-local listener and the activator to the functions
    ("kourier", "product-get", 8012),
    ("istio-ingress", "inventory-reserve", 8012),
    ("activator", "order-place", 8012),
    ("autoscaler", "product-list", 9090),
    # the gateway to the functions, order-place to product-get and inventory-*, through the listener
    ("gateway", "kourier", 8081),
    ("gateway", "istio-ingress", 8081),
    ("order-place", "kourier", 8081),
    ("inventory-expire", "kourier", 8081),
    ("inventory-restock", "istio-ingress", 8081),
    ("dead-letter", "kourier", 8081),
    ("dead-letter", "broker-receiver", 8080),
    # Broker and Trigger dispatchers to the subscribers
    ("broker-dispatcher", "inventory-track", 8012),
    ("broker-dispatcher", "notification-send", 8012),
    ("source-dispatcher", "dead-letter", 8012),
    ("ping-adapter", "outbox-relay-orders", 8012),
    ("ping-adapter", "registry-sync", 8012),
    # each function to its own store, Kafka, SMTP, the collector, the API
    ("order-place", "postgres", 5432),
    ("registry", "postgres", 5432),
    ("product-get", "mongodb", 27017),
    ("order-place", "kafka-broker", 9092),
    ("outbox-relay-catalog", "kafka-broker", 9092),
    ("notification-send", "smtp-relay", 587),
    ("notification-send", "smtp-relay", 465),
    ("product-list", "otel-collector", 4318),
    ("registry-sync", "kubernetes-api", 6443),
    ("product-get", "kube-dns", 53, "UDP"),
    ("stray-pod-in-shop", "kube-dns", 53, "UDP"),
    # Prometheus scrapes the function's own port
    ("prometheus", "order-get", 8080),
    # identity
    ("gateway", "keycloak", 8080),
    # the stores' own traffic and the migrations
    ("migrate-orders", "postgres", 5432),
    ("migrate-catalog", "mongodb", 27017),
    ("postgres-replica", "postgres", 5432),
    ("postgres", "postgres-replica", 8000),
    ("cnpg-operator", "postgres", 8000),
    ("postgres", "kubernetes-api", 443),
    ("mongodb-secondary", "mongodb", 27017),
    ("mongodb", "kubernetes-api", 6443),
]

FORBIDDEN = [
    # nothing from other namespaces reaches the shop's pods straight
    ("intruder", "gateway", 8012),
    ("intruder", "product-get", 8012),
    ("intruder", "postgres", 5432),
    ("intruder", "mongodb", 27017),
    ("intruder", "keycloak", 8080),
    # nor a pod started in shop by hand
    ("stray-pod-in-shop", "postgres", 5432),
    ("stray-pod-in-shop", "kourier", 8081),
    ("stray-pod-in-shop", "kafka-broker", 9092),
    # the ingress only on the queue-proxy port, never around it to the function's own port
    ("kourier", "gateway", 8080),
    ("kourier", "postgres", 5432),
    # no pod calls another pod straight, around Knative's data path
    ("gateway", "product-get", 8012),
    ("order-place", "product-get", 8012),
    ("order-place", "inventory-reserve", 8080),
    # functions that call nobody cannot reach the cluster-local listener
    ("product-list", "kourier", 8081),
    ("notification-send", "kourier", 8081),
    ("inventory-reserve", "istio-ingress", 8081),
    # each function to its own store only
    ("gateway", "postgres", 5432),
    ("gateway", "mongodb", 27017),
    ("product-get", "postgres", 5432),
    ("order-get", "mongodb", 27017),
    ("migrate-orders", "mongodb", 27017),
    ("migrate-catalog", "postgres", 5432),
    # only the publishers to Kafka, and only the shop's Kafka cluster
    ("gateway", "kafka-broker", 9092),
    ("order-get", "kafka-broker", 9092),
    ("order-place", "other-kafka", 9092),
    # only notification-send mails; nothing browses the internet
    ("order-place", "smtp-relay", 587),
    ("notification-send", "website", 443),
    ("product-get", "website", 443),
    ("registry-sync", "website", 80),
    # only registry-sync (and the stores' agents) talk to the Kubernetes API
    ("product-get", "kubernetes-api", 443),
    ("gateway", "kubernetes-api", 6443),
    # the dispatchers deliver to subscribers only
    ("broker-dispatcher", "product-get", 8012),
    ("broker-dispatcher", "gateway", 8012),
    ("ping-adapter", "order-place", 8012),
    # Prometheus scrapes the function's port, nothing else; Grafana scrapes nothing
    ("prometheus", "order-get", 8012),
    ("prometheus", "postgres", 5432),
    ("grafana", "order-get", 8080),
    # the autoscaler reads queue-proxy metrics only
    ("autoscaler", "product-list", 8080),
    # Keycloak is the gateway's alone; the stores never send anywhere unexpected
    ("order-place", "keycloak", 8080),
    ("postgres", "smtp-relay", 587),
    ("mongodb", "kafka-broker", 9092),
    ("cnpg-operator", "postgres", 5432),
]


def _ids(flows: list[tuple[Any, ...]]) -> list[str]:
    return [f"{flow[0]}->{flow[1]}:{flow[2]}" for flow in flows]


@pytest.mark.parametrize("flow", ALLOWED, ids=_ids(ALLOWED))
def test_architecture_flow_is_allowed(flow: tuple[Any, ...]) -> None:
    assert allowed(*flow), f"{flow} should be allowed"


@pytest.mark.parametrize("flow", FORBIDDEN, ids=_ids(FORBIDDEN))
def test_other_flow_is_refused(flow: tuple[Any, ...]) -> None:
    assert not allowed(*flow), f"{flow} should be refused"


def test_every_shop_pod_is_isolated_both_ways() -> None:
    shop = [endpoint for endpoint in world().values() if endpoint.namespace == "shop"]
    assert len(shop) > len(services())
    for endpoint in shop:
        assert evaluator().isolated(endpoint, "Ingress") and evaluator().isolated(endpoint, "Egress"), endpoint.name


# --- the policies agree with the manifests ------------------------------------------------------


def _env_names(name: str) -> set[str]:
    return {var.name for var in services()[name].env}


@pytest.mark.parametrize("store", sorted(STORE_SETTINGS))
def test_a_function_reaches_a_server_exactly_when_its_manifest_names_it(store: str) -> None:
    setting, port = STORE_SETTINGS[store], STORE_PORTS[store]
    wrong = {
        name: setting in _env_names(name)
        for name in services()
        if allowed(name, store, port) != (setting in _env_names(name))
    }
    assert not wrong, f"{store}: function -> reads {setting}, but the policies say the opposite: {wrong}"


def test_only_the_callers_reach_the_cluster_local_listener() -> None:
    reaching = {name for name in services() if allowed(name, "kourier", 8081)}
    assert reaching == CALLERS
    assert reaching == {name for name in services() if allowed(name, "istio-ingress", 8081)}


def test_only_registry_sync_reaches_the_kubernetes_api() -> None:
    assert {name for name in services() if allowed(name, "kubernetes-api", 443)} == API_CLIENTS


def _eventing_sinks() -> set[str]:
    """Every Knative Service eventing/ delivers to: subscribers, sinks, dead-letter sinks."""

    def refs(node: Any) -> Iterator[Mapping[str, Any]]:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "ref" and isinstance(value, Mapping):
                    yield value
                yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    sinks: set[str] = set()
    for path in sorted(EVENTING.glob("*.yaml")):
        for document in crd.load_documents(path):
            sinks.update(ref["name"] for ref in refs(document.get("spec", {})) if ref.get("kind") == "Service")
    return sinks


def test_the_dispatchers_reach_exactly_eventings_subscribers() -> None:
    sinks = _eventing_sinks()
    assert {"inventory-track", "notification-send", "dead-letter", "registry-sync"} <= sinks
    for dispatcher in ("broker-dispatcher", "source-dispatcher", "ping-adapter"):
        reaching = {name for name in services() if allowed(dispatcher, name, 8012)}
        assert reaching == sinks, dispatcher


def test_every_function_is_reachable_through_knatives_data_path() -> None:
    for name in services():
        assert allowed("kourier", name, 8012) and allowed("activator", name, 8012), name
        assert allowed("autoscaler", name, 9090) and allowed("prometheus", name, 8080), name


def test_every_policy_opens_a_flow_of_the_matrix() -> None:
    """Without any one policy some allowed flow is refused: no policy is dead, the matrix covers them all."""
    policies = [d for d in _rendered() if d["kind"] == "NetworkPolicy"]
    labels = {namespace: {"kubernetes.io/metadata.name": namespace} for namespace in NAMESPACES}
    endpoints = world()
    unused = []
    for policy in policies:
        if not policy["spec"].get("ingress") and not policy["spec"].get("egress"):
            continue  # default deny opens nothing
        others = netpol.Evaluator([p for p in policies if p is not policy], labels)
        if all(others.allows(endpoints[f[0]], endpoints[f[1]], *f[2:]) for f in ALLOWED):
            unused.append(policy["metadata"]["name"])
    assert not unused, f"policies no flow of ALLOWED needs: {unused}"


def test_every_policy_is_documented_by_a_comment() -> None:
    for path in sorted(NETWORK.glob("[0-9]*.yaml")):
        for index, chunk in enumerate(path.read_text().split("\n---\n")):
            if "kind: NetworkPolicy" in chunk:
                before = chunk.split("apiVersion:")[0]
                assert any(line.startswith("#") for line in before.splitlines()), f"{path.name}, document {index}"


def test_the_production_and_dev_overlays_deploy_the_same_policies() -> None:
    def policies(documents: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
        return sorted((d for d in documents if d["kind"] == "NetworkPolicy"), key=lambda d: d["metadata"]["name"])

    dev = tooling.kustomize(crd.REPO_ROOT / "cluster" / "dev")
    assert policies(dev) == policies(_rendered()) and len(policies(dev)) >= 10


# --- the evaluator itself --------------------------------------------------------------------------


def _policy(spec: dict[str, Any], namespace: str = "a") -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": namespace}, "spec": spec}


EVALUATOR_NAMESPACES = {
    "a": {"kubernetes.io/metadata.name": "a", "team": "x"},
    "b": {"kubernetes.io/metadata.name": "b"},
}
POD_A = netpol.Endpoint("pa", "10.0.0.1", "a", {"app": "web"}, {"http": 8080})
POD_B = netpol.Endpoint("pb", "10.0.0.2", "b", {"app": "web"})
OUTSIDE = netpol.Endpoint("out", "192.0.2.1")


def test_evaluator_without_policies_allows_everything() -> None:
    assert netpol.Evaluator([], EVALUATOR_NAMESPACES).allows(POD_B, POD_A, 1)


def test_evaluator_pod_selector_alone_means_the_policys_namespace() -> None:
    spec = {"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}
    evaluator = netpol.Evaluator([_policy(spec)], EVALUATOR_NAMESPACES)
    same_namespace = netpol.Endpoint("pa2", "10.0.0.3", "a", {"app": "web"})
    assert evaluator.allows(same_namespace, POD_A, 80)
    assert not evaluator.allows(POD_B, POD_A, 80)  # same labels, other namespace


def test_evaluator_namespace_and_pod_selector_in_one_peer_both_apply() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"app": "db"}}}
    spec = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [peer]}]}
    evaluator = netpol.Evaluator([_policy(spec, "b")], EVALUATOR_NAMESPACES)
    assert evaluator.allows(POD_B, netpol.Endpoint("db", "10.0.0.9", "a", {"app": "db"}), 5432)
    assert not evaluator.allows(POD_B, POD_A, 5432)  # right namespace, wrong pod


def test_evaluator_ports_named_numbered_and_ranged() -> None:
    spec = {
        "podSelector": {},
        "ingress": [{"ports": [{"port": "http"}, {"port": 9000, "endPort": 9010}, {"protocol": "UDP", "port": 53}]}],
    }
    evaluator = netpol.Evaluator([_policy(spec)], EVALUATOR_NAMESPACES)
    assert evaluator.allows(POD_B, POD_A, 8080)
    assert evaluator.allows(POD_B, POD_A, 9005)
    assert not evaluator.allows(POD_B, POD_A, 9011)
    assert evaluator.allows(POD_B, POD_A, 53, "UDP") and not evaluator.allows(POD_B, POD_A, 53)


def test_evaluator_ip_blocks_with_exceptions() -> None:
    block = {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}
    spec = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [block]}]}
    evaluator = netpol.Evaluator([_policy(spec)], EVALUATOR_NAMESPACES)
    assert evaluator.allows(POD_A, OUTSIDE, 443)
    assert not evaluator.allows(POD_A, netpol.Endpoint("far", "192.0.2.200"), 443)
    assert not evaluator.allows(POD_A, POD_B, 443)  # a pod outside the block


def test_evaluator_expressions_and_policy_types() -> None:
    selector = {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}
    # No policyTypes and no egress rules: the policy isolates ingress only.
    evaluator = netpol.Evaluator([_policy({"podSelector": selector})], EVALUATOR_NAMESPACES)
    other = netpol.Endpoint("job", "10.0.0.5", "a", {})
    assert not evaluator.allows(POD_B, other, 80)  # selected (no app label), isolated, no rule
    assert evaluator.allows(POD_B, POD_A, 80)  # app=web is not selected
    assert evaluator.allows(other, POD_B, 80)  # egress is not isolated
    assert netpol.selects({"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]}, {})
    with pytest.raises(ValueError, match="unknown selector operator"):
        netpol.selects({"matchExpressions": [{"key": "k", "operator": "Near"}]}, {})

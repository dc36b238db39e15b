"""cluster/: every overlay and bundle renders with kustomize, every rendered document passes its schema
strictly, and the overlays, the operators' resources and the functions' Secrets agree with each other."""

from __future__ import annotations

import copy
import os
import re
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions import migrate
from local import manifests

from . import crd, strict, tooling

CLUSTER = crd.REPO_ROOT / "cluster"
OVERLAYS = ("dev", "production")
# Every folder of cluster/ that renders on its own (the base is only ever deployed through an overlay,
# but renders too; the auth component is rendered through an overlay below).
BUNDLES = (
    "base",
    "dev",
    "production",
    "platform/kafka",
    "platform/postgres",
    "platform/mongodb",
    "network",
    "migrate",
)
FUNCTIONS_IMAGE = "ghcr.io/shop-on-knative/functions"
SECRETS_EXAMPLE = crd.REPO_ROOT / "knative" / "config" / "secrets.example.yaml"

Document = dict[str, Any]


@cache
def _services() -> dict[str, manifests.KnativeService]:
    return manifests.services()


def render(folder: str) -> tuple[Document, ...]:
    return tooling.kustomize(CLUSTER / folder)


def of_kind(documents: tuple[Document, ...], kind: str) -> list[Document]:
    return [d for d in documents if d["kind"] == kind]


def one(documents: tuple[Document, ...], kind: str, name: str | None = None) -> Document:
    found = [d for d in of_kind(documents, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def knative_services(documents: tuple[Document, ...]) -> dict[str, Document]:
    return {d["metadata"]["name"]: d for d in documents if d["apiVersion"] == "serving.knative.dev/v1"}


def annotation(service: Document, key: str) -> str:
    value: str = service["spec"]["template"]["metadata"]["annotations"][f"autoscaling.knative.dev/{key}"]
    return value


def container(workload: Document) -> dict[str, Any]:
    (first, *_) = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = first
    return result


@pytest.fixture(scope="module")
def crds() -> None:
    for env in crd.CRD_FOLDERS:
        if crd.crds_dir(env) is None:
            tooling.unavailable(f"CRDs not found at {crd.crds_location(env)}; set {env}")


# --- rendering and strict validation ---------------------------------------------------------------


@pytest.mark.parametrize("folder", BUNDLES)
def test_bundle_renders(folder: str) -> None:
    documents = render(folder)
    assert documents, folder
    identities = Counter(
        (d["apiVersion"], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in documents
    )
    assert not [identity for identity, count in identities.items() if count > 1]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_document_validates_strictly(overlay: str, crds: None) -> None:
    problems = {
        f"{d['kind']}/{d['metadata'].get('namespace', '')}/{d['metadata']['name']}": errors
        for d in render(overlay)
        if (errors := strict.validate(d))
    }
    assert not problems, yaml.safe_dump(problems, sort_keys=True)


def test_every_overlay_holds_every_kind_of_the_platform() -> None:
    for overlay in OVERLAYS:
        kinds = {d["kind"] for d in render(overlay)}
        assert {
            "Kafka",
            "KafkaNodePool",
            "KafkaTopic",
            "Cluster",
            "Database",
            "MongoDBCommunity",
            "NetworkPolicy",
            "Job",
            "Service",
            "Broker",
            "Trigger",
            "KafkaSource",
            "PingSource",
            "Deployment",
        } <= kinds, overlay
        # Secrets come from a secret manager (or deploy.py --dev-secrets), never from a render.
        assert "Secret" not in kinds, overlay


Mutation = Callable[[Document], object]


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [
        ("NetworkPolicy", lambda d: d["spec"].update(podSelectr={}), "'podSelectr' was unexpected"),
        ("Job", lambda d: d["spec"].update(backoffLimit="12"), "'12' is not of type 'integer'"),
        ("PodDisruptionBudget", lambda d: d["metadata"].update(labelz={}), "'labelz' was unexpected"),
        ("Kafka", lambda d: d["spec"]["kafka"]["listeners"][0].update(tls="no"), "tls: expected boolean"),
        ("KafkaNodePool", lambda d: d["spec"]["storage"].update(type="disk"), "'disk' is not one of"),
        ("Cluster", lambda d: d["spec"].update(instances="3"), "instances: expected integer"),
        ("Database", lambda d: d["spec"].pop("owner"), "'owner' is required"),
        ("MongoDBCommunity", lambda d: d["spec"].update(member=3), "spec.member: unknown field"),
        ("Deployment", lambda d: d["spec"].update(replica=1), "'replica' was unexpected"),
    ],
    ids=["networkpolicy", "job", "pdb", "kafka", "nodepool", "cluster", "database", "mongodb", "deployment"],
)
def test_strict_validation_bites(kind: str, mutate: Mutation, expected: str, crds: None) -> None:
    document = copy.deepcopy(of_kind(render("production"), kind)[0])
    assert strict.validate(document) == []
    mutate(document)
    errors = strict.validate(document)
    assert any(expected in error for error in errors), errors


def test_a_kind_no_schema_knows_is_an_error(crds: None) -> None:
    errors = strict.validate({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "x"}})
    assert len(errors) == 1 and "neither a kind of the CRD folders nor of Kubernetes" in errors[0]


def test_the_kafka_auth_component_renders_and_validates(tmp_path: Path, crds: None) -> None:
    overlay = tmp_path / "with-auth"
    overlay.mkdir()
    # kustomize takes relative paths only.
    kafka = os.path.relpath(CLUSTER / "platform" / "kafka", overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{kafka}]\ncomponents: [{kafka}/auth]\n"
    )
    documents = tooling.kustomize(overlay)
    cluster = one(documents, "Kafka")
    assert cluster["spec"]["kafka"]["listeners"][0]["authentication"] == {"type": "scram-sha-512"}
    assert cluster["spec"]["kafka"]["authorization"] == {"type": "simple"}
    users = {d["metadata"]["name"]: d for d in of_kind(documents, "KafkaUser")}
    # One user per client: each domain that publishes, the KafkaSource, the Kafka Broker.
    assert set(users) == {
        "shop-catalog",
        "shop-inventory",
        "shop-orders",
        "knative-shop-events",
        "knative-kafka-broker",
    }
    for name in ("catalog", "inventory", "orders"):
        (acl,) = users[f"shop-{name}"]["spec"]["authorization"]["acls"]
        assert acl["resource"] == {"type": "topic", "name": f"shop.{name}", "patternType": "literal"}
        assert "Read" not in acl["operations"]
    assert all(strict.validate(d) == [] for d in documents)


# --- dev: small, one of each, scale to zero ----------------------------------------------------------


def test_dev_runs_one_of_everything_stateful() -> None:
    dev = render("dev")
    assert one(dev, "KafkaNodePool")["spec"]["replicas"] == 1
    config = one(dev, "Kafka")["spec"]["kafka"]["config"]
    assert {key: value for key, value in config.items() if "replica" in key or "isr" in key} == {
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
    }
    assert {t["spec"]["replicas"] for t in of_kind(dev, "KafkaTopic")} == {1}
    assert one(dev, "ConfigMap", "shop-kafka-broker-config")["data"]["default.topic.replication.factor"] == "1"
    assert one(dev, "Cluster")["spec"]["instances"] == 1
    assert one(dev, "MongoDBCommunity")["spec"]["members"] == 1
    assert not of_kind(dev, "PodDisruptionBudget")


def test_dev_scales_every_function_to_zero_with_small_requests() -> None:
    services = knative_services(render("dev"))
    assert set(services) == set(_services())
    for name, service in services.items():
        assert annotation(service, "min-scale") == "0", name
        requests = container(service)["resources"]["requests"]
        assert requests == {"cpu": "10m", "memory": "64Mi"}, name
        # The limits stay the base's: a small request is not a small ceiling.
        assert container(service)["resources"]["limits"] == _base_limits(name), name


def _base_limits(name: str) -> dict[str, str]:
    limits: dict[str, str] = container(knative_services(render("base"))[name])["resources"]["limits"]
    return limits


def test_dev_runs_the_image_kind_loads() -> None:
    images = {
        container(d)["image"] for d in render("dev") if d["kind"] in ("Service", "Job") and "template" in d["spec"]
    }
    assert images == {"kind.local/shop-functions:dev"}


# --- production: three of each, budgets, a warm gateway, measured resources ---------------------------


def test_production_runs_three_of_everything_stateful_with_replication_three() -> None:
    production = render("production")
    pool = one(production, "KafkaNodePool")
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    config = one(production, "Kafka")["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["transaction.state.log.replication.factor"] == 3
    assert {t["spec"]["replicas"] for t in of_kind(production, "KafkaTopic")} == {3}
    assert one(production, "ConfigMap", "shop-kafka-broker-config")["data"]["default.topic.replication.factor"] == "3"
    assert one(production, "Cluster")["spec"]["instances"] == 3
    assert one(production, "MongoDBCommunity")["spec"]["members"] == 3


def test_production_has_a_disruption_budget_for_every_stateful_part() -> None:
    production = render("production")
    # Kafka and PostgreSQL: their operators make the budgets, switched on here.
    assert one(production, "Kafka")["spec"]["kafka"]["template"]["podDisruptionBudget"] == {"maxUnavailable": 1}
    assert one(production, "Cluster")["spec"]["enablePDB"] is True
    # MongoDB: a PodDisruptionBudget that selects the members' pods.
    (budget,) = of_kind(production, "PodDisruptionBudget")
    mongodb = one(production, "MongoDBCommunity")
    pod_labels = mongodb["spec"]["statefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert budget["metadata"]["namespace"] == mongodb["metadata"]["namespace"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_production_keeps_two_gateways_and_sizes_memory_from_the_bench() -> None:
    services = knative_services(render("production"))
    assert annotation(services["gateway"], "min-scale") == "2"
    assert int(annotation(services["gateway"], "max-scale")) >= 2
    for name, service in services.items():
        resources = container(service)["resources"]
        expected = ("128Mi", "384Mi") if name == "gateway" else ("96Mi", "256Mi")
        assert (resources["requests"]["memory"], resources["limits"]["memory"]) == expected, name
        if name != "gateway":
            # The functions' scaling is the base's: only the gateway changes.
            assert annotation(service, "min-scale") == annotation(knative_services(render("base"))[name], "min-scale")


def test_production_memory_request_covers_the_measured_idle_footprint() -> None:
    # The bench's idle figures (cluster/production/kustomization.yaml): PSS max 72 MB, RSS max 63 MB.
    measured_mib = 72 * 1000**2 / 1024**2
    for name, service in knative_services(render("production")).items():
        request = _mebibytes(container(service)["resources"]["requests"]["memory"])
        limit = _mebibytes(container(service)["resources"]["limits"]["memory"])
        assert measured_mib < request <= limit, name
        assert limit >= 3 * measured_mib, name


def _mebibytes(quantity: str) -> float:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, quantity
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


# --- the wiring: operators, Secrets, functions ----------------------------------------------------


def _secret_keys() -> dict[str, tuple[str, set[str]]]:
    """Secret name -> (type, keys) of knative/config/secrets.example.yaml."""
    return {
        d["metadata"]["name"]: (d.get("type", "Opaque"), set(d.get("stringData", {})))
        for d in crd.load_documents(SECRETS_EXAMPLE)
    }


def _domain_secret(domain: str) -> str:
    """The Secret the domain's functions read their DATABASE_URL from."""
    secrets = {
        var.secret[0]
        for service in _services().values()
        for var in service.env
        if var.name == "DATABASE_URL" and var.secret is not None
    }
    assert f"{domain}-db" in secrets, f"no function reads {domain}-db"
    return f"{domain}-db"


def test_postgres_has_one_database_and_role_per_domain_with_the_functions_secret() -> None:
    documents = render("production")
    cluster = one(documents, "Cluster")
    domains = set(migrate.domains())
    roles = {role["name"]: role for role in cluster["spec"]["managed"]["roles"]}
    assert set(roles) == domains
    databases = {d["spec"]["name"]: d for d in of_kind(documents, "Database")}
    assert set(databases) == domains
    secrets = _secret_keys()
    for domain in domains:
        assert databases[domain]["spec"]["owner"] == domain
        assert databases[domain]["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
        role = roles[domain]
        assert role["login"] is True and role["passwordSecret"]["name"] == _domain_secret(domain)
        kind, keys = secrets[_domain_secret(domain)]
        assert kind == "kubernetes.io/basic-auth" and {"username", "password", "url"} <= keys
    bootstrap = cluster["spec"]["bootstrap"]["initdb"]
    assert bootstrap["owner"] in domains and bootstrap["secret"]["name"] == _domain_secret(bootstrap["owner"])


def test_mongodb_user_takes_its_password_from_the_catalogs_secret() -> None:
    mongodb = one(render("production"), "MongoDBCommunity")
    (user,) = mongodb["spec"]["users"]
    catalog_secrets = {
        var.secret[0]
        for service in _services().values()
        for var in service.env
        if var.name == "MONGODB_URI" and var.secret is not None
    }
    assert catalog_secrets == {user["passwordSecretRef"]["name"]}
    assert {"password", "uri"} <= _secret_keys()[user["passwordSecretRef"]["name"]][1]
    assert {"name": "readWrite", "db": "catalog"} in user["roles"]
    assert mongodb["spec"]["statefulSet"]["spec"]["template"]["spec"]["serviceAccountName"] in {
        d["metadata"]["name"] for d in of_kind(render("production"), "ServiceAccount")
    }


def test_the_secret_examples_urls_point_at_the_operators_services() -> None:
    for name, document in ((d["metadata"]["name"], d) for d in crd.load_documents(SECRETS_EXAMPLE)):
        data = document.get("stringData", {})
        if "url" in data and data["url"].startswith("postgresql://"):
            assert f"{data['username']}:" in data["url"] and "@shop-postgres-rw.shop.svc:5432/" in data["url"], name
            assert data["url"].endswith("/" + data["username"]), name
        if "uri" in data:
            assert (
                "@shop-mongodb-svc.shop.svc.cluster.local/" in data["uri"] and "replicaSet=shop-mongodb" in data["uri"]
            )


def test_a_migrate_job_per_domain_runs_the_functions_image_with_its_domains_secret_mounted() -> None:
    documents = render("production")
    jobs = {d["metadata"]["name"]: d for d in of_kind(documents, "Job")}
    assert set(jobs) == {f"migrate-{domain}" for domain in migrate.domains()} | {"migrate-catalog"}
    service_images = {container(s)["image"] for s in knative_services(documents).values()}
    assert len(service_images) == 1
    for name, job in jobs.items():
        spec = job["spec"]["template"]["spec"]
        (box,) = spec["containers"]
        assert box["image"] in service_images, name
        # Credentials are files, never environment variables or arguments.
        assert not any("valueFrom" in var for var in box.get("env", [])), name
        (volume,) = spec["volumes"]
        domain = name.removeprefix("migrate-")
        expected = "catalog-mongodb" if domain == "catalog" else _domain_secret(domain)
        assert volume["secret"]["secretName"] == expected, name
        assert box["volumeMounts"][0]["readOnly"] is True
        if domain != "catalog":
            assert {"name": "SCHEMA_DOMAIN", "value": domain} in box["env"], name
        assert job["spec"]["ttlSecondsAfterFinished"] > 0 and spec["restartPolicy"] == "Never"


def test_the_migrate_jobs_import_what_the_image_holds() -> None:
    for job in of_kind(render("migrate"), "Job"):
        (box,) = job["spec"]["template"]["spec"]["containers"]
        assert box["command"][:2] == ["python", "-c"], job["metadata"]["name"]
        script = box["command"][2]
        compile(script, job["metadata"]["name"], "exec")
        imports = [line for line in script.splitlines() if line.startswith(("import ", "from "))]
        exec("\n".join(imports), {})  # the Job's own import lines: they must name modules that exist


def test_every_image_of_the_functions_is_retagged_by_the_overlay() -> None:
    for overlay in OVERLAYS:
        text = yaml.safe_dump_all(render(overlay))
        tagged = set(re.findall(rf"image: ({re.escape(FUNCTIONS_IMAGE)}:\S+|kind\.local/\S+)", text))
        assert len(tagged) == 1, (overlay, tagged)


def test_dev_tokens_and_discovery_name_the_same_issuer() -> None:
    """The walkthrough's tokens come from Keycloak in-cluster: their issuer is the discovery document's."""
    data = one(render("dev"), "ConfigMap", "shop-config")["data"]
    assert data["oidc.discovery"] == data["oidc.issuer"] + "/.well-known/openid-configuration"

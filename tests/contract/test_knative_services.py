"""Knative manifests under knative/: they parse, pass the CRD schemas strictly, and agree with the code."""

from __future__ import annotations

import ast
import copy
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import crd, tooling

KNATIVE = crd.REPO_ROOT / "knative"
SERVICE_FILES = sorted((KNATIVE / "services").glob("*.yaml"))
CONFIG_FILES = sorted((KNATIVE / "config").glob("*.yaml"))
ALL_YAML = sorted(KNATIVE.rglob("*.yaml"))
SAMPLE = KNATIVE / "services" / "product-get.yaml"

Mutation = Callable[[crd.Document], object]

SERVICE_KIND = ("serving.knative.dev/v1", "Service")
# FUNCTION_SIGNATURE_TYPE -> the functions_framework decorator that declares such a target.
DECORATORS = {"http": "http", "cloudevent": "cloud_event"}
# Knative's webhook rejects these in a user container: it sets them itself.
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
# What a service file may hold beside its Knative Service: the identity it runs as (registry-sync).
RBAC_KINDS = {
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
}


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(KNATIVE)) for path in paths]


@cache
def _documents(path: Path) -> list[crd.Document]:
    return crd.load_documents(path)


def _service(path: Path) -> crd.Document:
    """The one Knative Service a file under knative/services/ holds (beside, at most, the RBAC it runs with)."""
    documents = _documents(path)
    services = [d for d in documents if (d.get("apiVersion"), d.get("kind")) == SERVICE_KIND]
    assert len(services) == 1, f"{path.name}: expected one Knative Service, found {len(services)}"
    # `kn service create -f` (knative/deploy.py) reads a file's first document only.
    assert documents[0] is services[0], f"{path.name}: the Knative Service must be the first document"
    others = {(d.get("apiVersion"), d.get("kind")) for d in documents if d is not services[0]}
    assert others <= RBAC_KINDS, f"{path.name}: only RBAC objects may sit beside the service, found {others}"
    return services[0]


def _rbac(path: Path) -> dict[str, crd.Document]:
    """Kind -> the RBAC object of that kind in a service file."""
    return {d["kind"]: d for d in _documents(path) if (d.get("apiVersion"), d.get("kind")) in RBAC_KINDS}


def _container(service: crd.Document) -> dict[str, Any]:
    containers = service["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per function"
    container: dict[str, Any] = containers[0]
    return container


def _env(service: crd.Document) -> dict[str, Any]:
    return {entry["name"]: entry for entry in _container(service).get("env", [])}


def _env_value(service: crd.Document, name: str) -> str:
    entry = _env(service).get(name)
    assert entry is not None and "value" in entry, f"{service['metadata']['name']}: env {name} needs a literal value"
    value = entry["value"]
    assert isinstance(value, str)
    return value


def _config_objects() -> dict[tuple[str, str, str], set[str]]:
    """(kind, namespace, name) -> keys of every Secret and ConfigMap under knative/config/."""
    found: dict[tuple[str, str, str], set[str]] = {}
    for path in CONFIG_FILES:
        for document in _documents(path):
            kind = document.get("kind")
            if kind not in ("Secret", "ConfigMap"):
                continue
            meta = document["metadata"]
            keys = set(document.get("data") or {}) | set(document.get("stringData") or {})
            keys |= set(document.get("binaryData") or {})
            found[(kind, meta.get("namespace", "default"), meta["name"])] = keys
    return found


def _kustomization() -> crd.Document:
    documents = _documents(KNATIVE / "kustomization.yaml")
    assert len(documents) == 1
    return documents[0]


@pytest.fixture(scope="module")
def crds() -> Path:
    found = crd.crds_dir()
    if found is None:
        tooling.unavailable(f"Knative CRDs not found at {crd.crds_location()}; set {crd.CRDS_ENV}")
    return found


def _broken(mutate: Mutation) -> crd.Document:
    """A deep copy of the sample service, changed by `mutate`."""
    document = copy.deepcopy(_service(SAMPLE))
    mutate(document)
    return document


# --- parsing -------------------------------------------------------------------------------


def test_services_folder_is_not_empty() -> None:
    assert len(SERVICE_FILES) >= 11, [path.name for path in SERVICE_FILES]


@pytest.mark.parametrize("path", ALL_YAML, ids=_ids(ALL_YAML))
def test_every_yaml_document_parses(path: Path) -> None:
    documents = _documents(path)
    assert documents, f"{path.name} holds no document"
    for document in documents:
        assert isinstance(document.get("apiVersion"), str) and isinstance(document.get("kind"), str)


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "twice.yaml"
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nkind: Secret\n", encoding="utf-8")
    with pytest.raises(yaml.YAMLError, match="duplicate key 'kind'"):
        crd.load_documents(manifest)


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_service_name_matches_its_file(path: Path) -> None:
    service = _service(path)
    assert service["metadata"]["name"] == path.stem
    assert service["metadata"]["namespace"] == "shop"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=_ids(CONFIG_FILES))
def test_config_documents_are_plain_core_objects(path: Path) -> None:
    for document in _documents(path):
        assert (document["apiVersion"], document["kind"]) in {
            ("v1", "Namespace"),
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
        }
        if document["kind"] == "Namespace":
            assert document["metadata"]["name"] == "shop"
            continue
        assert document["metadata"]["namespace"] == "shop"
        for field in ("data", "stringData"):
            for key, value in (document.get(field) or {}).items():
                # An unquoted number or boolean here is rejected by the API server.
                assert isinstance(value, str), (
                    f"{path.name}: {document['metadata']['name']}.{field}.{key} is not a string"
                )


# --- CRD schemas ---------------------------------------------------------------------------


def test_crds_are_indexed_without_the_example_configmap(crds: Path) -> None:
    kinds = crd.known_kinds()
    assert SERVICE_KIND in kinds
    assert ("eventing.knative.dev/v1", "Trigger") in kinds
    assert ("sources.knative.dev/v1", "KafkaSource") in kinds
    assert all(kind != "ConfigMap" for _, kind in kinds)


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_service_validates_strictly_against_the_crd(path: Path, crds: Path) -> None:
    assert crd.validate(_service(path)) == []


def test_unknown_container_field_is_rejected(crds: Path) -> None:
    document = _broken(lambda d: _container(d).update(imagePullPolicyy="Always"))
    errors = crd.validate(document)
    assert errors == ["spec.template.spec.containers[0].imagePullPolicyy: unknown field 'imagePullPolicyy'"]


def test_wrong_type_is_rejected(crds: Path) -> None:
    document = _broken(lambda d: d["spec"]["template"]["spec"].update(containerConcurrency="16"))
    errors = crd.validate(document)
    assert errors == ["spec.template.spec.containerConcurrency: expected integer, got string '16'"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(spex={}), "spex: unknown field 'spex'"),
        (
            lambda d: d["metadata"].update(labelz={}),
            "metadata.labelz: unknown field 'labelz'",
        ),
        (lambda d: d["metadata"].pop("name"), "metadata: 'name' is required"),
        (
            lambda d: d["metadata"].update(name="Product_Get"),
            "metadata.name: 'Product_Get' is not a DNS-1035 label",
        ),
        (
            lambda d: d["metadata"].update(name="1-product"),
            "metadata.name: '1-product' is not a DNS-1035 label",
        ),
        (
            lambda d: d["metadata"].update(name="p" * 64),
            "metadata.name: '" + "p" * 64 + "' is too long",
        ),
        (
            lambda d: d["metadata"]["labels"].update({"bad key!": "x"}),
            "metadata.labels: 'bad key!' is not a qualified",
        ),
        (
            lambda d: _container(d)["resources"]["limits"].update(cpu=True),
            "resources.limits.cpu: expected integer or string",
        ),
        (
            lambda d: _container(d)["env"].append({"name": "THREADS", "value": "1"}),
            "duplicate entry name='THREADS'",
        ),
        (
            lambda d: _container(d)["readinessProbe"]["httpGet"].update(port=8080.5),
            "httpGet.port: expected integer or string",
        ),
        (
            lambda d: _container(d)["securityContext"].update(runAsNonRoot="yes"),
            "runAsNonRoot: expected boolean",
        ),
    ],
    ids=[
        "top-level",
        "metadata",
        "no-name",
        "name-case",
        "name-digit",
        "name-long",
        "label-key",
        "int-or-string",
        "list-map",
        "probe-port",
        "boolean",
    ],
)
def test_validator_bites(mutate: Mutation, expected: str, crds: Path) -> None:
    errors = crd.validate(_broken(mutate))
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: _container(d)["resources"]["limits"].update(cpu=2),
        lambda d: _container(d)["readinessProbe"]["httpGet"].update(port="http1"),
        lambda d: d["spec"]["template"]["metadata"].update(generation=3),
    ],
    ids=["int-or-string-integer", "int-or-string-string", "preserve-unknown-fields"],
)
def test_validator_accepts_what_the_schema_allows(mutate: Mutation, crds: Path) -> None:
    assert crd.validate(_broken(mutate)) == []


def test_unknown_kind_is_reported(crds: Path) -> None:
    errors = crd.validate(
        {
            "apiVersion": "serving.knative.dev/v9",
            "kind": "Service",
            "metadata": {"name": "x"},
        }
    )
    assert len(errors) == 1 and "no CRD" in errors[0]


# --- the services against the code and each other ------------------------------------------


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_function_target_exists_in_its_source(path: Path) -> None:
    service = _service(path)
    target = _env_value(service, "FUNCTION_TARGET")
    source = crd.REPO_ROOT / _env_value(service, "FUNCTION_SOURCE")
    signature = _env_value(service, "FUNCTION_SIGNATURE_TYPE")
    assert signature in DECORATORS, f"unknown FUNCTION_SIGNATURE_TYPE {signature!r}"
    assert source.is_file(), f"FUNCTION_SOURCE {source.relative_to(crd.REPO_ROOT)} does not exist"
    targets = _decorated_functions(source)
    assert target in targets, f"{source.name} has no top-level functions_framework target {target!r}"
    assert targets[target] == DECORATORS[signature], (
        f"{target} is decorated @functions_framework.{targets[target]}, but the service says {signature}"
    )


def _decorated_functions(source: Path) -> dict[str, str]:
    """Top-level function name -> the functions_framework decorator (http | cloud_event) on it."""
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    found: dict[str, str] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if (
                isinstance(decorator, ast.Attribute)
                and isinstance(decorator.value, ast.Name)
                and decorator.value.id == "functions_framework"
                and decorator.attr in DECORATORS.values()
            ):
                found[node.name] = decorator.attr
    return found


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_threads_match_container_concurrency(path: Path) -> None:
    service = _service(path)
    concurrency = service["spec"]["template"]["spec"]["containerConcurrency"]
    assert isinstance(concurrency, int) and concurrency > 0
    assert _env_value(service, "THREADS") == str(concurrency)


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_container_is_non_root_with_limits_and_probes(path: Path) -> None:
    container = _container(_service(path))
    security = container.get("securityContext", {})
    assert security.get("runAsNonRoot") is True
    assert security.get("allowPrivilegeEscalation") is False
    resources = container.get("resources", {})
    assert {"cpu", "memory"} <= set(resources.get("limits", {})), "cpu and memory limits"
    assert {"cpu", "memory"} <= set(resources.get("requests", {})), "cpu and memory requests"
    # Liveness only says the process serves; readiness also checks the servers it needs.
    assert container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
    assert container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"
    if security.get("readOnlyRootFilesystem"):
        # gunicorn cannot start without a writable temp directory for its worker heartbeat.
        assert "/tmp" in {mount["mountPath"] for mount in container.get("volumeMounts", [])}


# The one service with a public route; everything else is reached through it.
PUBLIC_SERVICES = {"gateway"}


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_only_the_gateway_is_public(path: Path) -> None:
    service = _service(path)
    visibility = service["metadata"].get("labels", {}).get("networking.knative.dev/visibility")
    if service["metadata"]["name"] in PUBLIC_SERVICES:
        assert visibility is None
    else:
        assert visibility == "cluster-local"


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_autoscaling_bounds_are_sane(path: Path) -> None:
    annotations = _service(path)["spec"]["template"]["metadata"]["annotations"]
    low = int(annotations["autoscaling.knative.dev/min-scale"])
    high = int(annotations["autoscaling.knative.dev/max-scale"])
    assert 0 <= low <= high


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_env_names_are_not_reserved_by_knative(path: Path) -> None:
    assert not RESERVED_ENV & set(_env(_service(path)))


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_env_references_resolve_to_config(path: Path) -> None:
    service = _service(path)
    namespace = service["metadata"]["namespace"]
    defined = _config_objects()
    for name, entry in _env(service).items():
        source = entry.get("valueFrom") or {}
        for ref_field, kind in (
            ("secretKeyRef", "Secret"),
            ("configMapKeyRef", "ConfigMap"),
        ):
            if ref_field not in source:
                continue
            ref = source[ref_field]
            keys = defined.get((kind, namespace, ref["name"]))
            assert keys is not None, f"env {name}: no {kind} {namespace}/{ref['name']} under knative/config/"
            assert ref["key"] in keys, f"env {name}: {kind} {ref['name']} has no key {ref['key']!r}"


def test_kustomization_lists_every_service_and_only_existing_files() -> None:
    resources = _kustomization()["resources"]
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    for resource in resources:
        assert (KNATIVE / resource).is_file(), f"kustomization lists missing {resource}"
    listed = {(KNATIVE / resource).resolve() for resource in resources}
    unlisted = [path.name for path in SERVICE_FILES if path.resolve() not in listed]
    assert not unlisted, f"services missing from kustomization.yaml: {unlisted}"
    assert (KNATIVE / "config" / "namespace.yaml").resolve() in listed
    assert (KNATIVE / "config" / "shop-config.yaml").resolve() in listed


def test_kustomization_can_retag_the_image_every_service_uses() -> None:
    names = {entry["name"] for entry in _kustomization().get("images", [])}
    for path in SERVICE_FILES:
        image = _container(_service(path))["image"]
        assert image.rpartition(":")[0] in names, f"{path.name}: {image} is not retaggable through images:"


def test_kustomize_build_renders_every_service(tmp_path: Path) -> None:
    rendered = subprocess.run(
        [tooling.kubectl(), "kustomize", str(KNATIVE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    services = {doc["metadata"]["name"] for doc in documents if (doc["apiVersion"], doc["kind"]) == SERVICE_KIND}
    assert services == {path.stem for path in SERVICE_FILES}


@pytest.mark.parametrize("path", SERVICE_FILES, ids=_ids(SERVICE_FILES))
def test_a_service_account_is_declared_with_its_service_and_bound_to_a_namespaced_role(path: Path) -> None:
    service = _service(path)
    account = service["spec"]["template"]["spec"].get("serviceAccountName")
    rbac = _rbac(path)
    if account is None:
        assert not rbac, f"{path.name}: RBAC objects for a service that does not run as their account"
        return
    namespace = service["metadata"]["namespace"]
    assert set(rbac) == {"ServiceAccount", "Role", "RoleBinding"}, f"{path.name}: {sorted(rbac)}"
    assert all(d["metadata"]["namespace"] == namespace for d in rbac.values())
    assert rbac["ServiceAccount"]["metadata"]["name"] == account
    binding = rbac["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": rbac["Role"]["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
    # Read-only: nothing in the shop writes to the Kubernetes API.
    for rule in rbac["Role"]["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule


def test_registry_sync_may_list_knative_services_and_nothing_else() -> None:
    rbac = _rbac(KNATIVE / "services" / "registry-sync.yaml")
    assert rbac["Role"]["rules"] == [
        {"apiGroups": ["serving.knative.dev"], "resources": ["services"], "verbs": ["list"]}
    ]

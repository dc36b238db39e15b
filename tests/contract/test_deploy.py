"""The deployment plan is derived from the manifests, covers every one of them, and runs in dependency order."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "knative"))

import deploy  # noqa: E402


def test_every_service_is_created_with_kn_from_its_file() -> None:
    steps = deploy.plan("registry.example/shop:test")
    created = {s.argv[3]: s.argv for s in steps if s.argv[:3] == ("kn", "service", "create")}
    files = {p.stem for p in (ROOT / "knative/services").glob("*.yaml")}
    assert set(created) == files
    for name, argv in created.items():
        assert argv[argv.index("-f") + 1] == f"knative/services/{name}.yaml"
        assert "--force" in argv and argv[argv.index("--image") + 1] == "registry.example/shop:test"


def eventing_documents() -> list[dict[str, Any]]:
    return [
        d
        for p in sorted((ROOT / "eventing").glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]


def flag(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_every_eventing_document_has_exactly_one_step() -> None:
    steps = [s for s in deploy.plan() if s.source.startswith("eventing/")]
    assert len(steps) == len(eventing_documents())


def test_every_eventing_field_reaches_the_cluster() -> None:
    """A kn command only where kn has a flag for every field; otherwise the document as written."""
    steps = [s for s in deploy.plan() if s.source.startswith("eventing/")]
    kinds_by_kn = set()
    for document, step in zip(eventing_documents(), steps, strict=True):
        if step.argv[0] == "kn":
            assert set(document.get("spec", {})) <= deploy.KN_FIELDS[document["kind"]], document["metadata"]
            kinds_by_kn.add(document["kind"])
        else:
            assert yaml.safe_load(step.stdin or "") == document
    assert {"Broker", "Trigger"} <= kinds_by_kn
    piped = {yaml.safe_load(s.stdin)["metadata"]["name"]: yaml.safe_load(s.stdin) for s in steps if s.stdin}
    # What kn cannot carry: the source's retries, dead letters and offset; the pings' content type.
    assert piped["shop-events"]["spec"]["delivery"]["deadLetterSink"]["ref"]["name"] == "dead-letter"
    assert piped["shop-events"]["spec"]["initialOffset"] == "earliest"
    assert piped["inventory-expire"]["spec"]["contentType"] == "application/json"


def test_kn_flags_carry_the_manifest_fields() -> None:
    steps = [s for s in deploy.plan() if s.source.startswith("eventing/")]
    checked = 0
    for document, step in zip(eventing_documents(), steps, strict=True):
        spec, argv = document.get("spec", {}), step.argv
        if argv[0] != "kn":
            continue
        checked += 1
        assert flag(argv, "create") == document["metadata"]["name"] and flag(argv, "-n") == "shop"
        if document["kind"] == "Broker":
            assert flag(argv, "--class") == document["metadata"]["annotations"]["eventing.knative.dev/broker.class"]
            delivery = spec["delivery"]
            assert flag(argv, "--dl-sink") == f"ksvc:{delivery['deadLetterSink']['ref']['name']}"
            assert flag(argv, "--retry") == str(delivery["retry"])
            assert flag(argv, "--backoff-policy") == delivery["backoffPolicy"]
            assert flag(argv, "--backoff-delay") == delivery["backoffDelay"]
        if document["kind"] == "Trigger":
            assert flag(argv, "--broker") == spec["broker"]
            assert flag(argv, "--sink") == f"ksvc:{spec['subscriber']['ref']['name']}"
            filters = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--filter"]
            assert filters == [f"{k}={v}" for k, v in spec["filter"]["attributes"].items()]
    assert checked >= 2


def test_what_kn_cannot_express_is_applied_with_kubectl() -> None:
    piped = [yaml.safe_load(s.stdin) for s in deploy.plan() if s.argv[:2] == ("kubectl", "apply") and s.stdin]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in piped}
    assert ("Namespace", "shop") in kinds and ("KafkaTopic", "shop.orders") in kinds
    assert ("Trigger", "shop-events-to-notification-send") in kinds  # the `filters` dialect
    assert not any(d["kind"] == "Secret" for d in piped)


def test_the_rbac_beside_a_service_is_applied_before_kn_creates_it() -> None:
    source = "knative/services/registry-sync.yaml"
    steps = [s for s in deploy.plan() if s.source == source]
    kinds = [yaml.safe_load(s.stdin)["kind"] if s.stdin else s.argv[:3] for s in steps]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", ("kn", "service", "create")]


# --- dependency order, overlays, dev Secrets --------------------------------------------------------


def _first(steps: list[deploy.Step], predicate: Callable[[deploy.Step], bool]) -> int:
    return next(index for index, step in enumerate(steps) if predicate(step))


def _last(steps: list[deploy.Step], predicate: Callable[[deploy.Step], bool]) -> int:
    return max(index for index, step in enumerate(steps) if predicate(step))


def test_the_plan_runs_in_dependency_order() -> None:
    steps = deploy.plan("registry.example/shop:test")
    namespace = _last(steps, lambda s: s.stdin is not None and yaml.safe_load(s.stdin)["kind"] == "Namespace")
    platform = [
        _first(steps, lambda s, b=bundle: s.argv == ("kubectl", "apply", "-k", b)) for bundle in deploy.PLATFORM
    ]
    waits = [i for i, s in enumerate(steps) if s.argv[:2] == ("kubectl", "wait") and s.source.startswith("ready:")]
    migrate_apply = _first(steps, lambda s: s.source == "cluster/migrate/jobs.yaml" and s.argv[1] == "apply")
    migrate_steps = [s for s in steps if s.source == "cluster/migrate/jobs.yaml" and s.argv[1] == "apply"]
    migrated = _first(steps, lambda s: s.source == "migrations done")
    first_service = _first(steps, lambda s: s.argv[:3] == ("kn", "service", "create"))
    first_eventing = _first(steps, lambda s: s.source.startswith("eventing/"))
    last_service = _last(steps, lambda s: s.argv[:3] == ("kn", "service", "create"))
    assert namespace < min(platform) and platform == sorted(platform)
    assert len(waits) == 3 and max(platform) < min(waits) and max(waits) < migrate_apply < migrated
    assert migrated < first_service and last_service < first_eventing
    # The migrate Jobs run the image being deployed.
    jobs = [yaml.safe_load(s.stdin or "") for s in migrate_steps]
    assert len(jobs) == 6 and {job["spec"]["template"]["spec"]["containers"][0]["image"] for job in jobs} == {
        "registry.example/shop:test"
    }


def test_the_waits_name_each_operators_resource_of_the_platform() -> None:
    waits = [s.argv for s in deploy.plan() if s.source.startswith("ready:")]
    platform = [d for bundle in deploy.PLATFORM for d in deploy._documents_under(ROOT / bundle)]
    expected = {
        (d["kind"], d["metadata"]["name"], d["metadata"]["namespace"]) for d in platform if d["kind"] in deploy.READY
    }
    assert {kind for kind, _, _ in expected} == {"Kafka", "Cluster", "MongoDBCommunity"}
    assert len(waits) == len(expected)
    for kind, name, namespace in expected:
        resource, condition = deploy.READY[kind]
        assert ("kubectl", "wait", f"{resource}/{name}", "-n", namespace, condition, deploy.WAIT_TIMEOUT) in waits


def test_no_secret_is_deployed_unless_asked() -> None:
    for steps in (deploy.plan(), deploy.plan(overlay="production")):
        assert not [s for s in steps if s.secret]
        assert not any(d and d.get("kind") == "Secret" for s in steps if s.stdin for d in yaml.safe_load_all(s.stdin))


def test_dev_secrets_fill_every_example_and_are_never_printed() -> None:
    steps = [s for s in deploy.plan(dev_secrets=True) if s.secret]
    examples = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all((ROOT / "knative/config/secrets.example.yaml").read_text())
    }
    created = {yaml.safe_load(s.stdin or "")["metadata"]["name"]: s for s in steps}
    assert set(created) == set(examples) | {"keycloak-admin", "grafana-admin"}
    passwords = set()
    for name, step in created.items():
        # `kubectl create`: a Secret that exists (a real one) is kept, never overwritten.
        assert step.argv == ("kubectl", "create", "-f", "-") and step.tolerate == "AlreadyExists"
        secret = yaml.safe_load(step.stdin or "")
        values = secret["stringData"]
        assert not any("REPLACE_ME" in value for value in values.values()), name
        for key in ("password", "url", "uri", "secret"):
            if key in values:
                assert values[key] not in step.shell() and values[key] not in json.dumps(step.public()), name
        if name in examples:
            assert set(values) == set(examples[name]["stringData"]) and secret.get("type") == examples[name].get("type")
        if "password" in values:
            passwords.add(values["password"])
            assert len(values["password"]) >= 24
            for key in ("url", "uri"):
                if key in values:
                    assert f":{values['password']}@" in values[key], name
    assert len(passwords) == len(
        [s for s in created.values() if "password" in yaml.safe_load(s.stdin or "")["stringData"]]
    )
    assert created["smtp"] and yaml.safe_load(created["smtp"].stdin or "")["stringData"]["url"] == deploy.DEV_SMTP_URL


def _applied(steps: list[deploy.Step]) -> list[dict[str, Any]]:
    return [
        d
        for s in steps
        if s.argv == ("kubectl", "apply", "-f", "-") and s.stdin
        for d in yaml.safe_load_all(s.stdin)
        if d
    ]


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_an_overlay_is_applied_whole_phase_by_phase(overlay: str) -> None:
    steps = deploy.plan(overlay=overlay)
    rendered = deploy.render(ROOT / "cluster" / overlay)
    identity = lambda d: (d["apiVersion"], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])  # noqa: E731
    assert sorted(map(identity, _applied(steps))) == sorted(map(identity, rendered))
    order = [deploy.phase(d) for d in _applied(steps)]
    assert order == sorted(order, key=["namespaces", "platform", "migrate", "services", "eventing"].index)
    assert not [s for s in steps if s.argv[0] == "kn"], "kn would drop the overlay's patches"
    waits = _first(steps, lambda s: s.source.startswith("ready:"))
    migrated = _first(steps, lambda s: s.source == "migrations done")
    services = _first(
        steps, lambda s: any(deploy.phase(d) == "services" for d in yaml.safe_load_all(s.stdin or "") if d)
    )
    assert waits < migrated < services


def test_an_overlays_phases_put_each_kind_where_it_belongs() -> None:
    phases = {(d["kind"], deploy.phase(d)) for d in deploy.render(ROOT / "cluster" / "production")}
    for kind, expected in [
        ("Namespace", "namespaces"),
        ("Kafka", "platform"),
        ("KafkaTopic", "platform"),
        ("Cluster", "platform"),
        ("MongoDBCommunity", "platform"),
        ("NetworkPolicy", "platform"),
        ("Job", "migrate"),
        ("Broker", "eventing"),
        ("Trigger", "eventing"),
        ("KafkaSource", "eventing"),
        ("PingSource", "eventing"),
    ]:
        assert (kind, expected) in phases, kind
    assert {p for k, p in phases if k == "Service"} == {"services", "platform"}  # Knative's and core Services


def test_an_overlays_image_can_be_replaced_for_functions_and_migrations_only() -> None:
    applied = _applied(deploy.plan("registry.example/shop:2", overlay="dev"))
    images = {
        (d["kind"], box["image"])
        for d in applied
        if d["kind"] in ("Service", "Job", "Deployment") and "template" in d.get("spec", {})
        for box in d["spec"]["template"]["spec"]["containers"]
    }
    assert {image for kind, image in images if kind in ("Service", "Job")} == {"registry.example/shop:2"}
    assert "registry.example/shop:2" not in {image for kind, image in images if kind == "Deployment"}

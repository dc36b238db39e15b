"""The kn deployment plan is derived from the manifests and covers every one of them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

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

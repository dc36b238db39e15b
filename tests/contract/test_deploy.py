"""The kn deployment plan is derived from the manifests and covers every one of them."""

from __future__ import annotations

import sys
from pathlib import Path

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


def test_every_eventing_document_has_exactly_one_step() -> None:
    documents = [
        d
        for p in sorted((ROOT / "eventing").glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in yaml.safe_load_all(p.read_text())
        if d
    ]
    steps = [s for s in deploy.plan() if s.source.startswith("eventing/")]
    assert len(steps) == len(documents)


def test_kn_flags_carry_the_manifest_fields() -> None:
    kn = [s.argv for s in deploy.plan() if s.argv[0] == "kn" and s.argv[1] != "service"]
    steps = {argv[argv.index("create") + 1]: argv for argv in kn}
    broker = steps["shop"]
    assert broker[broker.index("--class") + 1] == "Kafka"
    assert broker[broker.index("--dl-sink") + 1] == "ksvc:dead-letter"
    assert broker[broker.index("--retry") + 1] == "5" and broker[broker.index("--backoff-delay") + 1] == "PT0.2S"
    track = steps["product-created-to-inventory-track"]
    assert track[track.index("--filter") + 1] == "type=com.shop.product.created"
    assert track[track.index("--sink") + 1] == "ksvc:inventory-track"
    ping = steps["inventory-expire"]
    assert (
        ping[ping.index("--schedule") + 1] == "* * * * *" and ping[ping.index("--sink") + 1] == "ksvc:inventory-expire"
    )
    source = steps["shop-events"]
    assert source[source.index("--topics") + 1] == "shop.catalog,shop.orders,shop.inventory"


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

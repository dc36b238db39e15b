"""Knative's admission rules in the local runtime: one bad manifest per rule, refused with the webhook's words."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from local import admission, manifests

SAMPLE = manifests.KNATIVE_DIR / "services" / "product-get.yaml"
ANNOTATIONS = "spec.template.metadata.annotations.autoscaling.knative.dev"
CONTAINER = "spec.template.spec.containers[0]"
DENIED = 'admission webhook "validation.webhook.serving.knative.dev" denied the request: validation failed: '

Mutation = Callable[[dict[str, Any]], object]


def _sample() -> dict[str, Any]:
    document = yaml.safe_load(SAMPLE.read_text())
    assert isinstance(document, dict) and document["kind"] == "Service"
    return document


def _annotations(document: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = document["spec"]["template"]["metadata"]["annotations"]
    return annotations


def _container(document: dict[str, Any]) -> dict[str, Any]:
    box: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
    return box


def _env(name: str, value: str = "x") -> Mutation:
    return lambda d: _container(d)["env"].append({"name": name, "value": value})


def _refusal(mutate: Mutation, tmp_path: Path) -> str:
    """The message the local runtime refuses the mutated sample with, loading it as it loads knative/."""
    document = copy.deepcopy(_sample())
    mutate(document)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(admission.Refused) as refused:
        manifests.services([tmp_path])
    return str(refused.value)


# Each case: one rule broken, and the webhook's message for it (after "validation failed: ").
CASES: list[tuple[str, Mutation, str]] = [
    (
        "min-above-max",
        lambda d: _annotations(d).update(
            {"autoscaling.knative.dev/min-scale": "5", "autoscaling.knative.dev/max-scale": "4"}
        ),
        f"max-scale=4 is less than min-scale=5: {ANNOTATIONS}/max-scale, {ANNOTATIONS}/min-scale",
    ),
    (
        "negative-min",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/min-scale": "-1"}),
        f"expected 0 <= -1 <= 2147483647: {ANNOTATIONS}/min-scale",
    ),
    (
        "max-not-a-number",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/max-scale": "ten"}),
        f"invalid value: ten: {ANNOTATIONS}/max-scale",
    ),
    (
        "window-too-short",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/window": "5s"}),
        f"expected 6s <= 5s <= 1h0m0s: {ANNOTATIONS}/window",
    ),
    (
        "window-too-long",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/window": "61m"}),
        f"expected 6s <= 61m <= 1h0m0s: {ANNOTATIONS}/window",
    ),
    (
        "window-sub-second",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/window": "6500ms"}),
        f"must be specified with at most second precision: {ANNOTATIONS}/window",
    ),
    (
        "window-not-a-duration",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/window": "60"}),
        f"invalid value: 60: {ANNOTATIONS}/window",
    ),
    (
        "target-too-small",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/target": "0.001"}),
        f"target 0.001 should be at least 0.01: {ANNOTATIONS}/target",
    ),
    (
        "target-not-a-number",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/target": "lots"}),
        f"invalid value: lots: {ANNOTATIONS}/target",
    ),
    (
        "utilization-out-of-range",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/target-utilization-percentage": "120"}),
        f"expected 1 <= 120 <= 100: {ANNOTATIONS}/target-utilization-percentage",
    ),
    (
        "initial-scale-zero",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/initial-scale": "0"}),
        f"invalid value: 0: {ANNOTATIONS}/initial-scale=0 not allowed by cluster",
    ),
    (
        "metric-for-kpa",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/metric": "cpu"}),
        f"invalid value: cpu: {ANNOTATIONS}/metric",
    ),
    (
        "unknown-class",
        lambda d: _annotations(d).update({"autoscaling.knative.dev/class": "xpa.autoscaling.knative.dev"}),
        f"invalid value: xpa.autoscaling.knative.dev: {ANNOTATIONS}/class",
    ),
    (
        "concurrency-too-high",
        lambda d: d["spec"]["template"]["spec"].update(containerConcurrency=1001),
        "expected 0 <= 1001 <= 1000: spec.template.spec.containerConcurrency",
    ),
    (
        "concurrency-negative",
        lambda d: d["spec"]["template"]["spec"].update(containerConcurrency=-1),
        "expected 0 <= -1 <= 1000: spec.template.spec.containerConcurrency",
    ),
    (
        "timeout-too-long",
        lambda d: d["spec"]["template"]["spec"].update(timeoutSeconds=601),
        "expected 0 <= 601 <= 600: spec.template.spec.timeoutSeconds",
    ),
    ("reserved-port", _env("PORT", "9000"), f'"PORT" is a reserved environment variable: {CONTAINER}.env['),
    ("reserved-k-service", _env("K_SERVICE"), f'"K_SERVICE" is a reserved environment variable: {CONTAINER}.env['),
    ("reserved-k-revision", _env("K_REVISION"), f'"K_REVISION" is a reserved environment variable: {CONTAINER}.env['),
    (
        "host-path-volume",
        lambda d: (
            d["spec"]["template"]["spec"]["volumes"][0].update(hostPath={"path": "/tmp"}, emptyDir=None)
            or d["spec"]["template"]["spec"]["volumes"][0].pop("emptyDir")
        ),
        "must not set the field(s): spec.template.spec.volumes[0].hostPath",
    ),
    (
        "pvc-volume",
        lambda d: (
            d["spec"]["template"]["spec"]["volumes"][0].update(persistentVolumeClaim={"claimName": "data"})
            or d["spec"]["template"]["spec"]["volumes"][0].pop("emptyDir")
        ),
        "Persistent volume claim support is disabled, but found persistent volume claim data",
    ),
    (
        "disk-backed-medium",
        lambda d: d["spec"]["template"]["spec"]["volumes"][0]["emptyDir"].update(medium="HugePages"),
        "invalid value: HugePages: spec.template.spec.volumes[0].emptyDir.medium",
    ),
    (
        "volume-not-mounted",
        lambda d: d["spec"]["template"]["spec"]["volumes"].append({"name": "spare", "emptyDir": {}}),
        'volume with name "spare" not mounted: spec.template.spec.volumes[2].name',
    ),
    (
        "secret-mounted-writable",
        lambda d: (
            d["spec"]["template"]["spec"]["volumes"].append(
                {"name": "keys", "secret": {"secretName": "shop-identity"}}
            ),
            _container(d)["volumeMounts"].append({"name": "keys", "mountPath": "/keys"}),
        ),
        f"volume mount should be readOnly for this type of volume: {CONTAINER}.volumeMounts[2].readOnly",
    ),
    (
        "reserved-mount-path",
        lambda d: _container(d)["volumeMounts"][0].update(mountPath="/dev/"),
        f'mountPath "/dev" is a reserved path: {CONTAINER}.volumeMounts[0].mountPath',
    ),
    (
        "probe-grace-period",
        lambda d: _container(d)["livenessProbe"].update(terminationGracePeriodSeconds=5),
        f"must not set the field(s): {CONTAINER}.livenessProbe.terminationGracePeriodSeconds",
    ),
    (
        "probe-two-handlers",
        lambda d: _container(d)["readinessProbe"].update(tcpSocket={}),
        f"expected exactly one, got both: {CONTAINER}.readinessProbe.httpGet, {CONTAINER}.readinessProbe.tcpSocket",
    ),
    (
        "probe-other-port",
        lambda d: _container(d)["readinessProbe"]["httpGet"].update(port="metrics"),
        f"invalid value: metrics: {CONTAINER}.readinessProbe.httpGet.port\nProbe port must match container port",
    ),
    (
        "probe-zero-timeout",
        lambda d: _container(d)["readinessProbe"].update(timeoutSeconds=0),
        f"expected 1 <= 0 <= 2147483647: {CONTAINER}.readinessProbe.timeoutSeconds",
    ),
    (
        "aggressive-probe-with-threshold",
        lambda d: _container(d)["readinessProbe"].update(periodSeconds=0, failureThreshold=3),
        f"failureThreshold is disallowed when periodSeconds is zero: {CONTAINER}.readinessProbe.failureThreshold",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_local_runtime_refuses_what_knatives_webhook_refuses(
    mutate: Mutation, expected: str, tmp_path: Path
) -> None:
    message = _refusal(mutate, tmp_path)
    assert DENIED in message and "bad.yaml (Service product-get)" in message
    assert expected in message.split("validation failed: ", 1)[1], message


def test_every_service_of_the_shop_and_the_bench_is_admitted() -> None:
    services = manifests.services()
    assert len(services) >= 20
    for path in sorted((manifests.KNATIVE_DIR / "services").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document["kind"] == "Service":
                assert admission.check(document) == [], path.name
    assert manifests.services([manifests.ROOT / "tests" / "bench" / "hello"])


def test_what_knative_allows_is_admitted() -> None:
    document = _sample()
    _annotations(document).update(
        {
            "autoscaling.knative.dev/min-scale": "0",
            "autoscaling.knative.dev/max-scale": "0",  # 0: no upper bound
            "autoscaling.knative.dev/window": "1h",
            "autoscaling.knative.dev/target": "0.01",
            "autoscaling.knative.dev/metric": "rps",
            "autoscaling.knative.dev/initial-scale": "2",
        }
    )
    document["spec"]["template"]["spec"].update(containerConcurrency=0, timeoutSeconds=600)
    _container(document)["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}}
    assert admission.check(document) == []


def test_several_errors_are_reported_together_one_per_line() -> None:
    document = _sample()
    _annotations(document)["autoscaling.knative.dev/window"] = "2s"
    document["spec"]["template"]["spec"]["timeoutSeconds"] = 9000
    with pytest.raises(admission.Refused) as refused:
        admission.admit(Path("x.yaml"), document)
    assert len(refused.value.errors) == 2
    lines = str(refused.value).split("validation failed: ", 1)[1].splitlines()
    assert lines == sorted(lines) and len(lines) == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("60s", 60.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("250ms", 0.25), ("0", 0.0), ("60", None), ("s", None)],
)
def test_durations_are_read_as_go_reads_them(text: str, seconds: float | None) -> None:
    assert admission.go_duration(text) == seconds

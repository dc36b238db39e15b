"""checkov, the security scanner, on what the dev and production overlays render: no failed check, and every
exception written on its resource as a checkov.io/skip annotation with its reason.

checkov runs from a venv of its own (tooling.checkov(): its pins clash with requirements-dev.txt),
offline (--skip-download: no policy or metadata fetched). Its Kubernetes checks inspect the built-in
workload kinds (Deployments, Jobs, ...); the Knative Services' containers are held to the same rules
(non-root, no privilege escalation, limits, probes) by test_knative_services.py.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import tooling

CLUSTER = tooling.ROOT / "cluster"
OVERLAYS = ("dev", "production")
# A reason worth the name: more than a word or two.
MIN_REASON_WORDS = 6


@cache
def scan(directory: Path) -> dict[str, Any]:
    """checkov's JSON report on the rendered overlays, written into `directory` (one file each)."""
    for overlay in OVERLAYS:
        rendered = yaml.safe_dump_all(tooling.kustomize(CLUSTER / overlay), sort_keys=False)
        (directory / f"{overlay}.yaml").write_text(rendered)
    command = [str(tooling.checkov()), "--directory", str(directory), "--framework", "kubernetes"]
    result = subprocess.run(
        [*command, "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.stdout.strip(), f"checkov printed no report (exit {result.returncode}):\n{result.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return scan(tmp_path_factory.mktemp("rendered"))


def test_checkov_finds_no_failure(report: dict[str, Any]) -> None:
    failed = [
        f"{check['check_id']} {check['check_name']}: {check['resource']} ({Path(check['file_path']).name})"
        for check in report["results"]["failed_checks"]
    ]
    assert report["summary"]["failed"] == 0 and not failed, "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0


def test_checkov_scanned_both_overlays_workloads(report: dict[str, Any]) -> None:
    checked = report["results"]["passed_checks"] + report["results"]["skipped_checks"]
    resources = {(Path(check["file_path"]).stem, check["resource"]) for check in checked}
    for overlay in OVERLAYS:
        for workload in ("Deployment.shop.keycloak", "Deployment.observability.prometheus", "Job.shop.migrate-orders"):
            assert (overlay, workload) in resources, (overlay, workload)
    assert report["summary"]["passed"] > 500


def test_every_exception_is_an_annotation_with_a_reason(report: dict[str, Any]) -> None:
    skipped = report["results"]["skipped_checks"]
    assert skipped, "no exception at all: then drop this test's reason to exist"
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.split()) >= MIN_REASON_WORDS, f"{check['check_id']} on {check['resource']}: {reason!r}"


def test_the_annotations_are_what_checkov_skipped() -> None:
    """Each checkov.io/skip annotation in the renders names a check id and gives a reason (none is malformed)."""
    for overlay in OVERLAYS:
        for document in tooling.kustomize(CLUSTER / overlay):
            for key, value in (document["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check_id, _, reason = value.partition("=")
                    assert check_id.startswith("CKV_K8S_") and len(reason.split()) >= MIN_REASON_WORDS, (key, value)

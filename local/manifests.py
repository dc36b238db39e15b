"""Reads knative/ and eventing/ — the single source of truth for what runs and how events flow."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
            for document in yaml.safe_load_all(file.read_text()):
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

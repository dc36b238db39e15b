"""Deploys the shop to a Knative cluster with `kn`, from the manifests in knative/ and eventing/.

    python knative/deploy.py                  # print the plan (the commands, in order)
    python knative/deploy.py --apply          # run it against the current kube context
    python knative/deploy.py --image REF      # deploy another build of the functions image

Every command is derived from the YAML, so the manifests stay the single source of truth.
Knative Services go through `kn service create -f` (the file as written, replaced with
--force). Brokers, Triggers, PingSources and KafkaSources become their `kn` commands when
every field they set has a `kn` flag; anything else (the Namespace and ConfigMaps, Strimzi
KafkaTopics, a Trigger using the `filters` dialect, a source with delivery settings or an
initial offset, a PingSource with a content type) is applied as written with
`kubectl apply -f -`, so no field is dropped on the way. Secrets are not deployed: create them
from your secret manager (knative/config/secrets.example.yaml lists them).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
KNATIVE = ROOT / "knative"
EVENTING = ROOT / "eventing"


@dataclass(frozen=True)
class Step:
    """One command; `stdin` is a YAML document piped to kubectl."""

    argv: tuple[str, ...]
    stdin: str | None = None
    source: str = ""

    def shell(self) -> str:
        line = shlex.join(self.argv)
        return f"{line} <<'YAML'\n{self.stdin.rstrip()}\nYAML" if self.stdin else line


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(path.read_text()):
        if isinstance(document, dict) and document.get("kind"):
            yield document


def _sink(spec: Mapping[str, Any]) -> str:
    """A Destination as kn writes it: ksvc:NAME, broker:NAME, or the URI."""
    if "ref" in spec:
        ref = spec["ref"]
        prefix = {"Service": "ksvc", "Broker": "broker"}[ref["kind"]]
        return f"{prefix}:{ref['name']}"
    return str(spec["uri"])


def _delivery_flags(delivery: Mapping[str, Any] | None, dead_letter_flag: str) -> list[str]:
    if not delivery:
        return []
    flags: list[str] = []
    if "deadLetterSink" in delivery:
        flags += [dead_letter_flag, _sink(delivery["deadLetterSink"])]
    if "retry" in delivery:
        flags += ["--retry", str(delivery["retry"])]
    if "backoffPolicy" in delivery:
        flags += ["--backoff-policy", delivery["backoffPolicy"]]
    if "backoffDelay" in delivery:
        flags += ["--backoff-delay", delivery["backoffDelay"]]
    return flags


# The spec fields each `kn ... create` below carries as flags (and the delivery fields it maps).
KN_FIELDS: Mapping[str, frozenset[str]] = {
    "Broker": frozenset({"config", "delivery"}),
    "Trigger": frozenset({"broker", "subscriber", "filter"}),
    "PingSource": frozenset({"schedule", "sink", "data"}),
    "KafkaSource": frozenset({"bootstrapServers", "topics", "consumerGroup", "sink"}),
}
KN_DELIVERY_FIELDS = frozenset({"deadLetterSink", "retry", "backoffPolicy", "backoffDelay"})


def kn_can_express(document: Mapping[str, Any]) -> bool:
    """Whether a `kn` command would carry every field of this eventing document."""
    spec = document.get("spec", {})
    fields = KN_FIELDS.get(document["kind"])
    return (
        fields is not None
        and set(spec) <= fields
        and set(spec.get("delivery") or {}) <= KN_DELIVERY_FIELDS
        and set(spec.get("filter") or {}) <= {"attributes"}
    )


def _kubectl(document: Mapping[str, Any], source: str) -> Step:
    return Step(("kubectl", "apply", "-f", "-"), yaml.safe_dump(dict(document), sort_keys=False), source)


def eventing_step(document: Mapping[str, Any], source: str) -> Step:
    kind = document["kind"]
    metadata = document["metadata"]
    spec = document.get("spec", {})
    name, namespace = metadata["name"], metadata.get("namespace", "default")
    base = ("-n", namespace)
    if not kn_can_express(document):
        # Namespace, ConfigMap, KafkaTopic (Strimzi), and whatever sets a field kn has no flag for.
        return _kubectl(document, source)
    if kind == "Broker":
        broker_class = metadata.get("annotations", {}).get("eventing.knative.dev/broker.class", "MTChannelBasedBroker")
        argv = ["kn", "broker", "create", name, *base, "--class", broker_class]
        if "config" in spec:
            config = spec["config"]
            argv += ["--broker-config", f"cm:{config['name']}"]
        argv += _delivery_flags(spec.get("delivery"), "--dl-sink")
        return Step(tuple(argv), source=source)
    if kind == "Trigger":
        argv = ["kn", "trigger", "create", name, *base, "--broker", spec["broker"], "--sink", _sink(spec["subscriber"])]
        for key, value in spec.get("filter", {}).get("attributes", {}).items():
            argv += ["--filter", f"{key}={value}"]
        return Step(tuple(argv), source=source)
    if kind == "PingSource":
        argv = [
            "kn",
            "source",
            "ping",
            "create",
            name,
            *base,
            "--schedule",
            spec["schedule"],
            "--sink",
            _sink(spec["sink"]),
        ]
        if spec.get("data"):
            argv += ["--data", spec["data"]]
        return Step(tuple(argv), source=source)
    # A KafkaSource (the last kind in KN_FIELDS).
    argv = [
        "kn",
        "source",
        "kafka",
        "create",
        name,
        *base,
        "--servers",
        ",".join(spec["bootstrapServers"]),
        "--topics",
        ",".join(spec["topics"]),
        "--consumergroup",
        spec["consumerGroup"],
        "--sink",
        _sink(spec["sink"]),
    ]
    return Step(tuple(argv), source=source)


def plan(image: str | None = None) -> list[Step]:
    steps: list[Step] = []
    for path in sorted((KNATIVE / "config").glob("*.yaml")):
        if "example" in path.name:
            continue
        steps += [_kubectl(d, str(path.relative_to(ROOT))) for d in _documents(path)]
    # Keycloak and its realm (a kustomization: the realm file becomes a ConfigMap).
    steps.append(Step(("kubectl", "apply", "-k", "knative/keycloak/"), source="knative/keycloak/kustomization.yaml"))
    for path in sorted((KNATIVE / "services").glob("*.yaml")):
        documents = list(_documents(path))
        # What a service runs as (ServiceAccount, Role, RoleBinding) goes first: its pods need it.
        steps += [_kubectl(d, str(path.relative_to(ROOT))) for d in documents if d["kind"] != "Service"]
        for document in documents:
            if document["kind"] != "Service":
                continue
            # kn reads only the file's first document: the Service comes first in every file.
            metadata = document["metadata"]
            argv = [
                "kn",
                "service",
                "create",
                metadata["name"],
                "-n",
                metadata.get("namespace", "default"),
                "-f",
                str(path.relative_to(ROOT)),
                "--force",
            ]
            if image:
                argv += ["--image", image]
            steps.append(Step(tuple(argv), source=str(path.relative_to(ROOT))))
    for path in sorted(EVENTING.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        steps += [eventing_step(d, str(path.relative_to(ROOT))) for d in _documents(path)]
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apply", action="store_true", help="run the commands (default: print them)")
    parser.add_argument("--image", help="functions image to deploy, e.g. ghcr.io/you/shop-functions:1.2.3")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args()
    steps = plan(args.image)
    if args.json:
        print(json.dumps([{"argv": s.argv, "stdin": s.stdin, "source": s.source} for s in steps], indent=2))
        return
    if not args.apply:
        print("# The deployment plan; run with --apply to execute it.\n")
        for step in steps:
            print(f"# from {step.source}\n{step.shell()}\n")
        return
    missing = [tool for tool in ("kn", "kubectl") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"deploy: {', '.join(missing)} not found on PATH; install the Knative CLI and kubectl first")
    for step in steps:
        print(f"+ {shlex.join(step.argv)}", flush=True)
        subprocess.run(step.argv, input=step.stdin, text=True, check=True)


if __name__ == "__main__":
    main()

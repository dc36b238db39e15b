"""Strict offline validation of manifests against official CRD schemas (Knative, Strimzi, CloudNativePG, MongoDB).

The CRDs (copied byte-for-byte from upstream) live in two folders: Knative's in `KNATIVE_CRDS_DIR`,
else `<repo>/../shared/knative-crds`; the platform operators' in `PLATFORM_CRDS_DIR`, else
`<repo>/../shared/platform-crds` (its SOURCES.md names each file's origin). Every served
version's `openAPIV3Schema` is turned into a JSON Schema that rejects unknown fields, as
`kubectl apply --validate=strict` does: an object schema with `properties` and neither
`additionalProperties` nor `x-kubernetes-preserve-unknown-fields: true` gets `additionalProperties: false`.
CEL rules (`x-kubernetes-validations`) are not evaluated; the operators' webhooks check those.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.protocols import Validator

REPO_ROOT = Path(__file__).resolve().parents[2]
CRDS_ENV = "KNATIVE_CRDS_DIR"
PLATFORM_CRDS_ENV = "PLATFORM_CRDS_DIR"
# Environment variable -> the folder beside the repository used when it is not set.
CRD_FOLDERS = {CRDS_ENV: "knative-crds", PLATFORM_CRDS_ENV: "platform-crds"}

Document = dict[str, Any]
Kind = tuple[str, str]

# Keywords that only document a schema; the rest (type, enum, pattern, ...) carry over as is.
_DOCUMENTATION = frozenset({"description", "default", "example", "externalDocs", "title"})
# Logical junctors: in a structural schema their branches only restrict values, so they
# never get `additionalProperties: false` (that would reject fields the outer schema allows).
_JUNCTORS = ("allOf", "anyOf", "oneOf")

DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Label and annotation keys: optional DNS-subdomain prefix and "/", then a name of at most 63.
QUALIFIED_NAME = (
    r"^(?:(?=[^/]{1,253}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(?=[^/]{1,63}$)([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

_PATTERN_NAMES = {
    DNS_1035_LABEL: "a DNS-1035 label (lowercase letters, digits and '-', starting with a letter)",
    DNS_1123_LABEL: "a DNS-1123 label (lowercase letters, digits and '-')",
    DNS_1123_SUBDOMAIN: "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
    QUALIFIED_NAME: "a qualified name ([dns-prefix/]name, name at most 63 characters)",
    LABEL_VALUE: "a label value (at most 63 letters, digits, '-', '_' or '.')",
}


def crds_location(env: str = CRDS_ENV) -> Path:
    """Where one CRD folder is looked for (whether or not it exists): Knative's unless `env` names another."""
    configured = os.environ.get(env, "").strip()
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / CRD_FOLDERS[env]


def crds_dir(env: str = CRDS_ENV) -> Path | None:
    """One CRD folder, or None when it is missing."""
    location = crds_location(env)
    return location if location.is_dir() else None


def known_kinds() -> list[Kind]:
    """Every (apiVersion, kind) a served CRD version defines, in every CRD folder found, sorted."""
    return sorted(_all_validators())


def validate(document: Mapping[str, Any]) -> list[str]:
    """Human-readable errors (each starting with its JSON path) of one manifest document."""
    if not isinstance(document, Mapping):
        return [f"(document): expected a mapping, got {_json_type(document)}"]
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return ["(document): apiVersion and kind must both be strings"]
    validator = _all_validators().get((api_version, kind))
    if validator is None:
        folders = ", ".join(str(crds_location(env)) for env in CRD_FOLDERS)
        return [f"(document): no CRD in {folders} defines apiVersion {api_version} kind {kind}"]
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    return [message for error in errors for message in _describe(error)]


def load_documents(path: Path) -> list[Document]:
    """The non-empty YAML documents of a file; a duplicate key is an error, as in strict decoding."""
    with path.open(encoding="utf-8") as stream:
        documents = [doc for doc in yaml.load_all(stream, Loader=_StrictLoader) if doc is not None]
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict):
            raise TypeError(f"{path}: document {index} is a {_json_type(doc)}, not a mapping")
    return documents


def to_json_schema(node: Mapping[str, Any], *, structural: bool = True) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for one structural OpenAPI v3 schema node, strict on unknown fields."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DOCUMENTATION:
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub, structural=structural) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, Mapping):
            out[key] = to_json_schema(value, structural=structural)
        elif key in _JUNCTORS:
            out[key] = [to_json_schema(branch, structural=False) for branch in value]
        elif key == "not":
            out[key] = to_json_schema(value, structural=False)
        else:
            out[key] = value
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string"):
        # Upstream spells it `anyOf: [{type: integer}, {type: string}]`; one type list says it plainer.
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("x-kubernetes-embedded-resource"):
        out["properties"] = {
            **_TYPE_META,
            "metadata": {"type": "object"},
            **out.get("properties", {}),
        }
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if structural and "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


_TYPE_META: dict[str, Any] = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
}


def object_meta(name_pattern: str, name_max_length: int) -> dict[str, Any]:
    """ObjectMeta-lite: the fields a hand-written manifest uses, `name` required."""
    keyed = {"propertyNames": {"pattern": QUALIFIED_NAME}}
    return {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {
                "type": "string",
                "pattern": name_pattern,
                "maxLength": name_max_length,
            },
            "generateName": {"type": "string"},
            "namespace": {"type": "string", "pattern": DNS_1123_LABEL, "maxLength": 63},
            "labels": {
                "type": "object",
                **keyed,
                "additionalProperties": {
                    "type": "string",
                    "pattern": LABEL_VALUE,
                    "maxLength": 63,
                },
            },
            "annotations": {
                "type": "object",
                **keyed,
                "additionalProperties": {"type": "string"},
            },
            "finalizers": {"type": "array", "items": {"type": "string"}},
            "ownerReferences": {"type": "array", "items": {"type": "object"}},
        },
    }


def resource_schema(api_version: str, kind: str, openapi: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a whole resource: the CRD's schema plus TypeMeta and ObjectMeta-lite.

    Kubernetes adds apiVersion, kind and metadata to every CRD implicitly; most eventing
    CRDs do not list them, so a strict root would otherwise reject every manifest.
    """
    schema = to_json_schema(openapi)
    group = api_version.partition("/")[0]
    if (group, kind) == ("serving.knative.dev", "Service"):
        # The name becomes a DNS label of the service's cluster-local host name.
        meta = object_meta(DNS_1035_LABEL, 63)
    else:
        meta = object_meta(DNS_1123_SUBDOMAIN, 253)
    schema["properties"] = {
        **schema.get("properties", {}),
        "apiVersion": {"const": api_version},
        "kind": {"const": kind},
        "metadata": meta,
    }
    schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind", "metadata"})
    return schema


def _all_validators() -> dict[Kind, Validator]:
    """The validators of every CRD folder found; Knative's folder is required."""
    if crds_dir() is None:
        raise FileNotFoundError(f"Knative CRDs not found at {crds_location()}; set {CRDS_ENV}")
    found: dict[Kind, Validator] = {}
    for env in CRD_FOLDERS:
        directory = crds_dir(env)
        if directory is not None:
            found.update(_validators(directory))
    return found


@cache
def _validators(directory: Path) -> dict[Kind, Validator]:
    found: dict[Kind, Validator] = {}
    for path in sorted(directory.rglob("*.yaml")):
        # Upstream files, large (CloudNativePG's are over 1 MB): libyaml's parser when present.
        with path.open(encoding="utf-8") as stream:
            documents = [doc for doc in yaml.load_all(stream, Loader=_FAST_LOADER) if isinstance(doc, dict)]
        for document in documents:
            if document.get("kind") != "CustomResourceDefinition":
                continue  # e.g. the Kafka broker's example ConfigMap
            spec = document["spec"]
            for version in spec["versions"]:
                openapi = (version.get("schema") or {}).get("openAPIV3Schema")
                if not version.get("served", True) or openapi is None:
                    continue
                api_version = f"{spec['group']}/{version['name']}"
                kind = spec["names"]["kind"]
                schema = resource_schema(api_version, kind, openapi)
                _StrictValidator.check_schema(schema)
                found[(api_version, kind)] = _StrictValidator(schema)
    return found


def _list_type(
    validator: Validator, list_type: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """`x-kubernetes-list-type`: entries of a map list are unique by their keys, of a set by value."""
    if not validator.is_type(instance, "array") or list_type not in ("map", "set"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen: dict[Hashable, int] = {}
    for index, item in enumerate(instance):
        if list_type == "map":
            if not isinstance(item, Mapping):
                continue
            identity: Hashable = tuple(_hashable(item.get(key)) for key in keys)
            label = ", ".join(f"{key}={item.get(key)!r}" for key in keys)
        else:
            identity, label = _hashable(item), repr(item)
        if identity in seen:
            yield ValidationError(
                f"duplicate entry {label} (first at index {seen[identity]})",
                path=[index],
            )
        else:
            seen[identity] = index


def _hashable(value: Any) -> Hashable:
    return repr(value) if isinstance(value, (dict, list)) else value


_StrictValidator = validators.extend(Draft202012Validator, {"x-kubernetes-list-type": _list_type})


def _describe(error: ValidationError) -> Iterator[str]:
    where = _json_path(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        instance = error.instance if isinstance(error.instance, Mapping) else {}
        for name in sorted(set(instance) - set(schema.get("properties", {}))):
            yield f"{_json_path([*error.absolute_path, name])}: unknown field {name!r}"
    elif error.validator == "required":
        yield f"{where}: {error.message.replace('is a required property', 'is required')}"
    elif error.validator == "type":
        expected = error.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        yield f"{where}: expected {wanted}, got {_json_type(error.instance)} {error.instance!r}"
    elif error.validator == "pattern" and error.validator_value in _PATTERN_NAMES:
        # Also the error of a label or annotation key (propertyNames): `where` is then the map.
        yield f"{where}: {error.instance!r} is not {_PATTERN_NAMES[error.validator_value]}"
    else:
        yield f"{where}: {error.message}"


def _json_path(parts: Iterable[Any]) -> str:
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(part)):
            path += f".{part}" if path else str(part)
        else:
            path += f"[{str(part)!r}]"
    return path or "(document)"


def _json_type(value: Any) -> str:
    for python_type, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
    ):
        if isinstance(value, python_type):
            return name
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

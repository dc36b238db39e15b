"""Turns Eureka requests (JSON or XML bodies, query parameters, path segments) into registry commands.

Bodies are validated against api.yaml; an XML body is first read into the same document a
JSON client would send (wire.xml_document), so both are held to one schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import flask

from functions.registry import wire
from functions.registry.model import (
    AMAZON_DATA_CENTER_CLASS,
    DEFAULT_DATA_CENTER_CLASS,
    DEFAULT_RENEWAL_INTERVAL_SECONDS,
    DataCenter,
    InstanceInfo,
    InstanceRef,
    OverrideStatus,
    Port,
    Register,
    RemoveOverride,
    Renew,
    Status,
)
from functions.shared import problems, web
from functions.shared.validation import SchemaSet

SCHEMAS = SchemaSet(Path(__file__).with_name("api.yaml"))
_SCHEMA = SCHEMAS.document["components"]["schemas"]
APP = re.compile(_SCHEMA["AppName"]["pattern"])
INSTANCE_ID = re.compile(_SCHEMA["InstanceId"]["pattern"])
MAX_TIMESTAMP = int(_SCHEMA["Timestamp"]["maximum"])
# An instance description is a few KiB at most; anything much larger is not one.
MAX_BODY_BYTES = 64 * 1024
JSON_TYPES = ("application/json",)
XML_TYPES = ("application/xml", "text/xml")
# Eureka's defaults for an InstanceInfo that leaves its ports out.
DEFAULT_PORT = Port(7001, True)
DEFAULT_SECURE_PORT = Port(7002, False)

# Where Eureka's codecs may send a number or a boolean as a string ("8080", "true").
INTEGER_FIELDS = ("countryId", "lastUpdatedTimestamp", "lastDirtyTimestamp")
LEASE_FIELDS = (
    "renewalIntervalInSecs",
    "durationInSecs",
    "registrationTimestamp",
    "lastRenewalTimestamp",
    "renewalTimestamp",
    "evictionTimestamp",
    "serviceUpTimestamp",
)
INTEGER_TEXT = re.compile(r"^-?[0-9]{1,19}$")


# --- path -----------------------------------------------------------------------------------


def app_name(raw: str) -> str:
    """Eureka application names are case-insensitive: the registry keeps them upper-cased."""
    if not APP.match(raw):
        raise problems.invalid_field("app", f"must match {APP.pattern}")
    return raw.upper()


def instance_ref(app: str, instance_id: str) -> InstanceRef:
    return InstanceRef(app_name(app), instance_id_of(instance_id))


def instance_id_of(raw: str) -> str:
    if not INSTANCE_ID.match(raw):
        raise problems.invalid_field("instanceId", "1 to 256 characters, no '/' and no control characters")
    return raw


# --- query ----------------------------------------------------------------------------------


def renew_command(ref: InstanceRef, args: Mapping[str, str]) -> Renew:
    """Unknown query parameters are ignored, as Eureka does: clients add their own."""
    _status(args, "overriddenstatus")
    _status(args, "status")
    return Renew(ref, _timestamp(args, "lastDirtyTimestamp"))


def override_command(ref: InstanceRef, args: Mapping[str, str]) -> OverrideStatus:
    status = _status(args, "value")
    if status is None:
        raise problems.invalid_field("value", "give the status to override with, e.g. value=OUT_OF_SERVICE")
    return OverrideStatus(ref, status, _timestamp(args, "lastDirtyTimestamp"))


def remove_override_command(ref: InstanceRef, args: Mapping[str, str]) -> RemoveOverride:
    return RemoveOverride(ref, _status(args, "value"), _timestamp(args, "lastDirtyTimestamp"))


def _status(args: Mapping[str, str], name: str) -> Status | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return Status(raw)
    except ValueError:
        raise problems.invalid_field(name, f"{raw!r} is not one of {[s.value for s in Status]}") from None


def _timestamp(args: Mapping[str, str], name: str) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > MAX_TIMESTAMP:
        raise problems.invalid_field(name, f"must be epoch milliseconds, got {raw!r}")
    return int(raw)


# --- body -----------------------------------------------------------------------------------


def register_command(path_app: str, request: flask.Request, default_lease_seconds: int) -> Register:
    """POST /eureka/apps/{APP} with {"instance": {...}} or <instance>...</instance>."""
    app = app_name(path_app)
    document = _coerced(_document(request))
    SCHEMAS.check("Registration", document)
    body = document["instance"]
    if body["app"].upper() != app:
        raise problems.invalid_field("/instance/app", f"mismatched appName, expecting {app} but was {body['app']}")
    override = body.get("overriddenStatus") or body.get("overriddenstatus") or Status.UNKNOWN
    return Register(
        info=_instance_info(app, body, default_lease_seconds),
        status=Status(body.get("status") or Status.UP),
        overridden_status=Status(override),
        last_dirty_ms=body.get("lastDirtyTimestamp"),
    )


def _document(request: flask.Request) -> Any:
    mimetype = (request.mimetype or "").lower()
    is_xml = mimetype in XML_TYPES or mimetype.endswith("+xml")
    if not is_xml and mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise problems.Problem(
            415,
            "Unsupported media type",
            f"send the instance as application/json or application/xml, not {mimetype or 'nothing'}",
            "unsupported-media-type",
        )
    if (request.content_length or 0) > MAX_BODY_BYTES or len(request.get_data(cache=True)) > MAX_BODY_BYTES:
        raise problems.Problem(
            413, "Payload too large", f"an instance is at most {MAX_BODY_BYTES} bytes", "payload-too-large"
        )
    if not is_xml:
        return web.read_json(request)
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise problems.invalid_field("/", "the request body is empty; an <instance> document is required")
    return wire.xml_document(raw)


def _coerced(document: Any) -> Any:
    """The document with numbers and booleans sent as text turned into numbers and booleans.

    Anything that does not look like one is left alone, for the schema to name.
    """
    if not isinstance(document, dict) or not isinstance(document.get("instance"), dict):
        return document
    # null is the same as leaving the field out (Eureka's Java codec never sends null; others do).
    instance = {k: v for k, v in document["instance"].items() if v is not None}
    for name in INTEGER_FIELDS:
        if name in instance:
            instance[name] = _integer(instance[name])
    for name in ("port", "securePort"):
        if isinstance(instance.get(name), dict):
            port = dict(instance[name])
            if "$" in port:
                port["$"] = _integer(port["$"])
            if "@enabled" in port:
                port["@enabled"] = _boolean(port["@enabled"])
            instance[name] = port
    if isinstance(instance.get("leaseInfo"), dict):
        instance["leaseInfo"] = {k: _integer(v) if k in LEASE_FIELDS else v for k, v in instance["leaseInfo"].items()}
    if "isCoordinatingDiscoveryServer" in instance:
        instance["isCoordinatingDiscoveryServer"] = _boolean(instance["isCoordinatingDiscoveryServer"])
    return {**document, "instance": instance}


def _integer(value: Any) -> Any:
    if isinstance(value, str) and INTEGER_TEXT.match(value.strip()):
        return int(value)
    return value


def _boolean(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _instance_info(app: str, body: Mapping[str, Any], default_lease_seconds: int) -> InstanceInfo:
    lease = body.get("leaseInfo") or {}
    center = body.get("dataCenterInfo") or {}
    center_name = center.get("name", "MyOwn")
    default_class = AMAZON_DATA_CENTER_CLASS if center_name == "Amazon" else DEFAULT_DATA_CENTER_CLASS
    return InstanceInfo(
        app=app,
        instance_id=body["instanceId"],
        host_name=body["hostName"],
        ip_addr=body.get("ipAddr") or "",
        port=_port(body.get("port"), DEFAULT_PORT),
        secure_port=_port(body.get("securePort"), DEFAULT_SECURE_PORT),
        lease_duration_seconds=lease.get("durationInSecs") or default_lease_seconds,
        renewal_interval_seconds=lease.get("renewalIntervalInSecs") or DEFAULT_RENEWAL_INTERVAL_SECONDS,
        country_id=body.get("countryId", 1),
        data_center=DataCenter(
            center_name, center.get("@class") or default_class, _metadata(center.get("metadata") or {})
        ),
        metadata=_metadata(body.get("metadata") or {}),
        home_page_url=body.get("homePageUrl") or "",
        status_page_url=body.get("statusPageUrl") or "",
        health_check_url=body.get("healthCheckUrl") or "",
        secure_health_check_url=body.get("secureHealthCheckUrl") or "",
        vip_address=body.get("vipAddress") or "",
        secure_vip_address=body.get("secureVipAddress") or "",
        app_group_name=body.get("appGroupName") or "",
        asg_name=body.get("asgName") or "",
        is_coordinating_discovery_server=bool(body.get("isCoordinatingDiscoveryServer", False)),
    )


def _port(document: Mapping[str, Any] | None, default: Port) -> Port:
    if document is None:
        return default
    return Port(int(document["$"]), bool(document.get("@enabled", default.enabled)))


def _metadata(document: Mapping[str, Any]) -> dict[str, str]:
    """String values, as Eureka keeps them; its '@class' marker of an empty map is not an entry."""
    return {key: _text(value) for key, value in document.items() if key != "@class"}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)

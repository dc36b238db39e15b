"""Eureka's wire format, both ways: instances and applications as Eureka's JSON and XML, and XML bodies read.

The shapes are the ones Eureka servers send and its clients (Java, Spring Cloud,
py-eureka-client) parse: JSON with `$`/`@attribute` keys and string-typed timestamps; XML
with the port's `enabled` and the data center's `class` as attributes.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from functions.registry.model import Applications, Instance
from functions.shared import problems

JSON = "application/json"
XML = "application/xml"
# Children of <instance> that are maps, even when empty (<metadata/>), in an XML body.
XML_OBJECTS = frozenset({"metadata", "leaseInfo", "dataCenterInfo"})
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def wants_json(accept: str | None) -> bool:
    """Eureka's rule: JSON when the Accept header mentions json, XML otherwise (py-eureka-client sends */*)."""
    return "json" in (accept or "").lower()


# --- out ---------------------------------------------------------------------------------


def instance_json(instance: Instance) -> dict[str, Any]:
    info, lease = instance.info, instance.lease
    document: dict[str, Any] = {
        "instanceId": info.instance_id,
        "hostName": info.host_name,
        "app": info.app,
        "ipAddr": info.ip_addr,
        "status": instance.status.value,
        # Eureka's own codecs disagree on the case; clients read one or the other.
        "overriddenStatus": instance.overridden_status.value,
        "overriddenstatus": instance.overridden_status.value,
        "port": {"$": info.port.number, "@enabled": _flag(info.port.enabled)},
        "securePort": {"$": info.secure_port.number, "@enabled": _flag(info.secure_port.enabled)},
        "countryId": info.country_id,
        "dataCenterInfo": _data_center_json(instance),
        "leaseInfo": {
            "renewalIntervalInSecs": info.renewal_interval_seconds,
            "durationInSecs": info.lease_duration_seconds,
            "registrationTimestamp": lease.registered_ms,
            "lastRenewalTimestamp": lease.last_renewal_ms,
            "evictionTimestamp": lease.eviction_ms,
            "serviceUpTimestamp": lease.service_up_ms,
        },
        "metadata": dict(info.metadata),
        "homePageUrl": info.home_page_url,
        "statusPageUrl": info.status_page_url,
        "healthCheckUrl": info.health_check_url,
        "vipAddress": info.vip_address,
        "secureVipAddress": info.secure_vip_address,
        "isCoordinatingDiscoveryServer": _flag(info.is_coordinating_discovery_server),
        "lastUpdatedTimestamp": str(instance.last_updated_ms),
        "lastDirtyTimestamp": str(instance.last_dirty_ms),
        "actionType": instance.action.value,
    }
    if info.secure_health_check_url:
        document["secureHealthCheckUrl"] = info.secure_health_check_url
    if info.app_group_name:
        document["appGroupName"] = info.app_group_name
    if info.asg_name:
        document["asgName"] = info.asg_name
    return document


def _data_center_json(instance: Instance) -> dict[str, Any]:
    center = instance.info.data_center
    document: dict[str, Any] = {"@class": center.class_name, "name": center.name}
    if center.metadata:
        document["metadata"] = dict(center.metadata)
    return document


def _flag(value: bool) -> str:
    return "true" if value else "false"


def applications_body(apps: Applications, as_json: bool) -> tuple[bytes, str]:
    """GET /eureka/apps, /apps/delta, /vips/{vip}: every application with its instances."""
    grouped = apps.by_app()
    if as_json:
        document = {
            "applications": {
                "versions__delta": str(apps.version),
                "apps__hashcode": apps.hashcode,
                "application": [
                    {"name": name, "instance": [instance_json(i) for i in instances]} for name, instances in grouped
                ],
            }
        }
        return json.dumps(document).encode(), JSON
    out = ["<applications>"]
    _xml_text(out, "versions__delta", str(apps.version))
    _xml_text(out, "apps__hashcode", apps.hashcode)
    for name, instances in grouped:
        _application_xml(out, name, instances)
    out.append("</applications>")
    return "".join(out).encode(), XML


def application_body(name: str, instances: Sequence[Instance], as_json: bool) -> tuple[bytes, str]:
    """GET /eureka/apps/{APP}."""
    if as_json:
        document = {"application": {"name": name, "instance": [instance_json(i) for i in instances]}}
        return json.dumps(document).encode(), JSON
    out: list[str] = []
    _application_xml(out, name, instances)
    return "".join(out).encode(), XML


def instance_body(instance: Instance, as_json: bool) -> tuple[bytes, str]:
    """GET /eureka/apps/{APP}/{id} and /eureka/instances/{id}."""
    if as_json:
        return json.dumps({"instance": instance_json(instance)}).encode(), JSON
    out: list[str] = []
    _instance_xml(out, instance)
    return "".join(out).encode(), XML


# XML is written as text, not through ElementTree: a registry of 1,000 instances serializes
# several times faster. Element names are this module's or metadata keys, which registration
# holds to XML names; text and attribute values are escaped here.


def _application_xml(out: list[str], name: str, instances: Sequence[Instance]) -> None:
    out.append("<application>")
    _xml_text(out, "name", name)
    for instance in instances:
        _instance_xml(out, instance)
    out.append("</application>")


def _instance_xml(out: list[str], instance: Instance) -> None:
    """The XML form of instance_json: `$`/`@attr` objects become text and attributes, maps become children."""
    document = instance_json(instance)
    # XML clients read only the lower-case spelling (py-eureka-client, Eureka's XStream codec).
    del document["overriddenStatus"]
    _xml_value(out, "instance", document)


def _xml_value(out: list[str], name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        _xml_text(out, name, str(value))
        return
    attributes = "".join(f" {k[1:]}={quoteattr(_xml_safe(str(v)))}" for k, v in value.items() if k.startswith("@"))
    out.append(f"<{name}{attributes}>")
    if "$" in value:
        out.append(escape(_xml_safe(str(value["$"]))))
    for key, item in value.items():
        if key != "$" and not key.startswith("@"):
            _xml_value(out, key, item)
    out.append(f"</{name}>")


def _xml_text(out: list[str], name: str, text: str) -> None:
    out.append(f"<{name}>{escape(_xml_safe(text))}</{name}>")


def _xml_safe(text: str) -> str:
    """Characters XML 1.0 cannot carry at all (most control characters) become U+FFFD."""
    return NOT_XML.sub("\ufffd", text) if NOT_XML.search(text) else text


# --- in ----------------------------------------------------------------------------------


def xml_document(raw: bytes) -> dict[str, Any]:
    """An XML body as the JSON document Eureka's JSON codec would have received, e.g.
    `<instance><port enabled="true">8080</port>...` -> `{"instance": {"port": {"$": "8080", "@enabled": "true"}}}`.

    Values stay strings, as in XML; parse.py reads numbers and booleans from either form.
    DTDs (and with them entity expansion and external entities) are refused.
    """
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except ET.ParseError as error:
        raise problems.invalid_field("/", f"the body is not well-formed XML: {error}") from None
    except DefusedXmlException as error:
        raise problems.invalid_field("/", f"the XML body is refused: {type(error).__name__}") from None
    return {_local(root.tag): _from_xml(root, "/" + _local(root.tag))}


def _from_xml(element: ET.Element, pointer: str) -> Any:
    children = list(element)
    text = (element.text or "").strip()
    document: dict[str, Any] = {f"@{_local(k)}": v for k, v in element.attrib.items()}
    if not children:
        if not document and _local(element.tag) not in XML_OBJECTS:
            return text
        if text or _local(element.tag) not in XML_OBJECTS:
            document["$"] = text
        return document
    for child in children:
        key = _local(child.tag)
        if key in document:
            raise problems.invalid_field(f"{pointer}/{key}", "the element appears more than once")
        document[key] = _from_xml(child, f"{pointer}/{key}")
    return document


def _local(tag: str) -> str:
    """The tag without a namespace: {urn:x}port -> port."""
    return tag.rsplit("}", 1)[-1]

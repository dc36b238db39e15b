"""Registrations as real clients send them (JSON and XML, numbers as text), and the bodies that are refused."""

from __future__ import annotations

import copy
import json
from typing import Any

import flask
import pytest

from functions.registry import parse
from functions.registry.model import DataCenter, InstanceRef, Port, Renew, Status
from functions.shared.problems import Problem

APP = flask.Flask(__name__)

# What Spring Cloud's Eureka client (Jackson codec) sends.
SPRING = {
    "instance": {
        "instanceId": "10.0.0.7:orders:8080",
        "hostName": "10.0.0.7",
        "app": "ORDERS",
        "ipAddr": "10.0.0.7",
        "status": "UP",
        "overriddenStatus": "UNKNOWN",
        "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {
            "renewalIntervalInSecs": 30,
            "durationInSecs": 90,
            "registrationTimestamp": 0,
            "lastRenewalTimestamp": 0,
            "evictionTimestamp": 0,
            "serviceUpTimestamp": 0,
        },
        "metadata": {"management.port": "8080"},
        "homePageUrl": "http://10.0.0.7:8080/",
        "statusPageUrl": "http://10.0.0.7:8080/actuator/info",
        "healthCheckUrl": "http://10.0.0.7:8080/actuator/health",
        "vipAddress": "orders",
        "secureVipAddress": "orders",
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": "1800000000000",
        "lastDirtyTimestamp": "1800000000001",
        "sid": "na",
        "actionType": "ADDED",
    }
}

XML = b"""<instance>
  <instanceId>h:orders:8080</instanceId><hostName>h</hostName><app>orders</app><ipAddr>10.1.1.1</ipAddr>
  <status>STARTING</status><overriddenstatus>UNKNOWN</overriddenstatus>
  <port enabled="false">8080</port><securePort enabled="true">8443</securePort><countryId>1</countryId>
  <dataCenterInfo class="com.netflix.appinfo.AmazonInfo"><name>Amazon</name>
    <metadata><availability-zone>eu-west-1a</availability-zone></metadata></dataCenterInfo>
  <leaseInfo><renewalIntervalInSecs>5</renewalIntervalInSecs><durationInSecs>15</durationInSecs></leaseInfo>
  <metadata class="java.util.Collections$EmptyMap"/>
  <vipAddress>orders</vipAddress><isCoordinatingDiscoveryServer>true</isCoordinatingDiscoveryServer>
  <lastDirtyTimestamp>1800000000000</lastDirtyTimestamp>
</instance>"""


def command(body: bytes | dict[str, Any], content_type: str = "application/json", app: str = "orders") -> Any:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    with APP.test_request_context(f"/eureka/apps/{app}", method="POST", data=data, content_type=content_type):
        return parse.register_command(app, flask.request, 90)


def refused(body: bytes | dict[str, Any], content_type: str = "application/json", app: str = "orders") -> Problem:
    with pytest.raises(Problem) as raised:
        command(body, content_type, app)
    return raised.value


def changed(path: str, value: Any) -> dict[str, Any]:
    """SPRING with the field at `path` (dot-separated under instance) set, or removed when value is ...."""
    body = copy.deepcopy(SPRING)
    *parents, last = path.split(".")
    node = body["instance"]
    for name in parents:
        node = node[name]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return body


def test_a_spring_cloud_registration() -> None:
    cmd = command(SPRING)
    assert (cmd.status, cmd.overridden_status, cmd.last_dirty_ms) == (Status.UP, Status.UNKNOWN, 1_800_000_000_001)
    info = cmd.info
    assert (info.app, info.instance_id, info.host_name) == ("ORDERS", "10.0.0.7:orders:8080", "10.0.0.7")
    assert (info.port, info.secure_port) == (Port(8080, True), Port(443, False))
    assert (info.lease_duration_seconds, info.renewal_interval_seconds) == (90, 30)
    assert dict(info.metadata) == {"management.port": "8080"} and info.vip_address == "orders"
    assert info.is_coordinating_discovery_server is False


def test_an_xml_registration_with_numbers_and_flags_as_text() -> None:
    cmd = command(XML, "application/xml")
    assert (cmd.status, cmd.last_dirty_ms) == (Status.STARTING, 1_800_000_000_000)
    info = cmd.info
    assert (info.app, info.port, info.secure_port) == ("ORDERS", Port(8080, False), Port(8443, True))
    assert (info.lease_duration_seconds, info.renewal_interval_seconds) == (15, 5)
    assert info.data_center == DataCenter(
        "Amazon", "com.netflix.appinfo.AmazonInfo", {"availability-zone": "eu-west-1a"}
    )
    assert dict(info.metadata) == {} and info.is_coordinating_discovery_server is True
    assert command(XML, "text/xml").info == info


def test_defaults_for_what_a_minimal_client_leaves_out() -> None:
    cmd = command({"instance": {"instanceId": "i-1", "hostName": "h", "app": "ORDERS", "ipAddr": None}})
    assert (cmd.status, cmd.overridden_status, cmd.last_dirty_ms) == (Status.UP, Status.UNKNOWN, None)
    assert (cmd.info.port, cmd.info.secure_port) == (Port(7001, True), Port(7002, False))
    assert (cmd.info.lease_duration_seconds, cmd.info.ip_addr) == (90, "")


def test_py_eureka_client_registration_with_lower_case_override_and_empty_metadata_marker() -> None:
    body = changed("overriddenStatus", ...)
    body["instance"]["overriddenstatus"] = "OUT_OF_SERVICE"
    body["instance"]["metadata"] = {"@class": "java.util.Collections$EmptyMap"}
    body["instance"]["port"] = {"$": "9090", "@enabled": "true"}
    cmd = command(body)
    assert cmd.overridden_status is Status.OUT_OF_SERVICE and dict(cmd.info.metadata) == {}
    assert cmd.info.port == Port(9090, True)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (changed("instanceId", ...), "/instance/instanceId"),
        (changed("app", ...), "/instance/app"),
        (changed("hostName", ...), "/instance/hostName"),
        (changed("hostName", ""), "/instance/hostName"),
        (changed("instanceId", "a/b"), "/instance/instanceId"),
        (changed("app", "OTHER"), "/instance/app"),
        (changed("port.$", 70000), "/instance/port/$"),
        (changed("port.$", "http"), "/instance/port/$"),
        (changed("securePort.$", -1), "/instance/securePort/$"),
        (changed("port.@enabled", "yes"), "/instance/port/@enabled"),
        (changed("status", "SLEEPING"), "/instance/status"),
        (changed("overriddenStatus", "up"), "/instance/overriddenStatus"),
        (changed("leaseInfo.durationInSecs", 0), "/instance/leaseInfo/durationInSecs"),
        (changed("lastDirtyTimestamp", "yesterday"), "/instance/lastDirtyTimestamp"),
        (changed("metadata", {"bad key": "x"}), "/instance/metadata"),
        (changed("metadata", {f"k{n}": "v" for n in range(65)}), "/instance/metadata"),
        (changed("metadata", {"k": "v" * 3000}), "/instance/metadata/k"),
        (changed("homePageUrl", "x" * 3000), "/instance/homePageUrl"),
        ({"app": "ORDERS", "instanceId": "i", "hostName": "h"}, "/instance"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_invalid_registrations_name_the_field(body: dict[str, Any], field: str) -> None:
    problem = refused(body)
    assert problem.status == 400
    assert field in [error.field for error in problem.errors], problem


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"instance": ', "application/json", 400),
        (b"[]", "application/json", 400),
        (b"", "application/json", 400),
        (b"", "application/xml", 400),
        (b"<instance><app>orders</instance>", "application/xml", 400),
        (b"<instance/>", "application/xml", 400),
        (b"<instance>...</instance>", "text/plain", 415),
        (b'{"instance": {"x": "' + b"y" * 70_000 + b'"}}', "application/json", 413),
    ],
    ids=["truncated-json", "json-array", "empty-json", "empty-xml", "malformed-xml", "empty-instance", "type", "big"],
)
def test_unreadable_bodies(body: bytes, content_type: str, status: int) -> None:
    assert refused(body, content_type).status == status


def test_the_path_app_must_be_a_name() -> None:
    assert refused(SPRING, app="no spaces").errors[0].field == "app"


def test_query_parameters_of_heartbeats_and_overrides() -> None:
    ref = InstanceRef("ORDERS", "i-1")
    renew = parse.renew_command(ref, {"status": "UP", "lastDirtyTimestamp": "17", "extra": "ignored"})
    assert renew == Renew(ref, last_dirty_ms=17)
    assert parse.override_command(ref, {"value": "OUT_OF_SERVICE"}).status is Status.OUT_OF_SERVICE
    assert parse.remove_override_command(ref, {}).status is None
    for call, args, field in [
        (parse.renew_command, {"status": "ASLEEP"}, "status"),
        (parse.renew_command, {"lastDirtyTimestamp": "-1"}, "lastDirtyTimestamp"),
        (parse.renew_command, {"overriddenstatus": "nope"}, "overriddenstatus"),
        (parse.override_command, {}, "value"),
        (parse.override_command, {"value": "GONE"}, "value"),
        (parse.remove_override_command, {"value": "GONE"}, "value"),
    ]:
        with pytest.raises(Problem) as raised:
            call(ref, args)  # type: ignore[operator]
        assert (raised.value.status, raised.value.errors[0].field) == (400, field)

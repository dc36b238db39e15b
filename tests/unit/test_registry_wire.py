"""Eureka's wire format: the JSON and XML the registry answers with, read back as real clients read them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from py_eureka_client import eureka_basic

from functions.registry import wire
from functions.registry.model import (
    Applications,
    DataCenter,
    InstanceInfo,
    InstanceRef,
    KnativeService,
    OverrideStatus,
    Port,
    Register,
    Status,
    knative_instance,
    overridden,
    registered,
)
from functions.shared.problems import Problem

NOW = 1_800_000_000_000
INFO = InstanceInfo(
    app="ORDERS",
    instance_id="10.0.0.7:orders:8080",
    host_name="orders-7.example",
    ip_addr="10.0.0.7",
    port=Port(8080, True),
    secure_port=Port(8443, False),
    lease_duration_seconds=30,
    renewal_interval_seconds=10,
    metadata={"management.port": "8081", "zone": "default"},
    home_page_url="http://orders-7.example:8080/",
    status_page_url="http://orders-7.example:8080/info",
    health_check_url="http://orders-7.example:8080/health",
    vip_address="orders",
    secure_vip_address="orders",
)
UP = registered(None, Register(INFO, last_dirty_ms=NOW - 10), NOW)
DOWN = overridden(
    registered(None, Register(replace(INFO, instance_id="b", host_name="b.example")), NOW),
    OverrideStatus(InstanceRef("ORDERS", "b"), Status.OUT_OF_SERVICE),
    NOW + 1,
)
KNATIVE, _ = knative_instance(KnativeService("product-get", "shop"), None, NOW, 90)
APPS = Applications(7, "OUT_OF_SERVICE_1_UP_2_", (KNATIVE, DOWN, UP))


def test_accept_decides_json_or_xml_as_eureka_does() -> None:
    assert wire.wants_json("application/json")
    assert wire.wants_json("application/xml;q=0.5, application/json")
    assert not wire.wants_json(None) and not wire.wants_json("*/*") and not wire.wants_json("application/xml")


def test_instance_json_has_eurekas_shape() -> None:
    document = wire.instance_json(UP)
    assert document["port"] == {"$": 8080, "@enabled": "true"}
    assert document["securePort"] == {"$": 8443, "@enabled": "false"}
    assert document["dataCenterInfo"] == {
        "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
        "name": "MyOwn",
    }
    assert document["leaseInfo"] == {
        "renewalIntervalInSecs": 10,
        "durationInSecs": 30,
        "registrationTimestamp": NOW,
        "lastRenewalTimestamp": NOW,
        "evictionTimestamp": 0,
        "serviceUpTimestamp": NOW,
    }
    assert document["status"] == "UP" and document["overriddenStatus"] == document["overriddenstatus"] == "UNKNOWN"
    # Eureka sends these three as strings, countryId as a number.
    assert document["lastUpdatedTimestamp"] == str(NOW) and document["lastDirtyTimestamp"] == str(NOW - 10)
    assert document["isCoordinatingDiscoveryServer"] == "false" and document["countryId"] == 1
    assert document["actionType"] == "ADDED" and document["metadata"] == {"management.port": "8081", "zone": "default"}


def test_applications_json_lists_apps_in_order_with_version_and_hashcode() -> None:
    body, content_type = wire.applications_body(APPS, as_json=True)
    document = json.loads(body)["applications"]
    assert content_type == "application/json"
    assert (document["versions__delta"], document["apps__hashcode"]) == ("7", "OUT_OF_SERVICE_1_UP_2_")
    assert [a["name"] for a in document["application"]] == ["ORDERS", "PRODUCT-GET"]
    assert [i["instanceId"] for i in document["application"][0]["instance"]] == ["10.0.0.7:orders:8080", "b"]
    empty = json.loads(wire.applications_body(Applications(0, "", ()), as_json=True)[0])
    assert empty == {"applications": {"versions__delta": "0", "apps__hashcode": "", "application": []}}


def test_py_eureka_client_reads_the_xml_registry() -> None:
    body, content_type = wire.applications_body(APPS, as_json=False)
    assert content_type == "application/xml"
    apps = eureka_basic._build_applications(ET.fromstring(body))
    assert (apps.versions__delta, apps.apps__hashcode) == ("7", "OUT_OF_SERVICE_1_UP_2_")
    orders = apps.get_application("orders")
    assert [i.instanceId for i in orders.up_instances] == ["10.0.0.7:orders:8080"]
    up = orders.get_instance("10.0.0.7:orders:8080")
    assert (up.port.port, up.port.enabled, up.securePort.enabled) == (8080, True, False)
    assert up.metadata == {"management.port": "8081", "zone": "default"}
    assert (up.leaseInfo.durationInSecs, up.lastDirtyTimestamp, up.actionType) == (30, NOW - 10, "ADDED")
    assert up.dataCenterInfo.className.endswith("DefaultDataCenterInfo") and up.dataCenterInfo.name == "MyOwn"
    down = orders.get_instance("b")
    assert (down.status, down.overriddenstatus) == ("OUT_OF_SERVICE", "OUT_OF_SERVICE")
    knative = apps.get_application("PRODUCT-GET").instances[0]
    assert (knative.hostName, knative.port.port, knative.metadata) == (
        "product-get.shop.svc.cluster.local",
        80,
        {"knative": "true"},
    )


def test_one_application_and_one_instance_in_both_formats() -> None:
    xml_app = eureka_basic._build_application(ET.fromstring(wire.application_body("ORDERS", [UP, DOWN], False)[0]))
    assert xml_app.name == "ORDERS" and len(xml_app.instances) == 2
    xml_instance = eureka_basic._build_instance(ET.fromstring(wire.instance_body(UP, False)[0]))
    assert xml_instance.hostName == "orders-7.example" and xml_instance.status == "UP"
    document = json.loads(wire.application_body("ORDERS", [UP], True)[0])
    assert document["application"]["name"] == "ORDERS" and len(document["application"]["instance"]) == 1
    assert json.loads(wire.instance_body(UP, True)[0])["instance"]["instanceId"] == "10.0.0.7:orders:8080"


def test_amazon_data_center_metadata_goes_both_ways() -> None:
    amazon = replace(
        UP,
        info=replace(
            INFO,
            data_center=DataCenter("Amazon", "com.netflix.appinfo.AmazonInfo", {"availability-zone": "eu-west-1a"}),
        ),
    )
    assert wire.instance_json(amazon)["dataCenterInfo"]["metadata"] == {"availability-zone": "eu-west-1a"}
    parsed = eureka_basic._build_instance(ET.fromstring(wire.instance_body(amazon, False)[0]))
    assert parsed.dataCenterInfo.metadata == {"availability-zone": "eu-west-1a"} and parsed.zone == "eu-west-1a"


def test_an_xml_body_reads_as_the_json_document_a_client_would_send() -> None:
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
    <instance>
      <instanceId>h:orders:8080</instanceId><hostName>h</hostName><app>ORDERS</app>
      <port enabled="true">8080</port><securePort enabled="false">443</securePort>
      <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
      <leaseInfo><durationInSecs>30</durationInSecs></leaseInfo>
      <metadata class="java.util.Collections$EmptyMap"/>
      <homePageUrl/>
    </instance>"""
    assert wire.xml_document(body) == {
        "instance": {
            "instanceId": "h:orders:8080",
            "hostName": "h",
            "app": "ORDERS",
            "port": {"$": "8080", "@enabled": "true"},
            "securePort": {"$": "443", "@enabled": "false"},
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"durationInSecs": "30"},
            "metadata": {"@class": "java.util.Collections$EmptyMap"},
            "homePageUrl": "",
        }
    }


@pytest.mark.parametrize(
    "body",
    [
        b"<instance><app>X</instance>",
        b"not xml at all",
        b"<instance><app>A</app><app>B</app></instance>",
        # Billion laughs, and an external entity: no DTD is read at all.
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<instance><app>&lol2;</app></instance>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><instance>&xxe;</instance>',
    ],
    ids=["unclosed", "not-xml", "repeated-element", "entity-expansion", "external-entity"],
)
def test_bad_xml_is_a_400_problem(body: bytes) -> None:
    with pytest.raises(Problem) as raised:
        wire.xml_document(body)
    assert raised.value.status == 400
    assert raised.value.errors[0].field in ("/", "/instance/app")

"""The registry against the real PostgreSQL server: Eureka's API in-process and on real HTTP, where
py-eureka-client registers, heartbeats, discovers, calls, goes out of service and cancels."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import functions_framework
import psycopg
import pytest
import requests
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from flask.testing import FlaskClient
from py_eureka_client.eureka_client import EurekaClient, WalkNodeException
from werkzeug.serving import make_server

from functions.shared import events
from tests.conftest import ROOT, eventually, problem_of

SOURCE = "functions/registry/main.py"
JSON = {"Accept": "application/json"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}".upper()


def instance_body(app: str, instance_id: str, **changes: Any) -> dict[str, Any]:
    """A registration as Spring Cloud's Eureka client sends it."""
    instance: dict[str, Any] = {
        "instanceId": instance_id,
        "hostName": "127.0.0.1",
        "app": app,
        "ipAddr": "127.0.0.1",
        "status": "UP",
        "overriddenStatus": "UNKNOWN",
        "port": {"$": 8080, "@enabled": "true"},
        "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
        "metadata": {"management.port": "8080"},
        "homePageUrl": "http://127.0.0.1:8080/",
        "vipAddress": app.lower(),
        "secureVipAddress": app.lower() + "-secure",
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": str(int(time.time() * 1000)),
        "lastDirtyTimestamp": str(int(time.time() * 1000)),
    }
    instance.update(changes)
    return {"instance": instance}


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def registry_env(stack: Any, function_env: Callable[..., None]) -> Callable[..., None]:
    def apply(**extra: str) -> None:
        function_env(DATABASE_URL=stack.database_urls["registry"], **extra)

    apply()
    return apply


@pytest.fixture(scope="module", autouse=True)
def settled(stack: Any) -> None:
    """The stack's own registry-sync (namespace shop, same database) lists its services now, so its
    minutely runs change nothing while these tests compare versions and hashcodes."""
    requests.post(f"{stack.url}/_local/pingsources/shop/registry-sync", timeout=60)


@pytest.fixture
def eureka(registry_env: Callable[..., None]) -> FlaskClient:
    return functions_framework.create_app("registry", SOURCE).test_client()


@pytest.fixture
def sql(stack: Any) -> Callable[..., list[tuple[Any, ...]]]:
    def run(query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(stack.database_urls["registry"], autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    return run


class Recorder:
    """WSGI middleware that remembers which requests reached the registry."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return self.app(environ, start_response)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r == (method, path))


@contextmanager
def http_server(app: Any) -> Iterator[str]:
    """A real HTTP server for a WSGI app on a free port, in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def real_registry(registry_env: Callable[..., None]) -> Iterator[tuple[str, Recorder]]:
    """The registry function on real HTTP (py-eureka-client speaks nothing else): (base URL, recorder)."""
    recorder = Recorder(functions_framework.create_app("registry", SOURCE))
    with http_server(recorder) as url:
        yield url, recorder


@contextmanager
def hello_app(text: str) -> Iterator[int]:
    """A tiny real HTTP server playing an app registered in Eureka: GET /hello answers `text`."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode() if self.path == "/hello" else b"not here"
            self.send_response(200 if self.path == "/hello" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def client(base_url: str, app: str = "", port: int = 9, **options: Any) -> EurekaClient:
    """A py-eureka-client whose timers never fire: the test drives heartbeats and fetches itself.

    (Once its heartbeat thread runs, py-eureka-client 0.13.3 keeps it running after stop()
    and registers the instance again; a test that cancels must never let it start.)
    """
    settings: dict[str, Any] = {
        "eureka_server": base_url + "/eureka/",
        "app_name": app,
        "instance_host": "127.0.0.1",
        "instance_ip": "127.0.0.1",
        "instance_port": port,
        "renewal_interval_in_secs": 3600,
    }
    settings.update(options)
    return EurekaClient(**settings)


async def fetch_delta(eureka_client: EurekaClient) -> None:
    await eureka_client._EurekaClient__fetch_delta()  # type: ignore[attr-defined]


def local_hashcode(eureka_client: EurekaClient) -> str:
    return str(eureka_client._EurekaClient__get_applications_hash())  # type: ignore[attr-defined]


def app_json(eureka: FlaskClient, app: str) -> Any:
    return eureka.get(f"/eureka/apps/{app}", headers=JSON)


def full(eureka: FlaskClient) -> dict[str, Any]:
    return dict(eureka.get("/eureka/apps", headers=JSON).get_json()["applications"])


def ping() -> tuple[dict[str, str], bytes]:
    event = CloudEvent(
        {"type": events.PING, "source": "/apis/v1/namespaces/shop/pingsources/registry-sync"}, {"sweep": "registry"}
    )
    headers, body = to_binary(event)
    return dict(headers), body


# --- the API in-process ---------------------------------------------------------------------


def test_register_fetch_renew_and_cancel_in_json(eureka: FlaskClient, registry_env: Callable[..., None]) -> None:
    app = unique("json")
    registered = eureka.post(f"/eureka/apps/{app.lower()}", json=instance_body(app.lower(), "i-1"))
    assert registered.status_code == 204, registered.data
    document = app_json(eureka, app).get_json()["application"]
    assert document["name"] == app
    [instance] = document["instance"]
    assert (instance["app"], instance["instanceId"], instance["status"], instance["actionType"]) == (
        app,
        "i-1",
        "UP",
        "ADDED",
    )
    assert instance["port"] == {"$": 8080, "@enabled": "true"} and instance["metadata"] == {"management.port": "8080"}
    registered_at = instance["leaseInfo"]["registrationTimestamp"]
    assert registered_at == instance["leaseInfo"]["lastRenewalTimestamp"] > 0

    time.sleep(0.01)
    renewed = eureka.put(f"/eureka/apps/{app}/i-1?status=UP&lastDirtyTimestamp={instance['lastDirtyTimestamp']}")
    assert renewed.status_code == 200
    by_id = eureka.get("/eureka/instances/i-1", headers=JSON).get_json()["instance"]
    assert by_id["leaseInfo"]["lastRenewalTimestamp"] > registered_at == by_id["leaseInfo"]["registrationTimestamp"]
    assert eureka.get(f"/eureka/apps/{app}/i-1", headers=JSON).get_json()["instance"]["app"] == app

    # A second replica (another app on the same database) sees the same registry.
    replica = functions_framework.create_app("registry", SOURCE).test_client()
    assert app_json(replica, app).get_json() == app_json(eureka, app).get_json()

    assert eureka.delete(f"/eureka/apps/{app}/i-1").status_code == 200
    for gone in (
        app_json(eureka, app),
        eureka.delete(f"/eureka/apps/{app}/i-1"),
        eureka.put(f"/eureka/apps/{app}/i-1"),
    ):
        assert gone.status_code == 404
        problem_of(gone)


def test_register_in_xml_and_fetch_in_either_format(eureka: FlaskClient) -> None:
    app = unique("xml")
    body = f"""<instance>
      <instanceId>x-1</instanceId><hostName>x.example</hostName><app>{app}</app><ipAddr>10.0.0.1</ipAddr>
      <status>UP</status><overriddenstatus>UNKNOWN</overriddenstatus>
      <port enabled="true">8080</port><securePort enabled="true">8443</securePort><countryId>1</countryId>
      <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
      <leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs></leaseInfo>
      <metadata><zone>eu</zone></metadata>
      <vipAddress>{app.lower()}</vipAddress><secureVipAddress>{app.lower()}-tls</secureVipAddress>
      <isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer>
      <lastDirtyTimestamp>1800000000000</lastDirtyTimestamp>
    </instance>"""
    assert eureka.post(f"/eureka/apps/{app}", data=body, content_type="application/xml").status_code == 204

    for headers in ({}, {"Accept": "application/xml"}, {"Accept": "*/*"}):
        response = eureka.get(f"/eureka/apps/{app}", headers=headers)
        assert response.status_code == 200 and response.mimetype == "application/xml"
        root = ET.fromstring(response.data)
        assert root.tag == "application" and root.findtext("name") == app
        port = root.find("instance/securePort")
        assert port is not None and (port.text, port.get("enabled")) == ("8443", "true")
        assert root.findtext("instance/metadata/zone") == "eu"
    instance = app_json(eureka, app).get_json()["application"]["instance"][0]
    assert (
        instance["securePort"] == {"$": 8443, "@enabled": "true"} and instance["lastDirtyTimestamp"] == "1800000000000"
    )

    everything = ET.fromstring(eureka.get("/eureka/apps").data)
    assert everything.tag == "applications" and everything.findtext("apps__hashcode")
    assert app in [a.findtext("name") for a in everything.findall("application")]
    assert ET.fromstring(eureka.get("/eureka/instances/x-1").data).findtext("hostName") == "x.example"
    vip = eureka.get(f"/eureka/vips/{app.lower()}", headers=JSON).get_json()["applications"]
    assert [a["name"] for a in vip["application"]] == [app] and vip["apps__hashcode"] == "UP_1_"
    svip = eureka.get(f"/eureka/svips/{app.lower()}-tls", headers=JSON).get_json()["applications"]
    assert [a["name"] for a in svip["application"]] == [app]
    assert eureka.get(f"/eureka/svips/{app.lower()}", headers=JSON).get_json()["applications"]["application"] == []
    assert eureka.delete(f"/eureka/apps/{app}/x-1").status_code == 200


def test_a_status_override_outlives_heartbeats_and_its_removal_asks_for_a_registration(eureka: FlaskClient) -> None:
    app = unique("override")
    assert eureka.post(f"/eureka/apps/{app}", json=instance_body(app, "o-1")).status_code == 204
    assert eureka.put(f"/eureka/apps/{app}/o-1/status?value=OUT_OF_SERVICE").status_code == 200

    def status() -> tuple[str, str]:
        instance = app_json(eureka, app).get_json()["application"]["instance"][0]
        return instance["status"], instance["overriddenStatus"]

    assert status() == ("OUT_OF_SERVICE", "OUT_OF_SERVICE")
    assert eureka.put(f"/eureka/apps/{app}/o-1?status=UP").status_code == 200
    assert eureka.post(f"/eureka/apps/{app}", json=instance_body(app, "o-1")).status_code == 204
    assert status() == ("OUT_OF_SERVICE", "OUT_OF_SERVICE")

    assert eureka.delete(f"/eureka/apps/{app}/o-1/status").status_code == 200
    assert status() == ("UNKNOWN", "UNKNOWN")
    refused = eureka.put(f"/eureka/apps/{app}/o-1?status=UP")
    assert refused.status_code == 404 and "register again" in problem_of(refused)["detail"]
    assert eureka.post(f"/eureka/apps/{app}", json=instance_body(app, "o-1")).status_code == 204
    assert status() == ("UP", "UNKNOWN")
    assert eureka.put(f"/eureka/apps/{app}/o-9/status?value=DOWN").status_code == 404
    assert eureka.delete(f"/eureka/apps/{app}/o-1").status_code == 200


def test_delta_reports_recent_changes_with_the_full_registry_hashcode(eureka: FlaskClient) -> None:
    app = unique("delta")
    for n in (1, 2, 3):
        assert eureka.post(f"/eureka/apps/{app}", json=instance_body(app, f"d-{n}")).status_code == 204
    assert eureka.put(f"/eureka/apps/{app}/d-2/status?value=DOWN").status_code == 200
    assert eureka.delete(f"/eureka/apps/{app}/d-3").status_code == 200

    def consistent() -> tuple[dict[str, Any], dict[str, Any]] | None:
        delta, everything = eureka.get("/eureka/apps/delta", headers=JSON).get_json()["applications"], full(eureka)
        same = (delta["versions__delta"], delta["apps__hashcode"]) == (
            everything["versions__delta"],
            everything["apps__hashcode"],
        )
        return (delta, everything) if same else None  # else something else changed in between: again

    delta, everything = eventually(consistent, timeout=10)
    mine = next(a for a in delta["application"] if a["name"] == app)
    actions = {i["instanceId"]: (i["actionType"], i["status"]) for i in mine["instance"]}
    assert actions == {"d-1": ("ADDED", "UP"), "d-2": ("MODIFIED", "DOWN"), "d-3": ("DELETED", "UP")}
    deleted = next(i for i in mine["instance"] if i["instanceId"] == "d-3")
    assert deleted["leaseInfo"]["evictionTimestamp"] > 0

    xml_delta = ET.fromstring(eureka.get("/eureka/apps/delta").data)
    assert xml_delta.findtext("apps__hashcode") == everything["apps__hashcode"]
    for n in (1, 2):
        eureka.delete(f"/eureka/apps/{app}/d-{n}")


def test_hashcode_counts_every_instance_by_status(eureka: FlaskClient, sql: Callable[..., list[Any]]) -> None:
    def agree() -> bool:
        everything = full(eureka)
        counts = dict(sql("SELECT status, count(*) FROM instances GROUP BY status"))
        listed = sum(len(a["instance"]) for a in everything["application"])
        expected = "".join(f"{s}_{n}_" for s, n in sorted(counts.items()))
        return everything["apps__hashcode"] == expected and listed == sum(counts.values())

    assert eventually(agree, timeout=10)


def test_a_silent_instance_is_evicted_after_its_lease(eureka: FlaskClient) -> None:
    app = unique("lease")
    short = {"leaseInfo": {"renewalIntervalInSecs": 1, "durationInSecs": 2}}
    for instance_id in ("silent", "beating"):
        assert eureka.post(f"/eureka/apps/{app}", json=instance_body(app, instance_id, **short)).status_code == 204
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        assert eureka.put(f"/eureka/apps/{app}/beating").status_code == 200
        time.sleep(0.5)
    instances = app_json(eureka, app).get_json()["application"]["instance"]
    assert [i["instanceId"] for i in instances] == ["beating"]
    mine = next(
        a
        for a in eureka.get("/eureka/apps/delta", headers=JSON).get_json()["applications"]["application"]
        if a["name"] == app
    )
    assert {i["instanceId"]: i["actionType"] for i in mine["instance"]} == {"silent": "DELETED", "beating": "ADDED"}
    # The silent instance's next heartbeat is told to register again.
    assert eureka.put(f"/eureka/apps/{app}/silent").status_code == 404
    eureka.delete(f"/eureka/apps/{app}/beating")


def test_the_default_lease_comes_from_the_environment(registry_env: Callable[..., None]) -> None:
    registry_env(LEASE_DURATION_SECONDS="1")
    eureka = functions_framework.create_app("registry", SOURCE).test_client()
    app = unique("default-lease")
    body = instance_body(app, "l-1")
    del body["instance"]["leaseInfo"]
    assert eureka.post(f"/eureka/apps/{app}", json=body).status_code == 204
    lease = app_json(eureka, app).get_json()["application"]["instance"][0]["leaseInfo"]
    assert (lease["durationInSecs"], lease["renewalIntervalInSecs"]) == (1, 30)
    eventually(lambda: app_json(eureka, app).status_code == 404, timeout=5)


REGISTER = ("POST", "/eureka/apps/{app}")
MINIMAL = {"instanceId": "i", "app": "{app}", "hostName": "h"}


def raw(content_type: str, body: bytes) -> dict[str, Any]:
    return {"data": body, "content_type": content_type}


def registration(**fields: Any) -> dict[str, Any]:
    """kwargs posting MINIMAL with `fields` changed (None removes one)."""
    instance = {k: v for k, v in {**MINIMAL, **fields}.items() if v is not None}
    return {"json": {"instance": instance}}


# (what is wrong, method, path, request kwargs, status, field the problem names)
BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
    ("malformed JSON", *REGISTER, raw("application/json", b'{"instance": {'), 400, "/"),
    ("malformed XML", *REGISTER, raw("application/xml", b"<instance><app>x</instance>"), 400, "/"),
    ("XML with a DTD", *REGISTER, raw("text/xml", b'<!DOCTYPE x [<!ENTITY a "b">]><instance>&a;</instance>'), 400, "/"),
    ("no instanceId", *REGISTER, registration(instanceId=None), 400, "/instance/instanceId"),
    ("no app", *REGISTER, registration(app=None), 400, "/instance/app"),
    ("no hostName", *REGISTER, registration(hostName=None), 400, "/instance/hostName"),
    ("another app in the body", *REGISTER, registration(app="OTHER"), 400, "/instance/app"),
    ("port out of range", *REGISTER, registration(port={"$": 65536, "@enabled": "true"}), 400, "/instance/port/$"),
    ("port not a number", *REGISTER, registration(port={"$": "eighty"}), 400, "/instance/port/$"),
    ("unknown status", *REGISTER, registration(status="SLEEPY"), 400, "/instance/status"),
    (
        "metadata too large",
        *REGISTER,
        registration(metadata={f"k{n}": "v" for n in range(65)}),
        400,
        "/instance/metadata",
    ),
    ("body over 64 KiB", *REGISTER, registration(hostName="h" * 70_000), 413, None),
    ("not JSON or XML", *REGISTER, raw("application/x-www-form-urlencoded", b"app=x"), 415, None),
    ("unknown status in a heartbeat", "PUT", "/eureka/apps/{app}/i?status=NAPPING", {}, 400, "status"),
    ("bad lastDirtyTimestamp", "PUT", "/eureka/apps/{app}/i?lastDirtyTimestamp=soon", {}, 400, "lastDirtyTimestamp"),
    ("override without value", "PUT", "/eureka/apps/{app}/i/status", {}, 400, "value"),
    ("unknown override", "PUT", "/eureka/apps/{app}/i/status?value=MAYBE", {}, 400, "value"),
    ("bad app name", "GET", "/eureka/apps/no%20spaces", {}, 400, "app"),
    ("no such route", "GET", "/eureka/applications", {}, 404, None),
    ("method", "PATCH", "/eureka/apps/{app}", {}, 405, None),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "field"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_is_a_problem_and_changes_nothing(
    eureka: FlaskClient,
    sql: Callable[..., list[Any]],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    app = unique("bad")
    # Instance "i" exists, so heartbeats and overrides aimed at it would change it if accepted.
    assert eureka.post(f"/eureka/apps/{app}", json=instance_body(app, "i")).status_code == 204
    before = app_json(eureka, app).get_json(), sql("SELECT count(*) FROM changes WHERE app = %s", app)
    kwargs = json.loads(json.dumps(kwargs).replace("{app}", app)) if "json" in kwargs else kwargs
    response = eureka.open(path.replace("{app}", app), method=method, **kwargs)
    assert response.status_code == status, response.data
    problem = problem_of(response)
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
    assert (app_json(eureka, app).get_json(), sql("SELECT count(*) FROM changes WHERE app = %s", app)) == before


# --- py-eureka-client on real HTTP ----------------------------------------------------------


def test_py_eureka_client_registers_heartbeats_discovers_calls_goes_out_of_service_and_cancels(
    real_registry: tuple[str, Recorder], eureka: FlaskClient
) -> None:
    url, _ = real_registry
    caller, callee = unique("alpha"), unique("bravo")

    def lease_of(app: str) -> dict[str, Any]:
        return dict(app_json(eureka, app).get_json()["application"]["instance"][0]["leaseInfo"])

    async def scenario(port: int) -> None:
        bravo = client(url, callee, port, should_discover=False)
        alpha = client(url, caller)
        await bravo.start()
        await alpha.start()
        try:
            assert await alpha.do_service(callee, "/hello") == "hello from bravo"
            assert await alpha.do_service(callee.lower(), "hello") == "hello from bravo"
            before = lease_of(callee)
            await asyncio.sleep(0.01)
            await bravo.send_heartbeat()
            after = lease_of(callee)
            assert after["lastRenewalTimestamp"] > before["lastRenewalTimestamp"]
            assert after["registrationTimestamp"] == before["registrationTimestamp"]  # renewed, not re-registered

            await bravo.status_update("OUT_OF_SERVICE")
            await fetch_delta(alpha)
            with pytest.raises(WalkNodeException):
                await alpha.do_service(callee, "/hello")
            await bravo.send_heartbeat()
            assert app_json(eureka, callee).get_json()["application"]["instance"][0]["status"] == "OUT_OF_SERVICE"
        finally:
            await bravo.stop()
            await alpha.stop()

    with hello_app("hello from bravo") as port:
        asyncio.run(scenario(port))
    assert app_json(eureka, callee).status_code == 404
    assert app_json(eureka, caller).status_code == 404


def test_deltas_and_the_hashcode_keep_py_eureka_client_in_sync_without_full_fetches(
    stack: Any, real_registry: tuple[str, Recorder], eureka: FlaskClient
) -> None:
    # The stack's own registry-sync lists its Knative Services once, now, not in the middle of the test.
    requests.post(f"{stack.url}/_local/pingsources/shop/registry-sync", timeout=60)
    url, recorder = real_registry
    app = unique("sync")
    for n in (1, 2):
        assert eureka.post(f"/eureka/apps/{app}", json=instance_body(app, f"s-{n}")).status_code == 204

    def local_view(watcher: EurekaClient) -> dict[str, str]:
        return {i.instanceId: i.status for i in watcher.applications.get_application(app).instances}

    async def scenario() -> None:
        watcher = client(url, should_register=False)
        await watcher.start()
        full_fetches = recorder.count("GET", "/eureka/apps/")
        assert full_fetches == 1 and local_view(watcher) == {"s-1": "UP", "s-2": "UP"}

        out = "OUT_OF_SERVICE"
        steps: list[tuple[Callable[[], Any], dict[str, str]]] = [
            (
                lambda: eureka.post(f"/eureka/apps/{app}", json=instance_body(app, "s-3")),
                {"s-1": "UP", "s-2": "UP", "s-3": "UP"},
            ),
            (lambda: eureka.put(f"/eureka/apps/{app}/s-1/status?value={out}"), {"s-1": out, "s-2": "UP", "s-3": "UP"}),
            (lambda: eureka.delete(f"/eureka/apps/{app}/s-2"), {"s-1": out, "s-3": "UP"}),
        ]
        for change, expected in steps:
            assert change().status_code in (200, 204)
            await fetch_delta(watcher)
            assert local_view(watcher) == expected
            assert local_hashcode(watcher) == full(eureka)["apps__hashcode"]
        assert recorder.count("GET", "/eureka/apps/") == full_fetches
        assert recorder.count("GET", "/eureka/apps/delta") == len(steps)

        # py-eureka-client drops delta entries of applications it has never seen; the hashcode
        # then disagrees and it fetches the whole registry once: drift detected and repaired.
        newcomer = unique("newcomer")
        assert eureka.post(f"/eureka/apps/{newcomer}", json=instance_body(newcomer, "n-1")).status_code == 204
        await fetch_delta(watcher)
        assert recorder.count("GET", "/eureka/apps/") == full_fetches + 1
        assert [i.instanceId for i in watcher.applications.get_application(newcomer).instances] == ["n-1"]
        assert local_hashcode(watcher) == full(eureka)["apps__hashcode"]
        await watcher.stop()
        eureka.delete(f"/eureka/apps/{newcomer}/n-1")

    asyncio.run(scenario())
    for n in (1, 3):
        eureka.delete(f"/eureka/apps/{app}/s-{n}")


def test_a_restarted_registry_keeps_its_registrations(stack: Any, eureka: FlaskClient) -> None:
    from local.servers import free_port

    port = free_port()
    env = {
        **os.environ,
        "FUNCTION_TARGET": "registry",
        "FUNCTION_SOURCE": SOURCE,
        "FUNCTION_SIGNATURE_TYPE": "http",
        "DATABASE_URL": stack.database_urls["registry"],
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "THREADS": "4",
    }
    url = f"http://127.0.0.1:{port}"
    app = unique("restart")

    @contextmanager
    def registry_process() -> Iterator[None]:
        process = subprocess.Popen([sys.executable, "-m", "functions.shared.serve"], cwd=ROOT, env=env)
        try:
            eventually(lambda: _healthy(url), timeout=30)
            yield
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)

    def registered_at() -> int:
        response = requests.get(f"{url}/eureka/apps/{app}", headers=JSON, timeout=10)
        assert response.status_code == 200, response.text
        return int(response.json()["application"]["instance"][0]["leaseInfo"]["registrationTimestamp"])

    instance = client(url, app, 8080, should_discover=False)
    with registry_process():
        asyncio.run(instance.start())
        first = registered_at()
    with registry_process():
        assert registered_at() == first
        asyncio.run(instance.send_heartbeat())
        assert registered_at() == first  # the heartbeat found its lease: no new registration
        asyncio.run(instance.stop())
        assert requests.get(f"{url}/eureka/apps/{app}", timeout=10).status_code == 404


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


# --- registry-sync against a fake Kubernetes API --------------------------------------------


class FakeKubernetes:
    """Just enough of the Kubernetes API: the namespace's Knative Services, one page at a time."""

    def __init__(self) -> None:
        self.services: list[dict[str, Any]] = []
        self.status = 200
        self.requests: list[tuple[str, str | None]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Api(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append((self.path, self.headers.get("Authorization")))
                path, _, query = self.path.partition("?")
                namespace = path.split("/")[5] if path.count("/") == 6 else ""
                if fake.status != 200:
                    self._send(fake.status, {"kind": "Status", "code": fake.status})
                elif not path.startswith("/apis/serving.knative.dev/v1/namespaces/") or not path.endswith("/services"):
                    self._send(404, {"kind": "Status", "code": 404})
                else:
                    # Two per page, to exercise `continue`.
                    start = int(query.partition("continue=")[2] or 0)
                    mine = [s for s in fake.services if s["metadata"]["namespace"] == namespace]
                    more = {"continue": str(start + 2)} if start + 2 < len(mine) else {}
                    self._send(200, {"kind": "ServiceList", "metadata": more, "items": mine[start : start + 2]})

            def _send(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Api

    def add(self, name: str, namespace: str, url: str | None = None, ready: str = "True") -> None:
        status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": ready}]}
        if url:
            status["url"] = url
        metadata = {"name": name, "namespace": namespace}
        self.services.append(
            {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": metadata, "status": status}
        )


@pytest.fixture
def kubernetes() -> Iterator[tuple[FakeKubernetes, str]]:
    fake = FakeKubernetes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_registry_sync_lists_knative_services_which_never_expire_and_go_with_their_service(
    kubernetes: tuple[FakeKubernetes, str], registry_env: Callable[..., None], sql: Callable[..., list[Any]]
) -> None:
    fake, api_url = kubernetes
    # A namespace of its own: the stack's registry-sync keeps namespace "shop" in the same database.
    namespace = f"it-{uuid.uuid4().hex[:8]}"
    registry_env(SHOP_NAMESPACE=namespace, KUBERNETES_API_URL=api_url, LEASE_DURATION_SECONDS="1")
    prefix = f"ks-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-{n}" for n in "abc"]
    fake.add(names[0], namespace, url=f"http://{names[0]}.{namespace}.example.com")
    fake.add(names[1], namespace)
    fake.add(names[2], namespace, ready="False")
    sync = functions_framework.create_app("registry_sync", SOURCE, "cloudevent").test_client()
    eureka = functions_framework.create_app("registry", SOURCE).test_client()

    def run_sync() -> Any:
        headers, body = ping()
        return sync.post("/", headers=headers, data=body)

    assert run_sync().status_code == 200
    assert [path for path, _ in fake.requests] == [
        f"/apis/serving.knative.dev/v1/namespaces/{namespace}/services?limit=500",
        f"/apis/serving.knative.dev/v1/namespaces/{namespace}/services?limit=500&continue=2",
    ]
    assert all(auth is None for _, auth in fake.requests)  # no service-account token outside a pod

    first = app_json(eureka, names[0].upper()).get_json()["application"]["instance"][0]
    assert (first["instanceId"], first["hostName"], first["status"]) == (
        f"{names[0]}.{namespace}",
        f"{names[0]}.{namespace}.svc.cluster.local",
        "UP",
    )
    assert first["port"] == {"$": 80, "@enabled": "true"} and first["metadata"] == {"knative": "true"}
    assert first["homePageUrl"] == f"http://{names[0]}.{namespace}.example.com/"
    second = app_json(eureka, names[1].upper()).get_json()["application"]["instance"][0]
    assert second["homePageUrl"] == f"http://{names[1]}.{namespace}.svc.cluster.local/"
    assert app_json(eureka, names[2].upper()).get_json()["application"]["instance"][0]["status"] == "DOWN"

    # Managed: no lease runs out (LEASE_DURATION_SECONDS is 1); clients can neither cancel nor replace it,
    # nor add an instance to its application (that one would take the service's traffic).
    time.sleep(1.5)
    assert app_json(eureka, names[0].upper()).status_code == 200
    taken = instance_body(names[0].upper(), f"{names[0]}.{namespace}")
    impostor = instance_body(names[0].upper(), "impostor:8080")
    for refused in (
        eureka.delete(f"/eureka/apps/{names[0]}/{names[0]}.{namespace}"),
        eureka.post(f"/eureka/apps/{names[0]}", json=taken),
        eureka.post(f"/eureka/apps/{names[0]}", json=impostor),
    ):
        assert refused.status_code == 409
        problem_of(refused)

    # An operator's override survives the next sync; a service gone from the list leaves the registry.
    assert eureka.put(f"/eureka/apps/{names[0]}/{names[0]}.{namespace}/status?value=OUT_OF_SERVICE").status_code == 200
    fake.services = [s for s in fake.services if s["metadata"]["name"] != names[1]]
    assert run_sync().status_code == 200
    assert app_json(eureka, names[0].upper()).get_json()["application"]["instance"][0]["status"] == "OUT_OF_SERVICE"
    assert app_json(eureka, names[1].upper()).status_code == 404
    history = sql(
        "SELECT instance_id, action FROM changes WHERE instance_id LIKE %s ORDER BY version", f"%.{namespace}"
    )
    assert history == [
        (f"{names[0]}.{namespace}", "ADDED"),
        (f"{names[1]}.{namespace}", "ADDED"),
        (f"{names[2]}.{namespace}", "ADDED"),
        (f"{names[0]}.{namespace}", "MODIFIED"),  # the override; the second sync changed nothing else
        (f"{names[1]}.{namespace}", "DELETED"),
    ]
    delta = eureka.get("/eureka/apps/delta", headers=JSON).get_json()["applications"]["application"]
    assert next(a for a in delta if a["name"] == names[1].upper())["instance"][0]["actionType"] == "DELETED"

    # An API outage is not an empty list: 503, and the registry stays as it was.
    fake.status = 500
    failed = run_sync()
    assert failed.status_code == 503
    assert app_json(eureka, names[0].upper()).status_code == 200

    fake.status = 200
    fake.services = []
    assert run_sync().status_code == 200
    assert sql("SELECT count(*) FROM instances WHERE instance_id LIKE %s", f"%.{namespace}") == [(0,)]


def test_registry_sync_evicts_expired_leases_without_a_reader(
    kubernetes: tuple[FakeKubernetes, str], registry_env: Callable[..., None], sql: Callable[..., list[Any]]
) -> None:
    _, api_url = kubernetes
    registry_env(SHOP_NAMESPACE=f"it-{uuid.uuid4().hex[:8]}", KUBERNETES_API_URL=api_url)
    eureka = functions_framework.create_app("registry", SOURCE).test_client()
    sync = functions_framework.create_app("registry_sync", SOURCE, "cloudevent").test_client()
    app = unique("swept")
    body = instance_body(app, "w-1", leaseInfo={"durationInSecs": 1})
    assert eureka.post(f"/eureka/apps/{app}", json=body).status_code == 204
    time.sleep(1.2)
    assert sql("SELECT count(*) FROM instances WHERE app = %s", app) == [(1,)]
    headers, data = ping()
    assert sync.post("/", headers=headers, data=data).status_code == 200
    assert sql("SELECT count(*) FROM instances WHERE app = %s", app) == [(0,)]
    assert sql("SELECT action FROM changes WHERE app = %s ORDER BY version DESC LIMIT 1", app) == [("DELETED",)]

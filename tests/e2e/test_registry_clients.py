"""The registry in the running shop: Eureka clients through the local ingress, and the Knative Services it lists."""

from __future__ import annotations

import asyncio
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from py_eureka_client.eureka_client import EurekaClient, WalkNodeException

from tests.conftest import Ingress

JSON = {"Accept": "application/json"}


def sync_now(stack: Any) -> None:
    """Fires registry-sync's PingSource now instead of waiting for the minute."""
    fired = requests.post(f"{stack.url}/_local/pingsources/shop/registry-sync", timeout=60)
    assert fired.status_code == 200, fired.text
    assert fired.json()["delivered"], fired.json()


def knative_entries(ingress: Ingress) -> dict[str, dict[str, Any]]:
    """App name -> registry-sync's entry for a Knative Service of namespace shop."""
    response = ingress.call("registry", "GET", "/eureka/apps", headers=JSON)
    assert response.status_code == 200, response.text
    return {
        app["name"]: instance
        for app in response.json()["applications"]["application"]
        for instance in app["instance"]
        if instance["metadata"].get("knative") == "true" and instance["instanceId"].endswith(".shop")
    }


def test_registry_sync_lists_every_knative_service_even_scaled_to_zero(stack: Any, ingress: Ingress) -> None:
    # Needs the local runtime's stand-in for the Kubernetes API (KUBERNETES_API_URL for registry-sync).
    sync_now(stack)
    listed = knative_entries(ingress)
    assert set(listed) == {name.upper() for name in stack.services}
    for name in stack.services:
        instance = listed[name.upper()]
        assert instance["instanceId"] == f"{name}.shop" and instance["status"] == "UP"
        assert instance["hostName"] == f"{name}.shop.svc.cluster.local"
        assert instance["port"] == {"$": 80, "@enabled": "true"}
        assert instance["homePageUrl"] == f"http://{name}.shop.svc.cluster.local/"

    stack.stop_service("product-get")
    sync_now(stack)
    assert knative_entries(ingress)["PRODUCT-GET"]["status"] == "UP"
    app = ingress.call("registry", "GET", "/eureka/apps/product-get", headers=JSON).json()["application"]
    assert [i["instanceId"] for i in app["instance"]] == ["product-get.shop"]


@contextmanager
def hello_app(text: str) -> Iterator[int]:
    """A tiny real HTTP server, the app a Eureka client registers: GET /hello answers `text`."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = text.encode()
            self.send_response(200 if self.path == "/hello" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_py_eureka_client_round_trip_through_the_ingress(stack: Any, ingress: Ingress) -> None:
    eureka_server = f"{stack.url}/ksvc/registry/eureka/"
    suffix = uuid.uuid4().hex[:8].upper()
    caller, callee = f"E2E-ALPHA-{suffix}", f"E2E-BRAVO-{suffix}"

    def client(app: str, port: int, **options: Any) -> EurekaClient:
        # Heartbeats and fetches are driven by the test: py-eureka-client's timer thread, once
        # started, outlives stop() and would register the instance again.
        return EurekaClient(
            eureka_server=eureka_server,
            app_name=app,
            instance_host="127.0.0.1",
            instance_ip="127.0.0.1",
            instance_port=port,
            renewal_interval_in_secs=3600,
            **options,
        )

    async def scenario(port: int) -> None:
        bravo = client(callee, port, should_discover=False)
        alpha = client(caller, 9)
        await bravo.start()
        await alpha.start()
        try:
            assert await alpha.do_service(callee, "/hello") == "hello from bravo"
            await bravo.send_heartbeat()
            await bravo.status_update("OUT_OF_SERVICE")
            await alpha._EurekaClient__fetch_delta()  # type: ignore[attr-defined]
            try:
                await alpha.do_service(callee, "/hello")
                raise AssertionError("an OUT_OF_SERVICE instance was chosen")
            except WalkNodeException:
                pass
        finally:
            await bravo.stop()
            await alpha.stop()

    with hello_app("hello from bravo") as port:
        asyncio.run(scenario(port))

    # Registered and cancelled through the ingress; the registry answers XML unless asked for JSON.
    for app in (caller, callee):
        assert ingress.call("registry", "GET", f"/eureka/apps/{app}").status_code == 404
    everything = ingress.call("registry", "GET", "/eureka/apps")
    assert everything.headers["Content-Type"].startswith("application/xml")
    assert ET.fromstring(everything.content).tag == "applications"

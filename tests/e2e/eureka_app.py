"""A real HTTP server standing in for a Spring Boot service registered in the Eureka-compatible registry."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import Ingress

APP = "RECOMMENDATIONS"


class App:
    """Answers every GET with its own name and the path it was asked for."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.headers: list[dict[str, str]] = []  # of every request, in order
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                app.hits += 1
                app.headers.append(dict(self.headers.items()))
                body = json.dumps({"servedBy": app.name, "path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def instance_id(self) -> str:
        return f"{self.name}:{self.port}"

    def instance(self, status: str = "UP") -> dict[str, Any]:
        return {
            "instance": {
                "instanceId": self.instance_id,
                "hostName": "127.0.0.1",
                "app": APP,
                "ipAddr": "127.0.0.1",
                "status": status,
                "port": {"$": self.port, "@enabled": "true"},
                "securePort": {"$": 443, "@enabled": "false"},
                "vipAddress": "recommendations",
                "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
                "leaseInfo": {"durationInSecs": 300, "renewalIntervalInSecs": 30},
            }
        }


@contextmanager
def registered(ingress: Ingress, *names: str) -> Iterator[tuple[App, ...]]:
    """Starts one App per name, registers each as an UP instance of APP; cancels and stops them after."""
    apps = tuple(App(name) for name in names)
    try:
        for app in apps:
            response = ingress.call("registry", "POST", f"/eureka/apps/{APP}", json=app.instance())
            assert response.status_code == 204, response.text
        yield apps
    finally:
        for app in apps:
            ingress.call("registry", "DELETE", f"/eureka/apps/{APP}/{app.instance_id}")
            app.server.shutdown()
            app.server.server_close()

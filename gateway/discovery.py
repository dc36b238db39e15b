"""Where a route's requests go: a Knative Service by its cluster name, or the UP instances of a Eureka app."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from functions.shared import problems
from functions.shared.service_client import Reply, send, service_host
from gateway.routing import Route

EUREKA_PREFIX = "eureka:"


@dataclass(frozen=True)
class Target:
    """One place to send an attempt: its base URL and the breaker key guarding it."""

    base_url: str
    breaker_key: str


class Resolver(Protocol):
    def targets(self, route: Route) -> list[Target]: ...


class KnativeResolver:
    """http://<service>.<namespace>.svc.cluster.local; locally the ingress routes that name."""

    def targets(self, route: Route) -> list[Target]:
        return [Target(f"http://{service_host(route.service)}", route.service)]


@dataclass
class EurekaApp:
    fetched_at: float
    targets: list[Target]


class EurekaResolver:
    """The UP instances of an app registered with the registry, fetched at most every `ttl` seconds.

    DOWN, STARTING, OUT_OF_SERVICE and UNKNOWN instances are left out; every instance has its
    own breaker, and successive calls start at successive instances (round robin).
    """

    def __init__(self, registry_url: str, ttl: float = 5.0, fetch: Callable[[str], Reply] | None = None) -> None:
        self.registry_url = registry_url.rstrip("/")
        self.ttl = ttl
        self.fetch = fetch or (lambda url: send("GET", url, None, {"Accept": "application/json"}, 3.0))
        self._apps: dict[str, EurekaApp] = {}
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def targets(self, route: Route) -> list[Target]:
        app = route.upstream.removeprefix(EUREKA_PREFIX).upper()
        cached = self._apps.get(app)
        if cached is None or time.monotonic() - cached.fetched_at > self.ttl:
            cached = EurekaApp(time.monotonic(), self._fetch(app))
            with self._lock:
                self._apps[app] = cached
        if not cached.targets:
            raise problems.unavailable(f"no instance of {app} is UP in the registry", 5)
        start = next(self._turn) % len(cached.targets)
        return cached.targets[start:] + cached.targets[:start]

    def _fetch(self, app: str) -> list[Target]:
        try:
            reply = self.fetch(f"{self.registry_url}/apps/{app}")
        except Exception as error:  # noqa: BLE001 - an unreachable registry is an unavailable upstream
            raise problems.unavailable(f"the registry cannot be reached ({type(error).__name__})", 5) from None
        if reply.status == 404:
            return []
        if reply.status != 200:
            raise problems.unavailable(f"the registry answered {reply.status}", 5)
        instances = json.loads(reply.body).get("application", {}).get("instance", [])
        if isinstance(instances, dict):
            instances = [instances]
        return [Target(_base_url(i), f"{app}@{i['instanceId']}") for i in instances if i.get("status") == "UP"]


def _base_url(instance: dict[str, Any]) -> str:
    secure = instance.get("securePort", {})
    if str(secure.get("@enabled", "false")).lower() == "true":
        scheme, port, default = "https", int(secure.get("$", 443)), 443
    else:
        scheme, port, default = "http", int(instance.get("port", {}).get("$", 80)), 80
    host = instance["hostName"]
    return f"{scheme}://{host}" if port == default else f"{scheme}://{host}:{port}"


class Upstreams:
    """Picks the resolver a route names: `knative` (default) or `eureka:<APP>`."""

    def __init__(self, eureka: EurekaResolver | None) -> None:
        self.knative = KnativeResolver()
        self.eureka = eureka

    def targets(self, route: Route) -> list[Target]:
        if route.upstream.startswith(EUREKA_PREFIX):
            if self.eureka is None:
                raise problems.unavailable("no registry is configured for Eureka routes", 30)
            return self.eureka.targets(route)
        return self.knative.targets(route)

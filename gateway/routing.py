"""The route table (gateway/routes.yaml): path templates and methods to services, with their policies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.shared import problems
from functions.shared.resilience import IDEMPOTENT_RETRIES, TIMEOUT_SECONDS, BreakerPolicy
from functions.shared.validation import read_yaml

ROUTES_FILE = Path(__file__).with_name("routes.yaml")
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_BREAKER = BreakerPolicy()


@dataclass(frozen=True)
class RatePolicy:
    per_second: float = 50.0
    burst: int = 100


@dataclass(frozen=True)
class Route:
    path: str
    methods: frozenset[str]
    service: str
    auth: str = "public"
    timeout: float = TIMEOUT_SECONDS
    retries: int = IDEMPOTENT_RETRIES
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    rate: RatePolicy = field(default_factory=RatePolicy)
    upstream: str = "knative"
    upstream_path: str | None = None
    pattern: re.Pattern[str] = field(default=re.compile(""), compare=False)

    @property
    def role(self) -> str | None:
        return self.auth.removeprefix("role:") if self.auth.startswith("role:") else None

    def retries_for(self, method: str) -> int:
        return self.retries if method in IDEMPOTENT else 0

    def target_path(self, path: str, params: Mapping[str, str]) -> str:
        if self.upstream_path is None:
            return path
        return PARAMETER.sub(lambda m: params[m[1]], self.upstream_path)


def _pattern(template: str) -> re.Pattern[str]:
    parts = PARAMETER.split(template)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(f"^{regex}/?$")


def _route(entry: Mapping[str, Any], defaults: Mapping[str, Any]) -> Route:
    merged = {**defaults, **entry}
    auth = merged.get("auth", "public")
    if auth not in ("public", "authenticated") and not str(auth).startswith("role:"):
        raise ValueError(f"route {entry['path']}: auth must be public, authenticated or role:<role>, got {auth!r}")
    breaker = merged.get("circuitBreaker", {})
    rate = merged.get("rateLimit", {})
    return Route(
        path=entry["path"],
        methods=frozenset(m.upper() for m in entry["methods"]),
        service=entry["service"],
        auth=auth,
        timeout=float(merged.get("timeout", TIMEOUT_SECONDS)),
        retries=int(merged.get("retries", IDEMPOTENT_RETRIES)),
        breaker=BreakerPolicy(
            window=int(breaker.get("window", DEFAULT_BREAKER.window)),
            failure_rate=float(breaker.get("failureRate", DEFAULT_BREAKER.failure_rate)),
            minimum_calls=int(breaker.get("minimumCalls", DEFAULT_BREAKER.minimum_calls)),
            open_seconds=float(breaker.get("openSeconds", DEFAULT_BREAKER.open_seconds)),
            half_open_calls=int(breaker.get("halfOpenCalls", DEFAULT_BREAKER.half_open_calls)),
        ),
        rate=RatePolicy(per_second=float(rate.get("perSecond", 50)), burst=int(rate.get("burst", 100))),
        upstream=str(merged.get("upstream", "knative")),
        upstream_path=entry.get("upstreamPath"),
        pattern=_pattern(entry["path"]),
    )


class RouteTable:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    @classmethod
    def load(cls, path: Path = ROUTES_FILE) -> RouteTable:
        document = read_yaml(path)
        defaults = document.get("defaults", {})
        return cls([_route(entry, defaults) for entry in document["routes"]])

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for a request; a 404 or 405 (with Allow) problem when there is none."""
        allowed: set[str] = set()
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if method in route.methods or (method == "HEAD" and "GET" in route.methods):
                return route, found.groupdict()
            allowed |= route.methods
        if allowed:
            methods = ", ".join(sorted(allowed))
            raise problems.Problem(
                405,
                "Method not allowed",
                f"{method} is not supported on {path}; use {methods}",
                "method-not-allowed",
                headers={"Allow": methods},
            )
        raise problems.not_found(f"no API at {path}; the API is described at /openapi.json")

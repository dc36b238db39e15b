"""The gateway's request pipeline: route, authenticate, limit, validate, then proxy with resilience.

Identity reaches functions as a short-lived HS256 token the gateway signs (X-Shop-Identity)
rather than the user's JWT: functions then need no access to the identity provider (no
JWKS fetch on a cold start), the claims they see are exactly those the gateway checked, and
a request that did not come through the gateway carries nothing they accept. The user's
Authorization header stops here.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import flask
from prometheus_client import Counter, Gauge, Histogram

from functions.shared import identity, metrics, problems, web
from functions.shared.keepalive import TransportError, TransportTimeout
from functions.shared.resilience import WindowBreaker, pause_before_retry
from functions.shared.service_client import Reply, send
from gateway import openapi
from gateway.auth import JwtVerifier
from gateway.discovery import Target, Upstreams
from gateway.rate_limit import RateLimiter
from gateway.routing import Route, RouteTable

log = logging.getLogger("shop.gateway")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "Accept",
    "Accept-Language",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "User-Agent",
    "traceparent",
    "tracestate",
)
RETURNED_HEADERS = ("Content-Type", "Location", "ETag", "Retry-After", "Idempotent-Replayed", "Allow", "Cache-Control")
RETRYABLE_STATUSES = frozenset({502, 503, 504})
ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key, If-Match, X-Request-Id"
EXPOSED_HEADERS = "Location, ETag, Retry-After, X-Request-Id, Idempotent-Replayed"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

CIRCUIT_STATE = Gauge(
    "shop_gateway_circuit_state", "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.", ["upstream"]
)
RATE_LIMITED = Counter("shop_gateway_rate_limited_total", "Requests refused by the rate limit, by route.", ["route"])
UPSTREAM_REQUESTS = Counter(
    "shop_gateway_upstream_requests_total", "Attempts at an upstream, by upstream and outcome.", ["upstream", "outcome"]
)
UPSTREAM_DURATION = Histogram(
    "shop_gateway_upstream_duration_seconds",
    "Time an upstream took to answer one attempt.",
    ["upstream"],
    buckets=metrics.LATENCY_BUCKETS,
)


@dataclass
class Gateway:
    routes: RouteTable
    verifier: JwtVerifier | None
    identity_secret: str
    upstreams: Upstreams = field(default_factory=lambda: Upstreams(None))
    cors_origins: frozenset[str] = frozenset()
    limiter: RateLimiter = field(default_factory=RateLimiter)
    breakers: dict[str, WindowBreaker] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def breaker(self, key: str, route: Route) -> WindowBreaker:
        """The breaker of one upstream (a service, or one instance of a Eureka app), made on first use."""
        with self._lock:
            found = self.breakers.get(key)
            if found is None:
                found = self.breakers[key] = WindowBreaker(key, route.breaker)
                found.publish_state(CIRCUIT_STATE)
            return found

    # --- the pipeline ----------------------------------------------------------------------

    def handle(self, request: flask.Request, produce: Callable[[], flask.Response] | None = None) -> flask.Response:
        """Answers a request: proxied to a function (or made by `produce`), with the edge's headers."""
        request_id = request.headers.get("X-Request-Id", "")
        if not REQUEST_ID.match(request_id):
            request_id = uuid.uuid4().hex
        try:
            if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
                response = self.preflight(request)
            elif produce is not None:
                response = produce()
            else:
                response = self.proxy(request, request_id)
        except problems.Problem as error:
            response = web.problem(error)
        return self.decorate(response, request, request_id)

    def proxy(self, request: flask.Request, request_id: str) -> flask.Response:
        route, params = self.routes.match(request.method, request.path)
        caller = self.authenticate(request, route)
        self.limit(request, route, caller)
        # Any body, however sent: a chunked one has no Content-Length but is checked all the same
        # (its size is bounded by the app's MAX_CONTENT_LENGTH as it is read).
        body = web.read_json(request) if request.get_data(cache=True) else None
        query = {name: request.args.getlist(name) for name in request.args}
        openapi.check(route, request.method, params, query, body)
        metrics.note_route(route.path)
        headers = self.upstream_headers(request, caller, request_id, route)
        path = route.target_path(request.path, params)
        if request.query_string:
            path += "?" + request.query_string.decode("latin-1")
        reply = self.call(route, request.method, path, headers, request.get_data() or None)
        response = flask.Response(reply.body, status=reply.status)
        for name in RETURNED_HEADERS:
            value = reply.headers.get(name)
            if value is not None:
                response.headers[name] = value
        return response

    def authenticate(self, request: flask.Request, route: Route) -> identity.Identity | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        caller = None
        if header:
            if scheme.lower() != "bearer" or not token.strip():
                raise problems.unauthorized("use an Authorization: Bearer <access token> header")
            if self.verifier is None:
                raise problems.unavailable("no identity provider is configured (OIDC_ISSUER)", 30)
            caller = self.verifier.verify(token.strip())
        if route.auth == "public":
            return caller
        if caller is None:
            raise problems.unauthorized("sign in first: this endpoint needs an access token")
        if route.role and not caller.has_role(route.role):
            raise problems.forbidden(f"this endpoint needs the {route.role!r} role")
        return caller

    def limit(self, request: flask.Request, route: Route, caller: identity.Identity | None) -> None:
        client = f"user:{caller.subject}" if caller else f"addr:{client_address(request)}"
        wait = self.limiter.take(client, route.path, route.rate)
        if wait > 0:
            RATE_LIMITED.labels(route.path).inc()
            raise problems.Problem(
                429,
                "Too many requests",
                f"slow down: this client may call {route.path} "
                f"{route.rate.per_second:g} times a second (bursts of {route.rate.burst})",
                "rate-limited",
                headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            )

    def upstream_headers(
        self, request: flask.Request, caller: identity.Identity | None, request_id: str, route: Route
    ) -> dict[str, str]:
        headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
        headers["X-Request-Id"] = request_id
        headers["X-Forwarded-For"] = client_address(request)
        headers["X-Forwarded-Proto"] = request.headers.get("X-Forwarded-Proto", request.scheme)
        headers["X-Forwarded-Host"] = request.headers.get("X-Forwarded-Host", request.host)
        # The signed identity is for the shop's own functions only: every one of them accepts it, so
        # an app found in the registry (which anyone in the cluster may register) never sees it.
        if caller is not None and route.upstream == "knative":
            headers[identity.HEADER] = identity.sign(caller, self.identity_secret)
        return headers

    def call(self, route: Route, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None) -> Reply:
        """One call with the route's timeout, retries (idempotent methods only) and circuit breakers.

        A retry goes to the next target when there are several (instances of a Eureka app);
        a target whose breaker is open is skipped.
        """
        targets = self.upstreams.targets(route)
        attempts = 1 + route.retries_for(method)
        failure: problems.Problem | Reply | None = None
        tried = 0
        for target in itertools.islice(itertools.cycle(targets), len(targets) * attempts):
            if tried == attempts:
                break
            breaker = self.breaker(target.breaker_key, route)
            if not breaker.allow():
                continue
            if tried:
                pause_before_retry(tried - 1)
            tried += 1
            reply, failure = self._attempt(route, target, breaker, method, path_qs, headers, body)
            if reply is not None and reply.status not in RETRYABLE_STATUSES:
                return reply
        if failure is None:
            raise problems.unavailable(
                f"{route.service} is failing; the gateway is not calling it for now (circuit open)",
                min(self.breaker(t.breaker_key, route).retry_after() for t in targets),
            )
        if isinstance(failure, problems.Problem):
            raise failure
        return failure

    def _attempt(
        self,
        route: Route,
        target: Target,
        breaker: WindowBreaker,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> tuple[Reply | None, problems.Problem | Reply]:
        started = time.perf_counter()
        try:
            reply = send(method, target.base_url + path_qs, body, headers, route.timeout)
        except TransportTimeout:
            breaker.record(False)
            UPSTREAM_REQUESTS.labels(route.service, "timeout").inc()
            return None, problems.Problem(
                504, "Gateway timeout", f"{route.service} did not answer within {route.timeout:g}s", "timeout"
            )
        except TransportError as error:
            breaker.record(False)
            UPSTREAM_REQUESTS.labels(route.service, "unreachable").inc()
            return None, problems.unavailable(f"{route.service} is unreachable ({error})", 5)
        finally:
            UPSTREAM_DURATION.labels(route.service).observe(time.perf_counter() - started)
        failed = reply.status >= 500
        breaker.record(not failed)
        UPSTREAM_REQUESTS.labels(route.service, "error" if failed else "ok").inc()
        return reply, reply

    # --- CORS and the headers every answer carries ------------------------------------------

    def preflight(self, request: flask.Request) -> flask.Response:
        origin = request.headers.get("Origin", "")
        if origin not in self.cors_origins:
            raise problems.forbidden(f"origin {origin!r} may not call this API from a browser")
        response = flask.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    def decorate(self, response: flask.Response, request: flask.Request, request_id: str) -> flask.Response:
        response.headers["X-Request-Id"] = request_id
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.headers.get("X-Forwarded-Proto", request.scheme) == "https":
            response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        origin = request.headers.get("Origin")
        if origin and origin in self.cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            response.headers.add("Vary", "Origin")
        return response


def client_address(request: flask.Request) -> str:
    """The address our ingress saw: the last hop it appended to X-Forwarded-For (earlier hops are the client's word)."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    return hops[-1] if hops else (request.remote_addr or "unknown")


def openapi_response(issuer: str) -> flask.Response:
    return flask.Response(json.dumps(openapi.document(issuer)), content_type="application/json")

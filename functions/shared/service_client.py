"""An HTTP client for other functions (Knative Services): timeouts, retries for idempotent calls, a circuit breaker.

A service is addressed by name: `http://<name>.<namespace>.svc.cluster.local`. In a
cluster that is a DNS name; locally, SERVICE_INGRESS_URL is set and the request goes
to the local ingress with that name in the Host header, as Knative's ingress routes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.trace import SpanKind

from functions.shared import metrics, tracing, web
from functions.shared.config import config
from functions.shared.keepalive import KeepAlivePool, TransportError
from functions.shared.resilience import (
    IDEMPOTENT_RETRIES,
    TIMEOUT_SECONDS,
    BreakerPolicy,
    WindowBreaker,
    pause_before_retry,
)

_pool = KeepAlivePool()


class UpstreamUnavailable(Exception):
    """The service did not answer in time, failed (5xx) or its circuit is open."""

    def __init__(self, service: str, reason: str, retry_after: int = 5) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def service_host(name: str) -> str:
    return f"{name}.{config().namespace}.{service_domain()}"


def service_domain() -> str:
    return config().optional("SERVICE_DOMAIN", "svc.cluster.local")


class ServiceClient:
    """One upstream service, with its own circuit breaker shared by every caller in the process."""

    def __init__(
        self,
        service: str,
        *,
        timeout: float = TIMEOUT_SECONDS,
        retries: int = IDEMPOTENT_RETRIES,
        breaker: BreakerPolicy | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.retries = retries
        self.breaker = WindowBreaker(service, breaker)
        self.breaker.publish_state(metrics.UPSTREAM_CIRCUIT_STATE)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = False,
    ) -> Reply:
        """One logical call within `timeout` seconds in all; 4xx answers are returned, not raised.

        Only an idempotent call is retried (with backoff and jitter): retrying anything
        else could do the work twice. The breaker counts the logical call, not each attempt.
        """
        if not self.breaker.allow():
            raise UpstreamUnavailable(self.service, "circuit open", self.breaker.retry_after())
        try:
            reply = self._attempts(method, path, body, headers or {}, idempotent)
        except UpstreamUnavailable:
            self.breaker.record(False)
            raise
        except Exception:
            self.breaker.record(True)  # our own error (say, a body that is not JSON), not the service's
            raise
        self.breaker.record(True)
        return reply

    def _attempts(self, method: str, path: str, body: Any, headers: Mapping[str, str], idempotent: bool) -> Reply:
        deadline = time.monotonic() + self.timeout
        attempts = 1 + (self.retries if idempotent else 0)
        reason = "no attempt made"
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            try:
                reply = self._send(method, path, body, headers, remaining)
            except TransportError as error:
                reason = f"{type(error).__name__}: {error}"
            else:
                if reply.status < 500:
                    return reply
                reason = f"answered {reply.status}"
            if attempt + 1 < attempts:
                pause_before_retry(attempt, deadline)
        raise UpstreamUnavailable(self.service, reason)

    def _send(self, method: str, path: str, body: Any, headers: Mapping[str, str], timeout: float) -> Reply:
        payload = None
        send_headers = dict(headers)
        if body is not None:
            payload = json.dumps(body, default=web.to_json_value).encode()
            send_headers.setdefault("Content-Type", "application/json")
        return send(method, f"http://{service_host(self.service)}{path}", payload, send_headers, timeout)


def send(method: str, url: str, body: bytes | None, headers: Mapping[str, str], timeout: float) -> Reply:
    """One HTTP exchange; a cluster-local URL goes through SERVICE_INGRESS_URL when that is set."""
    parts = urlsplit(url)
    send_headers = dict(headers)
    ingress = config().optional("SERVICE_INGRESS_URL", "")
    if ingress and parts.hostname and parts.hostname.endswith("." + service_domain()):
        send_headers["Host"] = parts.hostname
        base = urlsplit(ingress)
        url = urlunsplit((base.scheme, base.netloc, parts.path or "/", parts.query, ""))
    host = parts.hostname or ""
    attributes = {"http.request.method": method, "url.full": urlunsplit(parts), "server.address": host}
    with tracing.span(f"{method} {host}", SpanKind.CLIENT, attributes=attributes) as current:
        tracing.inject(send_headers)
        status, answer_headers, data = _pool.request(method, url, body, send_headers, timeout)
        current.set_attribute("http.response.status_code", status)
    return Reply(status, answer_headers, data)

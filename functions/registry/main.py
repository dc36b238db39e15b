"""Registry functions: a Eureka-compatible registry for non-Knative clients, and its Knative Service sync."""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from functions.registry import bootstrap, endpoints
from functions.shared import events, web

web.install(bootstrap.dependencies)


@functions_framework.http
def registry(request: flask.Request) -> flask.Response:
    """Eureka's REST API under /eureka: register, renew, cancel, status overrides, full and delta fetch, lookups."""
    return endpoints.serve(request)


@functions_framework.cloud_event
def registry_sync(event: CloudEvent) -> None:
    """PingSource (every minute): evict expired leases, then list the namespace's Knative Services as instances."""
    events.accept(event, {events.PING})
    bootstrap.use_cases().sync()

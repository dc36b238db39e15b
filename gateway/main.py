"""The API gateway: the shop's single public entry (routing, auth, resilience, storefront, OpenAPI)."""

import flask
import functions_framework

from functions.shared import health, web
from gateway import bootstrap, pipeline, static


def _needs() -> list[health.Dependency]:
    """Ready once its settings and route table load; its upstreams answer for their own readiness."""
    bootstrap.gateway()
    return []


web.install(_needs)


@functions_framework.http
def gateway(request: flask.Request) -> flask.Response:
    """/api/** to the functions; / and /storefront/** the storefront; /openapi.json the API document."""
    path = request.path
    if path.startswith("/api/"):
        return bootstrap.gateway().handle(request)
    return bootstrap.gateway().handle(request, lambda: own_files(request))


def own_files(request: flask.Request) -> flask.Response:
    web.allow(request, "GET", "HEAD")
    if request.path == "/openapi.json":
        return pipeline.openapi_response(bootstrap.issuer())
    if request.path.startswith("/eventing/schemas/"):
        return static.schema(request.path, request.headers)
    versioned = "v" in request.args
    return static.storefront(request.path, bootstrap.issuer(), request.headers, versioned=versioned)

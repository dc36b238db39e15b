"""The API gateway: the shop's single public entry (routing, auth, resilience, storefront, OpenAPI)."""

import flask
import functions_framework

from functions.shared import web
from gateway import bootstrap, edge, static

web.install()


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
        return edge.openapi_response(bootstrap.issuer())
    if request.path.startswith("/eventing/schemas/"):
        return static.schema(request.path)
    return static.storefront(request.path, bootstrap.issuer())

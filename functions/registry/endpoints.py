"""Eureka's REST routes under /eureka: each parses its request, calls one service function and answers.

Answers are JSON when the Accept header mentions json and XML otherwise; errors are problem+json.
"""

from __future__ import annotations

from collections.abc import Callable

import flask
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule

from functions.registry import bootstrap, parse, wire
from functions.shared import metrics, problems

ROUTES = Map(
    [
        Rule("/eureka/apps", endpoint="applications", methods=["GET"]),
        Rule("/eureka/apps/delta", endpoint="delta", methods=["GET"]),
        Rule("/eureka/apps/<app>", endpoint="application", methods=["GET"]),
        Rule("/eureka/apps/<app>", endpoint="register", methods=["POST"]),
        Rule("/eureka/apps/<app>/<instance_id>", endpoint="instance", methods=["GET"]),
        Rule("/eureka/apps/<app>/<instance_id>", endpoint="renew", methods=["PUT"]),
        Rule("/eureka/apps/<app>/<instance_id>", endpoint="cancel", methods=["DELETE"]),
        Rule("/eureka/apps/<app>/<instance_id>/status", endpoint="override_status", methods=["PUT"]),
        Rule("/eureka/apps/<app>/<instance_id>/status", endpoint="remove_override", methods=["DELETE"]),
        Rule("/eureka/instances/<instance_id>", endpoint="instance_by_id", methods=["GET"]),
        Rule("/eureka/vips/<address>", endpoint="vip", methods=["GET"]),
        Rule("/eureka/svips/<address>", endpoint="secure_vip", methods=["GET"]),
    ],
    strict_slashes=False,
    merge_slashes=False,
)


def serve(request: flask.Request) -> flask.Response:
    try:
        rule, args = ROUTES.bind("registry").match(request.path, request.method, return_rule=True)
    except NotFound:
        raise problems.not_found(
            f"no such resource {request.path!r}; Eureka's API is under /eureka/apps, /eureka/instances,"
            " /eureka/vips and /eureka/svips"
        ) from None
    except MethodNotAllowed as error:
        allowed = ", ".join(sorted(error.valid_methods or []))
        raise problems.Problem(
            405,
            "Method not allowed",
            f"{request.method} is not supported on {request.path}; use {allowed}",
            "method-not-allowed",
            headers={"Allow": allowed},
        ) from None
    metrics.note_route(rule.rule)
    handler: Callable[..., flask.Response] = ENDPOINTS[str(rule.endpoint)]
    return handler(request, **args)


def _answer(request: flask.Request, render: Callable[[bool], tuple[bytes, str]]) -> flask.Response:
    body, content_type = render(wire.wants_json(request.headers.get("Accept")))
    return flask.Response(body, status=200, content_type=content_type)


def _empty(status: int) -> flask.Response:
    return flask.Response(b"", status=status)


def applications(request: flask.Request) -> flask.Response:
    apps = bootstrap.use_cases().full_registry()
    return _answer(request, lambda as_json: wire.applications_body(apps, as_json))


def delta(request: flask.Request) -> flask.Response:
    changes = bootstrap.use_cases().delta()
    return _answer(request, lambda as_json: wire.applications_body(changes, as_json))


def application(request: flask.Request, app: str) -> flask.Response:
    name = parse.app_name(app)
    instances = bootstrap.use_cases().application(name)
    return _answer(request, lambda as_json: wire.application_body(name, instances, as_json))


def instance(request: flask.Request, app: str, instance_id: str) -> flask.Response:
    ref = parse.instance_ref(app, instance_id)
    found = bootstrap.use_cases().instance(ref.instance_id, ref.app)
    return _answer(request, lambda as_json: wire.instance_body(found, as_json))


def instance_by_id(request: flask.Request, instance_id: str) -> flask.Response:
    found = bootstrap.use_cases().instance(parse.instance_id_of(instance_id), None)
    return _answer(request, lambda as_json: wire.instance_body(found, as_json))


def vip(request: flask.Request, address: str) -> flask.Response:
    apps = bootstrap.use_cases().vip(address, False)
    return _answer(request, lambda as_json: wire.applications_body(apps, as_json))


def secure_vip(request: flask.Request, address: str) -> flask.Response:
    apps = bootstrap.use_cases().vip(address, True)
    return _answer(request, lambda as_json: wire.applications_body(apps, as_json))


def register(request: flask.Request, app: str) -> flask.Response:
    cmd = parse.register_command(app, request, bootstrap.lease_seconds())
    bootstrap.use_cases().register(cmd)
    return _empty(204)  # Eureka answers 204; its clients accept any 2xx


def renew(request: flask.Request, app: str, instance_id: str) -> flask.Response:
    cmd = parse.renew_command(parse.instance_ref(app, instance_id), request.args)
    bootstrap.use_cases().renew(cmd)
    return _empty(200)


def cancel(request: flask.Request, app: str, instance_id: str) -> flask.Response:
    bootstrap.use_cases().cancel(parse.instance_ref(app, instance_id))
    return _empty(200)


def override_status(request: flask.Request, app: str, instance_id: str) -> flask.Response:
    cmd = parse.override_command(parse.instance_ref(app, instance_id), request.args)
    bootstrap.use_cases().override_status(cmd)
    return _empty(200)


def remove_override(request: flask.Request, app: str, instance_id: str) -> flask.Response:
    cmd = parse.remove_override_command(parse.instance_ref(app, instance_id), request.args)
    bootstrap.use_cases().remove_override(cmd)
    return _empty(200)


ENDPOINTS: dict[str, Callable[..., flask.Response]] = {
    "applications": applications,
    "delta": delta,
    "application": application,
    "instance": instance,
    "instance_by_id": instance_by_id,
    "vip": vip,
    "secure_vip": secure_vip,
    "register": register,
    "renew": renew,
    "cancel": cancel,
    "override_status": override_status,
    "remove_override": remove_override,
}

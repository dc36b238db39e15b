"""HTTP plumbing for every function: problem+json errors, strict JSON in and out, /metrics, /healthz."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import flask
from cloudevents import exceptions as cloud_exceptions
from cloudevents.http import CloudEvent, from_http
from werkzeug.exceptions import HTTPException

from functions.shared import errors, events, faults, health, metrics, problems, tracing
from functions.shared.config import ConfigError, config
from functions.shared.logs import configure_logging

MAX_BODY_BYTES = 1024 * 1024
# A restarting server is usually back within a couple of seconds (locally, and a pod restart).
OUTAGE_RETRY_AFTER_SECONDS = 2
# No request of ours nests deeper than a few levels; the limit keeps validators and handlers out of deep recursion.
MAX_JSON_DEPTH = 32
log = logging.getLogger("shop.web")
_imported = time.monotonic()
_first_request_done = False


def process_age() -> float:
    """Seconds since this process began (from the kernel: a process forked from a pre-loaded parent,
    as the local runtime's zygote does, counts from its fork, not from when this module was imported)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started_ticks = int(stat.read().rpartition(")")[2].split()[19])  # field 22: starttime
            return float(uptime.read().split()[0]) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):  # not Linux
        return time.monotonic() - _imported


def install(dependencies: health.Dependencies | None = None) -> None:
    """Wires the shared plumbing into the functions-framework app being created.

    Call it at the top of an area's main.py: functions-framework executes that module
    inside the new app's context, so `flask.current_app` is the function's app.
    `dependencies` lists the servers the area needs, for its readiness answer (/readyz).
    """
    if not flask.has_app_context():
        return
    app = flask.current_app._get_current_object()  # type: ignore[attr-defined]
    if app.extensions.get("shop"):
        return
    app.extensions["shop"] = True
    app.extensions["shop_readiness"] = health.ReadinessProbe(dependencies)
    settings = config()
    configure_logging(settings.service, settings.optional("LOG_LEVEL", "INFO"))
    traced = tracing.configure_tracing(settings.service)
    app.wsgi_app = BodyLimit(app.wsgi_app)
    # BodyLimit sees Content-Length; this bounds a chunked body as it is read (413 past the limit).
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.register_error_handler(problems.Problem, _problem_response)
    app.register_error_handler(errors.DomainError, _domain_error_response)
    app.register_error_handler(HTTPException, _http_error_response)
    app.register_error_handler(ConfigError, _config_error_response)
    app.register_error_handler(RecursionError, _too_deep_response)
    app.register_error_handler(Exception, _crash_response)
    app.add_url_rule("/metrics", "shop_metrics", _metrics, methods=["GET"])
    app.add_url_rule("/healthz", "shop_health", _health, methods=["GET"])
    app.add_url_rule("/readyz", "shop_ready", _ready, methods=["GET"])
    app.before_request(_start_timer)
    app.after_request(_record)
    if traced:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor().instrument_app(app, excluded_urls="healthz,readyz,metrics")


class BodyLimit:
    """Refuses a body over MAX_BODY_BYTES before the function (or the framework) reads it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        length = environ.get("CONTENT_LENGTH") or "0"
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            error = problems.Problem(
                413, "Payload too large", f"request body is larger than {MAX_BODY_BYTES} bytes", "payload-too-large"
            )
            body = json.dumps(error.body(environ.get("PATH_INFO"))).encode()
            start_response(
                "413 Payload Too Large",
                [("Content-Type", problems.PROBLEM_JSON), ("Content-Length", str(len(body))), ("Connection", "close")],
            )
            return [body]
        return self.app(environ, start_response)


def _metrics() -> flask.Response:
    body, content_type = metrics.exposition()
    return flask.Response(body, content_type=content_type)


def _health() -> flask.Response:
    """Liveness: the process serves requests (whatever the state of the servers it needs)."""
    return flask.Response("ok\n", content_type="text/plain")


def _ready() -> flask.Response:
    """Readiness: settings present and every server the function needs answering; else 503 saying which not."""
    readiness = flask.current_app.extensions["shop_readiness"]()
    if readiness.ready:
        return flask.Response("ready\n", content_type="text/plain")
    log.warning("not ready: %s", "; ".join(readiness.reasons))
    return problem(problems.unavailable("not ready: " + "; ".join(readiness.reasons), retry_after=2))


PROBES = ("shop_metrics", "shop_health", "shop_ready")


def _start_timer() -> None:
    flask.g.shop_started = time.perf_counter()
    if flask.request.endpoint not in PROBES:  # a slow function still answers its probes
        faults.delay()


def _record(response: flask.Response) -> flask.Response:
    global _first_request_done
    started = flask.g.pop("shop_started", None)
    if started is None or flask.request.endpoint in PROBES:
        return response
    elapsed = time.perf_counter() - started
    route = flask.g.pop("shop_route", None) or config().service
    labels = (route, flask.request.method, str(response.status_code))
    metrics.REQUESTS.labels(*labels).inc()
    metrics.REQUEST_DURATION.labels(*labels).observe(elapsed)
    if is_cloud_event(flask.request):
        outcome = flask.g.pop("shop_event_outcome", None) or _delivery_outcome(response.status_code)
        metrics.EVENTS_CONSUMED.labels(_event_type(flask.request), outcome).inc()
    if not _first_request_done:
        _first_request_done = True
        metrics.COLD_STARTS.inc()
        metrics.COLD_START_DURATION.set(process_age())
    return response


def _delivery_outcome(status: int) -> str:
    if status < 400:
        return "processed"
    return "failed" if events.delivery_retried(status) else "rejected"


def _event_type(request: flask.Request) -> str:
    """The event's type, if it is one of ours (a label value must not come unchecked from a sender)."""
    event_type = request.headers.get("ce-type")
    if event_type is None:
        try:
            body = request.get_json(force=True, silent=True)
        except RecursionError:
            body = None
        event_type = body.get("type") if isinstance(body, dict) else None
    return event_type if event_type in events.EVENT_TYPES or event_type == events.PING else "other"


def problem(error: problems.Problem) -> flask.Response:
    response = flask.Response(
        json.dumps(error.body(flask.request.path if flask.has_request_context() else None)),
        status=error.status,
        content_type=problems.PROBLEM_JSON,
    )
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _problem_response(error: problems.Problem) -> flask.Response:
    if error.status >= 500:
        log.warning("request failed: %s", error)
    return problem(error)


def _domain_error_response(error: errors.DomainError) -> flask.Response:
    return _problem_response(problems.from_domain(error))


def _http_error_response(error: HTTPException) -> flask.Response:
    status = error.code or 500
    detail = error.description or error.name
    if status == 400 and "CloudEvent" in (error.description or ""):
        # functions-framework's message embeds every header and the body: keep it short.
        detail = "not a valid CloudEvent: id, source, type and specversion 1.0 are required"
    slug = error.name.lower().replace(" ", "-")
    return problem(problems.Problem(status, error.name, detail, slug))


def _too_deep_response(_: RecursionError) -> flask.Response:
    """A body nested deeper than a parser (ours or the framework's CloudEvent one) can follow: the sender's fault."""
    return problem(problems.invalid_field("body", "the JSON nests too deeply to read"))


def _config_error_response(error: ConfigError) -> flask.Response:
    """A setting the deployment forgot: 503 naming it, so the operator sees what to fix."""
    log.error("not configured: %s", error)
    return problem(problems.Problem(503, "Service not configured", str(error), "not-configured"))


def _crash_response(error: Exception) -> flask.Response:
    server = health.outage(error)
    if server is not None:
        # A server we need is down or restarting: the honest answer is "not now", not "broken".
        first_line = next(iter(str(error).strip().splitlines()), "")
        log.warning("%s is unavailable: %s: %s", server, type(error).__name__, first_line)
        detail = f"{server} is unavailable or restarting ({type(error).__name__}); try again"
        return problem(problems.unavailable(detail, retry_after=OUTAGE_RETRY_AFTER_SECONDS))
    log.exception("unhandled error")
    return problem(problems.Problem(500, "Internal error", "the function failed; it was logged", "internal"))


def allow(request: flask.Request, *methods: str) -> None:
    """405 with an Allow header unless the request uses one of `methods`."""
    if request.method not in methods:
        raise problems.Problem(
            405,
            "Method not allowed",
            f"{request.method} is not supported here; use {', '.join(methods)}",
            "method-not-allowed",
            headers={"Allow": ", ".join(methods)},
        )


def is_cloud_event(request: flask.Request) -> bool:
    """Binary mode carries ce-* headers; structured mode a cloudevents+json body."""
    return "ce-specversion" in request.headers or (request.mimetype or "").startswith("application/cloudevents")


def cloud_event(request: flask.Request) -> CloudEvent:
    """The CloudEvent in an HTTP request (binary or structured mode), or a 400 problem."""
    try:
        return from_http(dict(request.headers), request.get_data())
    except cloud_exceptions.GenericException as error:
        raise problems.invalid_field("cloudevent", f"not a valid CloudEvent: {error}") from None
    except RecursionError:
        raise problems.invalid_field("cloudevent", "the event nests too deeply to read") from None


def read_json(request: flask.Request) -> Any:
    """The body as JSON with exact decimals; 415/400 problems for anything else."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise problems.Problem(
            415,
            "Unsupported media type",
            f"send the body as application/json, not {mimetype or 'nothing'}",
            "unsupported-media-type",
        )
    raw = request.get_data(cache=True)
    if len(raw) > MAX_BODY_BYTES:  # a chunked body has no Content-Length for BodyLimit to see
        raise problems.Problem(
            413, "Payload too large", f"request body is larger than {MAX_BODY_BYTES} bytes", "payload-too-large"
        )
    if not raw:
        raise problems.invalid_field("/", "the request body is empty; a JSON document is required")
    try:
        document = json.loads(
            raw,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    except UnicodeDecodeError:
        raise problems.invalid_field("/", "the body is not UTF-8") from None
    except ValueError as error:
        raise problems.invalid_field("/", f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise problems.invalid_field("/", f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth_exceeds(document, MAX_JSON_DEPTH):
        raise problems.invalid_field("/", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    return document


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit` (iterative: no recursion to exhaust)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def query(request: flask.Request, allowed: Iterable[str]) -> Mapping[str, list[str]]:
    """Query parameters, refusing names the endpoint does not know (a typo is not ignored)."""
    known = set(allowed)
    unknown = sorted(set(request.args) - known)
    if unknown:
        raise problems.invalid(
            [problems.FieldError(name, f"unknown query parameter; allowed: {sorted(known)}") for name in unknown]
        )
    return {name: request.args.getlist(name) for name in request.args}


def single(params: Mapping[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise problems.invalid_field(name, "give this parameter once")
    return values[0]


def integer(params: Mapping[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = single(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise problems.invalid_field(name, f"must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise problems.invalid_field(name, f"must be between {low} and {high}, got {value}")
    return value


def to_json_value(value: Any) -> Any:
    """Decimals leave as JSON numbers; a value a double cannot carry exactly leaves as a string."""
    if isinstance(value, Decimal):
        number = float(value)
        return number if Decimal(repr(number)) == value else str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> flask.Response:
    response = flask.Response(json.dumps(body, default=to_json_value), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response

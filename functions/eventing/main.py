"""Event infrastructure functions: outbox-relay (one per domain database) and dead-letter."""

import re

import flask
import functions_framework
from cloudevents.http import CloudEvent

from functions.eventing import bootstrap
from functions.shared import events, identity, metrics, problems, web

web.install(bootstrap.dependencies)
REPLAY_PATH = re.compile(r"^/deadletters/(?P<id>\d{1,18})/replay/?$")
ONE_PATH = re.compile(r"^/deadletters/(?P<id>\d{1,18})/?$")


@functions_framework.cloud_event
def outbox_relay(event: CloudEvent) -> None:
    """PingSource sweep: publish the outbox rows the fast path did not (Kafka was down, a process died)."""
    events.accept(event, {events.PING})
    bootstrap.use_cases().relay()


@functions_framework.http
def dead_letter(request: flask.Request) -> flask.Response:
    """POST / (a CloudEvent from a deadLetterSink); GET /deadletters[/{id}]; POST /deadletters/{id}/replay (admin)."""
    if request.method == "POST" and web.is_cloud_event(request):
        dead = bootstrap.use_cases().keep(web.cloud_event(request))
        return web.json_response({"id": dead.id}, 202)
    identity.require(request.headers, "admin")
    if request.path.rstrip("/") == "/deadletters":
        metrics.note_route("/deadletters")
        web.allow(request, "GET")
        params = web.query(request, ("page", "size", "type"))
        listing = bootstrap.use_cases().list(
            web.integer(params, "page", 0, 0, 10_000),
            web.integer(params, "size", 20, 1, 100),
            web.single(params, "type"),
        )
        return web.json_response(listing)
    one = ONE_PATH.match(request.path)
    if one is not None:
        metrics.note_route("/deadletters/{id}")
        web.allow(request, "GET")
        web.query(request, ())
        return web.json_response(bootstrap.use_cases().get(int(one["id"])).as_json())
    match = REPLAY_PATH.match(request.path)
    if match is None:
        raise problems.not_found(f"no such resource {request.path!r}")
    metrics.note_route("/deadletters/{id}/replay")
    web.allow(request, "POST")
    replayed = bootstrap.use_cases().replay(int(match["id"]))
    return web.json_response(replayed.as_json())

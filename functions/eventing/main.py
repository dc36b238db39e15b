"""Event infrastructure functions: outbox-relay (one per domain database) and dead-letter."""

import re

import flask
import functions_framework
from cloudevents.http import CloudEvent

from functions.eventing import bootstrap, service
from functions.shared import events, identity, metrics, outbox, problems, web

web.install(bootstrap.dependencies)
REPLAY_PATH = re.compile(r"^/deadletters/(?P<id>\d{1,18})/replay/?$")
ONE_PATH = re.compile(r"^/deadletters/(?P<id>\d{1,18})/?$")


@functions_framework.cloud_event
def outbox_relay(event: CloudEvent) -> None:
    """PingSource sweep: publish the outbox rows the fast path did not (Kafka was down, a process died)."""
    events.accept(event, {events.PING})
    service.relay_outbox(bootstrap.outbox(), publisher=outbox.publisher())


@functions_framework.http
def dead_letter(request: flask.Request) -> flask.Response:
    """POST / (a CloudEvent from a deadLetterSink); GET /deadletters[/{id}]; POST /deadletters/{id}/replay (admin)."""
    if request.method == "POST" and web.is_cloud_event(request):
        dead = service.keep_dead_letter(web.cloud_event(request), store=bootstrap.dead_letters())
        return web.json_response({"id": dead.id}, 202)
    identity.require(request.headers, "admin")
    if request.path.rstrip("/") == "/deadletters":
        metrics.note_route("/deadletters")
        web.allow(request, "GET")
        params = web.query(request, ("page", "size", "type"))
        listing = service.list_dead_letters(
            web.integer(params, "page", 0, 0, 10_000),
            web.integer(params, "size", 20, 1, 100),
            web.single(params, "type"),
            store=bootstrap.dead_letters(),
        )
        return web.json_response(listing)
    one = ONE_PATH.match(request.path)
    if one is not None:
        metrics.note_route("/deadletters/{id}")
        web.allow(request, "GET")
        web.query(request, ())
        return web.json_response(service.get_dead_letter(int(one["id"]), store=bootstrap.dead_letters()).as_json())
    match = REPLAY_PATH.match(request.path)
    if match is None:
        raise problems.not_found(f"no such resource {request.path!r}")
    metrics.note_route("/deadletters/{id}/replay")
    web.allow(request, "POST")
    replayed = service.replay_dead_letter(
        int(match["id"]), store=bootstrap.dead_letters(), transport=bootstrap.transport
    )
    return web.json_response(replayed.as_json())

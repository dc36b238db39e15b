"""Order functions: order-place, order-get, order-list, order-cancel."""

import flask
import functions_framework

from functions.orders import bootstrap, parse
from functions.shared import identity, web

web.install(bootstrap.dependencies)
LEGACY_CREATED = "Order Placed Successfully"


@functions_framework.http
def order_place(request: flask.Request) -> flask.Response:
    """POST /api/orders {items} (and the original POST /api/order), as the signed-in customer."""
    web.allow(request, "POST")
    caller = identity.require(request.headers)
    legacy = parse.is_legacy(request.path)
    cmd = parse.place_command(web.read_json(request), caller, request.headers.get("Idempotency-Key"), legacy=legacy)
    placed = bootstrap.use_cases().place(cmd, {identity.HEADER: request.headers[identity.HEADER]})
    headers = {"Location": f"/api/orders/{placed.order_number}"}
    if placed.replayed:
        headers["Idempotent-Replayed"] = "true"
    if legacy:
        return flask.Response(LEGACY_CREATED, 201, headers, content_type="text/plain")
    return web.json_response(placed.body, 201, headers)


@functions_framework.http
def order_get(request: flask.Request) -> flask.Response:
    """GET /api/orders/{orderNumber}: the caller's own order (admin: any)."""
    web.allow(request, "GET")
    caller = identity.require(request.headers)
    number = parse.order_number_from(request.path, parse.ORDER_PATH)
    return web.json_response(bootstrap.use_cases().get(number, caller).as_json())


@functions_framework.http
def order_list(request: flask.Request) -> flask.Response:
    """GET /api/orders?page=&size=&status= (admin also customer=, email=)."""
    web.allow(request, "GET")
    caller = identity.require(request.headers)
    query = parse.order_query(web.query(request, parse.LIST_PARAMETERS), caller)
    return web.json_response(bootstrap.use_cases().search(query).as_json())


@functions_framework.http
def order_cancel(request: flask.Request) -> flask.Response:
    """POST /api/orders/{orderNumber}/cancel {reason?}: only PLACED orders; the stock comes back by event."""
    web.allow(request, "POST")
    caller = identity.require(request.headers)
    body = web.read_json(request) if request.content_length else None
    cmd = parse.cancel_command(request.path, body)
    order = bootstrap.use_cases().cancel(cmd, caller)
    return web.json_response(order.as_json())

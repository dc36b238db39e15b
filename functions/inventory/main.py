"""Inventory functions: check, reserve, release, restock, track, confirm and expire stock."""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from functions.inventory import bootstrap, parse
from functions.inventory.model import ConfirmReservation, ReleaseStock
from functions.shared import events, flags, identity, web

web.install(bootstrap.dependencies)


@functions_framework.http
def inventory_check(request: flask.Request) -> flask.Response:
    """GET /api/inventory?skuCode=..&quantity=..: true/false for one SKU, per-SKU answers for several;
    GET /api/inventory/{sku}: its level; GET /api/inventory?lowStock=true: levels under their threshold (admin)."""
    web.allow(request, "GET")
    if parse.is_level_path(request.path):
        web.query(request, ())
        sku = parse.sku_from_path(request.path, parse.LEVEL_PREFIX)
        return web.json_response(bootstrap.use_cases().level(sku).as_json())
    params = web.query(request, parse.CHECK_PARAMETERS)
    low = parse.low_stock_query(params, identity.from_headers(request.headers))
    if low is not None:
        return web.json_response(bootstrap.use_cases().low_stock(low))
    query, single = parse.stock_query(params)
    answers = bootstrap.use_cases().check(query)
    if single:
        line, level = answers[0]
        return web.json_response(level.available >= line.quantity)
    return web.json_response(
        [
            {
                "skuCode": line.sku,
                "quantity": line.quantity,
                "available": level.available,
                "isInStock": level.available >= line.quantity,
            }
            for line, level in answers
        ]
    )


@functions_framework.http
def inventory_reserve(request: flask.Request) -> flask.Response:
    """POST /reservations {orderNumber, items}: all lines or none; the same request again answers the same."""
    web.allow(request, "POST")
    identity.require(request.headers)
    flags.delay(flags.INVENTORY_RESERVE_LATENCY)
    flags.fail_sometimes(flags.INVENTORY_RESERVE_FAILURE)
    cmd = parse.reserve_command(web.read_json(request))
    outcome = bootstrap.use_cases().reserve(cmd)
    return web.json_response(outcome.reservation.as_json(), 201 if outcome.created else 200)


@functions_framework.http
def inventory_release(request: flask.Request) -> flask.Response:
    """Compensation (POST /reservations/{orderNumber}/release) or a com.shop.order.cancelled CloudEvent."""
    web.allow(request, "POST")
    if web.is_cloud_event(request):
        event = web.cloud_event(request)
        data = events.accept(event, {events.ORDER_CANCELLED})
        cmd = ReleaseStock(data["orderNumber"], "order cancelled")
        bootstrap.use_cases().release_for(cmd, event)
        return flask.Response(status=204)
    identity.require(request.headers)
    cmd = ReleaseStock(parse.order_number_from_release_path(request.path), "compensation")
    reservation = bootstrap.use_cases().release(cmd)
    assert reservation is not None  # no delivery: never skipped as a duplicate
    return web.json_response(reservation.as_json())


@functions_framework.http
def inventory_restock(request: flask.Request) -> flask.Response:
    """PUT /api/inventory/{sku} {quantity, mode: set|add, lowStockThreshold?}, admin only."""
    web.allow(request, "PUT")
    identity.require(request.headers, "admin")
    cmd = parse.restock_command(request.path, web.read_json(request))
    level, created = bootstrap.use_cases().restock(cmd)
    return web.json_response(level.as_json(), 201 if created else 200)


@functions_framework.cloud_event
def inventory_track(event: CloudEvent) -> None:
    """com.shop.product.created -> an empty stock row for the new SKU."""
    data = events.accept(event, {events.PRODUCT_CREATED})
    bootstrap.use_cases().track_for(data["sku"], event)


@functions_framework.cloud_event
def inventory_confirm(event: CloudEvent) -> None:
    """com.shop.order.placed -> the order's held reservation becomes committed."""
    data = events.accept(event, {events.ORDER_PLACED})
    cmd = ConfirmReservation(data["orderNumber"])
    bootstrap.use_cases().confirm_for(cmd, event)


@functions_framework.cloud_event
def inventory_expire(event: CloudEvent) -> None:
    """PingSource sweep: settle holds older than RESERVATION_TTL_SECONDS by asking orders what became of them."""
    events.accept(event, {events.PING})
    bootstrap.use_cases().expire()

"""Catalog functions: product-create, product-update, product-get, product-list."""

import flask
import functions_framework

from functions.catalog import bootstrap, parse
from functions.shared import flags, identity, web

web.install(bootstrap.dependencies)


@functions_framework.http
def product_create(request: flask.Request) -> flask.Response:
    """POST /api/products (and the original POST /api/product), admin only."""
    web.allow(request, "POST")
    identity.require(request.headers, "admin")
    legacy = parse.is_legacy(request.path)
    cmd = parse.create_command(web.read_json(request), legacy=legacy)
    product = bootstrap.use_cases().create(cmd)
    body = product.as_legacy_json() if legacy else product.as_json()
    headers = {"Location": f"/api/products/{product.sku}", "ETag": product.etag}
    return web.json_response(body, 201, headers)


@functions_framework.http
def product_update(request: flask.Request) -> flask.Response:
    """PATCH /api/products/{sku}, admin only; If-Match guards against lost updates."""
    web.allow(request, "PATCH")
    identity.require(request.headers, "admin")
    cmd = parse.update_command(request.path, web.read_json(request), request.headers.get("If-Match"))
    product = bootstrap.use_cases().update(cmd)
    return web.json_response(product.as_json(), headers={"ETag": product.etag})


@functions_framework.http
def product_get(request: flask.Request) -> flask.Response:
    """GET /api/products/{sku}."""
    web.allow(request, "GET")
    flags.delay(flags.PRODUCT_GET_LATENCY)
    product = bootstrap.use_cases().get(parse.sku_from_path(request.path))
    return web.json_response(product.as_json(), headers={"ETag": product.etag})


@functions_framework.http
def product_list(request: flask.Request) -> flask.Response:
    """GET /api/products?q=&category=&page=&size=&sort= (and the original GET /api/product)."""
    web.allow(request, "GET")
    if parse.is_legacy(request.path):
        web.query(request, ())
        products = bootstrap.use_cases().all_active()
        return web.json_response([p.as_legacy_json() for p in products])
    params = web.query(request, parse.QUERY_PARAMETERS)
    query = parse.product_query(params, identity.from_headers(request.headers))
    page = bootstrap.use_cases().search(query)
    return web.json_response(page.as_json())

"""Files the gateway serves itself: the storefront, its configuration, and the event schemas."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from urllib.parse import urlsplit

import flask

from functions.shared import problems

STOREFRONT = Path(__file__).with_name("storefront")
SCHEMAS = Path(__file__).resolve().parents[1] / "eventing" / "schemas"


def storefront(path: str, issuer: str) -> flask.Response:
    """GET / and /storefront/*: the single-page storefront; /storefront/config.json tells it the issuer."""
    if path == "/storefront/config.json":
        body = json.dumps({"issuer": issuer, "clientId": "storefront", "api": "/api"})
        return flask.Response(body, content_type="application/json", headers={"Cache-Control": "no-store"})
    name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/storefront/")
    return _file(STOREFRONT, name, _policy(issuer))


def schema(path: str) -> flask.Response:
    """GET /eventing/schemas/<type>.json: where every event's dataschema points."""
    return _file(SCHEMAS, path.removeprefix("/eventing/schemas/"), "default-src 'none'")


def _file(folder: Path, name: str, policy: str) -> flask.Response:
    target = (folder / name).resolve()
    if folder.resolve() not in target.parents or not target.is_file():
        raise problems.not_found(f"no file {name!r}")
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    response = flask.Response(target.read_bytes(), content_type=content_type)
    response.headers["Content-Security-Policy"] = policy
    response.headers["Cache-Control"] = "no-cache"
    return response


def _policy(issuer: str) -> str:
    parts = urlsplit(issuer)
    issuer_origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return (
        f"default-src 'self'; connect-src 'self' {issuer_origin}; form-action 'self' {issuer_origin}; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
    )

"""Files the gateway serves itself: the storefront (cached and compressed), its configuration, and the event schemas.

Caching: the page (`/`) is revalidated on every load (`no-cache` with an ETag: a 304 costs no
body); it names its script and stylesheet with `?v=<content hash>`, and those versioned URLs are
cached for a year (`immutable`), so a new release is picked up at the next load and an unchanged
one is never downloaded again. Pictures and the icon are cached for a day. Text (HTML, JavaScript,
CSS, SVG, JSON) is sent gzip-compressed to clients that accept it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import mimetypes
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import flask

from functions.shared import problems
from functions.shared.identity import Headers

STOREFRONT = Path(__file__).with_name("storefront")
SCHEMAS = Path(__file__).resolve().parents[1] / "eventing" / "schemas"
FAVICON = "favicon.svg"
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
PAGE_ASSETS = ("app.js", "style.css")
VERSIONED_ASSET = re.compile(r'/storefront/(app\.js|style\.css)"')
IMMUTABLE = "public, max-age=31536000, immutable"
PICTURES = "public, max-age=86400"
mimetypes.add_type("image/svg+xml", ".svg")
mimetypes.add_type("text/javascript", ".js")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None: not worth compressing
    etag: str
    content_type: str


_cache: dict[Path, tuple[tuple[tuple[int, int], ...], Asset]] = {}
_lock = threading.Lock()


def storefront(path: str, issuer: str, headers: Headers | None = None, *, versioned: bool = False) -> flask.Response:
    """GET / and /storefront/*: the single-page storefront; /storefront/config.json tells it the issuer.

    `versioned`: the URL carries ?v=<hash> (as the page names its script and stylesheet), so it may be
    cached for good."""
    if path == "/storefront/config.json":
        body = json.dumps({"issuer": issuer, "clientId": "storefront", "api": "/api"})
        return flask.Response(body, content_type="application/json", headers={"Cache-Control": "no-store"})
    if path == "/favicon.ico":
        return _file(STOREFRONT, FAVICON, "default-src 'none'", headers, PICTURES)
    name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/storefront/")
    if name == "index.html":
        return _file(STOREFRONT, name, _policy(issuer), headers, "no-cache", page=True)
    caching = PICTURES if name.startswith("images/") or name == FAVICON else IMMUTABLE if versioned else "no-cache"
    return _file(STOREFRONT, name, _policy(issuer), headers, caching)


def schema(path: str, headers: Headers | None = None) -> flask.Response:
    """GET /eventing/schemas/<type>.json: where every event's dataschema points."""
    return _file(SCHEMAS, path.removeprefix("/eventing/schemas/"), "default-src 'none'", headers, "no-cache")


def _file(
    folder: Path,
    name: str,
    policy: str,
    headers: Headers | None,
    caching: str,
    *,
    page: bool = False,
) -> flask.Response:
    target = (folder / name).resolve()
    if folder.resolve() not in target.parents or not target.is_file():
        raise problems.not_found(f"no file {name!r}")
    asset = _asset(target, page=page)
    accepted = (headers.get("Accept-Encoding") if headers else None) or ""
    gzipped = asset.gzipped is not None and "gzip" in accepted.lower()
    etag = f'"{asset.etag}-gz"' if gzipped else f'"{asset.etag}"'
    cached = (headers.get("If-None-Match") if headers else None) or ""
    offered = {tag.strip().removeprefix("W/") for tag in cached.split(",")}
    if offered & {f'"{asset.etag}-gz"', f'"{asset.etag}"', "*"}:
        response = flask.Response(status=304)
    else:
        body = asset.gzipped if gzipped and asset.gzipped is not None else asset.body
        response = flask.Response(body, content_type=asset.content_type)
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = caching
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Content-Security-Policy"] = policy
    return response


def _asset(target: Path, *, page: bool) -> Asset:
    """The file as served, read again only when it changed on disk (edits show at the next load)."""
    # The page names its script and stylesheet by content hash: it changes when they do.
    watched = [target, *(STOREFRONT / name for name in PAGE_ASSETS)] if page else [target]
    key = tuple((stat.st_mtime_ns, stat.st_size) for stat in (path.stat() for path in watched))
    with _lock:
        cached = _cache.get(target)
    if cached is not None and cached[0] == key:
        return cached[1]
    body = target.read_bytes()
    if page:
        body = VERSIONED_ASSET.sub(_versioned, body.decode()).encode()
    content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type in ("application/javascript", "application/json"):
        content_type += "; charset=utf-8"
    compressible = content_type.startswith(COMPRESSIBLE) and len(body) > 512
    asset = Asset(
        body,
        gzip.compress(body, compresslevel=9, mtime=0) if compressible else None,
        hashlib.sha256(body).hexdigest()[:20],
        content_type,
    )
    with _lock:
        _cache[target] = (key, asset)
    return asset


def _versioned(match: re.Match[str]) -> str:
    name = match.group(1)
    return f'/storefront/{name}?v={hashlib.sha256((STOREFRONT / name).read_bytes()).hexdigest()[:12]}"'


def _policy(issuer: str) -> str:
    parts = urlsplit(issuer)
    issuer_origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return (
        f"default-src 'self'; connect-src 'self' {issuer_origin}; form-action 'self' {issuer_origin}; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
    )

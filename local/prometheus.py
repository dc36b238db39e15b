"""Prometheus HTTP service discovery of the local functions: where each running revision serves /metrics.

A function's process gets a new port each time it starts (scale from zero, a crash, a new
environment), so a static scrape list goes stale. Prometheus's `http_sd_configs` asks this
endpoint again every `refresh_interval` and scrapes exactly the revisions running then; a
service scaled to zero has no target, as a Knative Service without pods has none in a cluster.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from local.serving import Revision

PATH = "/_local/prometheus/targets"

Handler = Callable[[web.Request], Awaitable[web.Response]]


def scrape_targets(revisions: Mapping[str, Revision]) -> list[dict[str, Any]]:
    """One target group per running revision, in the http_sd format, labelled like the cluster's scrape job."""
    return [
        {"targets": [f"127.0.0.1:{revision.port}"], "labels": {"service": name}}
        for name, revision in sorted(revisions.items())
        if revision.running
    ]


def targets_handler(revisions: Mapping[str, Revision]) -> Handler:
    """GET handler answering the current scrape_targets (the mapping is read on every request)."""

    async def targets(_: web.Request) -> web.Response:
        return web.json_response(scrape_targets(revisions))

    return targets


def routes(revisions: Mapping[str, Revision]) -> list[web.RouteDef]:
    """The discovery route, to mount on the ingress's app before its catch-all route."""
    return [web.get(PATH, targets_handler(revisions))]

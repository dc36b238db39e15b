"""Wires the gateway once per process, on first use: route table, token verifier, identity key."""

from __future__ import annotations

from functools import cache

from functions.shared.config import config
from functions.shared.service_client import service_host
from gateway.auth import JwtVerifier
from gateway.discovery import EurekaResolver, Upstreams
from gateway.pipeline import Gateway
from gateway.routing import RouteTable


def issuer() -> str:
    return config().required("OIDC_ISSUER").rstrip("/")


@cache
def gateway() -> Gateway:
    settings = config()
    verifier = JwtVerifier(
        issuer(),
        audience=settings.optional("OIDC_AUDIENCE", "shop-api"),
        allowed_clients=settings.optional("OIDC_CLIENTS", "storefront,shop-services").split(","),
        discovery_url=settings.optional("OIDC_DISCOVERY_URL", "") or None,
        refresh_seconds=settings.seconds("JWKS_REFRESH_SECONDS", 300),
    )
    origins = frozenset(o.strip() for o in settings.optional("CORS_ALLOWED_ORIGINS", "").split(",") if o.strip())
    registry = settings.optional("EUREKA_URL", f"http://{service_host('registry')}/eureka")
    upstreams = Upstreams(EurekaResolver(registry, ttl=settings.seconds("EUREKA_CACHE_SECONDS", 5)))
    return Gateway(
        RouteTable.load(), verifier, settings.required("IDENTITY_SECRET"), cors_origins=origins, upstreams=upstreams
    )

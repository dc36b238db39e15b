"""Settings from the environment, read in one place, with local defaults and fail-fast errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; the message names it."""


# Every variable a function reads, with what it is for. The README's
# configuration table is checked against this list by tests/unit.
SETTINGS: Mapping[str, str] = {
    "DATABASE_URL": "PostgreSQL URL of this function's domain database",
    "MONGODB_URI": "MongoDB URI of the catalog",
    "KAFKA_BOOTSTRAP_SERVERS": "Kafka bootstrap servers (host:port,...)",
    "SMTP_URL": "SMTP server, smtp://[user:password@]host:port",
    "MAIL_FROM": "sender address of notification emails",
    "OIDC_ISSUER": "OpenID Connect issuer URL of the realm (Keycloak)",
    "OIDC_DISCOVERY_URL": "gateway: the realm's discovery document, when not at the issuer URL",
    "OIDC_AUDIENCE": "gateway: audience access tokens must carry (default shop-api)",
    "OIDC_CLIENTS": "gateway: clients (azp) accepted instead of the audience",
    "JWKS_REFRESH_SECONDS": "gateway: maximum age of the realm's key set before a background refresh (default 300)",
    "CORS_ALLOWED_ORIGINS": "gateway: browser origins allowed to call the API cross-site",
    "EUREKA_URL": "gateway: the registry's Eureka API for eureka:<APP> routes (default the registry service)",
    "EUREKA_CACHE_SECONDS": "gateway: how long the instances of a Eureka app are reused (default 5)",
    "IDENTITY_SECRET": "key the gateway signs forwarded identities with (HS256)",
    "SHOP_NAMESPACE": "Kubernetes namespace of the shop's services",
    "SERVICE_DOMAIN": "DNS suffix of cluster-local service names",
    "SERVICE_INGRESS_URL": "when set, service-to-service calls go through this ingress",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "CATALOG_DATABASE": "MongoDB database of the catalog (default catalog)",
    "UPSTREAM_TIMEOUT_SECONDS": "order-place: time budget for each call to catalog and inventory (default 3)",
    "IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS": "order-place: an unanswered Idempotency-Key claim older than this may be"
    " taken over (default 30)",
    "RESERVATION_TTL_SECONDS": "inventory-expire: age after which a held reservation is settled (default 300)",
    "OUTBOX_STORE": "outbox-relay: postgres or mongodb",
    "OUTBOX_NAME": "outbox-relay: which domain's outbox (orders, inventory, catalog)",
    "OUTBOX_DATABASE": "outbox-relay on MongoDB: the database holding the outbox collection",
    "OPERATIONS_EMAIL": "notification-send: where low-stock mails go",
    "MAIL_DOMAIN": "notification-send: domain of Message-IDs (default shop.example)",
    "REPLAY_TIMEOUT_SECONDS": "dead-letter: timeout of a replay (default 10)",
    "LEASE_DURATION_SECONDS": "registry: lease of an instance that gives no leaseInfo.durationInSecs (default 90)",
    "DELTA_RETENTION_SECONDS": "registry: how far back GET /eureka/apps/delta reaches (default 180)",
    "KUBERNETES_API_URL": "registry-sync: Kubernetes API server (default https://kubernetes.default.svc)",
    "K_SERVICE": "service name (set by Knative)",
    "FUNCTION_TARGET": "the functions-framework target this process serves (each Knative Service names its own)",
    "FUNCTION_SOURCE": "the file holding the target (default main.py)",
    "FUNCTION_SIGNATURE_TYPE": "http or cloudevent (default http)",
    "PORT": "port to listen on (set by Knative; default 8080)",
    "HOST": "address to listen on (default 0.0.0.0; the local runtime uses 127.0.0.1)",
    "THREADS": "gunicorn threads, as many as containerConcurrency lets in (default 8)",
    "WSGI_SERVER": "granian (default) or gunicorn: the server a function runs on",
    "SERVER_LOG_LEVEL": "the WSGI server's own log level (default warning)",
    "FLAGD_OFFLINE_FLAG_SOURCE_PATH": "the fault flags file (flagd format) read at run time; unset: every flag off",
    "SHOP_FAULTS": "fault injection for resilience tests: after-reserve, delay:<seconds> (never in production)",
}


@dataclass(frozen=True)
class Config:
    """A snapshot of the environment; `required` fails fast, `optional` has a default."""

    environ: Mapping[str, str]

    def required(self, name: str) -> str:
        value = self.environ.get(name, "").strip()
        if not value:
            purpose = SETTINGS.get(name, "required setting")
            raise ConfigError(f"missing required setting {name}: {purpose}")
        return value

    def optional(self, name: str, default: str) -> str:
        value = self.environ.get(name, "").strip()
        return value or default

    def integer(self, name: str, default: int) -> int:
        raw = self.optional(name, str(default))
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"setting {name} must be an integer, got {raw!r}") from None

    def seconds(self, name: str, default: float) -> float:
        raw = self.optional(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"setting {name} must be a number of seconds, got {raw!r}") from None
        if value < 0:
            raise ConfigError(f"setting {name} must not be negative, got {raw!r}")
        return value

    @property
    def service(self) -> str:
        return self.optional("K_SERVICE", self.optional("FUNCTION_TARGET", "shop"))

    @property
    def namespace(self) -> str:
        return self.optional("SHOP_NAMESPACE", "shop")


@cache
def config() -> Config:
    """The process's configuration, read once."""
    return Config(dict(os.environ))

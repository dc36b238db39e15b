"""The whole shop on one machine: embedded servers, schemas, Knative Serving (and Eventing) from the manifests.

`python -m local start` runs it in the foreground; the tests start the same Stack on
free ports in a temporary folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from functions import migrate
from functions.shared import events, kafka, tracing
from functions.shared.config import Config
from functions.shared.outbox import Relay
from local import mailbox, manifests, prometheus
from local.eventing import BROKER_INGRESS_HOST, BROKER_PATH_PREFIX, BrokerJournal, EventFlow, Eventing
from local.flags import ConfigMapVolumes
from local.identity import Issuer
from local.manifests import Destination
from local.metrics import REGISTRY
from local.servers import (
    EmbeddedCollector,
    EmbeddedKafka,
    EmbeddedMongo,
    EmbeddedPostgres,
    EmbeddedSmtp,
    ServerProcess,
    free_port,
)
from local.serving import Autoscaler, Exchange, Ingress, Revision, problem
from local.zygote import Zygote

log = logging.getLogger("local.stack")
T = TypeVar("T")
NAMESPACE = "shop"
# Where the runtime answers the few Kubernetes API calls functions make (registry-sync's list).
KUBERNETES_API_PREFIX = "/_local/kubernetes"
REALM_FILE = manifests.KNATIVE_DIR / "keycloak" / "realm-shop.json"


@dataclass
class StackSettings:
    data_dir: Path
    port: int = 8080  # 0: any free port
    durable: bool = True  # False: throwaway data (tests), fsync off
    idle_seconds: float | None = None  # overrides each service's autoscaling window
    manifest_paths: tuple[Path, ...] = (manifests.KNATIVE_DIR,)
    eventing_paths: tuple[Path, ...] = (manifests.EVENTING_DIR,)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    traces: bool = False  # run a local OpenTelemetry collector, unless OTEL_EXPORTER_OTLP_ENDPOINT names one


class Stack:
    """Starts and stops every part; its URLs and settings are what `start` prints."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.log_dir = settings.data_dir / "logs"
        self.postgres: EmbeddedPostgres | None = None
        self.mongo: EmbeddedMongo | None = None
        self.kafka: EmbeddedKafka | None = None
        self.smtp: EmbeddedSmtp | None = None
        self.collector: EmbeddedCollector | None = None
        self.servers: list[ServerProcess] = []  # in start order
        self.autoscaler: Autoscaler | None = None
        self.zygote: Zygote | None = None
        self.database_urls: dict[str, str] = {}
        self.mongodb_uri = ""
        self.kafka_bootstrap = ""
        self.smtp_url = ""
        self.identity_secret = ""
        self.port = 0
        self.services = manifests.services(settings.manifest_paths)
        self.revisions: dict[str, Revision] = {}
        # uvloop: the ingress and the event dispatchers share one loop and one core's worth of CPU.
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="local-runtime", daemon=True)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.ingress: Ingress | None = None
        # The local OIDC issuer serving knative/keycloak's realm, unless OIDC_ISSUER names a real one.
        self.issuer: Issuer | None = None
        self.topology = manifests.topology(settings.eventing_paths)
        self.eventing: Eventing | None = None
        # The ConfigMaps services mount (the fault flags), as files; /_local/flags changes the flags.
        self.config_maps = ConfigMapVolumes(settings.data_dir / "configmaps")
        self.event_flow = EventFlow()
        self._check_destinations()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_maps.write()
        self._start_servers()
        # Spans of the runtime's Broker/Trigger/source work, when OTEL_* settings ask for them;
        # the same settings reach every function through the environment it inherits.
        tracing.configure("knative-local-runtime", {**self.settings.environ, **self._otel_endpoint()})
        self.database_urls = migrate.migrate_postgres(self._postgres_server_url())
        migrate.migrate_mongo(self.mongodb_uri)
        kafka.ensure_topics(self.kafka_bootstrap, events.TOPICS)
        self.identity_secret = self._identity_secret()
        self.port = self.settings.port or free_port()
        if not self.settings.environ.get("OIDC_ISSUER"):
            self.issuer = Issuer(REALM_FILE, self.data_dir / "issuer", self.url)
        self._thread.start()
        self.call(self._start_serving())

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self.call(self._stop_serving(), timeout=60)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        for server in reversed(self.servers):
            server.stop()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def call(self, coroutine: Any, timeout: float = 120) -> Any:
        """Runs a coroutine on the runtime's loop from another thread and waits for it."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout)

    # --- servers ------------------------------------------------------------------------

    def _start_servers(self) -> None:
        """Starts each embedded server not replaced by an environment variable, supervised:
        one that dies is restarted on the same port and data (local.supervision)."""
        env = self.settings.environ
        durable = self.settings.durable
        if env.get("DATABASE_URL"):
            log.info("using external PostgreSQL from DATABASE_URL")
        else:
            self.postgres = EmbeddedPostgres(self.data_dir / "postgres", log_dir=self.log_dir, durable=durable)
            self._start_supervised(self.postgres)
        if env.get("MONGODB_URI"):
            self.mongodb_uri = env["MONGODB_URI"]
        else:
            self.mongo = EmbeddedMongo(self.data_dir / "mongodb" if durable else None, log_dir=self.log_dir)
            self._start_supervised(self.mongo)
            self.mongodb_uri = self.mongo.uri
        if env.get("KAFKA_BOOTSTRAP_SERVERS"):
            self.kafka_bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
        else:
            self.kafka = EmbeddedKafka(log_dir=self.log_dir)
            self._start_supervised(self.kafka)
            self.kafka_bootstrap = self.kafka.bootstrap_servers
        if env.get("SMTP_URL"):
            self.smtp_url = env["SMTP_URL"]
        else:
            self.smtp = EmbeddedSmtp(self.data_dir / "mail", log_dir=self.log_dir)
            self._start_supervised(self.smtp)
            self.smtp_url = self.smtp.url
        if self.settings.traces and not env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            self.collector = EmbeddedCollector(log_dir=self.log_dir)
            self._start_supervised(self.collector)

    def _start_supervised(self, server: ServerProcess) -> None:
        self.servers.append(server)
        server.supervise().start()

    def _otel_endpoint(self) -> dict[str, str]:
        """Where spans go: the local collector (`start --traces`), the caller's endpoint, or nowhere."""
        if self.collector is not None:
            return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.collector.endpoint}
        endpoint = self.settings.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint} if endpoint else {}

    def _postgres_server_url(self) -> str:
        external = self.settings.environ.get("DATABASE_URL")
        if external:
            return external
        assert self.postgres is not None
        return self.postgres.url()

    def _identity_secret(self) -> str:
        path = self.data_dir / "identity-secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    # --- what the cluster's Secrets and ConfigMaps hold, here ------------------------------

    def secret_values(self) -> dict[tuple[str, str], str]:
        values = {(f"{domain}-db", "url"): url for domain, url in self.database_urls.items()}
        values[("catalog-mongodb", "uri")] = self.mongodb_uri
        values[("shop-identity", "secret")] = self.identity_secret
        values[("smtp", "url")] = self.smtp_url
        return values

    def config_map_values(self) -> dict[tuple[str, str], str]:
        issuer = self.settings.environ.get("OIDC_ISSUER") or f"{self.url}/realms/shop"
        return {
            ("shop-config", "kafka.bootstrap"): self.kafka_bootstrap,
            ("shop-config", "oidc.issuer"): issuer,
            ("shop-config", "oidc.discovery"): f"{issuer}/.well-known/openid-configuration",
            # Set by `start --traces` (a local collector) or the caller's environment; empty: no tracing.
            ("shop-config", "otel.endpoint"): self._otel_endpoint().get("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
        }

    def service_env(self, service: manifests.KnativeService) -> dict[str, str]:
        """The container env of a service, references resolved against local values."""
        secret_values, config_values = self.secret_values(), self.config_map_values()
        env: dict[str, str] = {}
        for var in service.env:
            if var.secret is not None:
                if var.secret not in secret_values:
                    raise KeyError(f"{service.name}: no local value for secret {var.secret[0]}/{var.secret[1]}")
                env[var.name] = secret_values[var.secret]
            elif var.config_map is not None:
                if var.config_map not in config_values:
                    raise KeyError(
                        f"{service.name}: no local value for configMap {var.config_map[0]}/{var.config_map[1]}"
                    )
                env[var.name] = config_values[var.config_map]
            else:
                env[var.name] = var.value or ""
        env["SERVICE_INGRESS_URL"] = self.url
        env["SHOP_NAMESPACE"] = service.namespace
        # registry-sync lists Knative Services from the Kubernetes API; here, from the runtime's stand-in.
        env["KUBERNETES_API_URL"] = f"{self.url}{KUBERNETES_API_PREFIX}"
        return self.config_maps.env(env, service.config_map_mounts)

    # --- serving ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def service_host(self, name: str) -> str:
        return f"{name}.{self.services[name].namespace}.svc.cluster.local"

    def _check_destinations(self) -> None:
        """Fails at start, not at first delivery, when eventing/ names a service knative/ lacks."""
        topology = self.topology
        destinations = [t.subscriber for t in topology.triggers] + [s.sink for s in topology.kafka_sources]
        destinations += [p.sink for p in topology.ping_sources]
        destinations += [d.dead_letter for d in (t.delivery for t in topology.triggers) if d.dead_letter]
        for destination in destinations:
            if destination.kind == "Service" and destination.name not in self.services:
                raise ValueError(
                    f"eventing/ sends to Knative Service {destination.name!r}, which knative/ does not define"
                )

    async def send(self, destination: Destination, headers: dict[str, str], body: bytes, timeout: float) -> Exchange:
        """Delivers an event the way the cluster would reach its destination, minus the network hops
        to this very process: a Service through its revision (starting it if needed), a Broker into
        its topic, any other URI over HTTP."""
        assert self.ingress is not None and self.eventing is not None
        if destination.kind == "Service":
            revision = self.revisions[destination.name]
            return await self.ingress.exchange(revision, "POST", "/", headers, body, timeout)
        if destination.kind == "Broker":
            status, text = await self.eventing.accept(destination.namespace, destination.name, headers, body)
            return Exchange(status, {}, text.encode())
        parts = urlsplit(destination.uri)
        host = parts.hostname or ""
        if host.endswith(".svc.cluster.local") and host.split(".")[0] in self.revisions:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            return await self.ingress.exchange(self.revisions[host.split(".")[0]], "POST", path, headers, body, timeout)
        try:
            async with self._http().post(
                destination.uri, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                return Exchange(response.status, dict(response.headers), await response.read())
        except (aiohttp.ClientError, TimeoutError) as error:
            return Exchange.problem(502, "Bad gateway", f"{destination.uri}: {error}")

    async def _route(self, request: web.Request) -> web.StreamResponse:
        """Broker ingress by its cluster host or /_broker/<ns>/<name>; everything else to services."""
        assert self.ingress is not None and self.eventing is not None
        host = request.host.split(":")[0].lower()
        if host.startswith(BROKER_INGRESS_HOST + ".") or host == BROKER_INGRESS_HOST:
            namespace, _, name = request.path.strip("/").partition("/")
            return await self.eventing.ingress(request, namespace, name)
        if request.path.startswith(BROKER_PATH_PREFIX):
            namespace, _, name = request.path[len(BROKER_PATH_PREFIX) :].strip("/").partition("/")
            return await self.eventing.ingress(request, namespace, name)
        return await self.ingress.handle(request)

    async def _fire_ping(self, request: web.Request) -> web.Response:
        assert self.eventing is not None
        ping = self.eventing.ping_source(request.match_info["namespace"], request.match_info["name"])
        if ping is None:
            return problem(404, "Unknown PingSource", f"no PingSource {request.match_info['name']}")
        outcome = await self.eventing.fire(ping)
        return web.json_response({"delivered": outcome.delivered, "status": outcome.status})

    async def _metrics(self, _: web.Request) -> web.Response:
        """The runtime's own Prometheus metrics: deliveries, retries, consumer lag, cold starts."""
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _knative_services(self, request: web.Request) -> web.Response:
        """The Kubernetes API's Knative ServiceList for a namespace: the services read from knative/,
        each at its cluster-local URL, Ready unless suspended (one page: no `continue`)."""
        namespace = request.match_info["namespace"]
        items = []
        for name, service in sorted(self.services.items()):
            if service.namespace != namespace:
                continue
            url = f"http://{self.service_host(name)}"
            ready = "False" if self.revisions[name].suspended else "True"
            items.append(
                {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": namespace, "labels": dict(service.labels)},
                    "status": {
                        "url": url,
                        "address": {"url": url},
                        "conditions": [{"type": "Ready", "status": ready}],
                    },
                }
            )
        return web.json_response(
            {"apiVersion": "serving.knative.dev/v1", "kind": "ServiceList", "metadata": {}, "items": items}
        )

    async def _eventing_status(self, _: web.Request) -> web.Response:
        assert self.eventing is not None
        settled = self.eventing.replay.settled_through()
        return web.json_response(
            {
                **self.eventing.stats,
                "settledThrough": datetime.fromtimestamp(settled, UTC).isoformat() if settled else None,
                "replays": self.eventing.replay.reports,
            }
        )

    async def _start_serving(self) -> None:
        if self.settings.environ.get("LOCAL_ZYGOTE", "1") != "0":  # function processes are forks of one
            self.zygote = Zygote(self.log_dir / "zygote.log")
        for name, service in self.services.items():
            idle = self.settings.idle_seconds if self.settings.idle_seconds is not None else service.window_seconds
            env = self.service_env(service)
            self.revisions[name] = Revision(service, env, self.log_dir, idle, zygote=self.zygote)
        default = "gateway" if "gateway" in self.services else None
        self.ingress = Ingress(self.revisions, NAMESPACE, default)
        await self.ingress.open()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/_local/services", self._services_status)
        app.router.add_get("/_local/eventing", self._eventing_status)
        app.router.add_get("/_local/metrics", self._metrics)
        app.add_routes(prometheus.routes(self.revisions))  # /_local/prometheus/targets: http_sd for Prometheus
        app.add_routes(mailbox.routes(self.smtp.mail_dir if self.smtp else None))  # /_local/mail: captured mail
        app.router.add_post("/_local/pingsources/{namespace}/{name}", self._fire_ping)
        app.add_routes(self.config_maps.routes())  # /_local/flags: the fault flags, changed at run time
        app.add_routes(self.event_flow.routes())  # /_local/events: the last events through the Broker
        app.router.add_get(
            KUBERNETES_API_PREFIX + "/apis/serving.knative.dev/v1/namespaces/{namespace}/services",
            self._knative_services,
        )
        if self.issuer is not None:
            app.add_routes(self.issuer.routes())  # /realms/shop/..., before the catch-all
        app.router.add_route("*", "/{tail:.*}", self._route)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.autoscaler = Autoscaler(self.revisions, self._http)
        self._tasks.append(asyncio.create_task(self.autoscaler.run()))
        await self.autoscaler.start_min_scale()
        journal = None
        if self.kafka is not None:  # in memory: what it acknowledged must be kept elsewhere too
            journal = BrokerJournal(self.database_urls["eventing"])
            await asyncio.to_thread(journal.create)
        self.eventing = Eventing(
            self.topology,
            self.kafka_bootstrap,
            asyncio.get_running_loop(),
            self.send,
            journal=journal,
            flow=self.event_flow,
        )
        if self.kafka is not None:
            self.kafka.on_exit.append(self._broker_down)
            self.kafka.on_restart.append(self._broker_back)
        await self.eventing.start()
        await self.eventing.wait_ready()

    # --- the in-memory broker restarted (local.eventing.replay) ----------------------------------

    def _broker_down(self) -> None:
        assert self.eventing is not None and self.kafka is not None
        self.eventing.replay.broker_down(fallback=self.kafka.started_at or time.time())

    def _broker_back(self) -> None:
        """Called on the supervisor's thread once the restarted (empty) broker serves again."""
        assert self.eventing is not None
        since = self.eventing.replay.broker_back()
        if since is not None:
            replay = self.eventing.replay.send_again(
                since, self.outbox_relays(), self._fire_relay, self.eventing.ensure_topics
            )
            asyncio.run_coroutine_threadsafe(replay, self._loop)

    async def _fire_relay(self, service: str) -> None:
        """Fires the PingSources of an outbox relay now, rather than at their next minute."""
        assert self.eventing is not None
        for ping in self.topology.ping_sources:
            if ping.sink.kind == "Service" and ping.sink.name == service:
                await self.eventing.fire(ping)

    def outbox_relays(self) -> dict[str, Relay]:
        """Each outbox-relay service's outbox (read from knative/), opened with its local settings."""
        from functions.eventing.bootstrap import outbox_for

        relays = {}
        for name, service in self.services.items():
            if service.literal_env("OUTBOX_NAME"):
                relays[name] = outbox_for(Config(self.service_env(service)))
        return relays

    def _http(self) -> Any:
        assert self.ingress is not None and self.ingress.http is not None
        return self.ingress.http

    async def _services_status(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "services": [r.status() for r in self.revisions.values()],
                "servers": [s.status() for s in self.servers],
            }
        )

    async def _stop_serving(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.autoscaler is not None:
            self.autoscaler.cancel_restarts()
        if self.eventing:
            if self.kafka is not None:
                self.kafka.on_exit.remove(self._broker_down)
                self.kafka.on_restart.remove(self._broker_back)
            await self.eventing.stop()
        await asyncio.gather(*(r.stop() for r in self.revisions.values()))
        if self.zygote is not None:
            await self.zygote.stop()
        if self._runner:
            await self._runner.cleanup()
        if self.ingress:
            await self.ingress.close()

    def stop_service(self, name: str) -> None:
        self.call(self.revisions[name].stop())

    def suspend(self, name: str, suspended: bool = True) -> None:
        """Takes a service down (503, like a service whose pods cannot start) or brings it back."""
        revision = self.revisions[name]
        revision.suspended = suspended
        if suspended:
            self.call(revision.stop())

    def set_env(self, name: str, **env: str) -> None:
        """Changes a service's environment, like a new revision: the next request starts it anew."""
        revision = self.revisions[name]
        revision.env = {**revision.env, **env}
        self.call(revision.stop())

    def running(self, names: Iterable[str] | None = None) -> list[str]:
        return [n for n, r in self.revisions.items() if r.running and (names is None or n in names)]

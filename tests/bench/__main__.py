"""`task bench`: figures from a fresh local stack. Prints numbers; asserts nothing about time.

    python -m tests.bench [--seconds 10] [--only imports,serving,reserve,cold,rss,memory,gateway,events,
                                                  orders,tracing,registry]

Every comparison is made in the same run, on the same servers, side by side: functions through
the ingress against a trivial functions-framework function served the same way, and against
the same SQL run raw by pgbench; event latency against raw Kafka produce-to-consume.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import requests
from confluent_kafka import Consumer, Producer

from functions.catalog.model import CreateProduct
from functions.catalog.service import create_product
from functions.catalog.store import MongoProductStore
from functions.inventory.model import Restock
from functions.inventory.service import restock
from functions.inventory.store import PostgresInventoryStore
from functions.shared import identity, mongo
from functions.shared.kafka import ensure_topics
from local import manifests
from local.seed import seed_if_empty
from local.servers import EmbeddedCollector
from local.stack import Stack, StackSettings
from tests.bench import footprint
from tests.bench import registry as registry_bench

HERE = Path(__file__).resolve().parent
# An order's HTTP hops: client -> order-place -> product-get, -> inventory-reserve; its order.placed
# event, through the Broker, -> inventory-confirm and -> notification-send.
HOPS_PER_ORDER = 5
SERVERS = ("postgresql", "kafka", "smtp", "mongodb")
BENCH_SKUS = 100
# Events before orders: the orders runs leave thousands of events in the pipeline behind them.
SECTIONS = (
    "imports",
    "serving",
    "reserve",
    "cold",
    "rss",
    "memory",
    "gateway",
    "events",
    "orders",
    "tracing",
    "registry",
)


class Bench:
    def __init__(self, stack: Stack, seconds: float) -> None:
        self.stack = stack
        self.seconds = seconds
        self.rows: list[tuple[str, str]] = []
        # Issue 10's targets as measured in this run: (figure, value, target, met).
        self.targets: list[tuple[str, str, str, bool]] = []
        secret = stack.identity_secret
        self.customer = identity.sign(
            identity.Identity("bench-customer", "bench@example.com", "Bench", "Mark", frozenset({"customer"})),
            secret,
            ttl_seconds=3600,
        )

    # --- helpers -------------------------------------------------------------------------

    def row(self, name: str, value: str) -> None:
        self.rows.append((name, value))
        print(f"  {name:<58} {value}", flush=True)

    def target(self, figure: str, value: str, target: str, met: bool) -> None:
        self.targets.append((figure, value, target, met))

    def summary(self) -> None:
        if not self.targets:
            return
        print("\nTargets (issue 10), this run")
        for figure, value, target, met in self.targets:
            print(f"  {figure:<44} {value:<22} target {target:<14} {'met' if met else 'MISSED'}", flush=True)

    def load(self, url: str, connections: int, *extra: str) -> dict[str, Any]:
        command = [
            sys.executable,
            "-m",
            "tests.bench.load",
            url,
            "--connections",
            str(connections),
            "--seconds",
            str(self.seconds),
            *extra,
        ]
        return dict(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))

    def post_as_customer(self, url: str, connections: int, body: str) -> dict[str, Any]:
        """A load run POSTing `body` (JSON, with the load tool's placeholders) as the bench customer."""
        headers = ["-H", "Content-Type: application/json", "-H", f"{identity.HEADER}: {self.customer}"]
        return self.load(url, connections, "--method", "POST", "--body", body, *headers)

    def pgbench(self, database: str, script: Path, clients: int) -> float:
        assert self.stack.postgres is not None
        command = [
            str(self.stack.postgres.bin_dir / "pgbench"),
            "-n",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(int(self.seconds)),
            "-f",
            str(script),
            self.stack.database_urls[database],
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        match = re.search(r"tps = ([\d.]+)", output)
        assert match, output
        return float(match[1])

    def settle(self, quiet_seconds: float = 3, timeout: float = 120) -> None:
        """Waits until the event pipeline is idle, so the next figures measure only their own load."""
        last, quiet_since, deadline = None, time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.stack.eventing is not None
            now = dict(self.stack.eventing.stats)
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_seconds:
                return
            time.sleep(0.5)

    def url(self, service: str, path: str) -> str:
        return f"{self.stack.url}/ksvc/{service}{path}"

    @staticmethod
    def describe(result: dict[str, Any]) -> str:
        errors = result["errors"] + sum(v for k, v in result["statuses"].items() if int(k) >= 500)
        return f"{result['rps']:>8.1f} req/s  p50 {result['p50_ms']:>7.2f} ms  p99 {result['p99_ms']:>7.2f} ms" + (
            f"  ({errors} errors)" if errors else ""
        )

    # --- data ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Seed data plus 100 products with ample stock, so no benchmark runs out."""
        seed_if_empty(self.stack.mongodb_uri, self.stack.database_urls["inventory"])
        products = MongoProductStore(mongo.client(self.stack.mongodb_uri))
        stock = PostgresInventoryStore(self.stack.database_urls["inventory"])
        for i in range(BENCH_SKUS):
            sku = f"bench_{i}"
            if products.get(sku) is None:
                cmd = CreateProduct(sku=sku, name=f"Bench product {i}", category="bench", price=Decimal("25.00"))
                create_product(cmd, products=products, clock=lambda: datetime.now(UTC), after_commit=lambda: None)
            restock(Restock(sku, 100_000_000, "set", 0), inventory=stock)
        # Publish the catalog's product.created events now and let their consumers finish.
        requests.post(f"{self.stack.url}/_local/pingsources/shop/outbox-relay-catalog", timeout=60)
        self.settle()

    # --- sections ------------------------------------------------------------------------

    def serving(self) -> None:
        print("\nServing through the local ingress, 16 connections (three rounds, interleaved; medians)")
        targets = {
            "hello": ("hello", "/"),
            "product-get": ("product-get", "/api/products/iphone_15"),
            "product-list": ("product-list", "/api/products?category=phones&size=20"),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for _ in range(3):
            for name, (service, path) in targets.items():
                runs[name].append(self.load(self.url(service, path), 16))
        median = {name: sorted(results, key=lambda r: r["rps"])[1] for name, results in runs.items()}
        self.row("hello (trivial functions-framework function)", self.describe(median["hello"]))
        self.row("product-get /api/products/iphone_15", self.describe(median["product-get"]))
        self.row("product-list ?category=phones&size=20", self.describe(median["product-list"]))
        ratios = [g["rps"] / h["rps"] for g, h in zip(runs["product-get"], runs["hello"], strict=True)]
        self.row(
            "product-get / hello throughput, per round", " ".join(f"{r:.0%}" for r in ratios) + "  (target >= 50%)"
        )
        ratio = statistics.median(ratios)
        self.target("product-get / hello", f"{ratio:.0%}", ">= 50%", ratio >= 0.5)
        self.row(
            "product-list / hello throughput (medians)", f"{median['product-list']['rps'] / median['hello']['rps']:.0%}"
        )

    def reserve(self) -> None:
        print("\ninventory-reserve as order-place calls it (HTTP, 16 connections) vs the same SQL in pgbench")
        run = secrets.token_hex(3).upper()
        body = '{"orderNumber": "BENCH-' + run + '-{seq}", "items": [{"skuCode": "bench_{rand:100}", "quantity": 1}]}'
        result = self.post_as_customer(self.url("inventory-reserve", "/reservations"), 16, body)
        tps = self.pgbench("inventory", HERE / "sql" / "reserve.sql", 16)
        self.row("inventory-reserve (HTTP, JSON, one line)", self.describe(result))
        self.row("pgbench, same statements, 16 clients", f"{tps:>8.1f} tx/s")
        self.row("reserve / raw SQL throughput", f"{result['rps'] / tps:.0%}  (target >= 20%)")

    def gateway(self) -> None:
        print("\nGateway vs direct: GET /api/products?size=20, 16 connections (three rounds, interleaved; medians)")
        assert self.stack.issuer is not None
        token = self.stack.issuer.token_for("jane")["access_token"]
        path = "/api/products?size=20"
        variants = {
            "direct (ingress -> product-list)": (self.url("product-list", path), []),
            "gateway, anonymous": (f"{self.stack.url}{path}", []),
            "gateway, with a valid token": (f"{self.stack.url}{path}", ["-H", f"Authorization: Bearer {token}"]),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for _ in range(3):
            for name, (url, extra) in variants.items():
                runs[name].append(self.load(url, 16, *extra))
        median = {name: sorted(results, key=lambda r: r["rps"])[1] for name, results in runs.items()}
        direct = median["direct (ingress -> product-list)"]
        for name, result in median.items():
            self.row(name, self.describe(result))
        share = median["gateway, with a valid token"]["rps"] / direct["rps"]
        self.target("gateway (valid token) / direct", f"{share:.0%}", ">= 60%", share >= 0.6)
        for name in list(variants)[1:]:
            self.row(
                f"{name}: share of direct throughput, added p50",
                f"{median[name]['rps'] / direct['rps']:.0%}, +{median[name]['p50_ms'] - direct['p50_ms']:.2f} ms"
                "  (target >= 60%, <= 3 ms)",
            )

    def processes(self) -> list[tuple[str, psutil.Process]]:
        """Every process of the stack with what it belongs to: a function (its server and workers), the
        runtime, the zygote or a server."""
        owner: dict[int, str] = {}
        for name, revision in self.stack.revisions.items():
            if revision.running and revision.process is not None:
                master = psutil.Process(revision.process.pid)
                owner.update((p.pid, name) for p in [master, *master.children(recursive=True)])
        me = psutil.Process()
        found = []
        for process in [me, *me.children(recursive=True)]:
            try:
                name = owner.get(process.pid) or ("runtime" if process.pid == me.pid else _server_name(process))
            except psutil.Error:
                continue
            if name != "load":
                found.append((name, process))
        return found

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of each function (master and workers), the runtime and each server."""
        totals: dict[str, float] = {}
        for name, process in self.processes():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            totals[name] = totals.get(name, 0.0) + times.user + times.system
        return totals

    def pss_by_part(self) -> str:
        """PSS in MB of the functions together, the runtime, the zygote and each server."""
        functions = set(self.stack.revisions)
        totals: dict[str, float] = {}
        for name, process in self.processes():
            try:
                pss = process.memory_full_info().pss / 2**20
            except psutil.Error:
                continue
            part = "functions" if name in functions else name
            totals[part] = totals.get(part, 0.0) + pss
        return ", ".join(f"{part} {mb:.0f}" for part, mb in sorted(totals.items(), key=lambda item: -item[1]))

    def cold(self) -> None:
        print("\nCold start: first request to a stopped function, 10 tries")
        timings = []
        for _ in range(10):
            self.stack.stop_service("product-get")
            started = time.perf_counter()
            response = requests.get(self.url("product-get", "/api/products/iphone_15"), timeout=60)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200
        timings.sort()
        p50 = statistics.median(timings) * 1000
        self.row("product-get cold start", f"p50 {p50:.0f} ms  p99 {timings[-1] * 1000:.0f} ms  (target p50 <= 250 ms)")
        self.target("cold start, p50", f"{p50:.0f} ms", "<= 250 ms", p50 <= 250)

    def rss(self) -> None:
        print(
            "\nIdle memory: every function started once, then left idle (RSS of its server's main process and"
            " worker; PSS counts pages they share once)"
        )
        for name in sorted(self.stack.revisions):
            requests.get(self.url(name, "/healthz"), timeout=60)
        self.settle()
        time.sleep(2)
        largest: list[float] = []
        pss: list[float] = []
        for name, revision in sorted(self.stack.revisions.items()):
            if not revision.running or revision.process is None:
                self.row(name, "not running")
                continue
            master = psutil.Process(revision.process.pid)
            processes = [master, *master.children(recursive=True)]
            sizes = [p.memory_info().rss / 2**20 for p in processes]
            shared = sum(p.memory_full_info().pss for p in processes) / 2**20
            largest.append(max(sizes))
            pss.append(shared)
            self.row(
                name,
                f"RSS {' + '.join(f'{size:.0f}' for size in sizes)} MB, PSS {shared:.0f} MB",
            )
        self.row(
            f"largest process of each function ({len(largest)} functions)",
            f"median {statistics.median(largest):.0f} MB, max {max(largest):.0f} MB  (target each <= 80 MB)",
        )
        self.row("function PSS (master + worker)", f"median {statistics.median(pss):.0f} MB, max {max(pss):.0f} MB")
        runtime = psutil.Process()
        total = runtime.memory_info().rss + sum(p.memory_info().rss for p in runtime.children(recursive=True))
        self.row("whole local stack (runtime, servers, running functions)", f"{total / 2**20:.0f} MB")

    def imports(self) -> None:
        print("\nImport: a fresh interpreter imports functions-framework and creates one target's app")
        self.settle()  # the stack has just started: its start-up work would be timed with the first imports
        timings = footprint.import_milliseconds(s for n, s in self.stack.services.items() if n != "hello")
        for name, milliseconds in sorted(timings.items(), key=lambda item: -item[1]):
            self.row(f"import of {name}'s target", f"{milliseconds:.0f} ms")
        slowest = max(timings.values())
        self.row("import of one function target", footprint.describe(timings) + "  (target <= 150 ms)")
        # The floor under every figure above: each target is a functions-framework target.
        framework = footprint.framework_milliseconds()
        self.row("  of which functions-framework alone (its own import)", f"{framework:.0f} ms")
        self.target("import of any single function target", f"{slowest:.0f} ms", "<= 150 ms", slowest <= 150)

    def memory(self) -> None:
        print("\nMemory of the whole local stack (PSS: pages shared between processes counted once)")
        for name in sorted(self.stack.revisions):
            requests.get(self.url(name, "/healthz"), timeout=60)
        self.settle()
        footprint.wait_between_pings()
        every_pss, every_rss = footprint.stack_pss_mb()
        started = sum(1 for r in self.stack.revisions.values() if r.running)
        self.row(f"every function started ({started})", f"PSS {every_pss:.0f} MB (RSS {every_rss:.0f} MB)")
        self.row("  by part, PSS MB", self.pss_by_part())
        self.target("every function started", f"{every_pss:.0f} MB PSS", "<= 800 MB", every_pss <= 800)
        stopped = footprint.scale_idle_functions_to_zero(self.stack)
        time.sleep(2)
        footprint.wait_between_pings()
        idle_pss, idle_rss = footprint.stack_pss_mb()
        left = sorted(n for n, r in self.stack.revisions.items() if r.running)
        self.row(
            f"idle ({len(stopped)} scaled to zero; up: {', '.join(left) or 'none'})",
            f"PSS {idle_pss:.0f} MB (RSS {idle_rss:.0f} MB)",
        )
        self.row("  by part, PSS MB", self.pss_by_part())
        self.target("idle", f"{idle_pss:.0f} MB PSS", "<= 400 MB", idle_pss <= 400)

    def orders(self) -> None:
        print("\norder-place end to end (catalog price, reservation, commit) vs the same commit in pgbench")
        self.settle()
        body = '{"items": [{"skuCode": "bench_{rand:100}", "quantity": 1}]}'
        hop = self.trivial_hop_cpu_ms()
        results = {}
        for connections in (8, 32):
            cpu_before = self.cpu_seconds()
            results[connections] = self.post_as_customer(self.url("order-place", "/api/orders"), connections, body)
            self.row(f"order-place, {connections} connections", self.describe(results[connections]))
        # Where the two cores went in the 32-connection run (the event pipeline runs meanwhile).
        self.settle()
        spent = self.cpu_seconds()
        orders = results[32]["requests"]
        used = {name: spent.get(name, 0.0) - cpu_before.get(name, 0.0) for name in spent}
        top = sorted(used.items(), key=lambda item: -item[1])[:7]
        per_order = sum(used.values()) / orders * 1000
        self.row(
            "CPU per order, 32 connections (run + its event pipeline)",
            f"{per_order:.1f} ms: " + ", ".join(f"{name} {seconds / orders * 1000:.1f}" for name, seconds in top),
        )
        print("    CPU per order, by process:")
        for name, seconds in sorted(used.items(), key=lambda item: -item[1]):
            if seconds > 0:
                print(f"      {name:<28} {seconds / orders * 1000:6.2f} ms", flush=True)
        self.target("CPU per order, whole stack", f"{per_order:.1f} ms", "<= 10 ms", per_order <= 10)
        servers = sum(used.get(name, 0.0) for name in SERVERS) / orders * 1000
        floor = HOPS_PER_ORDER * hop + servers
        self.row(
            "  floor: HTTP hops at hello's cost, plus the servers",
            f"{HOPS_PER_ORDER} x {hop:.2f} + {servers:.1f} = {floor:.1f} ms; the functions' and the Broker's own work "
            f"{per_order - floor:.1f} ms",
        )
        tps = self.pgbench("orders", HERE / "sql" / "place_order.sql", 32)
        self.row("pgbench, the order transaction, 32 clients", f"{tps:>8.1f} tx/s")
        share, p99 = results[32]["rps"] / tps, results[32]["p99_ms"]
        self.row("order-place / raw SQL at 32 connections", f"{share:.0%}  (target >= 10%, p99 <= 250 ms)")
        self.target(
            "order-place / pgbench, 32 connections",
            f"{share:.0%}, p99 {p99:.0f} ms",
            ">= 10%, <= 250",
            share >= 0.10 and p99 <= 250,
        )

    def trivial_hop_cpu_ms(self) -> float:
        """CPU of one request to hello through the ingress (runtime and function, 32 connections): what
        any HTTP hop of the shop costs before the function does anything."""
        before = self.cpu_seconds()
        result = self.load(self.url("hello", "/"), 32)
        after = self.cpu_seconds()
        spent = sum(after.get(name, 0.0) - before.get(name, 0.0) for name in ("runtime", "hello"))
        hop = spent / result["requests"] * 1000
        self.row("a trivial hop: hello through the ingress, 32 connections", f"{hop:.2f} ms CPU (runtime + hello)")
        return hop

    def events(self) -> None:
        print("\nEvent latency: order commit to email received, vs raw Kafka produce-to-consume")
        for label, pacing in (("500 orders at 20/s", ["--rate", "20"]), ("500 orders back to back, 8 at a time", [])):
            self.settle()
            self.row(f"commit -> email, {label}", self.commit_to_email(500, pacing))
        raw = kafka_latency(self.stack.kafka_bootstrap, 500)
        self.row(
            "raw Kafka produce -> consume, same broker",
            f"p50 {percentile(raw, 0.5):.1f} ms  p99 {percentile(raw, 0.99):.1f} ms",
        )

    def commit_to_email(self, count: int, pacing: list[str]) -> str:
        mail_dir = self.stack.data_dir / "mail"
        before = {p.name for p in mail_dir.glob("*.eml")}
        command = [
            sys.executable,
            "-m",
            "tests.bench.place_orders",
            self.url("order-place", "/api/orders"),
            str(count),
            "8" if not pacing else "64",
            '{"items": [{"skuCode": "bench_{rand:100}", "quantity": 1}]}',
            *pacing,
            "-H",
            f"{identity.HEADER}: {self.customer}",
        ]
        placed = dict(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
        arrived = wait_for_mail(mail_dir, before, set(placed), timeout=180)
        latencies = sorted(arrived[n] - placed[n] for n in placed if n in arrived)
        return (
            f"p50 {percentile(latencies, 0.5):.0f} ms  p99 {percentile(latencies, 0.99):.0f} ms  "
            f"({len(latencies)}/{len(placed)} mails; target p50 <= 100, p99 <= 1000 ms)"
        )

    def tracing(self) -> None:
        print("\norder-place with tracing on (spans to a local rotel collector) vs off, 16 connections, interleaved")
        traced = ("order-place", "product-get", "inventory-reserve")
        body = '{"items": [{"skuCode": "bench_{rand:100}", "quantity": 1}]}'
        with EmbeddedCollector(log_dir=self.stack.log_dir, print_spans=False) as collector:
            runs: dict[str, list[float]] = {"off": [], "on": []}
            for _ in range(2):
                for mode in ("off", "on"):
                    endpoint = collector.endpoint if mode == "on" else ""
                    for service in traced:
                        self.stack.set_env(service, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
                    # The restarted processes warm up (tracing on: the SDK and exporter set up on the
                    # first span) before the run is timed, in either mode.
                    for _ in range(20):
                        requests.post(
                            self.url("order-place", "/api/orders"),
                            data=body.replace("{rand:100}", "0"),
                            headers={"Content-Type": "application/json", identity.HEADER: self.customer},
                            timeout=60,
                        )
                    self.settle()
                    result = self.post_as_customer(self.url("order-place", "/api/orders"), 16, body)
                    runs[mode].append(result["rps"])
                    self.row(f"order-place, tracing {mode}", self.describe(result))
            for service in traced:
                self.stack.set_env(service, OTEL_EXPORTER_OTLP_ENDPOINT="")
        share = statistics.mean(runs["on"]) / statistics.mean(runs["off"])
        self.row("tracing on / off throughput", f"{share:.0%}  (target >= 85%)")
        self.target("tracing on / off", f"{share:.0%}", ">= 85%", share >= 0.85)

    def registry(self) -> None:
        print("\nEureka registry: registrations, heartbeats and fetches from many concurrent clients")
        registry_bench.run(self.url("registry", ""), self.row)


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] * 1000 if values else float("nan")


def wait_for_mail(mail_dir: Path, before: set[str], numbers: set[str], timeout: float) -> dict[str, float]:
    """Order number -> when its email was saved (the file name holds the UTC time)."""
    arrived: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"OrderNumber (ORD-[A-Z0-9-]+)")
    while len(arrived) < len(numbers) and time.monotonic() < deadline:
        for path in mail_dir.glob("*.eml"):
            if path.name in before:
                continue
            before.add(path.name)
            match = pattern.search(path.read_text(errors="replace"))
            if match and match[1] in numbers:
                stamp = datetime.strptime(path.name.split("-")[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
                arrived[match[1]] = stamp.timestamp()
        time.sleep(0.2)
    return arrived


def kafka_latency(bootstrap: str, count: int) -> list[float]:
    """Produce one message, wait until it is consumed, repeat: latency without queueing."""
    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], partitions=1)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([topic])
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    latencies: list[float] = []
    try:
        for n in range(count + 20):  # the first 20 warm the connections and the group up
            sent = time.perf_counter()
            producer.produce(topic, value=str(n).encode())
            producer.poll(0)
            deadline = sent + 10
            while time.perf_counter() < deadline:
                message = consumer.poll(0.5)
                if message is not None and not message.error() and message.value() == str(n).encode():
                    if n >= 20:
                        latencies.append(time.perf_counter() - sent)
                    break
    finally:
        producer.flush(5)
        consumer.close()
    return sorted(latencies)


def _server_name(process: psutil.Process) -> str:
    command = " ".join(process.cmdline())
    markers = (
        ("postgres", "postgresql"),
        ("tansu", "kafka"),
        ("secantus", "mongodb"),
        ("load", "load"),
        ("local.zygote", "zygote"),
        ("smtpd", "smtp"),
        ("rotel", "collector"),
    )
    for marker, name in markers:
        if marker in command:
            return name
    return process.name()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10, help="length of each load run")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = parser.parse_args()
    wanted = [s for s in SECTIONS if s in args.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="shop-bench-") as data:
        settings = StackSettings(
            data_dir=Path(data),
            port=0,
            durable=True,
            idle_seconds=3600,
            manifest_paths=(manifests.KNATIVE_DIR, HERE / "hello"),
            environ={},
        )
        print(
            f"machine: {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
            f"{args.seconds:.0f} s per load run",
            flush=True,
        )
        with Stack(settings) as stack:
            bench = Bench(stack, args.seconds)
            bench.prepare()
            sections: dict[str, Callable[[], None]] = {
                "imports": bench.imports,
                "memory": bench.memory,
                "serving": bench.serving,
                "reserve": bench.reserve,
                "cold": bench.cold,
                "rss": bench.rss,
                "gateway": bench.gateway,
                "orders": bench.orders,
                "events": bench.events,
                "tracing": bench.tracing,
                "registry": bench.registry,
            }
            for name in wanted:
                sections[name]()
            bench.summary()


if __name__ == "__main__":
    main()

"""Registry figures: registrations/s and renewals/s from many concurrent clients, and full-fetch latency
(JSON and XML) with 1,000 instances registered. Prints rows; asserts nothing about time.

    run(f"{stack.url}/ksvc/registry", bench.row)   # the registry's base URL (its /eureka/... beneath)
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

INSTANCES = 1000
APPS = 20
CLIENTS = 32
RENEWAL_ROUNDS = 5
FETCHES = 200
JSON = {"Accept": "application/json"}
XML = {"Accept": "application/xml"}

_local = threading.local()


def _session() -> requests.Session:
    """One keep-alive connection per worker thread, as each Eureka client holds its own."""
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    session: requests.Session = _local.session
    return session


def _instance(app: str, instance_id: str, port: int) -> dict[str, Any]:
    now = str(int(time.time() * 1000))
    return {
        "instance": {
            "instanceId": instance_id,
            "hostName": f"10.0.{port // 250}.{port % 250}",
            "app": app,
            "ipAddr": f"10.0.{port // 250}.{port % 250}",
            "status": "UP",
            "overriddenStatus": "UNKNOWN",
            "port": {"$": 8080, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"},
            "countryId": 1,
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 600},
            "metadata": {"management.port": "8080", "zone": "default"},
            "homePageUrl": f"http://10.0.{port // 250}.{port % 250}:8080/",
            "statusPageUrl": f"http://10.0.{port // 250}.{port % 250}:8080/actuator/info",
            "healthCheckUrl": f"http://10.0.{port // 250}.{port % 250}:8080/actuator/health",
            "vipAddress": app.lower(),
            "secureVipAddress": app.lower(),
            "isCoordinatingDiscoveryServer": "false",
            "lastUpdatedTimestamp": now,
            "lastDirtyTimestamp": now,
        }
    }


def _timed(requests_to_make: Iterable[Callable[[], requests.Response]], expect: int) -> tuple[float, int, int]:
    """(seconds, done, failed) for running the calls on CLIENTS threads."""
    calls = list(requests_to_make)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        statuses = list(pool.map(lambda call: call().status_code, calls))
    elapsed = time.perf_counter() - started
    failed = sum(1 for status in statuses if status != expect)
    return elapsed, len(calls), failed


def _latency(url: str, headers: dict[str, str], count: int) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, body bytes) of sequential GETs, after a few to warm up."""
    session = requests.Session()
    size = 0
    for _ in range(5):
        size = len(session.get(url, headers=headers, timeout=60).content)
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.get(url, headers=headers, timeout=60)
        response.raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return statistics.median(timings), timings[min(len(timings) - 1, int(0.99 * len(timings)))], size


def _rate(label: str, elapsed: float, done: int, failed: int) -> str:
    suffix = f"  ({failed} failed)" if failed else ""
    return f"{done / elapsed:>8.1f} {label}/s  ({done} in {elapsed:.2f} s, {CLIENTS} clients){suffix}"


def run(base_url: str, print_row: Callable[[str, str], None]) -> None:
    eureka = base_url.rstrip("/").removesuffix("/eureka") + "/eureka"
    run_id = uuid.uuid4().hex[:6].upper()
    apps = [f"BENCH-{run_id}-{n:02d}" for n in range(APPS)]
    instances = [(apps[n % APPS], f"bench-{run_id}-{n:04d}", n) for n in range(INSTANCES)]

    def register(app: str, instance_id: str, port: int) -> Callable[[], requests.Response]:
        return lambda: _session().post(f"{eureka}/apps/{app}", json=_instance(app, instance_id, port), timeout=60)

    def renew(app: str, instance_id: str) -> Callable[[], requests.Response]:
        return lambda: _session().put(f"{eureka}/apps/{app}/{instance_id}?status=UP", timeout=60)

    def cancel(app: str, instance_id: str) -> Callable[[], requests.Response]:
        return lambda: _session().delete(f"{eureka}/apps/{app}/{instance_id}", timeout=60)

    # The same path answering nothing (GET /healthz): the ceiling the figures below sit under.
    health = [lambda: _session().get(f"{eureka.removesuffix('/eureka')}/healthz", timeout=60)] * INSTANCES
    print_row("registry: GET /healthz, for scale", _rate("requests", *_timed(health, 200)))
    try:
        elapsed, done, failed = _timed((register(a, i, p) for a, i, p in instances), 204)
        print_row(
            f"registry: register {INSTANCES} instances ({APPS} apps)", _rate("registrations", elapsed, done, failed)
        )
        calls = [renew(a, i) for _ in range(RENEWAL_ROUNDS) for a, i, _ in instances]
        elapsed, done, failed = _timed(calls, 200)
        print_row(
            f"registry: heartbeats, {RENEWAL_ROUNDS} rounds of {INSTANCES}", _rate("renewals", elapsed, done, failed)
        )

        for label, headers in (("JSON", JSON), ("XML", XML)):
            p50, p99, size = _latency(f"{eureka}/apps", headers, FETCHES)
            print_row(
                f"registry: full fetch GET /eureka/apps, {label}",
                f"p50 {p50:>7.2f} ms  p99 {p99:>7.2f} ms  ({size / 1024:.0f} KiB, {INSTANCES}+ instances)",
            )
        p50, p99, size = _latency(f"{eureka}/apps/delta", JSON, FETCHES)
        print_row("registry: delta GET /eureka/apps/delta, JSON", f"p50 {p50:>7.2f} ms  p99 {p99:>7.2f} ms")
        p50, p99, size = _latency(f"{eureka}/apps/{apps[0]}", JSON, FETCHES)
        print_row(
            f"registry: one app GET /eureka/apps/{{APP}}, JSON ({INSTANCES // APPS} instances)",
            f"p50 {p50:>7.2f} ms  p99 {p99:>7.2f} ms  (the gateway's lookup)",
        )
    finally:
        elapsed, done, failed = _timed((cancel(a, i) for a, i, _ in instances), 200)
        print_row(f"registry: cancel {INSTANCES} instances", _rate("cancels", elapsed, done, failed))

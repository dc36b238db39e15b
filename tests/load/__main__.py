"""`./taskw load`: Locust shoppers and an admin against the shop, then a per-route RED summary (rate, errors, duration).

    ./taskw load                               a fresh local shop (demo catalog), 5 users for 60 s, headless
    ./taskw load -- --users 20 --seconds 120   more of them, longer
    ./taskw load -- --url http://127.0.0.1:8080    a shop that is running (./taskw start), or a cluster's gateway
    ./taskw load -- --ui                       Locust's web UI at http://127.0.0.1:8089 (start and stop it there)

Asserts nothing: tests/e2e/test_load_generator.py runs it for 30 s and holds the promise (no 5xx, no failure).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class RouteFigures:
    route: str
    requests: int
    failures: int
    server_errors: int  # 5xx answers
    rate: float  # requests per second
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Report:
    routes: list[RouteFigures]
    statuses: dict[str, dict[str, int]]
    exit_code: int
    output: str

    @property
    def failures(self) -> int:
        return sum(r.failures for r in self.routes)

    @property
    def server_errors(self) -> int:
        return sum(r.server_errors for r in self.routes)

    def table(self) -> str:
        header = (
            f"{'route':<42} {'req':>6} {'req/s':>7} {'errors':>7} {'5xx':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        )
        lines = [header, "-" * len(header)]
        for r in sorted(self.routes, key=lambda r: -r.requests):
            lines.append(
                f"{r.route[:42]:<42} {r.requests:>6} {r.rate:>7.2f} {r.failures:>7} {r.server_errors:>5}"
                f" {r.p50_ms:>8.0f} {r.p95_ms:>8.0f} {r.p99_ms:>8.0f}"
            )
        return "\n".join(lines)


def run(
    url: str, *, users: int = 5, spawn_rate: float = 1.0, seconds: int = 60, env: Mapping[str, str] | None = None
) -> Report:
    """Runs Locust headless against `url` for `seconds` and reads its figures."""
    with tempfile.TemporaryDirectory(prefix="shop-load-") as folder:
        prefix = Path(folder) / "load"
        report = Path(folder) / "statuses.json"
        command = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", url, "--headless",
            "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", f"{seconds}s",
            "--csv", str(prefix), "--only-summary", "--stop-timeout", "10", "--loglevel", "WARNING",
        ]  # fmt: skip
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {}), "LOAD_REPORT": str(report)},
            timeout=seconds + 120,
            check=False,
        )
        statuses = json.loads(report.read_text()) if report.exists() else {}
        routes = _figures(Path(f"{prefix}_stats.csv"), statuses)
    return Report(routes, statuses, done.returncode, done.stdout + done.stderr)


def _figures(stats: Path, statuses: Mapping[str, Mapping[str, int]]) -> list[RouteFigures]:
    if not stats.exists():
        return []
    figures = []
    with stats.open() as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                continue
            codes = statuses.get(row["Name"], {})
            figures.append(
                RouteFigures(
                    route=f"{row['Type']} {row['Name']}",
                    requests=int(row["Request Count"]),
                    failures=int(row["Failure Count"]),
                    server_errors=sum(count for code, count in codes.items() if int(code) >= 500),
                    rate=float(row["Requests/s"]),
                    p50_ms=_number(row["50%"]),
                    p95_ms=_number(row["95%"]),
                    p99_ms=_number(row["99%"]),
                )
            )
    return figures


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


@contextmanager
def local_shop() -> Iterator[str]:
    """A fresh local shop with the demo catalog, in a temporary folder."""
    from local.seed import seed_if_empty
    from local.stack import Stack, StackSettings

    with tempfile.TemporaryDirectory(prefix="shop-load-") as folder:
        stack = Stack(StackSettings(data_dir=Path(folder), port=0, durable=False, environ={}))
        stack.start()
        try:
            seed_if_empty(stack.mongodb_uri, stack.database_urls["inventory"])
            yield str(stack.url)
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="./taskw load --", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", help="the shop's gateway (default: start a fresh local shop)")
    parser.add_argument(
        "--users", type=int, default=5, help="simulated people (default 5: one admin, the rest shoppers)"
    )
    parser.add_argument("--spawn-rate", type=float, default=1.0, help="people started per second (default 1)")
    parser.add_argument("--seconds", type=int, default=60, help="how long to run, headless (default 60)")
    parser.add_argument("--ui", action="store_true", help="open Locust's web UI on http://127.0.0.1:8089 instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with local_shop() if args.url is None else _given(args.url) as url:
        if args.ui:
            print(f"Locust's web UI: http://127.0.0.1:8089 (target {url}); Ctrl-C stops it", flush=True)
            command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", url, "--web-host", "127.0.0.1"]
            with suppress(KeyboardInterrupt):
                subprocess.run(command, check=False)
            return
        print(f"{args.users} people for {args.seconds} s against {url} ...", file=sys.stderr, flush=True)
        report = run(url, users=args.users, spawn_rate=args.spawn_rate, seconds=args.seconds)
    if not report.routes:
        print(report.output, file=sys.stderr)
        sys.exit(report.exit_code or 1)
    print(report.table())
    print(f"\n{report.failures} failures, {report.server_errors} answers 5xx")
    sys.exit(0 if report.failures == 0 else 1)


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")


if __name__ == "__main__":
    main()

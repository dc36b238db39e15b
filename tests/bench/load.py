"""A small HTTP load generator, run as its own process so it does not share a GIL with the server.

    python -m tests.bench.load URL --connections 16 --seconds 10 [--method POST --body TEMPLATE] [-H 'K: V']

The body template may contain {seq} (unique per request) and {rand:N} (0..N-1). Prints one
JSON object: requests, errors, statuses, requests per second, latency percentiles in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import time
from collections import Counter
from itertools import count

import aiohttp

PLACEHOLDER = re.compile(r"\{(seq|rand:(\d+))\}")


def render(template: str, seq: int) -> str:
    def value(match: re.Match[str]) -> str:
        return str(seq) if match[1] == "seq" else str(random.randrange(int(match[2])))

    return PLACEHOLDER.sub(value, template)


async def run(args: argparse.Namespace) -> dict[str, object]:
    headers = dict(h.split(": ", 1) for h in args.header)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    sequence = count(1)
    deadline = 0.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            body = render(args.body, next(sequence)) if args.body else None
            started = time.perf_counter()
            try:
                async with session.request(args.method, args.url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=args.connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        deadline = time.perf_counter() + args.warmup
        await asyncio.gather(*(worker(session) for _ in range(args.connections)))
        latencies.clear()
        statuses.clear()
        errors = 0
        began = time.perf_counter()
        deadline = began + args.seconds
        await asyncio.gather(*(worker(session) for _ in range(args.connections)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2) if ordered else 0.0

    return {
        "requests": len(ordered),
        "errors": errors,
        "statuses": dict(statuses),
        "rps": round(len(ordered) / elapsed, 1),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("-H", "--header", action="append", default=[])
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()

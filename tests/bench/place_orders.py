"""Places orders from its own process and prints when each 201 arrived (for commit-to-email latency).

python -m tests.bench.place_orders URL COUNT CONNECTIONS BODY_TEMPLATE -H 'X-Shop-Identity: ...'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp

from tests.bench.load import render


async def run(args: argparse.Namespace) -> list[tuple[str, float]]:
    headers = {"Content-Type": "application/json", **dict(h.split(": ", 1) for h in args.header)}
    placed: list[tuple[str, float]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(args.count):
        queue.put_nowait(n)

    started = time.monotonic()

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            if args.rate:
                await asyncio.sleep(max(0.0, started + n / args.rate - time.monotonic()))
            async with session.post(args.url, data=render(args.body, n), headers=headers) as response:
                body = await response.json()
                if response.status == 201:
                    placed.append((body["orderNumber"], time.time()))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(args.connections)))
    return placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("body")
    parser.add_argument("--rate", type=float, default=0.0, help="orders started per second (default: back to back)")
    parser.add_argument("-H", "--header", action="append", default=[])
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()

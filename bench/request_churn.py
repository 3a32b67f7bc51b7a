"""The scheduler's memory across many requests of one kind; JSON lines out.

    python -m bench.request_churn [--requests 100000] [--path /no/such/path] [--method GET]

Starts `python -m scheduler.main` on a loopback port with a fresh state directory,
sends `--requests` requests (8 at a time, each to its own path under `--path`, with the
admin token) after `--warm-up` more, and samples the scheduler's RSS before and after.
Prints `request_churn.rss` (MiB before and after, and bytes a request).

For what a request leaves behind for good: the scheduler's collector settings
(common/heap.py) freeze what a young collection finds alive, so a reference cycle that a
request makes and that outlives a collection falling within it is never freed. The
default, a path that matches no route, measured the cycle aiohttp's router made with
its 404 (docs/benchmarks.md, session 12).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
import psutil

from bench._common import MIB, Cleanup, emit, run_bench
from bench.link_churn import ADMIN_TOKEN, start_scheduler

CONCURRENCY = 8


async def send(base: str, method: str, path: str, count: int) -> None:
    """`count` requests, CONCURRENCY at a time, each to a path of its own."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(base, headers=headers) as client:

        async def worker(first: int) -> None:
            for i in range(first, count, CONCURRENCY):
                async with client.request(method, f"{path}/{i}") as response:
                    await response.read()

        await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))


def run(args: argparse.Namespace, cleanup: Cleanup) -> None:
    scheduler, api = start_scheduler(cleanup)
    process = psutil.Process(scheduler.pid)
    asyncio.run(send(api.base, args.method, args.path, args.warm_up))
    before = process.memory_info().rss
    started = time.monotonic()
    asyncio.run(send(api.base, args.method, args.path, args.requests))
    seconds = time.monotonic() - started
    after = process.memory_info().rss
    emit(
        "request_churn.rss",
        "MiB",
        before=round(before / MIB, 1),
        after=round(after / MIB, 1),
        bytes_per_request=round((after - before) / args.requests),
        requests=args.requests,
        requests_per_s=round(args.requests / seconds),
        method=args.method,
        path=args.path,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_churn", description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000, help="requests measured")
    parser.add_argument("--path", default="/no/such/path", help="paths under this one")
    parser.add_argument("--method", default="GET", help="the requests' method")
    parser.add_argument("--warm-up", type=int, default=16_000, help="requests not measured")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warm_up < 0 or not args.path.startswith("/"):
        parser.error("--requests must be at least 1, --warm-up not negative, --path absolute")
    return run_bench(run, args)


if __name__ == "__main__":
    sys.exit(main())

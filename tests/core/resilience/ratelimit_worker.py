"""A separate process that hammers a Redis-shared rate limiter (run by the tests).

Usage: ``python ratelimit_worker.py REDIS_URL KEY_PREFIX UPSTREAM RATE BURST TASKS``.
It builds the limiter exactly as production does (real clock, Redis server time),
prints ``ready``, reads ``START DURATION`` (wall-clock epoch seconds) from stdin, then
runs TASKS tasks that each acquire as fast as the limiter allows until START + DURATION
and prints the wall-clock admission times as one JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from cauce.core.resilience import (
    RealClock,
)
from cauce.core.resilience.ratelimit_redis import (
    RedisRateLimiter,
    connect_redis,
)


async def main(argv: list[str]) -> None:
    """Run the worker (see the module docstring)."""
    url, prefix, upstream, rate, burst, tasks = argv
    redis = connect_redis(url)
    limiter = RedisRateLimiter(
        upstream,
        rate=float(rate),
        burst=int(burst),
        clock=RealClock(),
        redis=redis,
        key_prefix=prefix,
    )
    await redis.ping()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    start_s, duration_s = (await asyncio.to_thread(sys.stdin.readline)).split()
    start, end = float(start_s), float(start_s) + float(duration_s)
    await asyncio.sleep(max(0.0, start - time.time()))
    admitted: list[float] = []

    async def hammer() -> None:
        while True:
            await limiter.acquire()
            now = time.time()
            if now >= end:
                return
            admitted.append(now)

    await asyncio.gather(*(hammer() for _ in range(int(tasks))))
    if limiter.fallbacks:
        raise SystemExit("fell back to the local limiter")
    await limiter.aclose()
    await redis.aclose()
    sys.stdout.write(json.dumps(admitted) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

"""Per-call cost of the Redis-shared rate limiter vs the in-process one.

Both limiters run at a rate high enough never to wait, so what is measured is the
decision itself: a few float operations for :class:`LocalRateLimiter`, one ``EVALSHA``
round trip (redis-py asyncio client, Lua GCRA) for :class:`RedisRateLimiter`.

- sequential: one task calling ``acquire()`` back to back (latency per call);
- concurrent: 64 tasks sharing the limiter (throughput; Redis calls overlap on the
  connection pool).

A bare ``PING`` on the same client is measured alongside as the floor any Redis-backed
decision pays (network round trip plus redis-py's asyncio client).

Rounds are interleaved (local, redis, local, ...) and the median round is reported.
Redis comes from ``CAUCE_TEST_REDIS_URL`` (``source /tmp/svc.env`` or
``eval "$(scripts/services.sh start)"``) or the first argument.

Run: ``.venv/bin/python benchmarks/ratelimit_redis.py [redis://127.0.0.1:PORT/0]``
(about 10 s).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid

from redis.asyncio import Redis

from cauce.core.resilience import LocalRateLimiter, RateLimiter, RealClock
from cauce.core.resilience.ratelimit_redis import RedisRateLimiter, connect_redis

CALLS = 4_000
ROUNDS = 5
CONCURRENCY = 64
HIGH_RATE = 1e9


async def sequential(limiter: RateLimiter) -> float:
    """Seconds per call, one caller."""
    started = time.perf_counter()
    for _ in range(CALLS):
        await limiter.acquire()
    return (time.perf_counter() - started) / CALLS


async def concurrent(limiter: RateLimiter) -> float:
    """Seconds per call, CONCURRENCY callers sharing CALLS calls."""

    async def worker() -> None:
        for _ in range(CALLS // CONCURRENCY):
            await limiter.acquire()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return (time.perf_counter() - started) / (CALLS // CONCURRENCY * CONCURRENCY)


class Ping:
    """Adapter so a bare Redis PING can be timed like a limiter."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def acquire(self, max_wait: float | None = None) -> float:
        """One PING round trip."""
        await self._redis.ping()
        return 0.0

    async def drain(self, for_seconds: float) -> None:
        """Unused."""


async def main(url: str) -> None:
    """Measure and print both limiters, sequential and concurrent."""
    redis = connect_redis(url)
    clock = RealClock()
    local = LocalRateLimiter("bench", rate=HIGH_RATE, burst=1000, clock=clock)
    shared = RedisRateLimiter(
        "bench",
        rate=HIGH_RATE,
        burst=1000,
        clock=clock,
        redis=redis,
        key_prefix=f"cauce:bench:{uuid.uuid4().hex}:",
    )
    try:
        await shared.acquire()  # load the script, open a connection
        for label, run in (("sequential", sequential), ("concurrent x64", concurrent)):
            local_s: list[float] = []
            redis_s: list[float] = []
            ping_s: list[float] = []
            for _ in range(ROUNDS):
                local_s.append(await run(local))
                redis_s.append(await run(shared))
                ping_s.append(await run(Ping(redis)))
            lo, re_ = statistics.median(local_s), statistics.median(redis_s)
            ping = statistics.median(ping_s)
            print(
                f"{label:>15}: local {lo * 1e6:7.2f} us   redis {re_ * 1e6:7.1f} us"
                f" ({1 / re_:6.0f}/s)   PING {ping * 1e6:7.1f} us"
                f"   redis/local {re_ / lo:6.0f}x   redis/PING {re_ / ping:4.2f}x"
            )
        if shared.fallbacks:
            print("warning: the Redis limiter fell back to local during the run")
    finally:
        await redis.delete(shared.key)
        await redis.aclose()


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CAUCE_TEST_REDIS_URL")
    if not target:
        raise SystemExit("give a redis:// URL or set CAUCE_TEST_REDIS_URL")
    asyncio.run(main(target))

"""Per-call overhead of Cauce's resilience pipeline vs the same guarantees from libraries.

Both stacks wrap a no-op coroutine with: a total deadline, retries (3 attempts,
exponential backoff with jitter), a circuit breaker, a rate limiter set high enough
never to wait, a bulkhead and a per-attempt timeout.

- **cauce**: ``build_pipeline`` from an ``UpstreamPolicy`` (real clock, null event sink).
- **libraries**: ``asyncio.timeout`` (deadline) → ``tenacity.AsyncRetrying`` →
  ``purgatory`` async circuit breaker → ``aiolimiter.AsyncLimiter`` →
  ``asyncio.Semaphore`` (bulkhead; it has no queue bound, so it does even less) →
  ``asyncio.timeout`` (attempt).

The rounds are interleaved (cauce, libraries, cauce, ...) so drift in CPU frequency
hits both alike; the figure per stack is the median round. The bare cost of awaiting
the no-op is measured the same way and subtracted to get the overhead.

Cauce arms one timer per attempt (the earlier of deadline and attempt timeout); the
library stack arms two (one ``asyncio.timeout`` each). On CPython 3.11 a single
``asyncio.timeout`` is most of Cauce's remaining overhead, hence the reference line.

Run: ``.venv/bin/python benchmarks/resilience_overhead.py`` (about 15-20 s).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import purgatory
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from cauce.core.resilience import (
    BreakerPolicy,
    BulkheadPolicy,
    RateLimitPolicy,
    RetryableError,
    RetryPolicy,
    TimeoutPolicy,
    UpstreamPolicy,
    build_pipeline,
)

CALLS_PER_ROUND = 20_000
ROUNDS = 7
HIGH_RATE = 1e9


async def noop() -> int:
    """The guarded call: does nothing, so what is measured is the guards."""
    return 1


def cauce_call() -> Callable[[], Awaitable[int]]:
    """Return a zero-argument coroutine function that runs ``noop`` through Cauce."""
    policy = UpstreamPolicy(
        breaker=BreakerPolicy(sliding_window_size=100, minimum_number_of_calls=20),
        retry=RetryPolicy(max_attempts=3, backoff_base=0.1, backoff_cap=5.0),
        bulkhead=BulkheadPolicy(max_concurrent=1000, max_waiting=1000, max_wait=1.0),
        rate_limit=RateLimitPolicy(enabled=True, rate=HIGH_RATE, burst=1_000_000, max_wait=1.0),
        timeouts=TimeoutPolicy(total=10.0, attempt=5.0),
    )
    pipeline = build_pipeline("bench", policy, rng=random.Random(7))

    async def call() -> int:
        return await pipeline.execute(noop)

    return call


async def library_call() -> Callable[[], Awaitable[int]]:
    """Return a zero-argument coroutine function that runs ``noop`` through the libraries."""
    breakers = purgatory.AsyncCircuitBreakerFactory(default_threshold=20, default_ttl=30)
    await breakers.initialize()
    limiter = AsyncLimiter(HIGH_RATE, 1)
    bulkhead = asyncio.Semaphore(1000)

    async def call() -> int:
        async with asyncio.timeout(10.0):
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(3),
                wait=wait_random_exponential(multiplier=0.1, max=5.0),
                retry=retry_if_exception_type(RetryableError),
                reraise=True,
            ):
                with attempt:
                    async with await breakers.get_breaker("bench"), limiter, bulkhead:
                        async with asyncio.timeout(5.0):
                            return await noop()
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    return call


async def timeout_only() -> int:
    """Reference point: one bare ``asyncio.timeout`` around the no-op."""
    async with asyncio.timeout(5.0):
        return await noop()


async def time_round(call: Callable[[], Awaitable[int]], n: int) -> float:
    """Return seconds per call for ``n`` sequential calls.

    The no-op never yields, so without the periodic ``sleep(0)`` the event loop would
    never run and never purge cancelled timer handles: every ``asyncio.timeout`` would
    push into an ever-growing heap, which no real service sees. Yielding every 64 calls
    lets the loop clean up as it does in production; the bare round pays it too.
    """
    start = time.perf_counter()
    for i in range(n):
        if not i & 63:
            await asyncio.sleep(0)
        await call()
    return (time.perf_counter() - start) / n


async def main() -> None:
    """Interleave rounds of each stack and print medians and the ratio."""
    stacks: dict[str, Callable[[], Awaitable[int]]] = {
        "bare": noop,
        "timeout": timeout_only,
        "cauce": cauce_call(),
        "libraries": await library_call(),
    }
    for call in stacks.values():  # warm up caches, lazily built state, the allocator
        await time_round(call, 2_000)
    samples: dict[str, list[float]] = {name: [] for name in stacks}
    for _ in range(ROUNDS):
        for name, call in stacks.items():
            samples[name].append(await time_round(call, CALLS_PER_ROUND))

    median = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    spread = {name: (min(v) * 1e6, max(v) * 1e6) for name, v in samples.items()}
    bare = median["bare"]
    print(f"{CALLS_PER_ROUND} calls x {ROUNDS} interleaved rounds, medians (µs/call)")
    print(f"  bare no-op await          {bare:8.2f}")
    print(f"  one asyncio.timeout       {median['timeout'] - bare:8.2f}  (overhead, for scale)")
    for name in ("cauce", "libraries"):
        low, high = spread[name]
        print(
            f"  {name:<10} total {median[name]:8.2f}  overhead {median[name] - bare:8.2f}"
            f"  (rounds {low:.2f}-{high:.2f})"
        )
    ratio = (median["libraries"] - bare) / (median["cauce"] - bare)
    print(f"ratio libraries/cauce overhead: {ratio:.1f}x (target >= 3x)")


if __name__ == "__main__":
    asyncio.run(main())

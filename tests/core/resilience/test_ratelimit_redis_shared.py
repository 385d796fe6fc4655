"""Sharing through Redis: registries pick the limiter, 429s pause other processes, global rate.

The last test is the issue's: two real processes hammering one Redis-shared limiter
hold the global rate within 5 %.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cauce.core.resilience import (
    BreakerPolicy,
    FakeClock,
    LocalRateLimiter,
    NullEvents,
    RateLimitPolicy,
    RecordingEvents,
    ResilienceRegistry,
    RetryPolicy,
    UpstreamPolicy,
    UpstreamThrottledError,
)
from cauce.core.resilience.ratelimit_redis import (
    RedisRateLimiter,
    RedisRateLimiters,
)

from .helpers import AlwaysFails
from .redis_support import closed_port_url

WORKER = Path(__file__).with_name("ratelimit_worker.py")
POLICY = UpstreamPolicy(
    breaker=BreakerPolicy(enabled=False),
    retry=RetryPolicy(max_attempts=1),
    rate_limit=RateLimitPolicy(enabled=True, rate=100.0, burst=100, max_wait=10.0),
)


async def ok() -> str:
    """A call that succeeds at once."""
    return "ok"


def test_registry_without_redis_keeps_limiters_local() -> None:
    """With no Redis configured each process limits on its own."""
    registry = ResilienceRegistry({"crm": POLICY})
    assert isinstance(registry.get("crm").rate_limiter, LocalRateLimiter)
    assert not registry.shared_rate_limits


async def test_registry_with_a_redis_url_shares_limits(redis: Redis, redis_url: str) -> None:
    """Given CAUCE_REDIS_URL the registry builds Redis limiters keyed by upstream name."""
    upstream = f"test-{uuid.uuid4().hex}"
    registry = ResilienceRegistry({upstream: POLICY}, redis=redis_url)
    try:
        pipeline = registry.get(upstream)
        assert isinstance(pipeline.rate_limiter, RedisRateLimiter)
        assert await pipeline.execute(ok) == "ok"
        assert await redis.exists(f"cauce:ratelimit:{upstream}")
    finally:
        await registry.aclose()
        await redis.delete(f"cauce:ratelimit:{upstream}")


async def test_registry_uses_but_does_not_close_a_client_it_is_given(redis: Redis) -> None:
    """A client passed in is shared by the limiters and still usable after the registry closes."""
    upstream = f"test-{uuid.uuid4().hex}"
    registry = ResilienceRegistry({upstream: POLICY}, redis=redis)
    limiter = registry.get(upstream).rate_limiter
    assert isinstance(limiter, RedisRateLimiter)
    assert await limiter.acquire() == 0.0
    await registry.aclose()
    assert await redis.exists(limiter.key)
    await redis.delete(limiter.key)


async def test_a_429_seen_by_one_process_pauses_the_others(
    redis: Redis, prefix: str, clock: FakeClock
) -> None:
    """A 429 with Retry-After 4 in one registry makes the next call in another wait until t=4."""
    registries = [
        ResilienceRegistry(
            {"crm": POLICY},
            clock=clock,
            events=RecordingEvents(),
            rate_limiters=RedisRateLimiters(redis, key_prefix=prefix, time_source=clock.now),
        )
        for _ in range(2)
    ]
    throttled = AlwaysFails(lambda: UpstreamThrottledError("429", retry_after=4.0))
    with pytest.raises(UpstreamThrottledError):
        await registries[0].get("crm").execute(throttled)
    started: list[float] = []

    async def other_call() -> str:
        started.append(clock.now())
        return "ok"

    assert await registries[1].get("crm").execute(other_call) == "ok"
    assert started == [pytest.approx(4.0)]


class ListeningEvents(NullEvents):
    """An event sink that also listens for rate-limiter backend switches."""

    def __init__(self) -> None:
        self.switches: list[str] = []

    def on_ratelimit_backend(
        self, upstream: str, backend: str, error: BaseException | None
    ) -> None:
        """Record the backend now in use."""
        self.switches.append(f"{upstream}:{backend}")


async def test_registry_reports_fallbacks_to_a_sink_that_listens(clock: FakeClock) -> None:
    """When Redis is down calls still pass and the registry's sink hears of the fallback."""
    events = ListeningEvents()
    registry = ResilienceRegistry(
        {"crm": POLICY}, clock=clock, events=events, redis=closed_port_url()
    )
    try:
        assert await registry.get("crm").execute(ok) == "ok"
    finally:
        await registry.aclose()
    assert events.switches == ["crm:local"]


async def _worker(redis_url: str, prefix: str, rate: float) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        redis_url,
        prefix,
        "crm",
        str(rate),
        "1",
        "8",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30.0)
    assert line == b"ready\n"
    return proc


async def test_two_processes_hold_the_global_rate_within_5_percent(
    redis_url: str, prefix: str
) -> None:
    """Two processes acquiring as fast as allowed for 5 s share 200/s: together within 5 %."""
    rate, duration, warmup = 200.0, 5.0, 0.5
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs = list(await asyncio.gather(*(_worker(redis_url, prefix, rate) for _ in range(2))))
        start = time.time() + 0.2
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{start!r} {duration!r}\n".encode())
            await proc.stdin.drain()
        outputs = await asyncio.wait_for(
            asyncio.gather(*(proc.communicate() for proc in procs)), duration + 20.0
        )
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0]
    admitted = [json.loads(stdout) for stdout, _ in outputs]
    in_window = [sum(1 for t in times if t >= start + warmup) for times in admitted]
    measured = sum(in_window) / (duration - warmup)
    assert measured == pytest.approx(rate, rel=0.05)
    # Both processes really competed: neither got the quota to itself.
    assert min(in_window) > 0.25 * sum(in_window)

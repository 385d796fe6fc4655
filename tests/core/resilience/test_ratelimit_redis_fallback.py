"""Redis-shared limiter when Redis fails: local fallback, bounded waits, recovery, events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from cauce.core.resilience import (
    FakeClock,
    RateLimitedError,
)
from cauce.core.resilience.ratelimit_redis import (
    LoggingBackendListener,
    RedisRateLimiter,
    connect_redis,
)

from .redis_support import SilentServer, TcpProxy, closed_port_url


class RecordingListener:
    """Keeps every backend switch as ``(upstream, backend, error type or None)``."""

    def __init__(self) -> None:
        self.switches: list[tuple[str, str, str | None]] = []

    def on_ratelimit_backend(
        self, upstream: str, backend: str, error: BaseException | None
    ) -> None:
        """Record."""
        self.switches.append((upstream, backend, type(error).__name__ if error else None))


@pytest.fixture
def listener() -> RecordingListener:
    """A listener that records backend switches."""
    return RecordingListener()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the test Redis that tests can take down and bring back."""
    target = urlsplit(redis_url)
    assert target.hostname is not None
    assert target.port is not None
    server = TcpProxy(target.hostname, target.port)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxied(proxy: TcpProxy) -> AsyncIterator[Redis]:
    """A client that reaches the test Redis through the proxy."""
    client = connect_redis(proxy.url)
    yield client
    await client.aclose()


async def test_redis_down_falls_back_to_a_local_limiter(
    clock: FakeClock, listener: RecordingListener
) -> None:
    """With Redis refusing connections calls still pass, at the policy's rate, per process."""
    client = connect_redis(closed_port_url())
    limiter = RedisRateLimiter(
        "crm", rate=10.0, burst=2, clock=clock, redis=client, listener=listener
    )
    try:
        assert [await limiter.acquire() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]
        with pytest.raises(RateLimitedError):
            await limiter.acquire(max_wait=0.0)
    finally:
        await client.aclose()
    assert limiter.backend == "local"
    assert limiter.fallbacks == 1
    assert listener.switches == [("crm", "local", "ConnectionError")]


async def test_hung_redis_is_cut_off_by_the_operation_timeout(
    clock: FakeClock, listener: RecordingListener
) -> None:
    """A Redis that accepts but never answers costs one op_timeout, then the local limiter."""
    silent = SilentServer()
    await silent.start()
    client = connect_redis(silent.url, timeout=5.0)
    limiter = RedisRateLimiter(
        "crm", rate=10.0, clock=clock, redis=client, op_timeout=0.2, listener=listener
    )
    try:
        started = time.monotonic()
        assert await limiter.acquire() == 0.0
        elapsed = time.monotonic() - started
    finally:
        await client.aclose()
        await silent.stop()
    # Cut at op_timeout (0.2 s), not at the client's own 5 s: the upper bound leaves a
    # busy machine seconds of room and still tells the two apart.
    assert 0.15 < elapsed < 4.0
    assert listener.switches == [("crm", "local", "TimeoutError")]


async def test_limiter_returns_to_redis_when_it_answers_again(
    clock: FakeClock,
    listener: RecordingListener,
    proxy: TcpProxy,
    proxied: Redis,
    redis: Redis,
    prefix: str,
) -> None:
    """Redis is retried after recheck_after; once it answers the shared state is used again."""
    limiter = RedisRateLimiter(
        "crm",
        rate=10.0,
        clock=clock,
        redis=proxied,
        time_source=clock.now,
        key_prefix=prefix,
        recheck_after=5.0,
        listener=listener,
    )
    backends = []
    await limiter.acquire()
    assert await redis.exists(limiter.key)
    await proxy.stop()
    await limiter.acquire()
    backends.append(limiter.backend)
    await proxy.start()
    clock.advance(1.0)
    await limiter.acquire()
    backends.append(limiter.backend)  # not retried before recheck_after
    await redis.delete(limiter.key)
    clock.advance(5.0)
    await limiter.acquire()
    backends.append(limiter.backend)
    assert backends == ["local", "local", "redis"]
    assert await redis.exists(limiter.key)
    assert listener.switches == [("crm", "local", "ConnectionError"), ("crm", "redis", None)]


async def test_a_drain_outlives_redis_going_away(
    clock: FakeClock, proxy: TcpProxy, proxied: Redis, prefix: str
) -> None:
    """A pause set while Redis was up still holds calls after the limiter falls back."""
    limiter = RedisRateLimiter(
        "crm",
        rate=10.0,
        burst=10,
        clock=clock,
        redis=proxied,
        time_source=clock.now,
        key_prefix=prefix,
        listener=RecordingListener(),
    )
    await limiter.drain(10.0)
    await proxy.stop()
    with pytest.raises(RateLimitedError) as info:
        await limiter.acquire(max_wait=1.0)
    assert limiter.backend == "local"
    assert info.value.retry_after == pytest.approx(10.0)


def test_default_listener_warns_on_fallback_and_notes_recovery() -> None:
    """Falling back is a warning naming the error type; recovering is info."""
    listener = LoggingBackendListener()
    with capture_logs() as logs:
        listener.on_ratelimit_backend("hubspot", "local", ConnectionError("secret host"))
        listener.on_ratelimit_backend("hubspot", "redis", None)
    assert [(log["event"], log["log_level"]) for log in logs] == [
        ("upstream.ratelimit.fallback", "warning"),
        ("upstream.ratelimit.recovered", "info"),
    ]
    assert logs[0]["error_type"] == "ConnectionError"
    assert "secret host" not in repr(logs)

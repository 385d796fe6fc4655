"""Fixtures for the resilience tests: a fake clock, a seeded RNG, a recording sink, Redis."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from cauce.core.resilience import (
    BreakerPolicy,
    FakeClock,
    RecordingEvents,
    ResiliencePipeline,
    RetryPolicy,
    UpstreamPolicy,
    build_pipeline,
)
from cauce.core.resilience.ratelimit_redis import (
    connect_redis,
)

from .redis_support import redis_test_url

PipelineFactory = Callable[..., ResiliencePipeline]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at t=0 whose sleeps jump time forward."""
    return FakeClock()


@pytest.fixture
def rng() -> random.Random:
    """A seeded random source, so jitter is the same on every run."""
    return random.Random(1234)


@pytest.fixture
def events() -> RecordingEvents:
    """A sink that records every event."""
    return RecordingEvents()


@pytest.fixture
def make_pipeline(clock: FakeClock, rng: random.Random, events: RecordingEvents) -> PipelineFactory:
    """Build a pipeline named ``crm`` on the fake clock from policy sections.

    Keyword arguments are ``UpstreamPolicy`` fields (models or dicts); ``clock`` may be
    overridden too. The breaker is off unless a test configures one, so tests of other
    guards are not disturbed by it.
    """

    def build(**sections: Any) -> ResiliencePipeline:
        use_clock = sections.pop("clock", clock)
        sections.setdefault("breaker", BreakerPolicy(enabled=False))
        sections.setdefault("retry", RetryPolicy())
        policy = UpstreamPolicy.model_validate(sections)
        return build_pipeline("crm", policy, clock=use_clock, rng=rng, events=events)

    return build


@pytest.fixture
def redis_url() -> str:
    """The test Redis server's URL (skips or fails without one, see redis_support)."""
    return redis_test_url()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the test Redis, closed after the test."""
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    value = f"cauce:test:{uuid.uuid4().hex}:"
    yield value
    keys = [key async for key in redis.scan_iter(match=f"{value}*")]
    if keys:
        await redis.delete(*keys)

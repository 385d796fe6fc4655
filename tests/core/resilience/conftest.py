"""Fixtures for the resilience tests: a fake clock, a seeded RNG, a recording sink."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from cauce.core.resilience import (
    BreakerPolicy,
    FakeClock,
    RecordingEvents,
    ResiliencePipeline,
    RetryPolicy,
    UpstreamPolicy,
    build_pipeline,
)

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

"""The lock-free collector sink exports exactly what the prometheus_client sink does."""

from __future__ import annotations

import contextlib
import random

import pytest
from prometheus_client import CollectorRegistry

from cauce.core.resilience import (
    BreakerPolicy,
    CircuitOpenError,
    EventSink,
    FakeClock,
    PrometheusEvents,
    RateLimitPolicy,
    RetryableError,
    RetryPolicy,
)
from cauce.core.resilience.sinks_collector import CollectorEvents

from .helpers import AlwaysFails, Flaky
from .test_sinks import pipeline_with


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


async def _scenario(sink: EventSink) -> None:
    clock = FakeClock()
    pipeline = pipeline_with(
        sink,
        clock,
        random.Random(3),
        retry=RetryPolicy(max_attempts=2, backoff_base=1.0, backoff_cap=1.0),
        breaker=BreakerPolicy(
            sliding_window_size=2,
            minimum_number_of_calls=2,
            wait_duration_in_open_state=5.0,
            permitted_number_of_calls_in_half_open_state=1,
        ),
        rate_limit=RateLimitPolicy(enabled=True, rate=100.0, burst=1, max_wait=1.0),
    )
    await pipeline.execute(Flaky(RetryableError("503")))
    with pytest.raises((ValueError, CircuitOpenError)):
        await pipeline.execute(AlwaysFails(lambda: ValueError("boom")))
    with pytest.raises((ValueError, CircuitOpenError)):
        await pipeline.execute(AlwaysFails(lambda: ValueError("boom")))
    with pytest.raises(CircuitOpenError):
        await pipeline.execute(Flaky())
    clock.advance(6.0)
    with contextlib.suppress(CircuitOpenError):  # a half-open probe, same on both sinks
        await pipeline.execute(Flaky())


async def test_collector_sink_matches_prometheus_sink_sample_for_sample() -> None:
    """The same decisions give the same metric names, labels, buckets and values."""
    reference, collected = CollectorRegistry(), CollectorRegistry()
    await _scenario(PrometheusEvents(reference))
    await _scenario(CollectorEvents(collected))
    expected = _samples(reference)
    assert expected  # the scenario produced metrics at all
    assert any(name == "cauce_circuit_state" for name, _ in expected)
    assert _samples(collected) == expected

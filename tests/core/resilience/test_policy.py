"""Policy models: safe defaults, strict validation, and what the factory builds from them."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from cauce.core.resilience import (
    BreakerPolicy,
    CircuitState,
    CountWindow,
    FakeClock,
    RecordingEvents,
    RetryPolicy,
    TimeWindow,
    UpstreamPolicy,
    build_pipeline,
)


def test_defaults_bound_time_concurrency_and_retries() -> None:
    """Out of the box every upstream has a deadline, an attempt timeout, a breaker and a budget."""
    policy = UpstreamPolicy()
    assert policy.timeouts.total is not None
    assert policy.timeouts.attempt is not None
    assert policy.timeouts.attempt <= policy.timeouts.total
    assert policy.breaker.enabled
    assert policy.bulkhead.enabled
    assert policy.retry.budget.enabled
    assert policy.retry.budget.ratio == 0.2
    assert policy.retry.max_attempts == 3
    assert policy.retry.jitter == "full"
    assert policy.breaker.max_wait_duration_in_half_open_state > 0  # cannot stay stuck


def test_nested_values_validate_like_environment_settings() -> None:
    """Nested string values (as from CAUCE_UPSTREAMS__X__...) are parsed into typed fields."""
    policy = UpstreamPolicy.model_validate(
        {
            "breaker": {"failure_rate_threshold": "25", "sliding_window_type": "time"},
            "retry": {"budget": {"ratio": "0.1"}},
            "timeouts": {"attempt": None},
        }
    )
    assert policy.breaker.failure_rate_threshold == 25.0
    assert policy.breaker.sliding_window_type == "time"
    assert policy.retry.budget.ratio == 0.1
    assert policy.timeouts.attempt is None


@pytest.mark.parametrize(
    "data",
    [
        {"breaker": {"failure_rate": 50}},  # misspelt key
        {"unknown_section": {}},
        {"breaker": {"failure_rate_threshold": 0}},
        {"breaker": {"failure_rate_threshold": 101}},
        {"breaker": {"sliding_window_type": "sliding"}},
        {"retry": {"max_attempts": 0}},
        {"retry": {"backoff_base": 2.0, "backoff_cap": 1.0}},
        {"retry": {"jitter": "equal"}},
        {"bulkhead": {"max_concurrent": 0}},
        {"rate_limit": {"rate": 0}},
        {"timeouts": {"total": -1}},
    ],
)
def test_invalid_or_unknown_values_are_refused(data: dict[str, object]) -> None:
    """Typos and out-of-range values fail validation instead of silently using a default."""
    with pytest.raises(ValidationError):
        UpstreamPolicy.model_validate(data)


def test_policies_are_immutable() -> None:
    """A policy cannot be changed after it was validated."""
    policy = RetryPolicy()
    with pytest.raises(ValidationError):
        policy.max_attempts = 10


def test_factory_honours_disabled_guards(clock: FakeClock, rng: random.Random) -> None:
    """Disabled breaker, bulkhead, rate limit and budget are left out of the pipeline."""
    policy = UpstreamPolicy.model_validate(
        {
            "breaker": {"enabled": False},
            "bulkhead": {"enabled": False},
            "rate_limit": {"enabled": False},
            "retry": {"budget": {"enabled": False}},
        }
    )
    pipeline = build_pipeline("crm", policy, clock=clock, rng=rng)
    assert pipeline.breaker is None
    assert pipeline.bulkhead is None
    assert pipeline.rate_limiter is None
    assert pipeline.budget is None


def test_factory_builds_the_configured_window(clock: FakeClock, rng: random.Random) -> None:
    """The breaker gets a count or a time window as configured."""
    for kind, window_type in (("count", CountWindow), ("time", TimeWindow)):
        policy = UpstreamPolicy.model_validate({"breaker": {"sliding_window_type": kind}})
        breaker = build_pipeline("crm", policy, clock=clock, rng=rng).breaker
        assert breaker is not None
        assert isinstance(breaker.window, window_type)


def test_count_window_minimum_is_capped_at_its_size(
    clock: FakeClock, rng: random.Random, events: RecordingEvents
) -> None:
    """As in Resilience4j, a count window of 5 evaluates after 5 calls even if minimum is 50."""
    policy = UpstreamPolicy(
        breaker=BreakerPolicy(sliding_window_size=5, minimum_number_of_calls=50)
    )
    breaker = build_pipeline("crm", policy, clock=clock, rng=rng, events=events).breaker
    assert breaker is not None
    for _ in range(5):
        breaker.on_failure(breaker.acquire(), 0.01)
    assert breaker.state is CircuitState.OPEN

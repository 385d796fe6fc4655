"""Retry budget: retries capped at a share of recent calls plus a floor."""

from __future__ import annotations

import pytest

from cauce.core.resilience import RecordingEvents, RetryableError, RetryBudget, RetryPolicy

from .conftest import PipelineFactory
from .helpers import AlwaysFails


def test_ratio_caps_retries_at_a_share_of_requests() -> None:
    """With no floor, 10 requests at ratio 0.2 allow exactly 2 retries."""
    budget = RetryBudget(ratio=0.2, min_retries_per_second=0.0, window_seconds=10)
    for _ in range(10):
        budget.record_request(0.0)
    assert [budget.try_acquire_retry(0.0) for _ in range(3)] == [True, True, False]


def test_floor_allows_retries_without_traffic() -> None:
    """The per-second floor allows floor x window retries even with no requests."""
    budget = RetryBudget(ratio=0.2, min_retries_per_second=0.5, window_seconds=4)
    granted = [budget.try_acquire_retry(0.0) for _ in range(3)]
    assert granted == [True, True, False]


def test_budget_refills_as_the_window_slides() -> None:
    """Retries spent leave the window after window_seconds, and the budget is usable again."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0, window_seconds=3)
    assert all(budget.try_acquire_retry(0.5) for _ in range(3))
    assert not budget.try_acquire_retry(2.9)
    assert budget.try_acquire_retry(3.0)  # second 0 left the window [1, 3]
    assert budget.retries == 1


def test_old_requests_stop_counting() -> None:
    """Requests older than the window no longer earn retries."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window_seconds=2)
    for _ in range(5):
        budget.record_request(0.0)
    assert budget.requests == 5
    assert budget.try_acquire_retry(1.5)
    assert not budget.try_acquire_retry(2.0)  # the 5 requests of second 0 aged out
    assert budget.requests == 0


@pytest.mark.parametrize(
    ("budget", "max_attempts_seen"),
    [
        ({"enabled": True, "ratio": 0.2, "min_retries_per_second": 0.0}, 120),
        ({"enabled": False}, 300),
    ],
)
async def test_budget_stops_a_retry_storm(
    make_pipeline: PipelineFactory,
    events: RecordingEvents,
    budget: dict[str, object],
    max_attempts_seen: int,
) -> None:
    """When every call fails, the budget holds attempts to calls x 1.2 instead of x 3."""
    policy = RetryPolicy(
        max_attempts=3,
        backoff_base=0.001,
        backoff_cap=0.001,
        jitter="decorrelated",
        budget=budget,  # type: ignore[arg-type]  # validated from a dict, as settings do
    )
    pipeline = make_pipeline(retry=policy)
    fn = AlwaysFails(lambda: RetryableError("503"))
    for _ in range(100):
        with pytest.raises(RetryableError):
            await pipeline.execute(fn)
    assert fn.calls == max_attempts_seen
    exhausted = events.of("budget_exhausted")
    if budget["enabled"]:
        assert len(exhausted) >= 80
    else:
        assert exhausted == []

"""Retry: backoff bounds, classification, Retry-After, cancellation and idempotency."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cauce.core.resilience import (
    FakeClock,
    RecordingEvents,
    RetryableError,
    RetryPolicy,
    TimeoutPolicy,
    UpstreamPolicy,
    build_pipeline,
    decorrelated_jitter,
    default_is_retryable,
    full_jitter,
)
from cauce.core.resilience.errors import (
    AttemptTimeout,
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceeded,
    RateLimitedError,
)

from .conftest import PipelineFactory
from .helpers import AlwaysFails, Flaky, settle

# Decorrelated jitter with base == cap always waits exactly base: handy for exact timings.
FIXED_1S = RetryPolicy(max_attempts=3, backoff_base=1.0, backoff_cap=1.0, jitter="decorrelated")


@given(
    retry=st.integers(0, 200),
    base=st.floats(1e-4, 10.0),
    cap_factor=st.floats(1.0, 1000.0),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_stays_within_capped_exponential(
    retry: int, base: float, cap_factor: float, seed: int
) -> None:
    """Full jitter is always within [0, min(cap, base * 2**n)]."""
    cap = base * cap_factor
    delay = full_jitter(retry, base, cap, random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0**retry)


@given(
    previous=st.floats(0.0, 1e6),
    base=st.floats(1e-4, 10.0),
    cap_factor=st.floats(1.0, 1000.0),
    seed=st.integers(0, 2**32),
)
def test_decorrelated_jitter_stays_within_base_and_cap(
    previous: float, base: float, cap_factor: float, seed: int
) -> None:
    """Decorrelated jitter is always within [base, cap]."""
    cap = base * cap_factor
    delay = decorrelated_jitter(previous, base, cap, random.Random(seed))
    assert base <= delay <= cap


def test_full_jitter_spreads_delays() -> None:
    """Full jitter actually varies, so clients that failed together do not retry together."""
    rng = random.Random(5)
    delays = {full_jitter(3, 0.1, 10.0, rng) for _ in range(50)}
    assert len(delays) == 50
    assert max(delays) > 0.5 * 0.8  # spread across [0, 0.8), not bunched near 0


def test_default_classification() -> None:
    """Transient upstream errors are retryable; local decisions and other errors are not."""
    assert default_is_retryable(RetryableError("503"))
    assert default_is_retryable(AttemptTimeout("slow"))
    assert default_is_retryable(ConnectionResetError())
    assert default_is_retryable(TimeoutError())
    assert not default_is_retryable(DeadlineExceeded("late"))
    assert not default_is_retryable(CircuitOpenError("crm"))
    assert not default_is_retryable(BulkheadFullError("crm", reason="full"))
    assert not default_is_retryable(RateLimitedError("crm", retry_after=1.0))
    assert not default_is_retryable(ValueError("400"))


async def test_retries_transient_errors_until_success(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """A call that fails transiently twice and then succeeds returns the success."""
    fn = Flaky(RetryableError("503"), RetryableError("502"))
    pipeline = make_pipeline(retry=FIXED_1S)
    assert await pipeline.execute(fn) == "ok"
    assert fn.calls == 3
    assert [e[2] for e in events.of("retry")] == [1, 2]


async def test_gives_up_after_max_attempts_with_the_last_error(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """After max_attempts the last error propagates and a give-up event says why."""
    fn = AlwaysFails(lambda: RetryableError("503"))
    pipeline = make_pipeline(retry=FIXED_1S)
    with pytest.raises(RetryableError) as info:
        await pipeline.execute(fn)
    assert fn.calls == 3
    assert info.value is fn.raised[-1]
    assert events.of("give_up") == [("give_up", "crm", 3, "max_attempts", fn.raised[-1])]


async def test_permanent_errors_are_not_retried(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """An error the classifier does not call transient is raised after one attempt."""
    fn = AlwaysFails(lambda: ValueError("422"))
    with pytest.raises(ValueError):
        await make_pipeline(retry=FIXED_1S).execute(fn)
    assert fn.calls == 1
    assert events.of("give_up")[0][3] == "not_retryable"


async def test_cancelled_error_from_the_call_is_never_retried(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """CancelledError raised by the call propagates at once, with no retry and no give-up."""
    fn = AlwaysFails(asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        await make_pipeline(retry=FIXED_1S).execute(fn)
    assert fn.calls == 1
    assert events.of("retry") == []
    assert events.of("give_up") == []
    assert events.of("failure")[0][5] == "cancelled"


async def test_cancelling_during_backoff_stops_all_retries(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """A task cancelled while waiting to retry is cancelled for good: no further attempt."""
    clock = FakeClock(auto_advance=False)
    fn = AlwaysFails(lambda: RetryableError("503"))
    pipeline = make_pipeline(clock=clock, retry=FIXED_1S)
    task = asyncio.create_task(pipeline.execute(fn))
    await settle()
    assert clock.sleeps == [1.0]  # it is in the backoff sleep now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.advance(100.0)
    await settle()
    assert fn.calls == 1


async def test_retry_after_longer_than_backoff_is_honoured(
    make_pipeline: PipelineFactory, clock: FakeClock, events: RecordingEvents
) -> None:
    """The wait before a retry is the upstream's Retry-After when that exceeds the backoff."""
    fn = Flaky(RetryableError("429", retry_after=7.0))
    pipeline = make_pipeline(retry=FIXED_1S)
    assert await pipeline.execute(fn) == "ok"
    assert clock.sleeps == [7.0]
    assert events.of("retry")[0][3] == 7.0


async def test_backoff_longer_than_retry_after_wins(
    make_pipeline: PipelineFactory, clock: FakeClock
) -> None:
    """A Retry-After shorter than the computed backoff does not shorten the wait."""
    fn = Flaky(RetryableError("503", retry_after=0.25))
    assert await make_pipeline(retry=FIXED_1S).execute(fn) == "ok"
    assert clock.sleeps == [1.0]


async def test_retry_after_past_the_deadline_gives_up_immediately(
    make_pipeline: PipelineFactory, clock: FakeClock, events: RecordingEvents
) -> None:
    """If honouring Retry-After would pass the deadline, the error is raised without waiting."""
    error = RetryableError("429", retry_after=7.0)
    fn = Flaky(error)
    pipeline = make_pipeline(retry=FIXED_1S, timeouts=TimeoutPolicy(total=5.0))
    with pytest.raises(RetryableError) as info:
        await pipeline.execute(fn)
    assert info.value is error
    assert info.value.retry_after == 7.0  # the job layer can still schedule it later
    assert fn.calls == 1
    assert clock.now() == 0.0
    assert events.of("give_up")[0][3] == "deadline"


async def test_non_idempotent_call_without_key_is_not_retried(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """A non-idempotent call without an idempotency key gets exactly one attempt."""
    fn = AlwaysFails(lambda: RetryableError("503"))
    with pytest.raises(RetryableError):
        await make_pipeline(retry=FIXED_1S).execute(fn, idempotent=False)
    assert fn.calls == 1
    assert events.of("give_up")[0][3] == "not_idempotent"


async def test_non_idempotent_call_with_key_is_retried(make_pipeline: PipelineFactory) -> None:
    """An idempotency key makes a non-idempotent call safe to retry."""
    fn = Flaky(RetryableError("503"))
    result = await make_pipeline(retry=FIXED_1S).execute(
        fn, idempotent=False, idempotency_key="lead-42-upsert"
    )
    assert result == "ok"
    assert fn.calls == 2


async def test_custom_classifier_decides_what_is_retried(
    clock: FakeClock, rng: random.Random, events: RecordingEvents
) -> None:
    """A pipeline built with its own classifier retries what that classifier says."""
    pipeline = build_pipeline(
        "crm",
        UpstreamPolicy(retry=FIXED_1S),
        clock=clock,
        rng=rng,
        events=events,
        is_retryable=lambda error: isinstance(error, KeyError),
    )
    fn = Flaky(KeyError("flaky lookup"))
    assert await pipeline.execute(fn) == "ok"
    assert fn.calls == 2

"""The composed pipeline: timeouts, deadline, guard order, fallback and the registry."""

from __future__ import annotations

import asyncio
import random

import pytest

from cauce.core.resilience import (
    AttemptTimeout,
    BreakerPolicy,
    CircuitOpenError,
    CircuitState,
    DeadlineExceeded,
    FakeClock,
    LocalRateLimiter,
    RateLimitedError,
    RateLimitPolicy,
    RecordingEvents,
    ResilienceRegistry,
    RetryableError,
    RetryPolicy,
    TimeoutPolicy,
    UpstreamPolicy,
)

from .conftest import PipelineFactory
from .helpers import AlwaysFails, Flaky

FIXED = RetryPolicy(max_attempts=20, backoff_base=0.6, backoff_cap=0.6, jitter="decorrelated")


async def test_success_reports_attempt_and_success_only(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """A call that succeeds returns its value and emits just 'attempt' and 'success'."""
    pipeline = make_pipeline(breaker=BreakerPolicy())

    async def call() -> int:
        return 42

    assert await pipeline.execute(call) == 42
    assert events.names() == ["attempt", "success"]
    assert pipeline.breaker is not None
    assert pipeline.breaker.window.total == 1
    assert pipeline.bulkhead is not None
    assert pipeline.bulkhead.in_flight == 0


async def test_slow_attempt_times_out_and_is_retried(
    make_pipeline: PipelineFactory, clock: FakeClock, events: RecordingEvents
) -> None:
    """An attempt longer than the attempt timeout raises AttemptTimeout, which is retried."""
    pipeline = make_pipeline(
        retry=FIXED,
        timeouts=TimeoutPolicy(total=30.0, attempt=1.0),
        breaker=BreakerPolicy(minimum_number_of_calls=100),
    )
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await clock.sleep(5.0)
        return "ok"

    assert await pipeline.execute(call) == "ok"
    failure = events.of("failure")[0]
    assert isinstance(failure[4], AttemptTimeout)
    assert failure[5] == "timeout"
    assert failure[3] == pytest.approx(1.0)  # cut at the attempt timeout, not at 5 s
    assert pipeline.breaker is not None
    assert pipeline.breaker.window.failed == 1  # a timed-out attempt is an upstream failure


async def test_deadline_stops_retries(
    make_pipeline: PipelineFactory, clock: FakeClock, events: RecordingEvents
) -> None:
    """Retries stop when the next one would start past the total deadline."""
    pipeline = make_pipeline(retry=FIXED, timeouts=TimeoutPolicy(total=2.0, attempt=None))
    fn = AlwaysFails(lambda: RetryableError("503"))
    with pytest.raises(RetryableError):
        await pipeline.execute(fn)
    # Attempts at t=0, 0.6, 1.2, 1.8; a fifth at 2.4 would pass the deadline.
    assert fn.calls == 4
    assert clock.now() == pytest.approx(1.8)
    assert events.of("give_up")[0][2:4] == (4, "deadline")


async def test_hung_call_is_cut_at_the_deadline(
    make_pipeline: PipelineFactory, clock: FakeClock, events: RecordingEvents
) -> None:
    """A call still running at the total deadline gets DeadlineExceeded and is not retried."""
    pipeline = make_pipeline(
        retry=FIXED,
        timeouts=TimeoutPolicy(total=3.0, attempt=10.0),
        breaker=BreakerPolicy(),
    )
    calls = 0

    async def hang() -> str:
        nonlocal calls
        calls += 1
        await clock.sleep(100.0)
        return "late"

    with pytest.raises(DeadlineExceeded):
        await pipeline.execute(hang)
    assert calls == 1
    assert clock.now() == 3.0
    assert events.of("failure")[0][5] == "deadline"
    assert pipeline.breaker is not None
    assert pipeline.breaker.window.total == 0  # the caller's deadline is not the upstream's fault


async def test_deadline_bounds_waiting_for_the_rate_limiter(
    make_pipeline: PipelineFactory, clock: FakeClock
) -> None:
    """A rate-limit wait that would outlast the deadline is refused instead of slept."""
    pipeline = make_pipeline(
        rate_limit=RateLimitPolicy(enabled=True, rate=0.1, burst=1, max_wait=60.0),
        timeouts=TimeoutPolicy(total=5.0),
    )

    async def call() -> str:
        return "ok"

    await pipeline.execute(call)
    with pytest.raises(RateLimitedError):
        await pipeline.execute(call)
    assert clock.now() == 0.0


async def test_open_circuit_consumes_no_rate_token(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """The breaker comes before the rate limiter: a rejected call leaves its token alone."""
    pipeline = make_pipeline(
        breaker=BreakerPolicy(sliding_window_size=1, minimum_number_of_calls=1),
        rate_limit=RateLimitPolicy(enabled=True, rate=1.0, burst=2),
    )
    with pytest.raises(ValueError):
        await pipeline.execute(AlwaysFails(lambda: ValueError("boom")))
    assert pipeline.breaker is not None
    assert pipeline.breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await pipeline.execute(Flaky())
    limiter = pipeline.rate_limiter
    assert isinstance(limiter, LocalRateLimiter)
    assert limiter.try_acquire()  # the second burst token is still there
    assert events.of("breaker_rejected") == [("breaker_rejected", "crm", CircuitState.OPEN)]


async def test_open_circuit_stops_the_remaining_retries(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """Retry sits outside the breaker: once the circuit opens, retries stop at once."""
    pipeline = make_pipeline(
        retry=FIXED,
        breaker=BreakerPolicy(sliding_window_size=2, minimum_number_of_calls=2),
    )
    fn = AlwaysFails(lambda: RetryableError("503"))
    with pytest.raises(CircuitOpenError):
        await pipeline.execute(fn)
    assert fn.calls == 2  # third attempt rejected by the now-open breaker, not sent


async def test_fallback_replaces_a_final_failure(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """A fallback turns the final error into a result and the event names the error."""
    error = ValueError("boom")

    async def fallback(exc: Exception) -> str:
        return f"cached after {type(exc).__name__}"

    result = await make_pipeline().execute(Flaky(error), fallback=fallback)
    assert result == "cached after ValueError"
    assert events.of("fallback") == [("fallback", "crm", error)]


async def test_fallback_never_swallows_cancellation(make_pipeline: PipelineFactory) -> None:
    """Cancellation propagates through a pipeline call even when a fallback is set."""

    async def fallback(exc: Exception) -> str:
        return "fallback"

    with pytest.raises(asyncio.CancelledError):
        await make_pipeline().execute(AlwaysFails(asyncio.CancelledError), fallback=fallback)


async def test_fn_own_timeout_error_is_not_mistaken_for_ours(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """A TimeoutError raised by the call itself is reported as an error, not our timeout."""
    fn = AlwaysFails(TimeoutError)
    with pytest.raises(TimeoutError) as info:
        await make_pipeline(retry=RetryPolicy(max_attempts=1)).execute(fn)
    assert not isinstance(info.value, AttemptTimeout | DeadlineExceeded)
    assert events.of("failure")[0][5] == "error"


async def test_registry_builds_one_pipeline_per_upstream(
    clock: FakeClock, rng: random.Random
) -> None:
    """The registry keeps one pipeline per upstream, uses the default, and refuses unknowns."""
    registry = ResilienceRegistry({"hubspot": UpstreamPolicy()}, clock=clock, rng=rng, default=None)
    assert registry.get("hubspot") is registry.get("hubspot")
    with pytest.raises(KeyError):
        registry.get("hubspt")
    with_default = ResilienceRegistry({}, clock=clock, rng=rng, default=UpstreamPolicy())
    pipeline = with_default.get("pipedrive")
    assert pipeline.name == "pipedrive"
    assert list(with_default) == [pipeline]

"""Circuit breaker: Resilience4j's windows, thresholds, half-open probes and transitions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cauce.core.resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    DeadlineExceeded,
    FakeClock,
    RecordingEvents,
    RetryableError,
    TimeWindow,
    default_is_failure,
)
from cauce.core.resilience.errors import BulkheadFullError

from .conftest import PipelineFactory
from .helpers import settle

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def make_breaker(clock: FakeClock, events: RecordingEvents, **overrides: Any) -> CircuitBreaker:
    """A breaker with a 10-call count window and small, explicit thresholds."""
    options: dict[str, Any] = {
        "window": CountWindow(10),
        "minimum_number_of_calls": 4,
        "failure_rate_threshold": 50.0,
        "slow_call_duration_threshold": 1.0,
        "slow_call_rate_threshold": 100.0,
        "wait_duration_in_open_state": 10.0,
        "permitted_number_of_calls_in_half_open_state": 2,
        "max_wait_duration_in_half_open_state": 0.0,
    }
    options.update(overrides)
    return CircuitBreaker("crm", clock=clock, events=events, **options)


def succeed(breaker: CircuitBreaker, duration: float = 0.01) -> None:
    """Run one successful call through the breaker."""
    breaker.on_success(breaker.acquire(), duration)


def fail(breaker: CircuitBreaker, duration: float = 0.01) -> None:
    """Run one failed call through the breaker."""
    breaker.on_failure(breaker.acquire(), duration)


def open_breaker(breaker: CircuitBreaker) -> None:
    """Fail enough calls to open the breaker."""
    while breaker.state is CLOSED:
        fail(breaker)


def test_opens_when_failure_rate_reaches_threshold(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """After the minimum number of calls, a failure rate equal to the threshold opens it."""
    breaker = make_breaker(clock, events)
    succeed(breaker)
    fail(breaker)
    fail(breaker)
    assert breaker.state is CLOSED  # 3 calls < minimum of 4, even at 66 % failures
    succeed(breaker)
    assert breaker.state is OPEN  # 2 of 4 = 50 % >= 50 %
    assert events.of("breaker_transition") == [("breaker_transition", "crm", CLOSED, OPEN)]


def test_count_window_forgets_calls_that_slid_out(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """Only the last N calls count: an old failure stops weighing once it slides out."""
    breaker = make_breaker(clock, events, window=CountWindow(4), failure_rate_threshold=30.0)
    fail(breaker)
    for _ in range(4):
        succeed(breaker)
    fail(breaker)
    # Last 4 = S,S,S,F: 25 % < 30 %. All 6 calls would be 2/6 = 33 % and open it.
    assert breaker.state is CLOSED
    assert (breaker.window.total, breaker.window.failed) == (4, 1)


def test_time_window_forgets_calls_older_than_the_window(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """A time window only weighs the calls of its last N seconds."""
    breaker = make_breaker(clock, events, window=TimeWindow(2), minimum_number_of_calls=3)
    fail(breaker)
    fail(breaker)
    clock.advance(2.0)  # second 0 leaves the 2-second window (seconds 1 and 2)
    succeed(breaker)
    succeed(breaker)
    fail(breaker)
    # In the window: S,S,F = 33 %. Counting the old failures would be 3/5 = 60 %.
    assert breaker.state is CLOSED
    assert (breaker.window.total, breaker.window.failed) == (3, 1)


def test_time_window_expires_one_second_at_a_time() -> None:
    """Each whole second that passes drops exactly the bucket that left the window."""
    window = TimeWindow(3)
    window.record(0.5, True, False)
    window.record(1.5, False, True)
    window.record(2.5, True, False)
    seen = []
    for now in (2.9, 3.0, 4.0, 5.0):
        window.refresh(now)
        seen.append((window.total, window.failed, window.slow))
    assert seen == [(3, 2, 1), (2, 1, 1), (1, 1, 0), (0, 0, 0)]


def test_time_window_opens_within_one_second(clock: FakeClock, events: RecordingEvents) -> None:
    """Failures inside the time window open the breaker once the minimum is reached."""
    breaker = make_breaker(clock, events, window=TimeWindow(5), minimum_number_of_calls=3)
    for _ in range(3):
        clock.advance(0.2)
        fail(breaker)
    assert breaker.state is OPEN


def test_slow_call_rate_opens_even_without_failures(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """Successful but slow calls open the breaker when their rate reaches its threshold."""
    breaker = make_breaker(clock, events, slow_call_rate_threshold=50.0)
    succeed(breaker, 2.0)
    succeed(breaker, 0.1)
    succeed(breaker, 0.1)
    succeed(breaker, 1.0)  # exactly the threshold duration is not slow (strictly greater)
    assert breaker.state is CLOSED  # 1 slow of 4 = 25 %
    succeed(breaker, 1.5)
    assert breaker.state is CLOSED  # 2 of 5 = 40 %
    succeed(breaker, 1.5)
    assert breaker.state is OPEN  # 3 of 6 = 50 %
    assert breaker.window.failed == 0


def test_open_breaker_rejects_until_wait_duration_then_half_opens(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """An open breaker fails fast, saying how long is left, then lets probes through."""
    breaker = make_breaker(clock, events)
    open_breaker(breaker)
    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()
    assert info.value.retry_after == pytest.approx(6.0)
    clock.advance(6.0)
    breaker.acquire()
    assert breaker.state is HALF_OPEN


def test_half_open_permits_exactly_n_probes_then_closes_on_success(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """Half-open lets exactly N probes through, rejects the rest, and closes when they succeed."""
    breaker = make_breaker(clock, events)
    open_breaker(breaker)
    clock.advance(10.0)
    probes = [breaker.acquire(), breaker.acquire()]
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()
    assert info.value.half_open
    breaker.on_success(probes[0], 0.01)
    assert breaker.state is HALF_OPEN  # waits for every probe
    breaker.on_success(probes[1], 0.01)
    assert breaker.state is CLOSED
    assert breaker.window.total == 0  # a fresh window after closing


def test_half_open_reopens_when_probes_fail(clock: FakeClock, events: RecordingEvents) -> None:
    """Probe failures at the threshold rate send the breaker back to OPEN for a full wait."""
    breaker = make_breaker(clock, events)
    open_breaker(breaker)
    clock.advance(10.0)
    probes = [breaker.acquire(), breaker.acquire()]
    breaker.on_success(probes[0], 0.01)
    breaker.on_failure(probes[1], 0.01)
    assert breaker.state is OPEN
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()


def test_max_wait_in_half_open_reopens_a_stuck_breaker(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """Probes that never report re-open the breaker after the maximum half-open wait."""
    breaker = make_breaker(clock, events, max_wait_duration_in_half_open_state=5.0)
    open_breaker(breaker)
    clock.advance(10.0)
    breaker.acquire()
    breaker.acquire()
    clock.advance(5.0)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    assert breaker.state is OPEN


def test_zero_max_wait_keeps_half_open_forever(clock: FakeClock, events: RecordingEvents) -> None:
    """With a maximum half-open wait of 0 the breaker waits for its probes indefinitely."""
    breaker = make_breaker(clock, events)
    open_breaker(breaker)
    clock.advance(10.0)
    breaker.acquire()
    breaker.acquire()
    clock.advance(10_000.0)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    assert breaker.state is HALF_OPEN


def test_ignored_errors_and_cancellations_give_the_probe_slot_back(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """An error the predicate ignores, or a cancelled probe, frees its slot for another probe."""
    breaker = make_breaker(clock, events, is_failure=lambda e: not isinstance(e, KeyError))
    open_breaker(breaker)
    clock.advance(10.0)
    first, second = breaker.acquire(), breaker.acquire()
    breaker.on_error(first, 0.01, KeyError("not the upstream's fault"))
    breaker.on_error(second, 0.01, asyncio.CancelledError())
    third, fourth = breaker.acquire(), breaker.acquire()
    breaker.on_success(third, 0.01)
    breaker.on_success(fourth, 0.01)
    assert breaker.state is CLOSED


def test_outcomes_from_an_earlier_state_are_ignored(
    clock: FakeClock, events: RecordingEvents
) -> None:
    """A slow call that started while CLOSED cannot count as a half-open probe."""
    breaker = make_breaker(clock, events)
    stale = breaker.acquire()
    open_breaker(breaker)
    clock.advance(10.0)
    probe = breaker.acquire()
    breaker.on_success(stale, 0.01)
    breaker.on_success(probe, 0.01)
    assert breaker.state is HALF_OPEN  # only 1 of 2 probes reported


def test_default_predicate_ignores_local_decisions() -> None:
    """Guard rejections and the caller's deadline do not count against the upstream."""
    assert default_is_failure(RetryableError("503"))
    assert default_is_failure(ValueError("bad"))
    assert not default_is_failure(BulkheadFullError("crm", reason="full"))
    assert not default_is_failure(CircuitOpenError("crm"))
    assert not default_is_failure(DeadlineExceeded("late"))


async def test_exactly_n_probes_pass_among_100_concurrent_callers(
    make_pipeline: PipelineFactory, clock: FakeClock, events: RecordingEvents
) -> None:
    """With 100 concurrent callers in half-open, exactly 3 reach the upstream; 97 fail fast."""
    pipeline = make_pipeline(
        breaker=BreakerPolicy(
            sliding_window_size=1,
            minimum_number_of_calls=1,
            wait_duration_in_open_state=30.0,
            permitted_number_of_calls_in_half_open_state=3,
        ),
        bulkhead={"max_concurrent": 1000},
    )
    with pytest.raises(ValueError):
        await pipeline.execute(_raise_value_error)
    assert pipeline.breaker is not None
    assert pipeline.breaker.state is OPEN
    clock.advance(30.0)

    gate = asyncio.Event()
    entered = 0

    async def probe() -> str:
        nonlocal entered
        entered += 1
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(pipeline.execute(probe)) for _ in range(100)]
    await settle()
    assert entered == 3
    assert sum(task.done() for task in tasks) == 97
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 97
    assert pipeline.breaker.state is CLOSED
    assert len(events.of("breaker_rejected")) == 97


async def _raise_value_error() -> str:
    raise ValueError("upstream said no")

"""Bulkhead: concurrency limit, bounded FIFO queue, timed waits, no leaked slots."""

from __future__ import annotations

import asyncio
import random

import pytest

from cauce.core.resilience import (
    Bulkhead,
    BulkheadFullError,
    BulkheadPolicy,
    FakeClock,
    RecordingEvents,
)

from .conftest import PipelineFactory
from .helpers import settle


async def test_limits_hold_under_1000_concurrent_callers(
    make_pipeline: PipelineFactory, events: RecordingEvents
) -> None:
    """1,000 callers: 10 run, 50 queue, 940 are rejected, and in-flight never exceeds 10."""
    pipeline = make_pipeline(
        bulkhead=BulkheadPolicy(max_concurrent=10, max_waiting=50, max_wait=60.0)
    )
    gate = asyncio.Event()
    in_flight = peak = 0

    async def call() -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        await asyncio.sleep(0)
        in_flight -= 1
        return "ok"

    tasks = [asyncio.create_task(pipeline.execute(call)) for _ in range(1000)]
    await settle()
    bulkhead = pipeline.bulkhead
    assert bulkhead is not None
    assert (in_flight, bulkhead.in_flight, bulkhead.waiting) == (10, 10, 50)
    assert sum(task.done() for task in tasks) == 940
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 60
    rejected = [r for r in results if isinstance(r, BulkheadFullError)]
    assert len(rejected) == 940
    assert all(r.reason == "full" for r in rejected)
    assert peak == 10
    assert (bulkhead.in_flight, bulkhead.waiting) == (0, 0)
    assert len(events.of("bulkhead_rejected")) == 940


async def test_random_hold_times_never_break_the_limit(clock: FakeClock) -> None:
    """1,000 callers holding slots for random lengths all get served, never more than 7 at once."""
    bulkhead = Bulkhead("crm", max_concurrent=7, max_waiting=1000, clock=clock)
    rng = random.Random(99)
    in_flight = peak = served = 0

    async def caller(hold: int) -> None:
        nonlocal in_flight, peak, served
        await bulkhead.acquire(max_wait=1e9)
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(hold):
            await asyncio.sleep(0)
        in_flight -= 1
        served += 1
        bulkhead.release()

    await asyncio.gather(*(caller(rng.randrange(5)) for _ in range(1000)))
    assert (served, peak, bulkhead.in_flight, bulkhead.waiting) == (1000, 7, 0, 0)


async def test_waiter_times_out_and_leaves_no_trace() -> None:
    """A queued caller gives up after max_wait with reason 'timeout' and frees its queue spot."""
    clock = FakeClock(auto_advance=False)
    bulkhead = Bulkhead("crm", max_concurrent=1, max_waiting=1, clock=clock)
    await bulkhead.acquire(max_wait=1.0)
    waiter = asyncio.create_task(bulkhead.acquire(max_wait=2.0))
    await settle()
    assert bulkhead.waiting == 1
    clock.advance(2.0)
    with pytest.raises(BulkheadFullError) as info:
        await waiter
    assert info.value.reason == "timeout"
    assert bulkhead.waiting == 0
    bulkhead.release()
    assert bulkhead.in_flight == 0


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    """Cancelling a queued caller removes it; the slot goes to the next waiter, then is freed."""
    clock = FakeClock(auto_advance=False)
    bulkhead = Bulkhead("crm", max_concurrent=1, max_waiting=5, clock=clock)
    await bulkhead.acquire(max_wait=1.0)
    cancelled = asyncio.create_task(bulkhead.acquire(max_wait=10.0))
    served = asyncio.create_task(bulkhead.acquire(max_wait=10.0))
    await settle()
    cancelled.cancel()
    await settle()
    assert bulkhead.waiting == 1
    bulkhead.release()
    await served
    assert bulkhead.in_flight == 1
    bulkhead.release()
    assert (bulkhead.in_flight, bulkhead.waiting) == (0, 0)


async def test_slot_handed_to_a_waiter_that_is_cancelled_is_passed_on() -> None:
    """A waiter cancelled right after being handed a slot passes it to the next waiter."""
    clock = FakeClock(auto_advance=False)
    bulkhead = Bulkhead("crm", max_concurrent=1, max_waiting=5, clock=clock)
    await bulkhead.acquire(max_wait=1.0)
    first = asyncio.create_task(bulkhead.acquire(max_wait=10.0))
    second = asyncio.create_task(bulkhead.acquire(max_wait=10.0))
    await settle()
    bulkhead.release()  # hands the slot to `first`...
    first.cancel()  # ...which is cancelled before it could run
    await settle()
    assert first.cancelled()
    assert second.done()
    assert second.exception() is None
    assert bulkhead.in_flight == 1


async def test_newcomer_cannot_overtake_the_queue() -> None:
    """A slot released while callers are queued goes to the oldest waiter, not a newcomer."""
    clock = FakeClock(auto_advance=False)
    bulkhead = Bulkhead("crm", max_concurrent=1, max_waiting=5, clock=clock)
    await bulkhead.acquire(max_wait=1.0)
    queued = asyncio.create_task(bulkhead.acquire(max_wait=10.0))
    await settle()
    bulkhead.release()
    assert not bulkhead.try_acquire()  # the slot already belongs to `queued`
    await queued
    assert bulkhead.in_flight == 1


async def test_zero_max_waiting_rejects_at_once(clock: FakeClock) -> None:
    """Without a queue, a caller that finds every slot taken is rejected immediately."""
    bulkhead = Bulkhead("crm", max_concurrent=1, max_waiting=0, clock=clock)
    await bulkhead.acquire(max_wait=5.0)
    with pytest.raises(BulkheadFullError) as info:
        await bulkhead.acquire(max_wait=5.0)
    assert info.value.reason == "full"
    assert clock.now() == 0.0

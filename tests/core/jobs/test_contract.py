"""The JobQueue contract, run against both engines."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import text

from cauce.core.db import Database, unit_of_work
from cauce.core.errors import Conflict, NotFound
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import (
    AttemptOutcome,
    JobContext,
    JobFilter,
    JobStatus,
    JsonDict,
    PermanentJobError,
    RetryLater,
)
from cauce.core.jobs.registry import TaskRegistry
from tests.core.jobs.conftest import KitFactory, advance
from tests.core.jobs.kits import FakeClock


class Flaky(Exception):
    """A failure worth retrying."""


class MaxJitter(random.Random):
    """A random source whose `uniform` always answers the upper bound."""

    def uniform(self, a: float, b: float) -> float:
        return b


def outcomes(view: object) -> list[str]:
    """The outcomes of a job's attempts, in order."""
    return [a.outcome for a in view.attempts]  # type: ignore[attr-defined]


async def test_rollback_leaves_no_job_and_commit_runs_once(
    make_kit: KitFactory, db: Database
) -> None:
    """A job deferred in a rolled-back transaction never exists; a committed one runs once."""
    runs: list[JsonDict] = []
    registry = TaskRegistry()

    @registry.task("record")
    async def record(ctx: JobContext, payload: JsonDict) -> None:
        runs.append(payload)

    kit = await make_kit(registry)

    async def defer_then_fail() -> None:
        async with unit_of_work(db.sessionmaker) as session:
            await kit.queue.defer(session, "record", {"n": 1})
            raise RuntimeError("the request failed after deferring")

    with pytest.raises(RuntimeError):
        await defer_then_fail()
    assert await kit.queue.list(JobFilter()) == []

    async with unit_of_work(db.sessionmaker) as session:
        result = await kit.queue.defer(session, "record", {"n": 2})
    jobs = await kit.queue.list(JobFilter())
    assert [j.id for j in jobs] == [result.job_id]
    assert jobs[0].status == JobStatus.TODO
    await kit.drain()
    assert runs == [{"n": 2}]
    view = await kit.queue.get(result.job_id)
    assert view is not None
    assert view.status == JobStatus.SUCCEEDED
    assert outcomes(view) == ["succeeded"]


async def test_handler_writes_commit_with_the_job(make_kit: KitFactory, db: Database) -> None:
    """A handler's session is its own transaction: a failing attempt leaves no writes."""
    registry = TaskRegistry()
    attempts = {"n": 0}

    @registry.task("write", retry=RetryPolicy(max_attempts=2, base_seconds=0, cap_seconds=0))
    async def write(ctx: JobContext, payload: JsonDict) -> None:
        attempts["n"] += 1
        await ctx.session.execute(
            text(
                "INSERT INTO job_attempts (job_id, task, queue, attempt, started_at, outcome)"
                " VALUES (-1, 'marker', 'm', :n, CURRENT_TIMESTAMP, 'succeeded')"
            ),
            {"n": attempts["n"]},
        )
        if attempts["n"] == 1:
            raise Flaky("first attempt fails after writing")

    kit = await make_kit(registry)
    async with unit_of_work(db.sessionmaker) as session:
        await kit.queue.defer(session, "write", {})
    await kit.drain()
    async with db.sessionmaker() as session:
        markers = (
            (await session.execute(text("SELECT attempt FROM job_attempts WHERE job_id = -1")))
            .scalars()
            .all()
        )
    assert markers == [2]


async def test_backoff_then_failed_then_replay_with_fresh_budget(
    make_kit: KitFactory, db: Database, clock: FakeClock
) -> None:
    """Failures are retried with capped full-jitter backoff, land in `failed` with every
    attempt recorded, and a replay runs again with a fresh budget."""
    # Jitter at its upper bound: on PostgreSQL the clock is real, and a retry due within
    # a second or two could run inside the same drain on a busy, shared machine.
    policy = RetryPolicy(max_attempts=3, base_seconds=2.0, cap_seconds=3.0)
    registry = TaskRegistry()
    state = {"fail": True, "runs": 0}

    @registry.task("flaky", retry=policy)
    async def flaky(ctx: JobContext, payload: JsonDict) -> None:
        state["runs"] += 1
        if state["fail"]:
            raise Flaky(f"upstream said no to ana@example.es (run {state['runs']})")

    kit = await make_kit(registry, rng=MaxJitter())
    async with unit_of_work(db.sessionmaker) as session:
        job_id = (await kit.queue.defer(session, "flaky", {"id": 7})).job_id

    for attempt in range(1, 4):
        before = clock.current
        await kit.drain()
        view = await kit.queue.get(job_id)
        assert view is not None
        assert len([o for o in outcomes(view) if o != "running"]) == attempt
        if attempt < 3:
            assert view.status == JobStatus.TODO
            assert view.scheduled_at is not None
            finished = view.attempts[-1].finished_at
            assert finished is not None
            assert finished >= before
            # From the failed attempt's end, not from before the drain: on PostgreSQL the
            # real clock also runs while the worker starts, which a busy machine can
            # stretch past any allowance.
            wait = (view.scheduled_at - finished).total_seconds()
            assert wait == pytest.approx(policy.ceiling(attempt), abs=0.5)
            await advance(kit, clock, policy.cap_seconds + 0.05)
    view = await kit.queue.get(job_id)
    assert view is not None
    assert view.status == JobStatus.FAILED
    assert outcomes(view) == ["retry", "retry", "failed"]
    assert [a.attempt for a in view.attempts] == [1, 2, 3]
    last = view.attempts[-1]
    assert last.error_class is not None
    assert last.error_class.endswith("Flaky")
    assert last.error_message is not None
    assert "ana@example.es" not in last.error_message
    assert all(a.worker_id for a in view.attempts)
    assert all(a.finished_at is not None for a in view.attempts)

    state["fail"] = False
    replayed = await kit.queue.retry(job_id)
    assert replayed.status == JobStatus.TODO
    await kit.drain()
    view = await kit.queue.get(job_id)
    assert view is not None
    assert view.status == JobStatus.SUCCEEDED
    assert outcomes(view) == ["retry", "retry", "failed", "replayed", "succeeded"]
    assert view.attempts[-1].attempt == 1
    with pytest.raises(Conflict):
        await kit.queue.retry(job_id)
    with pytest.raises(NotFound):
        await kit.queue.retry(987654)


async def test_permanent_error_fails_at_once(make_kit: KitFactory, db: Database) -> None:
    """A PermanentJobError or a non-retryable type skips the remaining budget."""
    registry = TaskRegistry()

    @registry.task("bad", retry=RetryPolicy(max_attempts=5, fail_on=(KeyError,)))
    async def bad(ctx: JobContext, payload: JsonDict) -> None:
        if payload["kind"] == "permanent":
            raise PermanentJobError("the CRM refused the record")
        raise KeyError("missing")

    kit = await make_kit(registry)
    async with unit_of_work(db.sessionmaker) as session:
        a = (await kit.queue.defer(session, "bad", {"kind": "permanent"})).job_id
        b = (await kit.queue.defer(session, "bad", {"kind": "key"})).job_id
    await kit.drain()
    for job_id in (a, b):
        view = await kit.queue.get(job_id)
        assert view is not None
        assert view.status == JobStatus.FAILED
        assert outcomes(view) == ["failed"]


async def test_retry_later_does_not_use_the_budget(
    make_kit: KitFactory, db: Database, clock: FakeClock
) -> None:
    """A handler that asks to run later (Retry-After) keeps its whole budget."""
    registry = TaskRegistry()
    calls = {"n": 0}

    @registry.task("polite", retry=RetryPolicy(max_attempts=1))
    async def polite(ctx: JobContext, payload: JsonDict) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise RetryLater(clock() + timedelta(seconds=0.2), "Retry-After: 0.2")

    kit = await make_kit(registry)
    async with unit_of_work(db.sessionmaker) as session:
        job_id = (await kit.queue.defer(session, "polite", {})).job_id
    for _ in range(4):
        await kit.drain()
        await advance(kit, clock, 0.3)
    view = await kit.queue.get(job_id)
    assert view is not None
    assert view.status == JobStatus.SUCCEEDED
    assert outcomes(view) == ["postponed", "postponed", "postponed", "succeeded"]


async def test_lock_key_serialises_jobs(make_kit: KitFactory, db: Database) -> None:
    """Jobs sharing a lock never overlap; jobs with other locks still run in parallel."""
    registry = TaskRegistry()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}
    overall = {"now": 0, "peak": 0}
    together = asyncio.Event()

    @registry.task("locked")
    async def locked(ctx: JobContext, payload: JsonDict) -> None:
        key = payload["account"]
        running[key] = running.get(key, 0) + 1
        overall["now"] += 1
        peak[key] = max(peak.get(key, 0), running[key])
        overall["peak"] = max(overall["peak"], overall["now"])
        if overall["now"] == 2:
            together.set()
        # Hold on until two jobs ran at once, however late a busy machine claims the
        # second (a 50 ms job alone could end first); an engine that never ran two jobs
        # at once keeps the peak at 1 and fails below once this bound has passed.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await together.wait()
        await asyncio.sleep(0.05)
        running[key] -= 1
        overall["now"] -= 1

    kit = await make_kit(registry, concurrency=4)
    async with unit_of_work(db.sessionmaker) as session:
        for i in range(8):
            account = "a" if i % 2 == 0 else "b"
            await kit.queue.defer(session, "locked", {"account": account}, lock=f"crm:{account}")
    await kit.start()
    async with asyncio.timeout(90):
        while True:
            if len(await kit.queue.list(JobFilter(status=JobStatus.SUCCEEDED), limit=100)) == 8:
                break
            await asyncio.sleep(0.05)
    assert peak == {"a": 1, "b": 1}
    assert overall["peak"] == 2


async def test_dedupe_key_keeps_one_waiting_job(make_kit: KitFactory, db: Database) -> None:
    """At most one waiting job per dedupe key; once it ran, the key is free again."""
    registry = TaskRegistry()
    runs: list[int] = []

    @registry.task("sync")
    async def sync(ctx: JobContext, payload: JsonDict) -> None:
        runs.append(ctx.job_id)

    kit = await make_kit(registry)
    async with unit_of_work(db.sessionmaker) as session:
        first = await kit.queue.defer(session, "sync", {}, dedupe_key="crm:acme")
        second = await kit.queue.defer(session, "sync", {}, dedupe_key="crm:acme")
        other = await kit.queue.defer(session, "sync", {}, dedupe_key="crm:other")
    assert not first.deduplicated
    assert second.deduplicated
    assert second.job_id == first.job_id
    assert other.job_id != first.job_id
    async with unit_of_work(db.sessionmaker) as session:
        again = await kit.queue.defer(session, "sync", {}, dedupe_key="crm:acme")
    assert again.job_id == first.job_id
    await kit.drain()
    assert sorted(runs) == sorted([first.job_id, other.job_id])
    async with unit_of_work(db.sessionmaker) as session:
        later = await kit.queue.defer(session, "sync", {}, dedupe_key="crm:acme")
    assert not later.deduplicated
    assert later.job_id != first.job_id


async def test_cancel_and_filters(make_kit: KitFactory, db: Database) -> None:
    """A cancelled job never runs; lists filter by status, task and queue with a cursor."""
    registry = TaskRegistry()
    runs: list[int] = []

    @registry.task("a")
    async def a(ctx: JobContext, payload: JsonDict) -> None:
        runs.append(ctx.job_id)

    @registry.task("b", queue="slow")
    async def b(ctx: JobContext, payload: JsonDict) -> None:
        runs.append(ctx.job_id)

    kit = await make_kit(registry)
    async with unit_of_work(db.sessionmaker) as session:
        ids = [(await kit.queue.defer(session, "a", {"i": i})).job_id for i in range(5)]
        slow = (await kit.queue.defer(session, "b", {})).job_id
    cancelled = await kit.queue.cancel(ids[0])
    assert cancelled.status == JobStatus.CANCELLED
    assert [j.id for j in await kit.queue.list(JobFilter(queue="slow"))] == [slow]
    assert len(await kit.queue.list(JobFilter(task="a"))) == 5
    page1 = await kit.queue.list(JobFilter(task="a"), limit=2)
    page2 = await kit.queue.list(JobFilter(task="a"), after_id=page1[-1].id, limit=2)
    page3 = await kit.queue.list(JobFilter(task="a"), after_id=page2[-1].id, limit=2)
    assert [j.id for j in page1 + page2 + page3] == sorted(ids, reverse=True)
    await kit.drain()
    assert ids[0] not in runs
    assert sorted(runs) == sorted([*ids[1:], slow])
    with pytest.raises(Conflict):
        await kit.queue.cancel(ids[1])
    with pytest.raises(NotFound):
        await kit.queue.cancel(987654)
    stats = await kit.queue.stats()
    assert stats.depth.get("succeeded") == 5
    assert stats.depth.get("cancelled") == 1


async def test_bulk_replay_by_error_class(make_kit: KitFactory, db: Database) -> None:
    """Bulk replay picks failed jobs by task and error class only."""
    registry = TaskRegistry()
    heal = {"on": False}

    @registry.task("x", retry=RetryPolicy(max_attempts=1))
    async def x(ctx: JobContext, payload: JsonDict) -> None:
        if not heal["on"]:
            raise (Flaky if payload["flaky"] else ValueError)("boom")

    kit = await make_kit(registry)
    async with unit_of_work(db.sessionmaker) as session:
        for flaky in (True, True, False):
            await kit.queue.defer(session, "x", {"flaky": flaky})
    await kit.drain()
    assert len(await kit.queue.list(JobFilter(status=JobStatus.FAILED))) == 3
    flaky_class = f"{Flaky.__module__}.{Flaky.__qualname__}"
    heal["on"] = True
    count = await kit.queue.retry_many(JobFilter(task="x", error_class=flaky_class))
    assert count == 2
    await kit.drain()
    assert len(await kit.queue.list(JobFilter(status=JobStatus.SUCCEEDED))) == 2
    still = await kit.queue.list(JobFilter(status=JobStatus.FAILED))
    assert len(still) == 1
    assert still[0].payload == {"flaky": False}


async def test_trace_context_follows_the_job(make_kit: KitFactory, db: Database) -> None:
    """The handler runs inside the trace of the code that deferred the job."""
    registry = TaskRegistry()
    seen: list[int] = []

    @registry.task("traced")
    async def traced(ctx: JobContext, payload: JsonDict) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    kit = await make_kit(registry)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("POST /v1/leads") as span:
        async with unit_of_work(db.sessionmaker) as session:
            job_id = (await kit.queue.defer(session, "traced", {})).job_id
        expected = span.get_span_context().trace_id
    await kit.drain()
    assert seen == [expected]
    view = await kit.queue.get(job_id)
    assert view is not None
    assert view.attempts[0].trace_id == format(expected, "032x")


async def test_graceful_stop_finishes_or_releases(make_kit: KitFactory, db: Database) -> None:
    """Stopping lets a short job finish and releases a long one to `todo`, never `doing`."""
    registry = TaskRegistry()
    stopping = asyncio.Event()

    @registry.task("sleepy")
    async def sleepy(ctx: JobContext, payload: JsonDict) -> None:
        if payload["short"]:
            await stopping.wait()  # ends once the stop has begun: inside the grace period
        else:
            await asyncio.sleep(30)

    # Both jobs are running when the stop begins, however slowly a busy machine claims
    # them (a job of a fixed 0.1 s could end before, or never be seen running with the
    # other); the grace period leaves the short one time to record its end.
    kit = await make_kit(registry, graceful_seconds=2.0, concurrency=2)
    async with unit_of_work(db.sessionmaker) as session:
        short = (await kit.queue.defer(session, "sleepy", {"short": True})).job_id
        long = (await kit.queue.defer(session, "sleepy", {"short": False})).job_id
    await kit.start()
    async with asyncio.timeout(60):
        while True:
            if len(await kit.queue.list(JobFilter(status=JobStatus.DOING))) == 2:
                break
            await asyncio.sleep(0.02)
    stop = asyncio.create_task(kit.stop())
    await asyncio.sleep(0)  # the stop has begun
    stopping.set()
    await stop
    short_view, long_view = await kit.queue.get(short), await kit.queue.get(long)
    assert short_view is not None
    assert long_view is not None
    assert short_view.status == JobStatus.SUCCEEDED
    assert long_view.status == JobStatus.TODO
    assert outcomes(long_view) == [AttemptOutcome.LOST.value]

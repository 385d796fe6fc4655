"""The procrastinate worker: runs our tasks through the shared `AttemptRunner`.

One procrastinate task is registered per `TaskRegistry` task. Its function runs one
attempt with the runner (which records it and decides what happens next from our
attempts table) and hands the decision back to procrastinate through a retry strategy:
succeeded -> return; retry / postponed -> back to `todo` at the decided time; failed ->
`failed`. procrastinate's own attempt counter plays no part.

procrastinate does not recover the jobs of a killed worker by itself, so the worker also
runs a sweeper: every `sweep_seconds` it moves the `doing` jobs of workers whose heartbeat
is older than `stalled_seconds` back to `todo` and marks their attempts `lost`. Recovery
after a crash therefore takes about stalled + heartbeat + sweep seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import procrastinate
import structlog
from procrastinate import jobs as pjobs
from procrastinate.app import WorkerOptions
from sqlalchemy import and_, exists, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cauce.core.db.base import utcnow
from cauce.core.db.uow import unit_of_work
from cauce.core.jobs.attempts import mark_lost
from cauce.core.jobs.ports import AttemptOutcome
from cauce.core.jobs.procrastinate_engine import JOBS, ProcrastinateJobQueue, notify_waiting
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner, ClaimedJob

log = structlog.get_logger("cauce.jobs")
# Pause before starting procrastinate's worker again after it stopped by itself (it does
# when one of its side tasks fails, e.g. the database went away).
RESTART_SECONDS = 1.0
# Pause before re-running a job whose attempt could not even be recorded.
RELEASE_SECONDS = 1.0
# How often `run_until_idle` looks at the queue.
IDLE_CHECK_SECONDS = 0.05


class _Reschedule(Exception):
    """The runner decided on another attempt (retry or postponement) at `retry_at`."""

    def __init__(self, retry_at: datetime | None) -> None:
        super().__init__(f"run again at {retry_at}")
        self.retry_at = retry_at


class _Fail(Exception):
    """The runner decided the job has failed for good (the error is in job_attempts)."""


class _Release(Exception):
    """The attempt could not run at all (e.g. the database hiccuped): release the job."""


class _DecisionStrategy(procrastinate.BaseRetryStrategy):
    """Turns the runner's decision (carried by our signals) into procrastinate's."""

    def get_retry_decision(
        self, *, exception: BaseException, job: pjobs.Job
    ) -> procrastinate.RetryDecision | None:
        if isinstance(exception, _Fail):
            return None
        if isinstance(exception, _Reschedule):
            return procrastinate.RetryDecision(retry_at=exception.retry_at or utcnow())
        if isinstance(exception, _Release):
            return procrastinate.RetryDecision(
                retry_at=utcnow() + timedelta(seconds=RELEASE_SECONDS)
            )
        # Cancelled: the worker is shutting down and gave up waiting. Back to todo now.
        return procrastinate.RetryDecision(retry_at=utcnow())


def _periodic_id(cron: str, payload: dict[str, Any], taken: set[str]) -> str:
    """A stable id per schedule, so a redeploy does not fire a period twice."""
    base = hashlib.sha256(f"{cron}|{json.dumps(payload, sort_keys=True)}".encode()).hexdigest()
    pid, n = base[:16], 1
    while pid in taken:
        n += 1
        pid = f"{base[:16]}-{n}"
    taken.add(pid)
    return pid


def _claimable(queues: Sequence[str] | None) -> Any:
    """The condition procrastinate's fetch uses: due `todo` jobs whose lock is free.

    A lock is taken by a `doing` job, or by an earlier (or higher-priority) `todo` job with
    the same lock: procrastinate runs the jobs of one lock in order.
    """
    other = JOBS.alias("other")
    blocked = exists().where(
        JOBS.c.lock.is_not(None),
        other.c.lock == JOBS.c.lock,
        or_(
            other.c.status == "doing",
            and_(
                other.c.status == "todo",
                or_(
                    other.c.priority > JOBS.c.priority,
                    and_(other.c.priority == JOBS.c.priority, other.c.id < JOBS.c.id),
                ),
            ),
        ),
    )
    cond = and_(
        JOBS.c.status == "todo",
        or_(JOBS.c.scheduled_at.is_(None), JOBS.c.scheduled_at <= func.now()),
        ~blocked,
    )
    if queues:
        cond = and_(cond, JOBS.c.queue_name.in_(list(queues)))
    return cond


async def queue_idle(
    sessionmaker: async_sessionmaker[AsyncSession], queues: Sequence[str] | None = None
) -> bool:
    """Nothing is running and nothing can be claimed now (in `queues`, or anywhere)."""
    doing = exists().where(JOBS.c.status == "doing")
    if queues:
        doing = doing.where(JOBS.c.queue_name.in_(list(queues)))
    waiting = exists().where(_claimable(queues))
    async with sessionmaker() as session:
        return bool(await session.scalar(select(~doing & ~waiting)))


class ProcrastinateWorker:
    """Runs jobs of `queues` (all by default), up to `concurrency` at once per process."""

    def __init__(
        self,
        queue: ProcrastinateJobQueue,
        runner_factory: Callable[[str], AttemptRunner],
        registry: TaskRegistry,
        *,
        concurrency: int = 4,
        queues: Sequence[str] | None = None,
        graceful_seconds: float = 30.0,
        poll_seconds: float = 1.0,
        heartbeat_seconds: float = 2.0,
        stalled_seconds: float = 10.0,
        sweep_seconds: float = 5.0,
        pool_size: int | None = None,
    ) -> None:
        if heartbeat_seconds >= stalled_seconds:
            raise ValueError("heartbeat_seconds must be below stalled_seconds")
        self._queue = queue
        self._runner_factory = runner_factory
        self._runners: dict[int | None, AttemptRunner] = {}
        self._registry = registry
        self._concurrency = concurrency
        self._queues = list(queues) if queues else None
        self._graceful = graceful_seconds
        self._poll = poll_seconds
        self._heartbeat = heartbeat_seconds
        self._stalled = stalled_seconds
        self._sweep_every = sweep_seconds
        self.host_id = f"{socket.gethostname()}:{os.getpid()}"
        # procrastinate's own queries (claim, finish, heartbeat) use this pool; handlers
        # use the application's SQLAlchemy pool.
        size = pool_size or min(concurrency, 8) + 2
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=queue.conninfo, min_size=1, max_size=size
            )
        )
        self._strategy = _DecisionStrategy()
        self._register()
        self._main: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def _register(self) -> None:
        tasks: dict[str, Any] = {}
        for spec in self._registry.tasks.values():
            tasks[spec.name] = self.app.task(
                name=spec.name, queue=spec.queue, pass_context=True, retry=self._strategy
            )(self._run_job)
        taken: set[str] = set()
        for sched in self._registry.schedules:
            if sched.task not in tasks:
                raise ValueError(f"schedule for unknown task {sched.task!r}")
            # The schedule fires the real task: procrastinate's periodic deferrer inserts
            # it once per period across all workers (a row per period in
            # procrastinate_periodic_defers) and adds a `timestamp` argument we ignore.
            self.app.periodic(
                cron=sched.cron,
                periodic_id=_periodic_id(sched.cron, sched.payload, taken),
                task_kwargs={"payload": dict(sched.payload), "context": {}},
            )(tasks[sched.task])

    def _runner_for(self, procrastinate_worker_id: int | None) -> AttemptRunner:
        runner = self._runners.get(procrastinate_worker_id)
        if runner is None:
            worker_id = f"{self.host_id}:procrastinate-{procrastinate_worker_id}"
            runner = self._runners[procrastinate_worker_id] = self._runner_factory(worker_id[-64:])
        return runner

    async def _run_job(self, pctx: procrastinate.JobContext, /, **args: Any) -> None:
        """The function behind every registered task: one attempt, then the decision."""
        job = pctx.job
        assert job.id is not None
        claimed = ClaimedJob(
            id=job.id,
            task=job.task_name,
            queue=job.queue,
            payload=args.get("payload") or {},
            context=args.get("context") or {},
        )
        try:
            decision = await self._runner_for(job.worker_id).run(claimed)
        except asyncio.CancelledError:
            # Stopping: the runner marks its attempt lost; this also covers a cancel that
            # landed while the attempt row was being written. procrastinate then releases
            # the job to todo through the strategy.
            await asyncio.shield(self._lose(job.id))
            raise
        except Exception as exc:
            log.exception("jobs.attempt_error", job_id=job.id)
            await self._lose(job.id)
            raise _Release(str(exc)) from exc
        if decision.outcome == AttemptOutcome.SUCCEEDED:
            return
        if decision.outcome in (AttemptOutcome.RETRY, AttemptOutcome.POSTPONED):
            raise _Reschedule(decision.retry_at)
        raise _Fail(f"job {job.id} failed for good; see its attempts")

    async def _lose(self, job_id: int) -> None:
        try:
            async with unit_of_work(self._queue.sessionmaker) as session:
                await mark_lost(session, [job_id], utcnow())
        except Exception:
            # Left `running`; the job itself is still released by the strategy.
            log.exception("jobs.mark_lost_error", job_id=job_id)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool, recover jobs of dead workers, start claiming and sweeping."""
        if self._main is not None:
            return
        await self.app.open_async()
        self._main = asyncio.create_task(self._run(), name="cauce-procrastinate-worker")
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="cauce-stalled-sweeper")

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish for `graceful_seconds`, release the rest.

        procrastinate cancels the jobs still running after the grace period; the runner
        marks their attempts `lost` and the retry strategy moves them back to `todo`.
        """
        if self._main is None:
            return
        main, sweeper = self._main, self._sweeper
        self._main = self._sweeper = None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        # Cancelling run_worker_async is procrastinate's way to stop a worker it did not
        # install signal handlers for: it stops fetching and shuts down gracefully. It is
        # awaited to the end (never cancelled twice: that would abandon its shutdown).
        main.cancel()
        await asyncio.wait({main})
        await self.app.close_async()

    async def _run(self) -> None:
        options: WorkerOptions = {
            "name": f"cauce@{self.host_id}",
            "concurrency": self._concurrency,
            "wait": True,
            "fetch_job_polling_interval": self._poll,
            # We never ask procrastinate to abort a running job: poll for that rarely.
            "abort_job_polling_interval": max(self._poll, 5.0),
            "shutdown_graceful_timeout": self._graceful,
            "listen_notify": True,
            "install_signal_handlers": False,
            "update_heartbeat_interval": self._heartbeat,
            "stalled_worker_timeout": self._stalled,
        }
        if self._queues:
            options["queues"] = self._queues
        while True:
            try:
                await self.app.run_worker_async(**options)
                log.warning("jobs.worker_stopped_by_itself")
            except Exception:
                # Restart rather than leave the process up without a worker.
                log.exception("jobs.worker_error")
            await asyncio.sleep(RESTART_SECONDS)

    async def run_until_idle(self, limit_seconds: float = 30.0) -> None:
        """For tests and `cauce worker --once`: run until nothing is due or running."""
        started_here = self._main is None
        await self.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_seconds
        try:
            while not await queue_idle(self._queue.sessionmaker, self._queues):
                if loop.time() > deadline:
                    raise TimeoutError("jobs still running or due after the timeout")
                await asyncio.sleep(IDLE_CHECK_SECONDS)
        finally:
            if started_here:
                await self.stop()

    # -- crash recovery -------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            try:
                recovered = await self.sweep()
                if recovered:
                    log.warning("jobs.recovered_stalled", count=recovered)
            except Exception:
                log.exception("jobs.sweep_error")  # and try again next round
            await asyncio.sleep(self._sweep_every)

    async def sweep(self) -> int:
        """Release the jobs of workers without a recent heartbeat; returns how many."""
        manager = self.app.job_manager
        stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=self._stalled)
        recovered = 0
        for job in stalled:
            assert job.id is not None
            if await self._recover(job.id, job.worker_id):
                recovered += 1
        await manager.prune_stalled_workers(self._stalled)
        return recovered

    async def _recover(self, job_id: int, worker_id: int | None) -> bool:
        async with unit_of_work(self._queue.sessionmaker) as session:
            # Only if it is still the stalled worker's job: it may have finished since, or
            # another sweeper may have released it (the row lock orders sweepers).
            row = (
                await session.execute(
                    select(JOBS.c.queue_name)
                    .where(
                        JOBS.c.id == job_id,
                        JOBS.c.status == "doing",
                        JOBS.c.worker_id.is_not_distinct_from(worker_id),
                    )
                    .with_for_update(skip_locked=True)
                )
            ).one_or_none()
            if row is None:
                return False
            await session.execute(
                text("SELECT procrastinate_retry_job_v2(:id, NULL, NULL, NULL, NULL)"),
                {"id": job_id},
            )
            await mark_lost(session, [job_id], utcnow())
            await notify_waiting(session, [row.queue_name])
        return True

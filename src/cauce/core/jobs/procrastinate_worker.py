"""The procrastinate worker: runs our tasks through the shared `AttemptRunner`.

One procrastinate task is registered per `TaskRegistry` task. Its function runs one
attempt with the runner (which decides what happens next) and hands the decision back to
procrastinate through a retry strategy: succeeded -> return; retry / postponed -> back to
`todo` at the decided time; failed -> `failed`.

The attempts log is written by triggers on procrastinate's job table (migration 0006):
the claim opens the attempt and leaves its number in procrastinate's `attempts` column,
and the job's next state change closes it. A successful job therefore costs no statement
beyond procrastinate's own; a failure's outcome and error are written here, before the
state change.

procrastinate does not recover the jobs of a killed worker by itself, so the worker also
runs a sweeper (procrastinate_recovery.py): every `sweep_seconds` it moves the `doing`
jobs of workers whose heartbeat is older than `stalled_seconds` back to `todo` and marks
their attempts `lost`. Recovery after a crash therefore takes at most about stalled +
sweep seconds; after the database went away and came back, the jobs this process was
running go back within one sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import procrastinate
import structlog
from opentelemetry.instrumentation.utils import suppress_instrumentation
from procrastinate import worker as pworker
from procrastinate.app import WorkerOptions
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.core.db.base import utcnow
from cauce.core.db.idle_check import IdleCheckedPool
from cauce.core.db.uow import unit_of_work
from cauce.core.jobs.attempts import close_running_attempt, mark_lost
from cauce.core.jobs.loop_errors import UNAVAILABLE_LOG_SECONDS, log_round_error
from cauce.core.jobs.ports import AttemptOutcome
from cauce.core.jobs.procrastinate_decisions import (
    DecisionStrategy,
    Fail,
    Release,
    Reschedule,
    not_a_decision,
)
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue
from cauce.core.jobs.procrastinate_logs import unavailable_cause, watch
from cauce.core.jobs.procrastinate_recovery import queue_idle, sweep_stalled
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner, ClaimedJob
from cauce.core.observability.logging import LogThrottle

log = structlog.get_logger("cauce.jobs")
# Pause before starting procrastinate's worker again after it stopped by itself (it does
# when one of its side tasks fails, e.g. the database went away).
RESTART_SECONDS = 1.0
# How often `run_until_idle` looks at the queue.
IDLE_CHECK_SECONDS = 0.05
# How often `stop` repeats its stop request while waiting for the worker to finish.
STOP_POLL_SECONDS = 0.2
# Beyond the grace period, how long `stop` waits for procrastinate's own shutdown.
SHUTDOWN_MARGIN_SECONDS = 15.0
CANCEL_ATTEMPTS = 5
CANCEL_WAIT_SECONDS = 1.0
# The procrastinate task that runs jobs naming a task this worker does not know.
UNKNOWN_TASK = "cauce.unknown_task"
# PostgreSQL keeps 63 bytes of `application_name`.
APP_NAME_CHARS = 40


class _TasksWithFallback(dict[str, Any]):
    """procrastinate's task table, answering `fallback` for a name nobody registered.

    procrastinate fails a job of an unknown task before any code of ours runs, leaving no
    attempt row. With the fallback the job goes through the runner like any other, and
    the runner records a failed attempt naming the missing task (`UnknownTask`).
    """

    def __init__(self, tasks: dict[str, Any], fallback: Any) -> None:
        super().__init__(tasks)
        self._fallback = fallback

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name, self._fallback)

    def __missing__(self, name: str) -> Any:
        return self._fallback


# A job going back to `todo` gives up its dedupe key (queueing lock). Conditionally
# ("only if another job waits with it") is not enough: procrastinate moves the job back
# in a later transaction, and a job deferred in between would make that move violate the
# one-waiting-job index, leaving the job `doing` for good. So at most two jobs with one
# key may wait; both do the same work, and their lock runs them one at a time.
_YIELD_QUEUEING_LOCK = text(
    "UPDATE procrastinate_jobs SET queueing_lock = NULL"
    " WHERE id = :id AND queueing_lock IS NOT NULL"
)


async def _cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it, cancelling again if a cancellation got lost."""
    for _ in range(CANCEL_ATTEMPTS):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)
        if done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("jobs.task_failed", task=task.get_name(), error_class=type(exc).__name__)
            return
    log.error("jobs.task_ignored_cancel", task=task.get_name())


def _consume_outcome(task: asyncio.Task[None]) -> None:
    """Retrieve an abandoned task's outcome, so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


def _periodic_id(cron: str, payload: dict[str, Any], taken: set[str]) -> str:
    """A stable id per schedule, so a redeploy does not fire a period twice."""
    base = hashlib.sha256(f"{cron}|{json.dumps(payload, sort_keys=True)}".encode()).hexdigest()
    pid, n = base[:16], 1
    while pid in taken:
        n += 1
        pid = f"{base[:16]}-{n}"
    taken.add(pid)
    return pid


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
        # The claim trigger names the attempt's worker after the claiming connection.
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=queue.conninfo,
                min_size=1,
                max_size=size,
                kwargs={"application_name": self.host_id[-APP_NAME_CHARS:]},
                # No liveness round trip per claim and finish (idle_check.py); the pool's
                # and the listener's cancelled connects close their sockets at once
                # (psycopg_connect.py): PostgreSQL's shutdown waits for a half-made one.
                pool_factory=IdleCheckedPool,
            )
        )
        self._strategy = DecisionStrategy()
        logging.getLogger("procrastinate.worker").addFilter(not_a_decision)  # idempotent
        watch()  # procrastinate's and its pool's lines while the database is away
        self._register()
        self._main: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._pworker: pworker.Worker | None = None
        self._stopping = asyncio.Event()
        # Our procrastinate workers that ended without unregistering (the database went
        # away): their `doing` jobs would wait `stalled_seconds` for the heartbeat to age.
        # None of them runs any more, so the sweeper unregisters them as soon as it can,
        # which hands their jobs to its next sweep.
        self._ended: set[int] = set()
        self._unavailable_log = LogThrottle(UNAVAILABLE_LOG_SECONDS)

    def _register(self) -> None:
        tasks: dict[str, Any] = {}
        for spec in self._registry.tasks.values():
            tasks[spec.name] = self.app.task(
                name=spec.name, queue=spec.queue, pass_context=True, retry=self._strategy
            )(self._run_job)
        fallback = self.app.task(name=UNKNOWN_TASK, pass_context=True, retry=self._strategy)(
            self._run_job
        )
        self.app.tasks = _TasksWithFallback(self.app.tasks, fallback)
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
            # The claim trigger stored the attempts counted before this one there.
            attempt=job.attempts + 1,
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
            async with unit_of_work(self._queue.sessionmaker) as session:
                await self._yield_dedupe_key(session, job.id)
            raise Release(str(exc)) from exc
        if decision.outcome == AttemptOutcome.SUCCEEDED:
            return  # procrastinate's finish closes the attempt (trigger)
        again = decision.outcome in (AttemptOutcome.RETRY, AttemptOutcome.POSTPONED)
        async with unit_of_work(self._queue.sessionmaker) as session:
            await close_running_attempt(session, job.id, decision)
            if again:
                await self._yield_dedupe_key(session, job.id)
        if again:
            raise Reschedule(decision.retry_at)
        raise Fail(f"job {job.id} failed for good; see its attempts")

    @staticmethod
    async def _yield_dedupe_key(session: AsyncSession, job_id: int) -> None:
        """Going back to `todo`, give up the dedupe key (queueing lock): see
        `_YIELD_QUEUEING_LOCK`."""
        await session.execute(_YIELD_QUEUEING_LOCK, {"id": job_id})

    async def _lose(self, job_id: int) -> None:
        try:
            async with unit_of_work(self._queue.sessionmaker) as session:
                await mark_lost(session, [job_id], utcnow())
        except Exception:
            # Left `running`; the job itself is still released by the strategy.
            log.exception("jobs.mark_lost_error", job_id=job_id)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """The worker is started and its loop is alive."""
        return self._main is not None and not self._main.done()

    async def start(self) -> None:
        """Open the pool, recover jobs of dead workers, start claiming and sweeping."""
        if self._main is not None:
            return
        self._stopping = asyncio.Event()
        await self.app.open_async()
        self._main = asyncio.create_task(self._run(), name="cauce-procrastinate-worker")
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="cauce-stalled-sweeper")

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish for `graceful_seconds`, release the rest.

        procrastinate cancels the jobs still running after the grace period; the runner
        marks their attempts `lost` and the retry strategy moves them back to `todo`.

        The worker and the sweeper are stopped by request (an event), not only by
        cancellation: a cancellation landing while psycopg's pool hands out a connection
        can be swallowed (procrastinate#1591), and waiting for it would hang forever.
        """
        if self._main is None:
            return
        main, sweeper = self._main, self._sweeper
        self._main = self._sweeper = None
        self._stopping.set()
        if self._pworker is not None:
            self._pworker.stop()  # type: ignore[no-untyped-call]  # claim nothing more now
        if sweeper is not None:
            await _cancel_until_done(sweeper)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._graceful + SHUTDOWN_MARGIN_SECONDS
        while not main.done():
            # Asked again each round: procrastinate clears a stop request that lands
            # before its worker has started.
            if self._pworker is not None:
                self._pworker.stop()  # type: ignore[no-untyped-call]
            if loop.time() > deadline:
                # Its running jobs stay `doing`; other workers' sweepers release them.
                log.error("jobs.worker_shutdown_stuck", waited_seconds=self._graceful)
                main.add_done_callback(_consume_outcome)
                main.cancel()
                break
            await asyncio.wait({main}, timeout=STOP_POLL_SECONDS)
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
        while not self._stopping.is_set():
            # Built here rather than by App.run_worker_async, to keep a handle for stop().
            self._pworker = pworker.Worker(app=self.app, **options)
            watch(self._pworker.logger)  # its own child logger (procrastinate_logs.WATCHED)
            try:
                await self._pworker.run()  # type: ignore[no-untyped-call]
                if self._stopping.is_set():
                    return
                log.warning("jobs.worker_stopped_by_itself")
            except Exception as exc:  # noqa: BLE001 - logged (_log_error); restarted
                # Restart rather than leave the process up without a worker.
                self._log_error("jobs.worker_error", exc)
            if self._pworker.worker_id is not None:
                # Its jobs ended (procrastinate waits for them), its unregistering failed.
                self._ended.add(self._pworker.worker_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESTART_SECONDS):
                    await self._stopping.wait()

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
        while not self._stopping.is_set():
            try:
                # Periodic bookkeeping stays out of traces (one-query traces every round).
                with suppress_instrumentation():
                    recovered = await self.sweep()
                if recovered:
                    log.warning("jobs.recovered_stalled", count=recovered)
            except Exception as exc:  # noqa: BLE001 - logged (_log_error)
                self._log_error("jobs.sweep_error", exc)  # and try again next round
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sweep_every):
                    await self._stopping.wait()

    async def sweep(self) -> int:
        """Release the jobs of workers without a recent heartbeat, and of this process's
        ended ones (`_ended`); returns how many."""
        for worker_id in sorted(self._ended):
            await self.app.job_manager.unregister_worker(worker_id)  # its jobs: no worker
            self._ended.discard(worker_id)
        return await sweep_stalled(self.app, self._queue.sessionmaker, self._stalled)

    def _log_error(self, event: str, exc: Exception) -> None:
        """`loop_errors.log_round_error`: a database not answering is one compact warning
        every few seconds; anything else, `event` with its traceback."""
        log_round_error(self._unavailable_log, event, unavailable_cause(exc), event)

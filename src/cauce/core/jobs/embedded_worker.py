"""The embedded engine's dispatcher, inside `cauce serve`: `EmbeddedWorker` claims due
jobs from the `EmbeddedJobQueue` (`embedded`) and runs up to `concurrency` at once,
defers the runs of periodic schedules, and on start and stop releases the jobs left
`doing` (orphaned by a crash, or still running when the grace period ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from croniter import croniter
from opentelemetry.instrumentation.utils import suppress_instrumentation

from cauce.core.db.base import utcnow
from cauce.core.db.unavailable import database_unavailable
from cauce.core.jobs.loop_errors import UNAVAILABLE_LOG_SECONDS, log_round_error
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner, ClaimedJob
from cauce.core.observability.logging import LogThrottle

if TYPE_CHECKING:
    from cauce.core.jobs.embedded import EmbeddedJobQueue

log = structlog.get_logger("cauce.jobs")

# The dispatcher's own bookkeeping (polling, claiming, moving jobs) is left out of traces:
# traced, a poll every half second would fill the trace store with one-query traces. A
# job's attempt is traced by the runner, in the trace of the code that deferred it.
_untraced = suppress_instrumentation


class EmbeddedWorker:
    """The in-process dispatcher: claims due jobs and runs up to `concurrency` at once."""

    def __init__(
        self,
        queue: EmbeddedJobQueue,
        runner_factory: Callable[[str], AttemptRunner],
        registry: TaskRegistry,
        *,
        concurrency: int = 4,
        queues: Sequence[str] | None = None,
        poll_seconds: float = 0.5,
        graceful_seconds: float = 30.0,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:embedded"
        self._queue = queue
        self._runner = runner_factory(self.worker_id)
        self._registry = registry
        self._concurrency = concurrency
        self._queues = list(queues) if queues else None
        self._poll = poll_seconds
        self._graceful = graceful_seconds
        self._now = now
        self._running: dict[int, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._unavailable_log = LogThrottle(UNAVAILABLE_LOG_SECONDS)

    @property
    def running(self) -> bool:
        """The dispatcher is started and its loop is alive."""
        return self._main is not None and not self._main.done()

    async def start(self) -> None:
        """Release jobs orphaned by a crash, then start dispatching."""
        with _untraced():
            released = await self._queue.release()
        if released:
            log.warning("jobs.released_orphans", count=released)
        self._main = asyncio.create_task(self._loop(), name="cauce-embedded-dispatcher")
        if self._registry.schedules:
            self._scheduler = asyncio.create_task(self._schedule_loop(), name="cauce-scheduler")

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish for `graceful_seconds`, release the rest."""
        self._stopping.set()
        self._queue.wakeup.set()
        for task in (self._main, self._scheduler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._running:
            _, pending = await asyncio.wait(list(self._running.values()), timeout=self._graceful)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        with _untraced():
            await self._queue.release()

    async def run_until_idle(self, limit_seconds: float = 30.0) -> None:
        """For tests and `cauce worker --once`: dispatch until nothing is due or running."""
        deadline = asyncio.get_running_loop().time() + limit_seconds
        while asyncio.get_running_loop().time() < deadline:
            claimed = await self._fill()
            if not claimed and not self._running:
                return
            if self._running:
                await asyncio.wait(
                    list(self._running.values()), return_when=asyncio.FIRST_COMPLETED
                )
        raise TimeoutError("jobs still running or due after the timeout")

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._fill()
            except Exception as exc:  # noqa: BLE001 - logged; the loop polls again
                self._log_error("jobs.dispatcher_error", exc)
            self._queue.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._queue.wakeup.wait()

    def _log_error(self, event: str, exc: Exception, **fields: object) -> None:
        """`loop_errors.log_round_error`: a database not answering is one compact warning
        every few seconds; anything else, `event` with its traceback."""
        cause = exc if database_unavailable(exc) else None
        log_round_error(self._unavailable_log, event, cause, type(exc).__name__, **fields)

    async def _fill(self) -> int:
        claimed = 0
        while (free := self._concurrency - len(self._running)) > 0 and not self._stopping.is_set():
            with _untraced():
                jobs = await self._queue.claim(self.worker_id, self._queues, free)
            for job in jobs:
                task = asyncio.create_task(self._execute(job), name=f"cauce-job-{job.id}")
                self._running[job.id] = task
            claimed += len(jobs)
            if len(jobs) < free:
                break
        return claimed

    async def _execute(self, job: ClaimedJob) -> None:
        try:
            decision = await self._runner.run(job)
            with _untraced():
                await self._queue.apply(job, decision)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("jobs.execute_error", job_id=job.id)
            with _untraced():
                await self._queue.release([job.id])
        finally:
            self._running.pop(job.id, None)
            self._queue.wakeup.set()

    async def _schedule_loop(self) -> None:
        iters = {s.task: croniter(s.cron, self._now()) for s in self._registry.schedules}
        due = {s.task: iters[s.task].get_next(datetime) for s in self._registry.schedules}
        while not self._stopping.is_set():
            now = self._now()
            for sched in self._registry.schedules:
                if due[sched.task] <= now:
                    try:
                        await self._queue.defer_periodic(sched.task, sched.payload, due[sched.task])
                    except Exception as exc:  # noqa: BLE001 - logged; tried again next round
                        self._log_error("jobs.schedule_error", exc, task=sched.task)
                        continue
                    due[sched.task] = iters[sched.task].get_next(datetime)
            wait = min((d - now).total_seconds() for d in due.values())
            await asyncio.sleep(min(max(wait, 0.05), 1.0))

"""CSV imports whose job stopped, cancelling imports, how many run at once, and uploads
nobody needs any more.

The upload holds personal data, so it lives no longer than its import needs it: it is
deleted as the import ends (`succeeded`, `failed` or `cancelled`), and `SWEEP_TASK`, run
with the job purge (`jobs.purge_cron`), deletes the ones left behind: a crash between the
end and the deletion, an upload whose request died before its import was recorded, and
the upload of an import whose job is gone (cancelled or failed, then purged: nothing can
run it again).
An import whose job failed or was cancelled but is still kept keeps its file, as an
operator may replay that job and the import then resumes where it stopped.

Such an import stays `queued` or `running` on its row (a replay of its job resumes it
from there), but its status reads the job (`job_id`, kept on the row) and shows it
`failed`, saying why and how to resume it: `stopped_detail`. That is worked out at read
time, so the import of a replayed job shows `queued` or `running` again at once.

`cancel_import` asks an import to stop (see `imports`): a queued one, or one whose job is
not running (waiting for a retry, failed, cancelled, gone), is ended `cancelled` at once;
a running one is marked `cancelling`, and its job ends it at the next chunk boundary.

Imports run at most `leads.import_concurrency` at once per process (`ImportSlots`): an
import job finding them all taken gives its worker slot back by postponing itself a few
seconds (`RetryLater`, which uses up no attempt), so the other queues keep their slots.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import select, update

from cauce.core.db import unit_of_work
from cauce.core.db.base import utcnow
from cauce.core.jobs.policy import DEFAULT_POLICY, RetryPolicy
from cauce.core.jobs.ports import (
    REPLAYABLE,
    AttemptOutcome,
    JobContext,
    JobFilter,
    JobStatus,
    JobView,
    JsonDict,
    RetryLater,
)
from cauce.core.jobs.registry import TaskRegistry, TaskSpec
from cauce.core.jobs.runner import count_budget
from cauce.leads.imports import (
    CANCEL_PENDING,
    CANCELLED,
    CANCELLING,
    FINAL_STATES,
    IMPORT_QUEUE,
    IMPORT_TASK,
    RUNNING,
    ImportMustWait,
    discard_upload,
    get_import,
    mark_cancelled,
    run_import,
)
from cauce.leads.models import LeadImport
from cauce.leads.service import LeadsRuntime

log = structlog.get_logger("cauce.leads.imports")

SWEEP_TASK = "leads.imports_sweep"
# An upload untouched for this long is old enough for the sweep: one still being written
# (or whose import is being recorded) is newer.
SWEEP_AFTER = timedelta(hours=1)
# The last error a stopped import's `detail` quotes: its first line, this long at most.
STOPPED_ERROR_CHARS = 200
# An import job finding no import slot free runs again this many seconds later, half as
# long again after each wait up to the most (give or take a fifth: the imports waiting do
# not all come back at once). Each wait is an attempt row (`postponed`): a fixed 5 s made
# 17,000 of them a day for one import waiting.
SLOT_WAIT_SECONDS = 5.0
SLOT_WAIT_MAX_SECONDS = 30.0
# How often an import job may wait for a slot before that counts as a failed attempt:
# about a day of waiting.
SLOT_WAITS = 3_000


async def import_job(rt: LeadsRuntime, record: LeadImport) -> JobView | None:
    """The import's job; None when its id is unknown (an import recorded before imports
    kept it) or the job is gone (a purged job's id may be reused by another job on
    SQLite: the job must be this import's)."""
    if record.job_id is None:
        return None
    job = await rt.queue.get(record.job_id)
    if job is None or job.task != IMPORT_TASK or job.payload.get("import_id") != record.id:
        return None
    return job


async def stopped_detail(rt: LeadsRuntime, record: LeadImport) -> str | None:
    """Why an import left `queued`, `running` or `cancelling` stands still: its job failed
    for good or was cancelled. The sentence says what happened (the last error, if any)
    and how to resume it; None while the import can still move on its own, and for an
    import whose job is unknown (recorded before imports kept it) or gone (the sweep then
    ends it)."""
    if record.status in FINAL_STATES or record.job_id is None:
        return None
    job = await import_job(rt, record)
    if job is None or job.status not in REPLAYABLE:
        return None
    if record.status == CANCELLING:
        # Asked to stop, and its job stopped before it could: cancelled all the same (a
        # replay of the job, or the sweep, ends the row so).
        return (
            f"cancelled on request: its job stopped before ending the import; the "
            f"{record.rows_processed} rows read stay imported"
        )
    resume = f"`cauce jobs retry {job.id}` resumes it where it stopped"
    if job.status == JobStatus.CANCELLED:
        return f"stopped: its job was cancelled; {resume}"
    attempts = count_budget(a.outcome for a in job.attempts)[0]
    plural = "" if attempts == 1 else "s"
    error = _last_error(job)
    said = f" (last error: {error})" if error else ""
    return f"stopped: its job failed after {attempts} attempt{plural}{said}; {resume}"


def _last_error(job: JobView) -> str | None:
    """The error of the job's last attempt that recorded one (since its last replay), as
    `Class: first line of the message`, cut short: the stored message is already
    redacted, and its first line leaves out what a driver appends (the SQL, a link)."""
    for attempt in reversed(job.attempts):
        if attempt.outcome == AttemptOutcome.REPLAYED:
            return None
        if attempt.error_class is None and not attempt.error_message:
            continue
        name = (attempt.error_class or "").rsplit(".", 1)[-1]
        lines = (attempt.error_message or "").strip().splitlines()
        text = ": ".join(part for part in (name, lines[0].strip() if lines else "") if part)
        if len(text) > STOPPED_ERROR_CHARS:
            text = text[: STOPPED_ERROR_CHARS - 1].rstrip() + "…"
        return text
    return None


async def cancel_import(rt: LeadsRuntime, import_id: int, actor: str | None) -> LeadImport:
    """Ask the import to stop, and return it as it is then: `cancelled` (at once when it
    has not started, or when no job is running it), or `cancelling` (its running job ends
    it at the next chunk boundary). Asking again answers the same; an import that ended
    on its own (`succeeded`, `failed`) is returned as it is (the API's `ImportFinished`);
    `ImportNotFound` for an unknown id."""
    async with unit_of_work(rt.sessionmaker, short=True) as session:
        # Locked: the job's start and this never both win (`imports._start`).
        record = await get_import(session, import_id, lock=True)
        if record.status == "queued":
            mark_cancelled(record)  # its job, when it comes, finds it over and ends
        elif record.status == RUNNING:
            record.status = CANCELLING  # the request, kept for a crash to find
            record.error = CANCEL_PENDING
    if record.status == CANCELLING:
        log.info("leads.import.cancel_requested", import_id=import_id, by=actor)
        record = await _cancel_unless_running(rt, record)
    if record.status == CANCELLED:
        await discard_upload(Path(record.path))
    return record


async def _cancel_unless_running(rt: LeadsRuntime, record: LeadImport) -> LeadImport:
    """End the `cancelling` import now if no job is running it (its job waits for a
    retry, failed, was cancelled or is gone): nothing would see the request otherwise,
    or not soon. One whose job is unknown (recorded before imports kept it) waits for a
    job to end it, or for the sweep."""
    if record.job_id is None:
        return record
    job = await import_job(rt, record)
    if job is not None and job.status == JobStatus.DOING:
        return record
    # A job claimed since it was read finds the import `cancelling` (or `cancelled`)
    # as it starts, and ends it (or just ends): either way no row is read.
    async with unit_of_work(rt.sessionmaker, short=True) as session:
        record = await get_import(session, record.id, lock=True)
        if record.status == CANCELLING:
            mark_cancelled(record)
    return record


class ImportSlots:
    """How many imports this process runs at once (`leads.import_concurrency`): one
    object per task registry, which is one per process (API with the embedded worker, or
    `cauce worker`). An import takes a slot while it reads rows."""

    def __init__(self, limit: int, rng: random.Random | None = None) -> None:
        self.limit = limit
        self.taken = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    def take(self) -> bool:
        """Take a slot if one is free (no await in between: asyncio runs it whole)."""
        if self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        """Free a slot taken with `take`."""
        self.taken -= 1

    def wait(self, attempt: int = 1) -> RetryLater:
        """The postponement of an import job that found no slot free, at its `attempt`."""
        base = min(SLOT_WAIT_MAX_SECONDS, SLOT_WAIT_SECONDS * 1.5 ** max(0, attempt - 1))
        seconds = base * self._rng.uniform(0.8, 1.2)
        plural = "" if self.taken == 1 else "s"
        return RetryLater(
            utcnow() + timedelta(seconds=seconds),
            f"waiting for an import slot: this process already runs {self.taken} "
            f"import{plural} (leads.import_concurrency = {self.limit})",
        )


def _old_uploads(directory: Path, cutoff: float) -> list[Path]:
    """The uploads in `directory` last written before `cutoff` (a time.time())."""
    if not directory.is_dir():
        return []
    old = []
    for path in directory.glob("*.csv"):
        try:
            if path.stat().st_mtime < cutoff:
                old.append(path)
        except FileNotFoundError:
            continue  # deleted meanwhile (its import just ended)
    return old


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def _jobs_left(rt: LeadsRuntime) -> set[int]:
    """The imports that still have a job, in any state (a failed or cancelled one may be
    replayed); purged jobs are gone."""
    ids: set[int] = set()
    after: int | None = None
    while True:
        jobs = await rt.queue.list(JobFilter(task=IMPORT_TASK), after_id=after, limit=500)
        ids.update(int(job.payload.get("import_id", 0)) for job in jobs)
        if len(jobs) < 500:
            return ids
        after = jobs[-1].id


async def sweep_uploads(rt: LeadsRuntime, *, older_than: timedelta = SWEEP_AFTER) -> int:
    """Delete the uploads no import can use any more and last written longer than
    `older_than` ago; returns how many.

    An upload is kept while its import is queued, running or cancelling and has a job
    (any state); an import left so whose job is gone is marked failed (`cancelled`, if it
    was asked to stop). See the module docstring.
    """
    cutoff = time.time() - older_than.total_seconds()
    old = await asyncio.to_thread(_old_uploads, rt.settings.data_dir / "imports", cutoff)
    if not old:
        return 0
    async with rt.sessionmaker() as session:
        # Only the file's name: a relative data dir is stored relative to where it ran.
        live = {
            Path(path).name: import_id
            for import_id, path in (
                await session.execute(
                    select(LeadImport.id, LeadImport.path).where(
                        LeadImport.status.not_in(FINAL_STATES)
                    )
                )
            ).all()
        }
    abandoned: list[int] = []
    if any(path.name in live for path in old):
        with_jobs = await _jobs_left(rt)
        abandoned = [live[p.name] for p in old if p.name in live and live[p.name] not in with_jobs]
    if abandoned:
        async with unit_of_work(rt.sessionmaker) as session:
            # One asked to stop is ended as asked; any other failed, saying why.
            await session.execute(
                update(LeadImport)
                .where(LeadImport.id.in_(abandoned), LeadImport.status == CANCELLING)
                .values(
                    status=CANCELLED,
                    error="cancelled on request; its job was gone, and its upload was deleted",
                    finished_at=utcnow(),
                )
            )
            await session.execute(
                update(LeadImport)
                .where(LeadImport.id.in_(abandoned), LeadImport.status.not_in(FINAL_STATES))
                .values(
                    status="failed",
                    error="the import's job is gone (cancelled or failed, then purged); "
                    "its upload was deleted",
                    finished_at=utcnow(),
                )
            )
    gone = [p for p in old if p.name not in live or live[p.name] in abandoned]
    await asyncio.to_thread(_unlink_all, gone)
    if gone:
        log.info("leads.import.uploads_swept", deleted=len(gone), imports_failed=len(abandoned))
    return len(gone)


def register_import_task(registry: TaskRegistry, rt_of: Any) -> None:
    """Register the import handler and the upload sweep; `rt_of()` returns the runtime
    (already built when this is called: its settings say when the sweep runs and how
    many imports run at once)."""
    slots = ImportSlots(rt_of().settings.leads.import_concurrency)

    async def handler(ctx: JobContext, payload: JsonDict) -> None:
        took = slots.take()
        try:
            await run_import(rt_of(), int(payload["import_id"]), may_start=took)
        except ImportMustWait:
            raise slots.wait(ctx.attempt) from None
        finally:
            if took:
                slots.give_back()

    async def sweep(ctx: JobContext, payload: JsonDict) -> None:
        hours = float(payload.get("older_than_hours", SWEEP_AFTER / timedelta(hours=1)))
        await sweep_uploads(rt_of(), older_than=timedelta(hours=hours))

    # Waiting for a slot is no failure: room for a day of waits.
    policy = replace(DEFAULT_POLICY, max_postponements=SLOT_WAITS)
    registry.task(IMPORT_TASK, queue=IMPORT_QUEUE, retry=policy)(handler)
    # One attempt: a sweep that failed is simply done again by the next period.
    registry.add(TaskSpec(SWEEP_TASK, sweep, policy=RetryPolicy(max_attempts=1)))
    cron = rt_of().settings.jobs.purge_cron
    if cron is not None:
        # With a payload of its own: a schedule's identity is its cron and payload, and
        # the job purge runs on the same cron.
        registry.schedule(cron, SWEEP_TASK, {"older_than_hours": SWEEP_AFTER / timedelta(hours=1)})

"""`cauce jobs ...`: listing, showing, replaying, cancelling, probing and purging jobs,
straight on the database (any engine).

Mounted by `cauce.cli`, which passes in its helpers (`cli_support`).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cauce.cli_support import Failer, Runner, SettingsOf, ensure_schema
from cauce.core.errors import NotFound
from cauce.core.jobs.ports import JobStatus

if TYPE_CHECKING:
    from cauce.core.config import Settings
    from cauce.core.db import Database
    from cauce.core.jobs.ports import JobFilter, JobQueue, JobView, PurgeResult

_DURATION = re.compile(r"^(\d{1,9})\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Job ids are 64-bit: a larger one is no job (PostgreSQL said "bigint out of range",
# SQLite raised an OverflowError traceback), refused as the usage error it is.
MAX_ID = 2**63 - 1
_SINCE_HELP = "Deferred since: a duration ago (30m, 2h, 7d) or a date/time (UTC unless offset)"


def parse_since(text: str, now: datetime) -> datetime:
    """`30m`, `2h`, `7d`... before `now`, or an ISO 8601 date/time (UTC without an offset)."""
    value = text.strip()
    try:
        if match := _DURATION.match(value.lower()):
            return now - timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])
        when = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise typer.BadParameter(
            "use a duration like 30m, 2h or 7d, or a date like 2026-11-28T09:00",
            param_hint="--since",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def served_queues() -> list[str]:
    """The queues every context's tasks run on, the only ones `cauce worker --queues`
    accepts (`worker.unknown_queues`, from the tasks a worker registers, which need its
    resources built). Each queue's name is its context's own constant."""
    from cauce.core.jobs.registry import DEFAULT_QUEUE
    from cauce.leads.delivery import CRM_QUEUE
    from cauce.leads.imports import IMPORT_QUEUE

    return sorted({DEFAULT_QUEUE, CRM_QUEUE, IMPORT_QUEUE})


def _not_served(settings: Settings, queue: str | None) -> str | None:
    """A warning when the workers of these settings (`jobs.queues`) do not serve the
    probe's queue: it would wait for a worker started with `--queues` naming it. Not a
    refusal: such workers are a deployment's own choice, which the settings cannot see."""
    from cauce.core.config import setting_name
    from cauce.core.jobs.registry import DEFAULT_QUEUE

    served = settings.jobs.queues
    wanted = queue or DEFAULT_QUEUE
    if not served or wanted in served:
        return None
    return (
        f"warning: {setting_name(('jobs', 'queues'))} is {', '.join(served)}: workers started "
        f"with these settings do not serve queue {wanted!r}; the probe runs only if one "
        f"started with `cauce worker --queues {wanted}` does"
    )


@asynccontextmanager
async def _job_queue(settings: Settings) -> AsyncIterator[tuple[Database, JobQueue]]:
    """The database and its job queue, with core's tasks (contexts' handlers are not
    needed to inspect, replay or cancel)."""
    from cauce.core.db import create_database
    from cauce.core.jobs.builtin import register_core_tasks
    from cauce.core.jobs.factory import build_job_queue
    from cauce.core.jobs.metrics import JobMetrics
    from cauce.core.jobs.registry import TaskRegistry

    db = create_database(settings)
    try:
        await ensure_schema(settings, db)
        registry = TaskRegistry()
        register_core_tasks(registry)
        yield db, build_job_queue(db, registry, JobMetrics())
    finally:
        await db.dispose()


def _row(table: Table, *cells: object) -> None:
    # Text, not markup: values come from the database and may hold brackets.
    table.add_row(*(Text(str(c)) for c in cells))


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _filters(
    status: JobStatus | None,
    task: str | None,
    queue: str | None,
    since: str | None,
    error_class: str | None,
) -> JobFilter:
    from cauce.core.jobs.ports import JobFilter

    return JobFilter(
        status=status,
        task=task,
        queue=queue,
        created_after=parse_since(since, datetime.now(UTC)) if since else None,
        error_class=error_class,
    )


StatusOption = Annotated[JobStatus | None, typer.Option(help="todo, doing, succeeded...")]
TaskOption = Annotated[str | None, typer.Option(help="Task name, e.g. jobs.probe")]
QueueOption = Annotated[str | None, typer.Option(help="Queue name")]
SinceOption = Annotated[str | None, typer.Option(help=_SINCE_HELP)]
ErrorOption = Annotated[
    str | None, typer.Option(help="Final failure's exception class (module.Name)")
]


def build_jobs_app(
    settings_of: SettingsOf, run: Runner, out: Console, err: Console, refuse: Failer
) -> typer.Typer:
    """`cauce jobs ...` (`refuse(message, 2)` ends a command with a usage error)."""
    jobs_app = typer.Typer(
        help="Inspect, replay, cancel and purge background jobs (straight on the database).",
        no_args_is_help=True,
    )

    @jobs_app.command("list")
    def jobs_list(
        status: StatusOption = None,
        task: TaskOption = None,
        queue: QueueOption = None,
        since: SinceOption = None,
        error_class: ErrorOption = None,
        limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows to show")] = 50,
        before: Annotated[
            int | None, typer.Option(min=1, max=MAX_ID, help="Only ids below this (paging)")
        ] = None,
    ) -> None:
        """List jobs, newest first."""
        flt = _filters(status, task, queue, since, error_class)
        settings = settings_of()

        async def go() -> list[JobView]:
            async with _job_queue(settings) as (_, jobs):
                return await jobs.list(flt, after_id=before, limit=limit + 1)

        views = run(go())
        if not views:
            out.print("no jobs match")
            return
        table = Table("id", "status", "task", "queue", "priority", "created (UTC)", "scheduled")
        for v in views[:limit]:
            _row(
                table,
                v.id,
                v.status.value,
                v.task,
                v.queue,
                v.priority,
                _when(v.created_at),
                _when(v.scheduled_at),
            )
        out.print(table)
        if len(views) > limit:
            out.print(f"more jobs match: add --before {views[limit - 1].id} for the next page")

    @jobs_app.command("show")
    def jobs_show(
        job_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The job's id")],
    ) -> None:
        """Show a job, its payload and every attempt."""
        settings = settings_of()

        async def go() -> JobView:
            async with _job_queue(settings) as (_, jobs):
                view = await jobs.get(job_id)
            if view is None:
                raise NotFound(f"no job {job_id}")
            return view

        v = run(go())
        grid = Table.grid(padding=(0, 2))
        for name, value in (
            ("job", str(v.id)),
            ("task", v.task),
            ("queue", v.queue),
            ("status", v.status.value),
            ("priority", str(v.priority)),
            ("lock", v.lock or "-"),
            ("dedupe key", v.dedupe_key or "-"),
            ("created (UTC)", _when(v.created_at)),
            ("scheduled (UTC)", _when(v.scheduled_at)),
            ("payload", json.dumps(v.payload, ensure_ascii=False, sort_keys=True)),
        ):
            grid.add_row(Text(name, style="bold"), Text(value))
        out.print(grid)
        if not v.attempts:
            out.print("attempts: none yet")
            return
        attempts = Table("#", "outcome", "started (UTC)", "seconds", "worker", "error")
        for a in v.attempts:
            seconds = (a.finished_at - a.started_at).total_seconds() if a.finished_at else None
            _row(
                attempts,
                a.attempt,
                a.outcome,
                _when(a.started_at),
                f"{seconds:.3f}" if seconds is not None else "-",
                a.worker_id or "-",
                a.error_class.rsplit(".", 1)[-1] if a.error_class else "-",
            )
        out.print(attempts)
        # Errors in full below the table, unwrapped, so they can be copied and searched.
        for a in v.attempts:
            if a.error_class:
                line = f"attempt {a.attempt} ({a.outcome}): {a.error_class}: {a.error_message}"
                out.print(Text(line), soft_wrap=True)

    @jobs_app.command("retry")
    def jobs_retry(
        job_id: Annotated[
            int | None, typer.Argument(min=1, max=MAX_ID, help="One job; or use filters")
        ] = None,
        status: Annotated[
            JobStatus, typer.Option(help="Bulk: replay failed (default) or cancelled jobs")
        ] = JobStatus.FAILED,
        task: TaskOption = None,
        queue: QueueOption = None,
        since: SinceOption = None,
        error_class: ErrorOption = None,
        all_jobs: Annotated[
            bool, typer.Option("--all", help="Bulk: replay every job of --status, no filter")
        ] = False,
    ) -> None:
        """Replay a failed or cancelled job with a fresh attempt budget, or many by filter."""
        flt = _filters(status, task, queue, since, error_class)
        narrowed = any(x is not None for x in (task, queue, since, error_class))
        if job_id is not None and (narrowed or all_jobs):
            raise refuse("give a job id or filters, not both", 2)
        if job_id is None and not (narrowed or all_jobs):
            raise refuse(
                "give a job id, or filters (--task, --queue, --since, --error-class) or --all", 2
            )
        if job_id is None and status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise refuse("only failed or cancelled jobs can be replayed", 2)
        settings = settings_of()

        async def go() -> int | JobView:
            async with _job_queue(settings) as (_, jobs):
                if job_id is not None:
                    return await jobs.retry(job_id)
                return await jobs.retry_many(flt)

        result = run(go())
        if isinstance(result, int):
            out.print(f"replayed {result} job{'s' if result != 1 else ''}")
        else:
            out.print(f"job {result.id} is {result.status.value} again, with a fresh budget")

    @jobs_app.command("cancel")
    def jobs_cancel(
        job_id: Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The job's id")],
    ) -> None:
        """Cancel a job that has not started yet."""
        settings = settings_of()

        async def go() -> JobView:
            async with _job_queue(settings) as (_, jobs):
                return await jobs.cancel(job_id)

        out.print(f"job {run(go()).id} is cancelled")

    @jobs_app.command("probe")
    def jobs_probe(
        sleep: Annotated[float, typer.Option(min=0, max=300, help="Seconds the probe waits")] = 0,
        fail: Annotated[
            bool, typer.Option(help="Fail at once (exercises the dead letters)")
        ] = False,
        queue: QueueOption = None,
    ) -> None:
        """Defer a `jobs.probe` job: `cauce jobs show ID` then tells whether workers ran it."""
        from cauce.core.db import unit_of_work
        from cauce.core.jobs.builtin import PROBE_TASK

        known = served_queues()
        if queue is not None and queue not in known:
            # As `cauce worker --queues` (`worker.unknown_queues`): no worker can be asked
            # for such a queue, so the probe measured nothing and the user waited.
            raise refuse(
                f"--queue: no task runs on queue {queue!r}; the queues are {', '.join(known)}", 2
            )
        settings = settings_of()
        unserved = _not_served(settings, queue)
        if unserved is not None:
            err.print(unserved, highlight=False)
        payload: dict[str, Any] = {"sleep_seconds": sleep, "fail": fail}

        async def go() -> int:
            async with _job_queue(settings) as (db, jobs):
                async with unit_of_work(db.sessionmaker) as session:
                    deferred = await jobs.defer(session, PROBE_TASK, payload, queue=queue)
                return int(deferred.job_id)

        job = run(go())
        err.print(f"deferred probe job {job}; see it with `cauce jobs show {job}`", highlight=False)
        sys.stdout.write(f"{job}\n")

    @jobs_app.command("purge")
    def jobs_purge(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing")
        ] = False,
    ) -> None:
        """Delete finished jobs past their retention, with their attempts (what the periodic
        `core.jobs_purge` does; CAUCE_JOBS__RETENTION_SUCCEEDED_DAYS, ..._FAILED_DAYS)."""
        from cauce.core.jobs.retention import purge_finished_jobs, retention_from

        settings = settings_of()

        async def go() -> PurgeResult:
            async with _job_queue(settings) as (_, jobs):
                return await purge_finished_jobs(
                    jobs, retention_from(settings.jobs), dry_run=dry_run
                )

        result = run(go())
        jobs = settings.jobs
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result.deleted.items()))
        out.print(
            f"{'would delete' if dry_run else 'deleted'} {result.total} "
            f"job{'s' if result.total != 1 else ''} ({counts}) and {result.attempts} "
            f"attempt{'s' if result.attempts != 1 else ''}: succeeded more than "
            f"{jobs.retention_succeeded_days:g} days ago, failed or cancelled more than "
            f"{jobs.retention_failed_days:g} days ago",
            highlight=False,
        )

    return jobs_app

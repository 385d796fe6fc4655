"""The `cauce` command line."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import DBAPIError

from cauce.cli_leads import build_leads_app, demo_command
from cauce.core.config import Settings, load_settings
from cauce.core.errors import CauceError, ConfigError, NotFound
from cauce.core.jobs.ports import JobFilter, JobQueue, JobStatus, JobView, PurgeResult
from cauce.sandbox.cli import sandbox_app

if TYPE_CHECKING:
    from cauce.core.db import Database

T = TypeVar("T")

app = typer.Typer(
    name="cauce",
    help="Cauce: a self-hosted integration hub for leads, documents, tickets and backups.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
apikey_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
jobs_app = typer.Typer(
    help="Inspect, replay, cancel and purge background jobs (straight on the database).",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(apikey_app, name="apikey")
app.add_typer(jobs_app, name="jobs")

out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> Settings:
    """Load settings and configure logging (to stderr: stdout is for results)."""
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    _setup_logging(settings)
    return settings


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except CauceError as exc:
        raise _fail(exc.detail, code=1) from None
    except DBAPIError as exc:
        raise _fail(f"cannot use the database: {exc.orig or exc}", code=1) from None
    except OSError as exc:
        if exc.filename is not None:
            # A file or directory (the data dir, the model store...), not the database
            # connection: name it rather than blame the database.
            where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
            raise _fail(f"cannot use {where}: {exc.strerror or exc}", code=1) from None
        raise _fail(f"cannot use the database: {exc}", code=1) from None


def _setup_logging(settings: Settings) -> None:
    from cauce.core.observability.logging import configure_logging

    configure_logging(settings)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind [CAUCE_HTTP__HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [CAUCE_HTTP__PORT]")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Processes serving the API, PostgreSQL only [CAUCE_HTTP__WORKERS]"
        ),
    ] = None,
) -> None:
    """Run the HTTP API (on SQLite this also applies pending migrations).

    SIGTERM or Ctrl-C stops accepting connections and lets in-flight requests finish
    (up to CAUCE_HTTP__GRACEFUL_SHUTDOWN_SECONDS). On PostgreSQL, `--workers N` runs N
    processes on one port (one a core, say); SQLite has one writer: one process.
    """
    import uvicorn

    from cauce.app import create_app

    settings = _settings()
    processes = workers or settings.http.workers
    if processes > 1 and settings.is_sqlite:
        raise _fail(
            "SQLite takes one writer at a time: run one `cauce serve` process "
            "(several need PostgreSQL, CAUCE_DATABASE_URL)"
        )
    # Check the schema and the active scoring model before uvicorn starts, so a refusal
    # is one clear line, not a lifespan traceback.
    _run(_preflight(settings))
    options: dict[str, Any] = {
        "host": host or settings.http.host,
        "port": port or settings.http.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": int(settings.http.graceful_shutdown_seconds),
        "lifespan": "on",
    }
    if processes > 1:
        _serve_processes(processes, options)
        return
    config = uvicorn.Config(create_app(settings), **options)
    server = uvicorn.Server(config)
    try:
        server.run()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if not server.started:
        raise _fail("the server did not start; see the log above", code=1)


def _serve_processes(processes: int, options: dict[str, Any]) -> None:
    """`processes` uvicorn processes on one socket, each building the app from the
    environment (`app_from_environment`); uvicorn's supervisor restarts one that dies
    and passes SIGTERM on to all of them."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "cauce.app:app_from_environment", factory=True, workers=processes, **options
    )
    try:
        socket = config.bind_socket()
    except SystemExit:  # uvicorn has logged why (the port is taken, say)
        raise _fail(f"cannot listen on {options['host']}:{options['port']}", code=1) from None
    Multiprocess(config, sockets=[socket]).run()


async def _preflight(settings: Settings) -> None:
    from cauce.core.db import create_database
    from cauce.core.db.migrate import prepare_schema

    db = create_database(settings)
    try:
        await prepare_schema(db, settings)
    finally:
        await db.dispose()
    await asyncio.to_thread(_check_scoring_model, settings)


def _check_scoring_model(settings: Settings) -> None:
    """Load the active learned model as start-up will: a damaged, missing or altered one
    is refused here (`ModelArtefactInvalid`, saying how to recover), never loaded."""
    from cauce.leads.scoring import MODEL_STORE_PATH

    pointer = settings.data_dir / MODEL_STORE_PATH / "active"
    if not pointer.exists():
        return  # the points model scores: no need to import scikit-learn
    from cauce.leads.learned import load_active

    load_active(settings.data_dir)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs run at once [CAUCE_JOBS__CONCURRENCY]")
    ] = None,
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues to serve [CAUCE_JOBS__QUEUES]")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve Prometheus metrics on this port (off)"),
    ] = None,
) -> None:
    """Run jobs (PostgreSQL; start as many processes, on as many machines, as needed).

    SIGTERM or Ctrl-C stops claiming, lets running jobs finish for
    CAUCE_JOBS__GRACEFUL_SHUTDOWN_SECONDS, and puts the rest back in the queue.
    """
    settings = _settings()
    from cauce.worker import SQLITE_REFUSAL, run_worker

    if settings.is_sqlite:
        raise _fail(SQLITE_REFUSAL)
    served = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    _run(run_worker(settings, concurrency=concurrency, queues=served, metrics_port=metrics_port))


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply pending migrations to the configured database."""
    from cauce.core.db import create_database
    from cauce.core.db.migrate import current_revisions, upgrade

    settings = _settings()

    async def go() -> set[str]:
        db = create_database(settings)
        try:
            await upgrade(db, revision)
            return await current_revisions(db)
        finally:
            await db.dispose()

    revisions = _run(go())
    out.print(f"database at revision {', '.join(sorted(revisions)) or '(empty)'}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and whether migrations are pending."""
    from cauce.core.db import create_database
    from cauce.core.db.migrate import current_revisions, pending_migrations

    settings = _settings()

    async def go() -> tuple[set[str], bool]:
        db = create_database(settings)
        try:
            return await current_revisions(db), await pending_migrations(db)
        finally:
            await db.dispose()

    revisions, pending = _run(go())
    out.print(f"revision: {', '.join(sorted(revisions)) or '(empty)'}")
    out.print("pending migrations: " + ("yes (run `cauce db upgrade`)" if pending else "no"))


def _key_service(settings: Settings) -> Any:
    from cauce.core.db import create_database
    from cauce.core.security.apikeys import ApiKeyService

    db = create_database(settings)
    return db, ApiKeyService(db.sessionmaker, settings.secret_key.get_secret_value().encode())


async def _ensure_schema(settings: Settings, db: Any) -> None:
    from cauce.core.db.migrate import prepare_schema

    await prepare_schema(db, settings)


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key")],
    scopes: Annotated[
        str, typer.Option("--scopes", help="Comma-separated, e.g. leads:read,leads:write")
    ],
) -> None:
    """Create a key and print it once: it is stored only as a hash."""
    settings = _settings()

    async def go() -> Any:
        db, service = _key_service(settings)
        try:
            await _ensure_schema(settings, db)
            return await service.create(name, scopes.split(","))
        finally:
            await db.dispose()

    created = _run(go())
    err.print(
        f"Created key [bold]{created.key_id}[/] ({created.name}) with scopes "
        f"{', '.join(created.scopes)}. Store it now: it cannot be shown again.",
        highlight=False,
    )
    # The key alone on stdout, so scripts can capture it: KEY=$(cauce apikey create ...)
    sys.stdout.write(created.token + "\n")


@apikey_app.command("list")
def apikey_list() -> None:
    """List keys (never the keys themselves)."""
    settings = _settings()

    async def go() -> Any:
        db, service = _key_service(settings)
        try:
            await _ensure_schema(settings, db)
            return await service.list()
        finally:
            await db.dispose()

    keys = _run(go())
    table = Table("key id", "name", "scopes", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.key_id,
            k.name,
            ",".join(k.scopes),
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
            k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "-",
        )
    out.print(table)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `cauce apikey list`")],
) -> None:
    """Revoke a key; every process stops accepting it within CAUCE_AUTH__CACHE_TTL_SECONDS."""
    settings = _settings()

    async def go() -> None:
        db, service = _key_service(settings)
        try:
            await _ensure_schema(settings, db)
            await service.revoke(key_id)
        finally:
            await db.dispose()

    _run(go())
    out.print(f"revoked {key_id}")


# -- cauce jobs ---------------------------------------------------------------------

_DURATION = re.compile(r"^(\d{1,9})\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
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
        await _ensure_schema(settings, db)
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


@jobs_app.command("list")
def jobs_list(
    status: StatusOption = None,
    task: TaskOption = None,
    queue: QueueOption = None,
    since: SinceOption = None,
    error_class: ErrorOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Rows to show")] = 50,
    before: Annotated[int | None, typer.Option(min=1, help="Only ids below this (paging)")] = None,
) -> None:
    """List jobs, newest first."""
    flt = _filters(status, task, queue, since, error_class)
    settings = _settings()

    async def go() -> list[JobView]:
        async with _job_queue(settings) as (_, jobs):
            return await jobs.list(flt, after_id=before, limit=limit + 1)

    views = _run(go())
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
def jobs_show(job_id: Annotated[int, typer.Argument(min=1, help="The job's id")]) -> None:
    """Show a job, its payload and every attempt."""
    settings = _settings()

    async def go() -> JobView:
        async with _job_queue(settings) as (_, jobs):
            view = await jobs.get(job_id)
        if view is None:
            raise NotFound(f"no job {job_id}")
        return view

    v = _run(go())
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
    job_id: Annotated[int | None, typer.Argument(min=1, help="One job; or use filters")] = None,
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
        raise _fail("give a job id or filters, not both")
    if job_id is None and not (narrowed or all_jobs):
        raise _fail("give a job id, or filters (--task, --queue, --since, --error-class) or --all")
    if job_id is None and status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise _fail("only failed or cancelled jobs can be replayed")
    settings = _settings()

    async def go() -> int | JobView:
        async with _job_queue(settings) as (_, jobs):
            if job_id is not None:
                return await jobs.retry(job_id)
            return await jobs.retry_many(flt)

    result = _run(go())
    if isinstance(result, int):
        out.print(f"replayed {result} job{'s' if result != 1 else ''}")
    else:
        out.print(f"job {result.id} is {result.status.value} again, with a fresh budget")


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[int, typer.Argument(min=1, help="The job's id")]) -> None:
    """Cancel a job that has not started yet."""
    settings = _settings()

    async def go() -> JobView:
        async with _job_queue(settings) as (_, jobs):
            return await jobs.cancel(job_id)

    out.print(f"job {_run(go()).id} is cancelled")


@jobs_app.command("probe")
def jobs_probe(
    sleep: Annotated[float, typer.Option(min=0, max=300, help="Seconds the probe waits")] = 0,
    fail: Annotated[bool, typer.Option(help="Fail at once (exercises the dead letters)")] = False,
    queue: QueueOption = None,
) -> None:
    """Defer a `jobs.probe` job: `cauce jobs show ID` then tells whether workers ran it."""
    from cauce.core.db import unit_of_work
    from cauce.core.jobs.builtin import PROBE_TASK

    settings = _settings()
    payload: dict[str, Any] = {"sleep_seconds": sleep, "fail": fail}

    async def go() -> int:
        async with _job_queue(settings) as (db, jobs):
            async with unit_of_work(db.sessionmaker) as session:
                deferred = await jobs.defer(session, PROBE_TASK, payload, queue=queue)
            return int(deferred.job_id)

    job = _run(go())
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

    settings = _settings()

    async def go() -> PurgeResult:
        async with _job_queue(settings) as (_, jobs):
            return await purge_finished_jobs(jobs, retention_from(settings.jobs), dry_run=dry_run)

    result = _run(go())
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


app.add_typer(sandbox_app, name="sandbox")
app.add_typer(build_leads_app(_settings, _run, out, _fail), name="leads")
app.command("demo")(demo_command(out))


def main() -> None:
    """Console-script entry point."""
    app()

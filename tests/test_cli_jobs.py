"""`cauce jobs ...` and `cauce worker`: the operator commands on both databases, the
`--since` parser, and a real `cauce worker` process stopped with SIGTERM on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
import typer
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from typer.testing import CliRunner, Result

from cauce.cli import app as cli_app
from cauce.cli import parse_since
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.jobs.builtin import PROBE_TASK, register_core_tasks
from cauce.core.jobs.factory import build_job_queue, build_job_worker
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobQueue, JobStatus
from cauce.core.jobs.registry import TaskRegistry
from tests.conftest import make_settings
from tests.test_cli import cli_env

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
Cli = Callable[..., Result]
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures logging onto the runner's streams: put things back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


def cli_in_process(tmp_path: Path, database_url: str, log_level: str = "warning") -> Cli:
    """`cauce ARGS` run in-process on this test's database (JSON logs at `log_level`)."""
    env = {
        "CAUCE_DATA_DIR": str(tmp_path / "data"),
        "CAUCE_DATABASE_URL": database_url,
        "CAUCE_LOG__FORMAT": "json",
        "CAUCE_LOG__LEVEL": log_level,
    }

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli_app, list(args), env=env)

    return run


@pytest.fixture
def cauce(tmp_path: Path, database_url: str, restore_logging: None) -> Cli:
    """Run `cauce ARGS` in-process on this test's database."""
    return cli_in_process(tmp_path, database_url)


def open_queue(tmp_path: Path, database_url: str) -> tuple[Database, JobQueue, TaskRegistry]:
    """This test's database and its queue with core's tasks."""
    db = create_database(make_settings(tmp_path), url=database_url)
    registry = TaskRegistry()
    register_core_tasks(registry)
    return db, build_job_queue(db, registry, JobMetrics()), registry


async def run_due_jobs(tmp_path: Path, database_url: str) -> None:
    """Run every due job with a worker of the database's engine."""
    db, queue, registry = open_queue(tmp_path, database_url)
    try:
        worker = build_job_worker(queue, db, registry, JobMetrics(), make_settings(tmp_path).jobs)
        await worker.run_until_idle(30)
    finally:
        await db.dispose()


def test_jobs_commands_end_to_end(cauce: Cli, tmp_path: Path, database_url: str) -> None:
    """probe defers, list filters, show prints the attempts, retry and cancel act or say
    clearly why not, and an unknown id is a one-line error with exit 1."""
    run = cauce
    fail = run("jobs", "probe", "--fail")
    assert fail.exit_code == 0, fail.stderr
    failing = int(fail.stdout.strip())
    ok = int(run("jobs", "probe").stdout.strip())

    listed = run("jobs", "list", "--status", "todo", "--task", PROBE_TASK)
    assert listed.exit_code == 0, listed.stderr
    assert {str(failing), str(ok)} <= set(listed.stdout.split())
    assert "no jobs match" in run("jobs", "list", "--queue", "nowhere").stdout

    asyncio.run(run_due_jobs(tmp_path, database_url))
    shown = run("jobs", "show", str(failing))
    assert shown.exit_code == 0, shown.stderr
    assert "failed" in shown.stdout
    error = "attempt 1 (failed): cauce.core.jobs.builtin.ProbeFailed: the probe was asked to fail"
    assert error in shown.stdout
    assert "jobs.probe" in run("jobs", "list", "--status", "failed", "--since", "1h").stdout

    refused = run("jobs", "retry", str(ok))
    assert refused.exit_code == 1
    assert "only failed or cancelled" in refused.stderr
    retried = run("jobs", "retry", str(failing))
    assert retried.exit_code == 0, retried.stderr
    assert "todo again" in retried.stdout
    assert run("jobs", "cancel", str(failing)).exit_code == 0
    again = run("jobs", "cancel", str(failing))
    assert again.exit_code == 1
    assert "only waiting jobs" in again.stderr
    bulk = run("jobs", "retry", "--status", "cancelled", "--task", PROBE_TASK)
    assert bulk.exit_code == 0, bulk.stderr
    assert "replayed 1 job" in bulk.stdout

    missing = run("jobs", "show", "987654")
    assert missing.exit_code == 1
    assert "no job 987654" in missing.stderr
    assert "Traceback" not in missing.stderr + missing.stdout
    assert run("jobs", "cancel", "987654").exit_code == 1


@pytest.mark.parametrize("command", ["list", "show", "retry", "cancel", "probe"])
def test_every_jobs_command_has_help(command: str, restore_logging: None) -> None:
    """`cauce jobs <command> --help` explains the command."""
    result = CliRunner().invoke(cli_app, ["jobs", command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    assert "jobs" in result.stdout


def test_retry_needs_an_id_or_a_filter(cauce: Cli) -> None:
    """Bulk retry never replays everything by accident: it needs filters or --all, and an
    id with filters is refused."""
    run = cauce
    bare = run("jobs", "retry")
    assert bare.exit_code == 2
    assert "--all" in bare.stderr
    both = run("jobs", "retry", "3", "--task", PROBE_TASK)
    assert both.exit_code == 2
    assert run("jobs", "retry", "--all").stdout.strip() == "replayed 0 jobs"
    bad_since = run("jobs", "list", "--since", "yesterday")
    assert bad_since.exit_code == 2
    assert "--since" in bad_since.stderr


def test_worker_refuses_on_sqlite(cauce: Cli, backend: str) -> None:
    """On SQLite `cauce worker` explains that `cauce serve` runs the jobs, and exits 2."""
    if backend != "sqlite":
        pytest.skip("the refusal is SQLite's")
    result = cauce("worker")
    assert result.exit_code == 2
    assert "on SQLite the worker runs inside `cauce serve`" in result.stderr


@given(n=st.integers(min_value=0, max_value=10**5), unit=st.sampled_from(sorted(UNITS)))
def test_since_durations_count_back_from_now(n: int, unit: str) -> None:
    """`<n><unit>` means n units before now, with or without a space or capitals."""
    expected = NOW - timedelta(seconds=n * UNITS[unit])
    assert parse_since(f"{n}{unit}", NOW) == expected
    assert parse_since(f" {n} {unit.upper()} ", NOW) == expected


@given(
    when=st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2999, 12, 31),
        timezones=st.sampled_from([UTC, None]),
    )
)
def test_since_dates_are_utc_unless_offset(when: datetime) -> None:
    """An ISO 8601 date/time is taken as given, in UTC when it has no offset."""
    parsed = parse_since(when.isoformat(), NOW)
    assert parsed.tzinfo is not None
    assert parsed == (when if when.tzinfo else when.replace(tzinfo=UTC))


@given(garbage=st.text(alphabet="xyzq!?,;", min_size=1, max_size=20))
def test_since_refuses_anything_else(garbage: str) -> None:
    """Anything that is neither a duration nor a date is a usage error naming --since."""
    with pytest.raises(typer.BadParameter):
        parse_since(garbage, NOW)
    with pytest.raises(typer.BadParameter):
        parse_since("9999999999d", NOW)


async def test_sigterm_finishes_or_releases_jobs_of_a_real_worker(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    """A real `cauce worker` stopped with SIGTERM lets a job that fits in the grace period
    finish and gives the longer one back to `todo` (attempt `lost`): nothing stays `doing`,
    and the process exits 0."""
    if backend != "postgresql":
        pytest.skip("separate workers run on PostgreSQL only")
    db, queue, _ = open_queue(tmp_path, database_url)
    log_path = tmp_path / "worker.log"
    env = cli_env(
        tmp_path,
        CAUCE_DATABASE_URL=database_url,
        CAUCE_JOBS__GRACEFUL_SHUTDOWN_SECONDS="1.5",
        CAUCE_JOBS__POLL_SECONDS="0.1",
    )
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cauce",
            "worker",
            "--concurrency",
            "2",
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def scalar(sql: str) -> int:
        async with db.engine.connect() as conn:
            return int((await conn.execute(text(sql))).scalar_one())

    async def until(sql: str, at_least: int) -> None:
        while True:
            if await scalar(sql) >= at_least:
                return
            assert proc.returncode is None, log_path.read_text()
            await asyncio.sleep(0.05)

    try:
        async with asyncio.timeout(90):
            await until("SELECT count(*) FROM procrastinate_workers", 1)
            async with unit_of_work(db.sessionmaker) as session:
                short = (await queue.defer(session, PROBE_TASK, {"sleep_seconds": 0.5})).job_id
                long = (await queue.defer(session, PROBE_TASK, {"sleep_seconds": 60})).job_id
            # The probes' own attempts: the worker also runs its periodic jobs (a purge at
            # start), whose running attempt let SIGTERM come before a probe had started.
            await until(
                "SELECT count(*) FROM job_attempts WHERE outcome = 'running' "
                f"AND job_id IN ({int(short)}, {int(long)})",
                2,
            )
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0, log_path.read_text()
        short_view, long_view = await queue.get(short), await queue.get(long)
        assert short_view is not None
        assert long_view is not None
        assert short_view.status == JobStatus.SUCCEEDED
        assert [a.outcome for a in short_view.attempts] == ["succeeded"]
        assert long_view.status == JobStatus.TODO
        assert [a.outcome for a in long_view.attempts] == ["lost"]
        assert await scalar("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'") == 0
        assert await scalar("SELECT count(*) FROM procrastinate_workers") == 0
        output = log_path.read_text()
        assert "cauce.worker.stopping" in output
        assert "cauce.worker.stopped" in output
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await db.dispose()

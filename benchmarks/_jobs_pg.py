"""PostgreSQL side of benchmarks/jobs_throughput.py: databases, worker processes, phases.

Method (the same for bare procrastinate and Cauce's engine):

1. A fresh database: procrastinate's own schema (bare) or Cauce's migrations (cauce).
2. Defer phase: N no-op jobs, one job per transaction (as a request defers one job),
   from 16 concurrent tasks, into a *holding* queue (`hold`) that no worker serves.
   Bare: procrastinate's `defer_async` through its own pool (one autocommit INSERT);
   Cauce: `JobQueue.defer` inside a `unit_of_work` (BEGIN, INSERT, COMMIT).
3. Start W worker processes serving the queue `bench`; wait until every one has
   registered in `procrastinate_workers` and has been idle for a moment (LISTEN
   established): start-up time is never counted.
4. Drain phase: one UPDATE moves the N jobs from `hold` to `bench` and NOTIFYs the
   queue's channels, exactly as an INSERT's trigger would. Drain time runs from that
   transaction's clock to the last `succeeded` event procrastinate recorded (both on the
   database's clock, so polling granularity does not matter).

End-to-end throughput is N / (defer time + drain time).

With `profile_dir`, each worker process samples its own CPU from the release to its
SIGTERM (see _jobs_worker_proc.py) and the reports come back in `EngineRound.profiles`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
from sqlalchemy.engine import make_url

from cauce.core.config import DbSettings, LogSettings, Settings
from cauce.core.db import create_database, unit_of_work
from cauce.core.db.migrate import upgrade
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue
from cauce.core.jobs.registry import TaskRegistry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TASK = "noop"
QUEUE = "bench"
HOLD = "hold"
# Jobs deferred before timing, on a queue nobody serves: they open the pools' connections.
WARMUP_JOBS = 64
DEFER_CONCURRENCY = 16
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class EngineRound:
    """One engine x worker-count round (the SQLite round reuses it with no server)."""

    engine: str
    workers: int
    jobs: int
    defer_s: float
    drain_s: float
    worker_cpu_s: float
    pg_cpu_s: float
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before / after the round
    profiles: list[str] = field(default_factory=list)

    @property
    def defer_rate(self) -> float:
        """Jobs deferred per second."""
        return self.jobs / self.defer_s

    @property
    def drain_rate(self) -> float:
        """Jobs run to `succeeded` per second once the workers were ready."""
        return self.jobs / self.drain_s

    @property
    def e2e_rate(self) -> float:
        """Jobs per second from the first defer to the last success."""
        return self.jobs / (self.defer_s + self.drain_s)


def libpq(url: str) -> str:
    """The libpq conninfo psycopg and procrastinate take, from any PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_url(url: str) -> str:
    """The `postgresql+psycopg://` form of any PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _admin_exec(admin_url: str, sql: str) -> None:
    with psycopg.connect(libpq(admin_url), autocommit=True) as conn:
        conn.execute(sql.encode())


@contextmanager
def scratch_database(admin_url: str, label: str) -> Iterator[str]:
    """Create an empty database; yield its SQLAlchemy URL; drop it (even on errors)."""
    name = f"cauce_bench_{label}_{uuid.uuid4().hex[:8]}"
    _admin_exec(admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(sqlalchemy_url(admin_url))
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        _admin_exec(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_settings(url: str, pool_size: int = DEFER_CONCURRENCY) -> Settings:
    """Settings for the benchmark's own (deferring) process."""
    return Settings(
        database_url=url,
        db=DbSettings(pool_size=pool_size, max_overflow=4),
        log=LogSettings(level="warning", format="json"),
    )


async def prepare(engine: str, url: str) -> None:
    """Apply procrastinate's schema (bare) or Cauce's migrations (cauce)."""
    if engine == "bare":
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq(url)))
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
        return
    db = create_database(bench_settings(url), url=url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


def noop_registry() -> TaskRegistry:
    """Cauce's registry with the no-op task (the deferring side needs its spec)."""
    registry = TaskRegistry()

    @registry.task(TASK, queue=QUEUE)
    async def noop(ctx: JobContext, payload: JsonDict) -> None:
        return None

    return registry


async def _spread(n: int, one: Any) -> None:
    """Call `one(i)` for i in range(n) from DEFER_CONCURRENCY concurrent tasks."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await one(i)

    await asyncio.gather(*(lane() for _ in range(DEFER_CONCURRENCY)))


async def defer_bare(url: str, n: int) -> float:
    """Seconds to defer `n` jobs with procrastinate alone, one per transaction."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=libpq(url), min_size=1, max_size=DEFER_CONCURRENCY
        )
    )
    async with app.open_async():
        warm = app.configure_task(TASK, queue="warmup")
        await _spread(WARMUP_JOBS, lambda i: warm.defer_async(n=i))
        deferrer = app.configure_task(TASK, queue=HOLD)
        start = time.perf_counter()
        await _spread(n, lambda i: deferrer.defer_async(n=i))
        return time.perf_counter() - start


async def defer_cauce(url: str, n: int) -> float:
    """Seconds to defer `n` jobs through `JobQueue.defer`, one per unit of work."""
    db = create_database(bench_settings(url))
    queue = ProcrastinateJobQueue(
        db.sessionmaker, noop_registry(), JobMetrics(), conninfo=libpq(url)
    )

    async def one(i: int, target: str) -> None:
        async with unit_of_work(db.sessionmaker) as session:
            await queue.defer(session, TASK, {"n": i}, queue=target)

    try:
        await _spread(WARMUP_JOBS, lambda i: one(i, "warmup"))
        start = time.perf_counter()
        await _spread(n, lambda i: one(i, HOLD))
        return time.perf_counter() - start
    finally:
        await db.dispose()


@contextmanager
def worker_processes(
    engine: str,
    url: str,
    count: int,
    *,
    concurrency: int,
    log_dir: Path,
    extra_args: Sequence[str] = (),
    profile_dir: Path | None = None,
    jobs: int = 0,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start `count` worker processes; SIGTERM them on the way out (SIGKILL if stuck)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(count):
            profile = []
            if profile_dir is not None:
                out = profile_dir / f"{engine}-{count}w-{i}.txt"
                profile = ["--profile", str(out), "--jobs", str(jobs)]
            cmd = [
                sys.executable,
                str(HERE / "_jobs_worker_proc.py"),
                "--engine",
                engine,
                "--url",
                url,
                "--concurrency",
                str(concurrency),
                *extra_args,
                *profile,
            ]
            with (log_dir / f"{engine}-{count}w-{i}.log").open("wb") as log:
                procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@asynccontextmanager
async def control(url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The benchmark's own autocommit connection for waiting, releasing and counting."""
    conn = await psycopg.AsyncConnection.connect(libpq(url), autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


async def _one(conn: psycopg.AsyncConnection[Any], sql: str) -> Any:
    cur = await conn.execute(sql.encode())
    row = await cur.fetchone()
    return None if row is None else row[0]


async def wait_ready(
    conn: psycopg.AsyncConnection[Any],
    procs: list[subprocess.Popen[bytes]],
    settle_s: float = 1.0,
    timeout_s: float = 60.0,
) -> None:
    """Wait until every worker has registered, then `settle_s` more (LISTEN, first fetch)."""
    deadline = time.monotonic() + timeout_s
    while int(await _one(conn, "SELECT count(*) FROM procrastinate_workers")) < len(procs):
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a worker process exited during start-up: {dead}")
        if time.monotonic() > deadline:
            raise TimeoutError("worker processes did not register in time")
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle_s)


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def backend_cpu(conn: psycopg.AsyncConnection[Any]) -> dict[int, float]:
    """CPU seconds of every server process attached to this database, by pid."""
    cur = await conn.execute(b"SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    return {int(pid): _proc_cpu(int(pid)) for (pid,) in await cur.fetchall()}


async def release_and_drain(
    conn: psycopg.AsyncConnection[Any],
    procs: list[subprocess.Popen[bytes]],
    n: int,
    timeout_s: float,
) -> tuple[float, float, float]:
    """Release the held jobs and wait until all succeeded.

    Returns (drain seconds on the database's clock, worker CPU s, server CPU s).
    """
    workers_before = {p.pid: _proc_cpu(p.pid) for p in procs}
    backends_before = await backend_cpu(conn)
    async with conn.transaction():
        cur = await conn.execute(
            b"UPDATE procrastinate_jobs SET queue_name = %s WHERE queue_name = %s",
            (QUEUE, HOLD),
        )
        if cur.rowcount != n:
            raise RuntimeError(f"expected {n} held jobs, found {cur.rowcount}")
        # What the INSERT trigger sends; NOTIFY is delivered at commit.
        payload = '{"type": "job_inserted", "job_id": 0}'
        for channel in (f"procrastinate_queue_v1#{QUEUE}", "procrastinate_any_queue_v1"):
            await conn.execute(b"SELECT pg_notify(%s, %s)", (channel, payload))
        released_at = await _one(conn, "SELECT clock_timestamp()")
    deadline = time.monotonic() + timeout_s
    count = (
        "SELECT count(*) FROM procrastinate_jobs"
        " WHERE queue_name = 'bench' AND status = 'succeeded'"
    )
    while int(await _one(conn, count)) < n:
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"a worker process died while draining: {dead}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not drained within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)
    worker_cpu = sum(
        _proc_cpu(p.pid) - before for p, before in zip(procs, workers_before.values(), strict=True)
    )
    backends_after = await backend_cpu(conn)
    pg_cpu = sum(cpu - backends_before.get(pid, 0.0) for pid, cpu in backends_after.items())
    cur = await conn.execute(
        b"SELECT max(at) FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id"
        b" WHERE e.type = 'succeeded' AND j.queue_name = 'bench'"
    )
    row = await cur.fetchone()
    assert row is not None
    finished_at = row[0]
    return (finished_at - released_at).total_seconds(), worker_cpu, pg_cpu


async def check_exactly_once(conn: psycopg.AsyncConnection[Any], engine: str, n: int) -> None:
    """Every job succeeded once; on Cauce, each has exactly one succeeded attempt row."""
    if engine != "cauce":
        return
    done = await _one(
        conn, "SELECT count(DISTINCT job_id) FROM job_attempts WHERE outcome = 'succeeded'"
    )
    rows = await _one(conn, "SELECT count(*) FROM job_attempts")
    if int(done) != n or int(rows) != n:
        raise RuntimeError(f"attempts table: {done} jobs succeeded in {rows} rows, expected {n}")


async def pg_round(
    admin_url: str,
    engine: str,
    workers: int,
    n: int,
    *,
    concurrency: int,
    log_dir: Path,
    extra_args: Sequence[str] = (),
    profile: bool = False,
) -> EngineRound:
    """One full round: fresh database, defer phase, ready workers, drain phase."""
    load_before = os.getloadavg()[0]
    profile_dir = log_dir / f"profile-{engine}-{workers}w" if profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    with scratch_database(admin_url, engine) as url:
        await prepare(engine, url)
        defer_s = await (defer_bare(url, n) if engine == "bare" else defer_cauce(url, n))
        async with control(url) as conn:
            with worker_processes(
                engine,
                url,
                workers,
                concurrency=concurrency,
                log_dir=log_dir,
                extra_args=extra_args,
                profile_dir=profile_dir,
                jobs=n,
            ) as procs:
                await wait_ready(conn, procs)
                if profile_dir is not None:
                    for proc in procs:
                        proc.send_signal(signal.SIGUSR1)
                drain_s, worker_cpu, pg_cpu = await release_and_drain(
                    conn, procs, n, timeout_s=max(60.0, n / 20)
                )
            await check_exactly_once(conn, engine, n)
    profiles = []
    if profile_dir is not None:
        profiles = [f.read_text() for f in sorted(profile_dir.glob("*.txt"))]
    return EngineRound(
        engine,
        workers,
        n,
        defer_s,
        drain_s,
        worker_cpu,
        pg_cpu,
        load=(load_before, os.getloadavg()[0]),
        profiles=profiles,
    )

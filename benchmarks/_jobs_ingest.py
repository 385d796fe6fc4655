"""What a `defer` adds to a request, for benchmarks/jobs_throughput.py.

Two levels, each on SQLite (EmbeddedJobQueue) and PostgreSQL (ProcrastinateJobQueue), no
worker running (only the request's cost is measured), variants alternating round by
round on the same database and server (plain, defer, plain, defer, ...), medians compared:

1. The request (the figure the target is about): `_jobs_ingest_app.py` under uvicorn,
   driven by wrk (one thread, `connections` keep-alive connections, a small JSON lead
   per request), `POST /plain` against `POST /defer`. The server process is the one
   `cauce serve` would be minus Cauce's middleware; wrk takes part of the other core.
2. One-row transaction, in-process, no HTTP (the previous figure, kept for comparison):
   a `unit_of_work` inserting one row, with and without `JobQueue.defer`; sequential on
   SQLite (one writer), PG_CONCURRENCY concurrent on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from _jobs_ingest_app import BODY, HOLD, LEADS, METADATA, TASK
from _jobs_pg import bench_settings, libpq, noop_registry, prepare, scratch_database
from _jobs_sqlite import fresh_sqlite
from cauce.core.db import Database, create_database, unit_of_work
from cauce.core.jobs.embedded import EmbeddedJobQueue
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.jobs.ports import JobQueue, JsonDict
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP = HERE / "_jobs_ingest_app.py"
PG_CONCURRENCY = 16


@dataclass
class IngestResult:
    """Requests/s per round for each variant on one engine at one level."""

    level: str  # "HTTP request" or "one-row transaction"
    engine: str
    concurrency: int
    rates: dict[str, list[float]] = field(default_factory=dict)
    p50_ms: dict[str, list[float]] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)

    def median(self, variant: str) -> float:
        """Median requests/s of `variant`."""
        return statistics.median(self.rates[variant])

    def best(self, variant: str) -> float:
        """Fastest round of `variant`, requests/s (the least disturbed by other work)."""
        return max(self.rates[variant])

    def cost(self, estimate: str = "best") -> float:
        """The share of requests/s the defer takes away: best against best (or median)."""
        pick = self.best if estimate == "best" else self.median
        return 1 - pick("defer") / pick("plain")


# --------------------------------------------------------------------------------------
# 1. The HTTP request: uvicorn + wrk
# --------------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(cmd: list[str], log: Path, base: str) -> Iterator[str]:
    """Start a server, wait for its /healthz, yield its base URL, stop it (SIGTERM)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[1]} exited with {proc.returncode}; see {log}")
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{cmd[1]} did not become ready; see {log}") from None
                    time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _lua(tmp: Path) -> Path:
    script = tmp / "lead.lua"
    body = BODY.decode().replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{body}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return script


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if m is None:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def _wrk(url: str, script: Path, connections: int, seconds: float) -> tuple[float, float]:
    """(requests/s, p50 ms) of one wrk run; fails on any non-2xx answer or socket error."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "30s"]
    out = subprocess.run(
        [*cmd, "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if bad:
        raise RuntimeError(f"wrk against {url} saw errors:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"(?m)^\s+50%\s+(\S+)", out)
    if rps is None or p50 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(rps.group(1)), _ms(p50.group(1))


def _http_rounds(
    url: str,
    result: IngestResult,
    log: Path,
    *,
    rounds: int,
    seconds: float,
    warmup_s: float,
) -> None:
    """Serve the app on `url`'s database and alternate wrk runs of /plain and /defer."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(APP), "--port", str(port), "--database-url", url]
    with tempfile.TemporaryDirectory(prefix="cauce-bench-wrk-") as tmp:
        script = _lua(Path(tmp))
        with served(cmd, log, base):
            for variant in ("plain", "defer"):  # warm-up: pool, caches, first pages
                _wrk(f"{base}/{variant}", script, result.concurrency, warmup_s)
            for _ in range(rounds):
                for variant in ("plain", "defer"):
                    rps, p50 = _wrk(f"{base}/{variant}", script, result.concurrency, seconds)
                    result.rates.setdefault(variant, []).append(rps)
                    result.p50_ms.setdefault(variant, []).append(p50)


async def http_sqlite(
    log_dir: Path, *, connections: int, rounds: int, seconds: float, warmup_s: float
) -> IngestResult:
    """The request on SQLite (EmbeddedJobQueue)."""
    result = IngestResult("HTTP request", "sqlite", connections)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="cauce-bench-") as tmp:
        db = await fresh_sqlite(Path(tmp))
        url = db.engine.url.render_as_string(hide_password=False)
        await db.dispose()
        await asyncio.to_thread(
            _http_rounds,
            url,
            result,
            log_dir / "ingest-app-sqlite.log",
            rounds=rounds,
            seconds=seconds,
            warmup_s=warmup_s,
        )
    result.load = (load_before, _load())
    return result


async def http_pg(
    admin_url: str,
    log_dir: Path,
    *,
    connections: int,
    rounds: int,
    seconds: float,
    warmup_s: float,
) -> IngestResult:
    """The request on PostgreSQL (ProcrastinateJobQueue)."""
    result = IngestResult("HTTP request", "postgresql", connections)
    load_before = _load()
    with scratch_database(admin_url, "http") as url:
        await prepare("cauce", url)
        await asyncio.to_thread(
            _http_rounds,
            url,
            result,
            log_dir / "ingest-app-pg.log",
            rounds=rounds,
            seconds=seconds,
            warmup_s=warmup_s,
        )
    result.load = (load_before, _load())
    return result


def _load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------------------
# 2. One-row transaction, in-process
# --------------------------------------------------------------------------------------

# How a variant defers inside the transaction (None: it does not).
DeferFn = Callable[[AsyncSession, JsonDict], Awaitable[object]]


async def _transaction(
    sessionmaker: async_sessionmaker[AsyncSession], defer: DeferFn | None, i: int
) -> None:
    async with unit_of_work(sessionmaker) as session:
        lead_id = (
            await session.execute(
                insert(LEADS)
                .values(email=f"lead{i}@example.com", name=f"Lead {i}", source="bench")
                .returning(LEADS.c.id)
            )
        ).scalar_one()
        if defer is not None:
            await defer(session, {"lead_id": lead_id})


async def _timed(
    sessionmaker: async_sessionmaker[AsyncSession],
    defer: DeferFn | None,
    n: int,
    concurrency: int,
    offset: int,
) -> float:
    """Transactions per second for `n` of them from `concurrency` concurrent tasks."""
    counter = iter(range(offset, offset + n))

    async def lane() -> None:
        for i in counter:
            await _transaction(sessionmaker, defer, i)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


async def _alternate(
    db: Database, queue: JobQueue, result: IngestResult, per_round: int, rounds: int
) -> None:
    async def port(session: AsyncSession, payload: JsonDict) -> object:
        return await queue.defer(session, TASK, payload, queue=HOLD)

    variants: dict[str, DeferFn | None] = {"plain": None, "defer": port}
    async with db.engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
    offset = 0
    for defer in variants.values():  # warm every path (pool, statement caches)
        await _timed(db.sessionmaker, defer, 200, result.concurrency, offset)
        offset += 200
    for _ in range(rounds):
        for name, defer in variants.items():
            rate = await _timed(db.sessionmaker, defer, per_round, result.concurrency, offset)
            result.rates.setdefault(name, []).append(rate)
            offset += per_round


async def transaction_sqlite(per_round: int, rounds: int) -> IngestResult:
    """Sequential one-row transactions on the embedded database, with and without a defer."""
    result = IngestResult("one-row transaction", "sqlite", 1)
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="cauce-bench-") as tmp:
        db = await fresh_sqlite(Path(tmp))
        try:
            queue = EmbeddedJobQueue(db.sessionmaker, noop_registry(), JobMetrics())
            await _alternate(db, queue, result, per_round, rounds)
        finally:
            await db.dispose()
    result.load = (load_before, _load())
    return result


async def transaction_pg(admin_url: str, per_round: int, rounds: int) -> IngestResult:
    """PG_CONCURRENCY concurrent one-row transactions, with and without a defer."""
    result = IngestResult("one-row transaction", "postgresql", PG_CONCURRENCY)
    load_before = _load()
    with scratch_database(admin_url, "ingest") as url:
        await prepare("cauce", url)
        db = create_database(bench_settings(url, pool_size=PG_CONCURRENCY))
        try:
            queue = ProcrastinateJobQueue(
                db.sessionmaker, noop_registry(), JobMetrics(), conninfo=libpq(url)
            )
            await _alternate(db, queue, result, per_round, rounds)
        finally:
            await db.dispose()
    result.load = (load_before, _load())
    return result

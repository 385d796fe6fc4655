"""Single leads' wait while 1,000-lead batches run back to back, per batch transaction size.

A batch held the database's writer (SQLite; on PostgreSQL the intake lock of every key)
until it committed, so a web form's `POST /v1/leads` arriving meanwhile waited for the
whole batch. While single leads come, a batch now commits its leads
`leads.batch_transaction_size` (CAUCE_LEADS__BATCH_TRANSACTION_SIZE) at a time, so they
get the writer between its transactions (ADR 0013). Each size of `--sizes` is measured
in the same run, the first being the baseline (1000: one transaction a batch).

Per database (SQLite; PostgreSQL too when CAUCE_TEST_POSTGRES_URL is set and `--backends`
names it) and per size, on a fresh database and a fresh `cauce serve` (one process, no
embedded worker, CRM at a closed port: `leads_ingest.cauce_env`):

1. `--preload` leads in batches of 1,000 (not measured).
2. For `--seconds`: batches of 1,000 new leads back to back on one connection (leads/s);
   new single leads at `--single-rate` a second, each its own request, at most 64 in
   flight, latency counted from the moment it was due (a late send counts as waiting);
   `GET /healthz` every 50 ms. Every lead is new; every answer is checked (batch: 200
   with every item accepted; single: 201 or 200) and failures are printed.

    source /tmp/svc.env   # optional: CAUCE_TEST_POSTGRES_URL, for PostgreSQL
    .venv/bin/python benchmarks/leads_batch_interleave.py [--sizes 1000,250] [--seconds 30]
        [--backends sqlite,postgresql] [--preload 10000] [--single-rate 20]

Needs no wrk (httpx only). The client shares the machine's cores with the server, so the
batch bodies are built before the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import tempfile
import time
from collections import Counter, deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from leads_ingest import (
    CAUCE,
    LeadMaker,
    cauce_env,
    free_port,
    pg_database,
    run_cli,
    served,
    wanted_backends,
)

SETTING = "CAUCE_LEADS__BATCH_TRANSACTION_SIZE"
BATCH = 1000
SINGLES_FROM = 2_000_000  # singles' lead numbers in a configuration's first run (preload: 0..)
MAX_IN_FLIGHT = 64  # single requests at once
HEALTH_EVERY = 0.05  # s
MAX_BODIES = 300  # batch bodies built ahead (~570 KB each)
GRACE = 120.0  # s after the window for the requests in flight, then they are cancelled


@dataclass
class Run:
    """One configuration's figures."""

    backend: str
    size: int
    batches: int = 0
    batch_leads: int = 0
    batch_seconds: float = 0.0
    built_late: int = 0  # batch bodies built during the window (the estimate fell short)
    sent: int = 0
    singles: list[float] = field(default_factory=list)  # s, the answered ones
    health: list[float] = field(default_factory=list)  # s
    failures: Counter[str] = field(default_factory=Counter)

    @property
    def leads_per_s(self) -> float:
        """Leads accepted in batches per second of the window (to the last batch's end)."""
        return self.batch_leads / self.batch_seconds if self.batch_seconds else 0.0


def pct(values: list[float], q: float) -> float:
    """The `q`th percentile (nearest rank) in ms; NaN when there is none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return 1000 * ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ratio(a: float, b: float) -> float:
    """a / b; NaN when b is 0."""
    return a / b if b else math.nan


def body(maker: LeadMaker, first: int, n: int) -> bytes:
    """A batch of `n` leads numbered from `first`."""
    return orjson.dumps({"items": [maker(first + i) for i in range(n)]})


async def post_batch(client: httpx.AsyncClient, content: bytes, run: Run, what: str) -> int:
    """Send one batch; the leads accepted (every failure counted in `run.failures`)."""
    try:
        answer = await client.post("/v1/leads/batch", content=content)
    except httpx.HTTPError as exc:
        run.failures[f"{what} {type(exc).__name__}"] += 1
        return 0
    if answer.status_code != 200:
        run.failures[f"{what} HTTP {answer.status_code}"] += 1
        return 0
    payload = orjson.loads(answer.content)
    if payload["rejected"]:
        run.failures[f"{what} items rejected"] += payload["rejected"]
    return int(payload["accepted"])


async def measure(base: str, key: str, opts: argparse.Namespace, run: Run, runs: int) -> None:
    """Preload, then batches, singles and health probes together for `opts.seconds`."""
    maker = LeadMaker()
    first, batch_first = maker.seq(runs, 0), maker.seq(runs + 1, 0)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    one = httpx.Limits(max_connections=1)
    many = httpx.Limits(max_connections=MAX_IN_FLIGHT)
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=GRACE, limits=one) as batcher,
        httpx.AsyncClient(base_url=base, headers=headers, timeout=GRACE, limits=many) as client,
        httpx.AsyncClient(base_url=base, timeout=GRACE, limits=one) as prober,
    ):
        started = time.perf_counter()
        for at in range(0, opts.preload, BATCH):
            n = min(BATCH, opts.preload - at)
            await post_batch(batcher, body(maker, first + at, n), run, "preload batch")
        rate = opts.preload / (time.perf_counter() - started) if opts.preload else 5000.0
        planned = min(MAX_BODIES, math.ceil(rate * opts.seconds * 1.25 / BATCH) + 2)
        bodies = deque(body(maker, batch_first + b * BATCH, BATCH) for b in range(planned))
        await client.get("/healthz")  # open a connection before the window
        start = time.perf_counter()
        deadline = start + opts.seconds

        async def batches() -> None:
            for b in itertools.count():
                if time.perf_counter() >= deadline:
                    break
                if not bodies:
                    run.built_late += 1
                    bodies.append(body(maker, batch_first + b * BATCH, BATCH))
                run.batch_leads += await post_batch(batcher, bodies.popleft(), run, "batch")
                run.batches += 1
                run.batch_seconds = time.perf_counter() - start

        gate = asyncio.Semaphore(MAX_IN_FLIGHT)

        async def single(seq: int, due: float) -> None:
            async with gate:
                try:
                    answer = await client.post("/v1/leads", content=orjson.dumps(maker(seq)))
                except httpx.HTTPError as exc:
                    run.failures[f"single {type(exc).__name__}"] += 1
                    return
            if answer.status_code in (200, 201):
                run.singles.append(time.perf_counter() - due)
            else:
                run.failures[f"single HTTP {answer.status_code}"] += 1

        async def singles() -> None:
            tasks = []
            for i in itertools.count():
                due = start + i / opts.single_rate
                if due >= deadline:
                    break
                await asyncio.sleep(due - time.perf_counter())
                tasks.append(asyncio.create_task(single(first + SINGLES_FROM + i, due)))
                run.sent += 1
            await asyncio.gather(*tasks)

        async def probes() -> None:
            tick = 0
            while (due := start + tick * HEALTH_EVERY) < deadline:
                await asyncio.sleep(due - time.perf_counter())
                sent = time.perf_counter()
                try:
                    answer = await prober.get("/healthz")
                    if answer.status_code == 200:
                        run.health.append(time.perf_counter() - sent)
                    else:
                        run.failures[f"healthz HTTP {answer.status_code}"] += 1
                except httpx.HTTPError as exc:
                    run.failures[f"healthz {type(exc).__name__}"] += 1
                # a late answer skips the ticks it missed
                tick = max(tick + 1, math.ceil((time.perf_counter() - start) / HEALTH_EVERY))

        try:
            await asyncio.wait_for(
                asyncio.gather(batches(), singles(), probes()), opts.seconds + GRACE
            )
        except TimeoutError:
            run.failures[f"still running {GRACE:.0f} s after the window (cancelled)"] += 1
    unanswered = (
        run.sent
        - len(run.singles)
        - sum(v for k, v in run.failures.items() if k.startswith("single "))
    )
    if unanswered:
        run.failures["single unanswered"] += unanswered


def configuration(
    backend: str, size: int, opts: argparse.Namespace, runs: int, admin_url: str | None
) -> Run:
    """One size on one database: fresh database, fresh `cauce serve`."""
    run = Run(backend, size)
    with tempfile.TemporaryDirectory(prefix=f"leads-interleave-{backend}-{size}-") as tmp_name:
        tmp = Path(tmp_name)
        database: AbstractContextManager[str | None] = (
            pg_database(admin_url, f"interleave{size}") if admin_url else nullcontext()
        )
        with database as url:
            env = cauce_env(tmp / "cauce-data", url) | {SETTING: str(size)}
            if url:
                run_cli(["db", "upgrade"], env, tmp)
            key = run_cli(
                ["apikey", "create", "--name", "bench", "--scopes", "leads:write,leads:read"],
                env,
                tmp,
            )
            port = free_port()
            cmd = [*CAUCE, "serve", "--port", str(port)]
            with served(cmd, env, tmp, tmp / "cauce.log", f"http://127.0.0.1:{port}") as base:
                asyncio.run(measure(base, key, opts, run, runs))
    return run


def print_run(r: Run, baseline: Run | None) -> None:
    """One configuration's figures, and its ratios against the baseline."""
    print(
        f"\n{r.backend}, batch transaction size {r.size}" + (" (baseline)" if not baseline else "")
    )
    print(
        f"  batches: {r.batches} x {BATCH} leads, {r.batch_leads} accepted in "
        f"{r.batch_seconds:.1f} s = {r.leads_per_s:.0f} leads/s"
        + (f" ({r.built_late} bodies built during the window)" if r.built_late else "")
    )
    s = r.singles
    print(
        f"  singles: {r.sent} sent, {len(s)} ok; latency ms p50 {pct(s, 50):.0f}, "
        f"p95 {pct(s, 95):.0f}, p99 {pct(s, 99):.0f}, max {pct(s, 100):.0f}"
    )
    h = r.health
    print(
        f"  healthz: {len(h)} ok; ms p50 {pct(h, 50):.1f}, p95 {pct(h, 95):.1f}, "
        f"max {pct(h, 100):.1f}"
    )
    failed = ", ".join(f"{k} x{v}" for k, v in sorted(r.failures.items()))
    print(f"  FAILURES: {failed}" if failed else "  failures: none")
    if baseline:
        b = baseline
        print(
            f"  vs size {b.size}: single p95 {pct(b.singles, 95):.0f} -> {pct(s, 95):.0f} ms "
            f"= {ratio(pct(b.singles, 95), pct(s, 95)):.1f}x faster; batch {b.leads_per_s:.0f} -> "
            f"{r.leads_per_s:.0f} leads/s = {ratio(r.leads_per_s, b.leads_per_s):.2f}x"
        )


def print_table(results: list[list[Run]]) -> None:
    """The figures as a markdown table (docs/benchmarks.md)."""
    print(
        "\n| database | tx size | batch leads/s | singles ok/sent | single p50 / p95 / p99 / "
        "max ms | healthz p95 ms | single p95 vs first | batch leads/s vs first |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for runs in results:
        b = runs[0]
        for r in runs:
            s = r.singles
            print(
                f"| {r.backend} | {r.size} | {r.leads_per_s:,.0f} | {len(s)}/{r.sent} | "
                f"{pct(s, 50):.0f} / {pct(s, 95):.0f} / {pct(s, 99):.0f} / {pct(s, 100):.0f} | "
                f"{pct(r.health, 95):.1f} | {ratio(pct(b.singles, 95), pct(s, 95)):.1f}x faster | "
                f"{ratio(r.leads_per_s, b.leads_per_s):.2f}x |"
            )


def sizes(text: str) -> list[int]:
    """`--sizes`: comma-separated transaction sizes, 1..10000."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or not all(1 <= v <= 10_000 for v in values):
        raise argparse.ArgumentTypeError("sizes between 1 and 10000, e.g. 1000,250")
    return values


def main() -> None:
    """Measure every size on every database and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=sizes, default=[1000, 250], help="first: baseline")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window")
    parser.add_argument("--preload", type=int, default=10_000, help="leads stored first")
    parser.add_argument("--single-rate", type=float, default=20.0, help="single leads a second")
    parser.add_argument("--backends", default="sqlite", help="sqlite,postgresql")
    opts = parser.parse_args()
    backends, admin_url = wanted_backends(opts.backends)
    print(
        f"{opts.seconds:.0f} s: 1,000-lead batches back to back on one connection, "
        f"{opts.single_rate:g} single leads/s, /healthz every {1000 * HEALTH_EVERY:.0f} ms; "
        f"{opts.preload} leads preloaded; {os.cpu_count()} cores shared by the server, the "
        "database and this client"
    )
    started = time.monotonic()
    results: list[list[Run]] = []
    runs = itertools.count(0, 2)  # LeadMaker runs: preload and singles, then batches
    for backend in backends:
        name = "SQLite" if backend == "sqlite" else "PostgreSQL"
        url = admin_url if backend == "postgresql" else None
        done: list[Run] = []
        for size in opts.sizes:
            done.append(configuration(name, size, opts, next(runs), url))
            print_run(done[-1], done[0] if len(done) > 1 else None)
        results.append(done)
    print_table(results)
    print(f"\n({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()

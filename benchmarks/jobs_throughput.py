"""Job engine throughput: Cauce's engines against bare procrastinate, same run.

    source /tmp/svc.env   # or pass --pg-url postgresql://user:pw@host:port/postgres
    .venv/bin/python benchmarks/jobs_throughput.py [--jobs 3000] [--workers 1,3]
        [--skip-pg] [--skip-sqlite] [--skip-throughput] [--skip-ingest] [--skip-breakdown]
        [--what-if] [--tracing sdk|off] [--log-dir DIR]

Figures, each a ratio against a baseline measured in the same run:

1. No-op jobs, defer -> succeeded. Bare procrastinate (its own App, PsycopgConnector and
   schema on a fresh database, a plain no-op task) vs Cauce's PostgreSQL engine
   (`ProcrastinateWorker` + `AttemptRunner`: attempts table, tracing, metrics), with 1 and
   3 worker processes of concurrency 10 (target >= 0.8x); and Cauce's SQLite engine
   in-process (`EmbeddedWorker`, concurrency 10) vs the bare figure (target >= 1x).
   Defer and drain are timed apart (method in _jobs_pg.py): jobs are deferred one per
   transaction into a queue no worker serves, the workers start and go idle, then one
   UPDATE releases every job at once; start-up never counts.
2. What a `defer` adds to a request: one-row transactions with and without a defer, same
   database, alternating rounds (target: <= 15 % fewer requests/s). See _jobs_ingest.py.
3. Where the time goes: client CPU per job of each piece (procrastinate's own statements,
   the runner, one unit of work, the embedded claim), measured in-process (see
   _jobs_breakdown.py), including the changes proposed in docs/benchmarks.md
   (_jobs_whatif.py). `--what-if` also runs them end to end: Cauce worker rounds with
   the lean runner (with and without the pool's pre-ping) and a lean-defer ingest variant.

It creates its own databases (named cauce_bench_*) and drops them, even on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from _jobs_breakdown import breakdown_pg, breakdown_sqlite
from _jobs_ingest import IngestResult, ingest_pg, ingest_sqlite
from _jobs_pg import EngineRound, pg_round
from _jobs_sqlite import sqlite_round

DRAIN_TARGET = 0.8
SQLITE_TARGET = 1.0
DEFER_COST_TARGET = 0.15


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="no-op jobs per round")
    parser.add_argument("--workers", default="1,3", help="worker process counts, e.g. 1,3")
    parser.add_argument("--concurrency", type=int, default=10, help="jobs at once per worker")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("CAUCE_TEST_POSTGRES_URL"),
        help="an admin PostgreSQL URL (default: $CAUCE_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--ingest", type=int, default=800, help="requests per ingest round")
    parser.add_argument("--ingest-rounds", type=int, default=3)
    parser.add_argument("--tracing", choices=["sdk", "off"], default="sdk")
    parser.add_argument("--skip-pg", action="store_true", help="no PostgreSQL figures")
    parser.add_argument("--skip-sqlite", action="store_true", help="no SQLite figures")
    parser.add_argument("--skip-throughput", action="store_true", help="no throughput rounds")
    parser.add_argument("--skip-ingest", action="store_true", help="no defer-cost figures")
    parser.add_argument("--skip-breakdown", action="store_true", help="no CPU breakdown")
    parser.add_argument("--breakdown-ops", type=int, default=250, help="calls per piece")
    parser.add_argument(
        "--what-if", action="store_true", help="add rounds with the proposed changes"
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="keep worker logs here")
    args = parser.parse_args()
    args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if not args.skip_pg and not args.pg_url:
        parser.error("PostgreSQL needed: source /tmp/svc.env, pass --pg-url, or --skip-pg")
    return args


def _row(r: EngineRound, base: EngineRound | None) -> str:
    ratio = ""
    if base is not None:
        ratio = (
            f"  {r.drain_rate / base.drain_rate:5.2f}x {r.e2e_rate / base.e2e_rate:5.2f}x"
            f" {r.defer_rate / base.defer_rate:5.2f}x"
        )
    name = f"{r.engine} x{r.workers}" if r.engine != "sqlite" else "sqlite in-process"
    return (
        f"{name:<18} {r.defer_rate:8.0f} {r.drain_rate:8.0f} {r.e2e_rate:8.0f}"
        f" {r.worker_cpu_s / r.jobs * 1e3:8.2f} {r.pg_cpu_s / r.jobs * 1e3:8.2f}{ratio}"
    )


def report_throughput(rounds: list[EngineRound], jobs: int) -> None:
    """Print the throughput table and the verdicts."""
    print(f"\n== No-op job throughput: {jobs} jobs per round, jobs/s ==")
    print(
        f"{'engine':<18} {'defer':>8} {'drain':>8} {'e2e':>8} {'wkCPUms':>8} {'pgCPUms':>8}"
        f"  ratios vs bare: drain / e2e / defer"
    )
    bare = {r.workers: r for r in rounds if r.engine == "bare"}
    for r in rounds:
        base = None
        if r.engine not in ("bare", "sqlite"):
            base = bare.get(r.workers)
        elif r.engine == "sqlite" and bare:
            base = max(bare.values(), key=lambda b: b.drain_rate)
        print(_row(r, base))
    print("(wkCPUms / pgCPUms: CPU ms per job of the worker processes / PostgreSQL backends)")
    for r in rounds:
        if r.engine not in ("bare", "sqlite") and r.workers in bare:
            b = bare[r.workers]
            ratio = r.drain_rate / b.drain_rate
            verdict = "meets" if ratio >= DRAIN_TARGET else "MISSES"
            print(
                f"PG engine ({r.engine}), {r.workers} worker(s): drain {ratio:.2f}x, e2e"
                f" {r.e2e_rate / b.e2e_rate:.2f}x bare: {verdict} >= {DRAIN_TARGET}x"
            )
        if r.engine == "sqlite" and bare:
            best = max(bare.values(), key=lambda b: b.drain_rate)
            ratio = r.drain_rate / best.drain_rate
            verdict = "meets" if ratio >= SQLITE_TARGET else "MISSES"
            print(
                f"SQLite engine: drain {ratio:.2f}x, e2e {r.e2e_rate / best.e2e_rate:.2f}x the best"
                f" bare figure (x{best.workers}): {verdict} >= {SQLITE_TARGET}x"
            )


def report_ingest(results: list[IngestResult]) -> None:
    """Print requests/s with and without a defer, and the cost."""
    print("\n== What a defer adds to a one-row request (requests/s, median of rounds) ==")
    for res in results:
        plain = res.median("plain")
        print(
            f"{res.engine} ({res.concurrency} concurrent): plain {plain:.0f}"
            f" ({min(res.rates['plain']):.0f}-{max(res.rates['plain']):.0f})"
        )
        for variant in res.rates:
            if variant == "plain":
                continue
            rates = res.rates[variant]
            cost = 1 - res.ratio(variant)
            # Machine time each request gains at full load (1 / throughput).
            added = (1 / res.median(variant) - 1 / plain) * 1e6
            verdict = "meets" if cost <= DEFER_COST_TARGET else "MISSES"
            print(
                f"  + {variant:<14} {res.median(variant):6.0f} ({min(rates):.0f}-{max(rates):.0f})"
                f" -> {res.ratio(variant):.2f}x, costs {cost * 100:.0f} %"
                f" (+{added:.0f} µs per request): {verdict} <= {DEFER_COST_TARGET * 100:.0f} %"
            )


def report_breakdown(title: str, rows: list[tuple[str, float]]) -> None:
    """Print µs of client CPU per call for each piece."""
    print(f"\n== {title}: client CPU per call (µs), sequential ==")
    for label, micros in rows:
        print(f"  {label:<58} {micros:7.0f}")


async def main(args: argparse.Namespace, log_dir: Path) -> None:
    """Run the selected figures in a fixed, interleaved order."""
    began = time.monotonic()
    rounds: list[EngineRound] = []
    cauce_args = ["--tracing", args.tracing]
    variants: list[tuple[str, str, list[str]]] = [
        ("bare", "bare", []),
        ("cauce", "cauce", cauce_args),
    ]
    if args.what_if:
        variants += [
            ("cauce", "lean", [*cauce_args, "--runner", "lean"]),
            ("cauce", "lean-noping", [*cauce_args, "--runner", "lean", "--pre-ping", "off"]),
        ]
    if not args.skip_pg and not args.skip_throughput:
        for workers in args.worker_counts:
            for engine, label, extra in variants:
                r = await pg_round(
                    args.pg_url,
                    engine,
                    workers,
                    args.jobs,
                    concurrency=args.concurrency,
                    log_dir=log_dir,
                    extra_args=extra,
                    label=label,
                )
                print(
                    f"  {label} x{workers}: defer {r.defer_s:.2f} s, drain {r.drain_s:.2f} s",
                    file=sys.stderr,
                )
                rounds.append(r)
    if not args.skip_sqlite and not args.skip_throughput:
        provider = None
        if args.tracing == "sdk":
            from opentelemetry.sdk.trace import TracerProvider

            provider = TracerProvider()
        r = await sqlite_round(args.jobs, concurrency=args.concurrency, tracer_provider=provider)
        print(f"  sqlite: defer {r.defer_s:.2f} s, drain {r.drain_s:.2f} s", file=sys.stderr)
        rounds.append(r)
    ingest: list[IngestResult] = []
    if not args.skip_ingest:
        if not args.skip_sqlite:
            ingest.append(
                await ingest_sqlite(args.ingest, args.ingest_rounds, what_if=args.what_if)
            )
        if not args.skip_pg:
            ingest.append(
                await ingest_pg(args.pg_url, args.ingest, args.ingest_rounds, what_if=args.what_if)
            )
    parts: list[tuple[str, list[tuple[str, float]]]] = []
    if not args.skip_breakdown:
        if not args.skip_pg:
            parts.append(("PostgreSQL", await breakdown_pg(args.pg_url, args.breakdown_ops)))
        if not args.skip_sqlite:
            parts.append(("SQLite", await breakdown_sqlite(args.breakdown_ops, args.jobs)))

    print(
        f"\nconcurrency {args.concurrency} per worker; tracing {args.tracing}; defer: one job"
        " per transaction, 16 concurrent (PG) / sequential (SQLite)"
    )
    if rounds:
        report_throughput(rounds, args.jobs)
    if ingest:
        report_ingest(ingest)
    for title, rows in parts:
        report_breakdown(title, rows)
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    arguments = _parse()
    if arguments.log_dir is not None:
        arguments.log_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(arguments, arguments.log_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="cauce-bench-logs-") as tmp:
            asyncio.run(main(arguments, Path(tmp)))

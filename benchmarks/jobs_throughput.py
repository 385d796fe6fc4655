"""Job engine throughput: Cauce's engines against bare procrastinate, same run.

    source /tmp/svc.env   # or pass --pg-url postgresql://user:pw@host:port/postgres
    .venv/bin/python benchmarks/jobs_throughput.py [--jobs 3000] [--workers 1,3]
        [--repeat 3] [--skip-pg] [--skip-sqlite] [--skip-throughput] [--skip-ingest]
        [--profile] [--tracing sdk|off] [--log-dir DIR]

Figures, each a ratio against a baseline measured in the same run:

1. No-op jobs, defer -> succeeded. Bare procrastinate (its own App, PsycopgConnector and
   schema on a fresh database, a plain no-op task) vs Cauce's PostgreSQL engine (the
   worker `cauce worker` builds: `ProcrastinateWorker` + `AttemptRunner`, the attempts
   log written by migration 0006's triggers, tracing, metrics), with 1 and 3 worker
   processes of concurrency 10 (target >= 0.8x end to end); and Cauce's SQLite engine
   in-process (`EmbeddedWorker`, concurrency 10) vs the bare figures (target >= 1x).
   Defer and drain are timed apart (method in _jobs_pg.py): jobs are deferred one per
   transaction into a queue no worker serves, the workers start and go idle, then one
   UPDATE releases every job at once; start-up never counts. End to end = jobs / (defer
   time + drain time). Each configuration runs `--repeat` rounds, bare and Cauce in ABBA
   order; the headline takes each phase's fastest round (see `Figure`), every round is
   printed, and the pooled ratio is shown beside it.
2. What a `defer` adds to a request (target: <= 15 % fewer requests/s): a FastAPI
   endpoint under uvicorn, driven by wrk, that validates a small JSON lead and inserts
   one row in Cauce's unit of work, with and without one `queue.defer`, rounds
   alternating on one server (_jobs_ingest_app.py, _jobs_ingest.py), best round against
   best round (median against median beside it); and, for comparison with earlier
   figures, the bare one-row transaction in-process.
3. `--profile`: after the measured rounds, one more bare and one more Cauce round per
   worker count, and one SQLite round, with a SIGPROF sampling profiler on the worker
   (_jobs_profile.Sampler) during the drain: CPU ms per job by area and by function. These
   rounds are not in the figures (the sampler costs a few per cent). Report format in
   _jobs_profile.py.

The machine's load average is printed at the start and for every round: on shared cores
other work slows rounds down at random, which is why rounds are repeated and interleaved.

It creates its own databases (named cauce_bench_*) and drops them, even on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from _jobs_ingest import IngestResult, http_pg, http_sqlite, transaction_pg, transaction_sqlite
from _jobs_pg import EngineRound, pg_round
from _jobs_sqlite import sqlite_round

E2E_TARGET = 0.8
SQLITE_TARGET = 1.0
DEFER_COST_TARGET = 0.15
ENGINES = ("bare", "cauce")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="no-op jobs per round")
    parser.add_argument("--workers", default="1,3", help="worker process counts, e.g. 1,3")
    parser.add_argument("--concurrency", type=int, default=10, help="jobs at once per worker")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per configuration")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("CAUCE_TEST_POSTGRES_URL"),
        help="an admin PostgreSQL URL (default: $CAUCE_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--http-seconds", type=float, default=5.0, help="per wrk round")
    parser.add_argument("--http-rounds", type=int, default=4, help="wrk rounds per variant")
    parser.add_argument("--http-warmup", type=float, default=2.0, help="s per variant")
    parser.add_argument("--http-connections", type=int, default=16)
    parser.add_argument("--txn", type=int, default=800, help="transactions per round")
    parser.add_argument("--txn-rounds", type=int, default=3)
    parser.add_argument("--tracing", choices=["sdk", "off"], default="sdk")
    parser.add_argument("--skip-pg", action="store_true", help="no PostgreSQL figures")
    parser.add_argument("--skip-sqlite", action="store_true", help="no SQLite figures")
    parser.add_argument("--skip-throughput", action="store_true", help="no job rounds")
    parser.add_argument("--skip-ingest", action="store_true", help="no defer-cost figures")
    parser.add_argument("--profile", action="store_true", help="add sampled rounds")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep worker logs here")
    args = parser.parse_args()
    args.worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if not args.skip_pg and not args.pg_url:
        parser.error("PostgreSQL needed: source /tmp/svc.env, pass --pg-url, or --skip-pg")
    return args


def _verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


@dataclass
class Figure:
    """One configuration's rounds.

    The headline is best-of: each phase's fastest round (the defer phase over every round
    of the engine, since it does not depend on the workers; the drain over the
    configuration's rounds). Other work on the shared cores only ever slows a round down,
    so the fastest round is the least disturbed one (the reasoning of `timeit`). Pooled
    rates (all jobs over all seconds) are shown beside it.
    """

    name: str
    rounds: list[EngineRound]
    engine_rounds: list[EngineRound]

    @property
    def defer_best(self) -> float:
        """Fastest defer phase of the engine, jobs/s."""
        return max(r.defer_rate for r in self.engine_rounds)

    @property
    def drain_best(self) -> float:
        """Fastest drain of the configuration, jobs/s."""
        return max(r.drain_rate for r in self.rounds)

    @property
    def e2e_best(self) -> float:
        """Jobs/s from first defer to last success, best phases: 1 / (1/defer + 1/drain)."""
        return 1 / (1 / self.defer_best + 1 / self.drain_best)

    @property
    def e2e_pooled(self) -> float:
        """Jobs/s from first defer to last success, every round pooled."""
        defer_s = sum(r.defer_s / r.jobs for r in self.engine_rounds) / len(self.engine_rounds)
        drain_s = sum(r.drain_s for r in self.rounds) / sum(r.jobs for r in self.rounds)
        return 1 / (defer_s + drain_s)

    def cpu_ms(self, attr: str) -> float:
        """CPU ms per job of the workers (`worker_cpu_s`) or the server (`pg_cpu_s`), in
        the configuration's fastest drain."""
        best = max(self.rounds, key=lambda r: r.drain_rate)
        return float(getattr(best, attr)) / best.jobs * 1e3


def figures(rounds: list[EngineRound]) -> dict[str, Figure]:
    """`bare x1`, `cauce x1`, ..., `sqlite`: the rounds of each configuration."""
    out: dict[str, Figure] = {}
    for r in rounds:
        name = "sqlite" if r.engine == "sqlite" else f"{r.engine} x{r.workers}"
        if name not in out:
            out[name] = Figure(name, [], [x for x in rounds if x.engine == r.engine])
        out[name].rounds.append(r)
    return out


def report_throughput(rounds: list[EngineRound], jobs: int, concurrency: int) -> None:
    """Print every round, then the figures, their ratios and the verdicts."""
    print(f"\n== No-op job throughput: {jobs} jobs per round, concurrency {concurrency} ==")
    print("rounds (jobs/s; CPU ms per job during the drain; 1-min load average before/after):")
    print(f"  {'round':<22} {'defer':>6} {'drain':>6} {'wkCPU':>6} {'pgCPU':>6} {'load':>10}")
    seen: dict[str, int] = {}
    for r in rounds:
        name = "sqlite in-process" if r.engine == "sqlite" else f"{r.engine} x{r.workers}"
        seen[name] = seen.get(name, 0) + 1
        print(
            f"  {name + ' #' + str(seen[name]):<22} {r.defer_rate:6.0f} {r.drain_rate:6.0f}"
            f" {r.worker_cpu_s / r.jobs * 1e3:6.2f} {r.pg_cpu_s / r.jobs * 1e3:6.2f}"
            f" {r.load[0]:4.1f}/{r.load[1]:4.1f}"
        )
    figs = figures(rounds)
    print(
        "figures (best-of: fastest defer phase of the engine, fastest drain of the"
        " configuration; e2e = 1 / (1/defer + 1/drain); CPU of the fastest drain;"
        " pooled e2e = every round together):"
    )
    print(
        f"  {'':<10} {'defer':>6} {'drain':>6} {'e2e':>6} {'wkCPU':>6} {'pgCPU':>6}"
        f" {'pooled':>7}   ratio vs baseline: e2e (drain) [pooled e2e]"
    )
    base_of = {"cauce x1": "bare x1", "cauce x3": "bare x3", "sqlite": "bare x1"}
    for name, f in figs.items():
        ratio = ""
        base = figs.get(base_of.get(name, ""))
        if base is not None:
            ratio = (
                f"   {f.e2e_best / base.e2e_best:.2f}x ({f.drain_best / base.drain_best:.2f}x)"
                f" [{f.e2e_pooled / base.e2e_pooled:.2f}x] vs {base.name}"
            )
        print(
            f"  {name:<10} {f.defer_best:6.0f} {f.drain_best:6.0f} {f.e2e_best:6.0f}"
            f" {f.cpu_ms('worker_cpu_s'):6.2f} {f.cpu_ms('pg_cpu_s'):6.2f}"
            f" {f.e2e_pooled:7.0f}{ratio}"
        )
    bares = sorted((f for n, f in figs.items() if n.startswith("bare")), key=lambda b: b.name)
    for name, f in figs.items():
        if name.startswith("cauce") and (base := figs.get(base_of.get(name, ""))):
            e2e = f.e2e_best / base.e2e_best
            print(
                f"PG engine, {name}: e2e {e2e:.2f}x {base.name} (drain"
                f" {f.drain_best / base.drain_best:.2f}x, pooled e2e"
                f" {f.e2e_pooled / base.e2e_pooled:.2f}x): {_verdict(e2e >= E2E_TARGET)}"
                f" >= {E2E_TARGET}x"
            )
        if name == "sqlite":
            for b in bares:
                e2e = f.e2e_best / b.e2e_best
                print(
                    f"SQLite engine in-process: e2e {e2e:.2f}x {b.name} (drain"
                    f" {f.drain_best / b.drain_best:.2f}x, pooled e2e"
                    f" {f.e2e_pooled / b.e2e_pooled:.2f}x): {_verdict(e2e >= SQLITE_TARGET)}"
                    f" >= {SQLITE_TARGET}x"
                )


def report_ingest(results: list[IngestResult]) -> None:
    """Print requests/s with and without a defer, and the cost."""
    print(
        "\n== What a defer adds to a request (requests/s: best round, median, all rounds;"
        " cost = 1 - defer/plain, best against best [median against median]) =="
    )
    for res in results:
        plain, defer = res.best("plain"), res.best("defer")
        added = (1 / defer - 1 / plain) * 1e6  # machine time per request at full load
        cost = res.cost()
        latency = ""
        if res.p50_ms:
            latency = (
                f", p50 {statistics.median(res.p50_ms['plain']):.1f} ->"
                f" {statistics.median(res.p50_ms['defer']):.1f} ms"
            )
        target = f": {_verdict(cost <= DEFER_COST_TARGET)} <= {DEFER_COST_TARGET * 100:.0f} %"
        if res.level != "HTTP request":
            target = " (context only: the target is for the request)"
        print(f"{res.level}, {res.engine}, {res.concurrency} concurrent:")
        for variant in ("plain", "defer"):
            rates = " ".join(f"{x:.0f}" for x in res.rates[variant])
            print(
                f"  {variant:<6} best {res.best(variant):5.0f}  median {res.median(variant):5.0f}"
                f"  rounds {rates}"
            )
        print(
            f"  cost {cost * 100:+.1f} % [{res.cost('median') * 100:+.1f} %], {added:+.0f} µs"
            f" per request{latency}{target}; load {res.load[0]:.1f}/{res.load[1]:.1f}"
        )


async def main(args: argparse.Namespace, log_dir: Path) -> None:
    """Run the selected figures in a fixed, interleaved order."""
    began = time.monotonic()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs; load average"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}; Python {platform.python_version()},"
        f" procrastinate {version('procrastinate')}, SQLAlchemy {version('sqlalchemy')},"
        f" psycopg {version('psycopg')}; tracing {args.tracing}"
    )
    sys.stdout.flush()
    rounds: list[EngineRound] = []
    extra = ["--tracing", args.tracing]
    provider = None
    if args.tracing == "sdk":
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider()
    if not args.skip_pg and not args.skip_throughput:
        # ABBA...: bare, cauce, cauce, bare, ... so a drift in the neighbours' load evens out.
        order = [
            (w, e)
            for w in args.worker_counts
            for k in range(args.repeat)
            for e in (ENGINES if k % 2 == 0 else ENGINES[::-1])
        ]
        for workers, engine in order:
            r = await pg_round(
                args.pg_url,
                engine,
                workers,
                args.jobs,
                concurrency=args.concurrency,
                log_dir=log_dir,
                extra_args=extra if engine == "cauce" else (),
            )
            print(
                f"  {engine} x{workers}: defer {r.defer_s:.2f} s, drain {r.drain_s:.2f} s",
                file=sys.stderr,
            )
            rounds.append(r)
    if not args.skip_sqlite and not args.skip_throughput:
        for _ in range(args.repeat):
            r = await sqlite_round(
                args.jobs, concurrency=args.concurrency, tracer_provider=provider
            )
            print(f"  sqlite: defer {r.defer_s:.2f} s, drain {r.drain_s:.2f} s", file=sys.stderr)
            rounds.append(r)
    ingest: list[IngestResult] = []
    if not args.skip_ingest:
        conns, secs = args.http_connections, args.http_seconds
        if not args.skip_sqlite:
            ingest.append(
                await http_sqlite(
                    log_dir,
                    connections=conns,
                    rounds=args.http_rounds,
                    seconds=secs,
                    warmup_s=args.http_warmup,
                )
            )
        if not args.skip_pg:
            ingest.append(
                await http_pg(
                    args.pg_url,
                    log_dir,
                    connections=conns,
                    rounds=args.http_rounds,
                    seconds=secs,
                    warmup_s=args.http_warmup,
                )
            )
        if not args.skip_sqlite:
            ingest.append(await transaction_sqlite(args.txn, args.txn_rounds))
        if not args.skip_pg:
            ingest.append(await transaction_pg(args.pg_url, args.txn, args.txn_rounds))
        print("  ingest done", file=sys.stderr)
    profiled: list[EngineRound] = []
    if args.profile:
        if not args.skip_pg:
            for workers, engine in [(w, e) for w in args.worker_counts for e in ENGINES]:
                profiled.append(
                    await pg_round(
                        args.pg_url,
                        engine,
                        workers,
                        args.jobs,
                        concurrency=args.concurrency,
                        log_dir=log_dir,
                        extra_args=extra if engine == "cauce" else (),
                        profile=True,
                    )
                )
        if not args.skip_sqlite:
            profiled.append(
                await sqlite_round(
                    args.jobs, concurrency=args.concurrency, tracer_provider=provider, profile=True
                )
            )

    if rounds:
        report_throughput(rounds, args.jobs, args.concurrency)
    if ingest:
        report_ingest(ingest)
    for r in profiled:
        name = "sqlite in-process" if r.engine == "sqlite" else f"{r.engine} x{r.workers}"
        print(
            f"\n== Profile (not in the figures): {name}, drain {r.drain_rate:.0f} jobs/s,"
            f" CPU ms per job: workers {r.worker_cpu_s / r.jobs * 1e3:.2f},"
            f" PostgreSQL {r.pg_cpu_s / r.jobs * 1e3:.2f} =="
        )
        for text in r.profiles:
            print(text.rstrip())
    print(f"\ntotal {time.monotonic() - began:.0f} s; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    arguments = _parse()
    if arguments.log_dir is not None:
        arguments.log_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(arguments, arguments.log_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="cauce-bench-logs-") as tmp:
            asyncio.run(main(arguments, Path(tmp)))

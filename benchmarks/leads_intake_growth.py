"""Intake as the stored leads grow: batches and single leads, in-process.

The app (`cauce.app.create_app`, the settings `cauce serve` gets in
benchmarks/leads_ingest.py) behind httpx's ASGI transport, one process, no HTTP server:
the leads of `leads_ingest.lua` (few names and places, so blocks fill up as they would
for a company with many Garcías in Madrid) are stored with `POST /v1/leads/batch` of
1,000 up to each size (the batches' leads/s and CPU per lead are reported per step), then
`--requests` single leads are sent `--concurrency` at a time. What it shows is how the
cost of an arrival grows with the leads it is matched against; the client's own CPU is
in the figures (the same at every size), and so is the process's memory (RSS, client
included).

Each database is measured in a process of its own. `--baseline-cache N` measures it twice
in the same run, each time in a fresh process: first with `leads.candidate_cache_size` N
(the baseline), then with `--candidate-cache` or the default; it prints the ratios.

    source /tmp/svc.env   # optional: also PostgreSQL (CAUCE_TEST_POSTGRES_URL)
    .venv/bin/python benchmarks/leads_intake_growth.py [--sizes 5000,10000,25000]
    .venv/bin/python benchmarks/leads_intake_growth.py --sizes 10000,40000,80000,120000 \\
        --baseline-cache 32768 --requests 0 --restart-batches 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from leads_ingest import (
    LeadMaker,
    add_setting_options,
    app_client,
    cauce_env,
    environment,
    pg_database,
    run_cli,
    send_singles,
)

BATCH = 1000
RESULT = "RESULT "  # a child's last line: its steps
EnvMaker = Callable[[Path, str, argparse.Namespace], AbstractContextManager[dict[str, str]]]


@dataclass
class Step:
    """The figures at one size."""

    size: int
    batch_rate: float  # leads/s of the batches that stored the leads since the last size
    batch_cpu_ms: float  # CPU per lead of those batches
    single_rate: float  # req/s of single leads at this size (0: none sent)
    single_cpu_ms: float
    rss_mib: float
    warm_s: float = 0.0  # a restart's: how long the candidate cache's warm-up took


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _measure(
    settings: Any, key: str, sizes: list[int], opts: argparse.Namespace
) -> list[Step]:
    maker = LeadMaker()
    numbers = iter(range(10**8))
    stored = 0
    steps: list[Step] = []
    async with app_client(settings, key) as (client, headers):

        async def singles(n: int) -> None:
            await send_singles(client, headers, maker, numbers, n)

        for size in sizes:
            sent_in_batches, wall, cpu = 0, time.perf_counter(), time.process_time()
            while stored < size:
                items = [maker(next(numbers)) for _ in range(min(BATCH, size - stored))]
                body = orjson.dumps({"items": items})
                r = await client.post("/v1/leads/batch", content=body, headers=headers)
                assert r.status_code == 200, r.text
                stored += len(items)
                sent_in_batches += len(items)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            step = Step(
                size,
                sent_in_batches / wall if sent_in_batches else 0.0,
                1000 * cpu / sent_in_batches if sent_in_batches else 0.0,
                0.0,
                0.0,
                0.0,
            )
            each = opts.requests // opts.concurrency
            if each:
                await asyncio.gather(*(singles(5) for _ in range(opts.concurrency)))  # warm-up
                wall, cpu = time.perf_counter(), time.process_time()
                await asyncio.gather(*(singles(each) for _ in range(opts.concurrency)))
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                sent = each * opts.concurrency
                stored += sent + 5 * opts.concurrency
                step.single_rate, step.single_cpu_ms = sent / wall, 1000 * cpu / sent
            step.rss_mib = _rss_mib()
            steps.append(step)
            print(
                f"  {size:>7,} stored   batches {step.batch_rate:6.0f} leads/s "
                f"{step.batch_cpu_ms:5.2f} ms CPU a lead"
                + (
                    f"   single {step.single_rate:6.0f} req/s {step.single_cpu_ms:5.2f} ms CPU"
                    if each
                    else ""
                )
                + f"   RSS {step.rss_mib:5.0f} MiB",
                flush=True,
            )
    return steps


async def _restart(settings: Any, key: str, stored: int, batches: int) -> Step:
    """A new app on the same database (a restart, in this process: its text caches stay
    warm): how long its candidate cache's warm-up takes, then `batches` batches of new
    leads."""
    from asgi_lifespan import LifespanManager

    from cauce.app import create_app

    maker = LeadMaker()
    numbers = iter(range(10**8 + stored, 2 * 10**8))  # leads not sent yet
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    app = create_app(settings)
    wall = time.perf_counter()
    async with LifespanManager(app):
        warming = app.state.resources.leads.warming
        if warming is not None:
            await warming
        warm_s = time.perf_counter() - wall
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cauce") as client:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(batches):
                body = orjson.dumps({"items": [maker(next(numbers)) for _ in range(BATCH)]})
                r = await client.post("/v1/leads/batch", content=body, headers=headers)
                assert r.status_code == 200, r.text
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sent = batches * BATCH
    step = Step(stored, sent / wall, 1000 * cpu / sent, 0.0, 0.0, _rss_mib(), warm_s)
    print(
        f"  restart  warm-up {warm_s:5.1f} s, then {batches} batches "
        f"{step.batch_rate:6.0f} leads/s {step.batch_cpu_ms:5.2f} ms CPU a lead",
        flush=True,
    )
    return step


def _settings(env: dict[str, str], log: Any) -> Any:
    from cauce.core.config import load_settings
    from cauce.core.observability.logging import configure_logging

    with environment(env):
        settings = load_settings()
    configure_logging(settings, stream=log)  # the JSON access log is part of the path
    return settings


def _one(make_env: EnvMaker, label: str, sizes: list[int], opts: argparse.Namespace) -> None:
    """Measure one database with one configuration, in this process; the steps as the
    last line of output (JSON), for `_run` in the parent."""
    with (
        tempfile.TemporaryDirectory(prefix="leads-growth-") as tmp_name,
        open(os.devnull, "w") as log,
        make_env(Path(tmp_name), label, opts) as env,
    ):
        key = run_cli(
            ["apikey", "create", "--name", "b", "--scopes", "leads:write,leads:read"],
            env,
            Path(tmp_name),
        )
        settings = _settings(env, log)
        steps = asyncio.run(_measure(settings, key, sizes, opts))
        if opts.restart_batches:
            steps.append(asyncio.run(_restart(settings, key, sizes[-1], opts.restart_batches)))
    print(RESULT + orjson.dumps([asdict(step) for step in steps]).decode(), flush=True)


def _child(database: str, cache: int | None) -> list[Step]:
    """Run `_one` in a fresh process (each configuration gets its own heap, garbage
    collector tuning and RSS); its output passes through."""
    args = list(sys.argv[1:])
    args += ["--only", database] + ([] if cache is None else ["--candidate-cache", str(cache)])
    child = subprocess.Popen(
        [sys.executable, __file__, *args, "--child"], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    steps: list[Step] = []
    for line in child.stdout:
        if line.startswith(RESULT):
            steps = [Step(**step) for step in orjson.loads(line[len(RESULT) :])]
        else:
            print(line, end="", flush=True)
    if child.wait() != 0:
        sys.exit(f"the {database} measurement failed")
    return steps


def _run(database: str, opts: argparse.Namespace) -> None:
    """One database: once, or with the baseline cache first and then the measured one."""
    runs: list[tuple[str, int | None]] = []
    if opts.baseline_cache is not None:
        runs.append((f"candidate cache {opts.baseline_cache:,} (baseline)", opts.baseline_cache))
    cache = opts.candidate_cache
    runs.append((f"candidate cache {'default' if cache is None else f'{cache:,}'}", cache))
    results: list[list[Step]] = []
    for name, run_cache in runs:
        print(f"{database}, {name}: batches of {BATCH} to each size, then single leads")
        results.append(_child(database, run_cache))
    if len(results) == 2:
        print(f"{database}: measured / baseline")
        for base_step, step in zip(results[0], results[1], strict=True):
            single = (
                f"   single {step.single_rate / base_step.single_rate:4.2f}x"
                if base_step.single_rate
                else ""
            )
            batch = (
                f"batches {step.batch_rate / base_step.batch_rate:4.2f}x"
                if base_step.batch_rate
                else "batches -"
            )
            print(
                f"  {'restart' if step.warm_s else f'{step.size:>7,} stored'}   {batch}{single}"
                f"   RSS {step.rss_mib - base_step.rss_mib:+5.0f} MiB"
            )


@contextmanager
def _sqlite_env(tmp: Path, label: str, opts: argparse.Namespace) -> Iterator[dict[str, str]]:
    yield cauce_env(tmp / label, None, opts)


@contextmanager
def _pg_env(tmp: Path, label: str, opts: argparse.Namespace) -> Iterator[dict[str, str]]:
    with pg_database(os.environ["CAUCE_TEST_POSTGRES_URL"], label.lower()) as url:
        env = cauce_env(tmp / label, url, opts)
        run_cli(["db", "upgrade"], env, tmp)
        yield env


def main() -> None:
    """Measure each database at each size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,10000,25000")
    parser.add_argument("--requests", type=int, default=800, help="single leads a size (0: none)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--baseline-cache",
        type=int,
        help="also run with this leads.candidate_cache_size first, and print the ratios",
    )
    parser.add_argument(
        "--restart-batches",
        type=int,
        default=0,
        help="then restart the app on the same database and send this many batches",
    )
    parser.add_argument("--only", choices=("SQLite", "PostgreSQL"), help="one database only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_setting_options(parser)
    opts = parser.parse_args()
    sizes = sorted(int(s) for s in opts.sizes.split(","))
    if opts.child:
        _one(_sqlite_env if opts.only == "SQLite" else _pg_env, opts.only, sizes, opts)
        return
    for database in ("SQLite", "PostgreSQL"):
        if opts.only not in (None, database):
            continue
        if database == "PostgreSQL" and not os.environ.get("CAUCE_TEST_POSTGRES_URL"):
            print("CAUCE_TEST_POSTGRES_URL is not set: PostgreSQL skipped")
            continue
        _run(database, opts)


if __name__ == "__main__":
    main()

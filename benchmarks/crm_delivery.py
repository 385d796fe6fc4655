"""CRM delivery rate against the HubSpot sandbox at HubSpot's real limits (issue 6).

    .venv/bin/python benchmarks/crm_delivery.py [--leads 100000] [--error-rate 0.1]
        [--db sqlite|postgresql] [--seed 7] [--latency-ms 0] [--retry-attempts 3]
        [--rate 18] [--burst 10]
    source /tmp/svc.env; .venv/bin/python benchmarks/crm_delivery.py --scale-out
        [--ingest-leads 5000] [--serves 2] [--workers 3] [--sync-wait 300]

1. Delivery (default). The sandbox CRM (in a thread) enforces 190 requests per rolling
   10 s and 100 inputs per batch, and answers 10 % of requests with a 5xx *before*
   applying them (each still uses its slot in the window, as on HubSpot). N leads are
   inserted straight into the database as `pending` (a bulk insert, then ANALYZE: this
   measures delivery, not intake), one `crm.deliver` job is deferred, and Cauce's own job
   worker (the embedded dispatcher on SQLite, the procrastinate worker on PostgreSQL, in
   this process, with every task registered as in `cauce serve`/`cauce worker`) delivers
   them through the HubSpot adapter and its guards: a local limiter of 18 requests/s with
   a burst of 10 (as `cauce demo`), the upstream's default in-call retries (3 attempts,
   `--retry-attempts`; the demo uses 1) and a breaker.

   Figure: sustained contacts/s between 10 % and 90 % of the leads delivered, against
   what the limit lets succeed: 190/10 s x 0.9 (the 5xx) x 100 records = 1,710 leads/s,
   and the issue's target, 0.9x that = 1,539 leads/s. Cauce's limiter (18/s, so that no
   10 s window sees more than 190) caps it at 1,620/s. Then: lost (leads not `synced`, or
   fewer contacts than leads) and duplicated (a key stored twice) must both be 0. Also
   printed: this process's CPU time per CRM request and the load average, to tell a busy
   machine from a design limit. By default the sandbox answers without HubSpot's latency
   (~100-300 ms per batch upsert, `--latency-ms`): a delivery keeps
   `CAUCE_CRM__DELIVERY_LANES` (4) requests in flight so that latency does not bound the
   rate by itself (150 ms with 1 lane: ~400 leads/s).

2. Scale-out (`--scale-out`, PostgreSQL): 2 `cauce serve` + 3 `cauce worker` processes
   on one fresh database, leads sent through `POST /v1/leads/batch` from 4 concurrent
   clients over both API processes; reported: ingest leads/s and per-call latency, sync
   contacts/s while ingesting and overall, the lag after ingest ends, lost (not synced
   when the wait ends) and duplicated, each process's CPU time during ingest and what
   PostgreSQL's backends waited on. Just reported (no target).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _crm_common import (
    HUBSPOT_POLICY,
    contacts,
    fresh_pg_database,
    insert_pending,
    migrated,
    sample_until,
    sandbox_config,
    status_counts,
)
from cauce.app import job_worker_for, open_resources
from cauce.core.config import Settings
from cauce.core.db import unit_of_work
from cauce.core.jobs.metrics import JobMetrics
from cauce.core.observability.logging import configure_logging
from cauce.core.observability.metrics import build_registry
from cauce.leads.tasks import request_delivery
from cauce.sandbox import ThreadedSandboxCrm, start_sandbox_crm_in_thread

LIMIT_REQUESTS = 190
LIMIT_WINDOW = 10.0
BATCH = 100
TARGET_SHARE = 0.9


@dataclass(frozen=True)
class Cpu:
    """CPU this process used while delivering, and the machine's load around it."""

    seconds: float
    load_before: float
    load_after: float


def ceiling(error_rate: float) -> float:
    """Leads/s the limit lets succeed: every request uses a slot, 5xx ones deliver nothing."""
    return LIMIT_REQUESTS / LIMIT_WINDOW * (1.0 - error_rate) * BATCH


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=100_000, help="pending leads to deliver")
    parser.add_argument("--error-rate", type=float, default=0.1, help="injected 5xx share")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="sandbox's mean added latency per request"
    )
    parser.add_argument("--rate", type=float, default=18.0, help="Cauce's local limiter, req/s")
    parser.add_argument("--burst", type=int, default=10, help="Cauce's local limiter burst")
    parser.add_argument(
        "--retry-attempts",
        type=int,
        default=3,
        help="in-call attempts per request (the upstream default: 3; the demo: 1)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("CAUCE_TEST_POSTGRES_URL"),
        help="admin PostgreSQL URL (default: $CAUCE_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--scale-out", action="store_true", help="run the PostgreSQL scale-out")
    parser.add_argument("--ingest-leads", type=int, default=5000, help="leads sent (scale-out)")
    parser.add_argument("--serves", type=int, default=2, help="`cauce serve` processes")
    parser.add_argument("--workers", type=int, default=3, help="`cauce worker` processes")
    parser.add_argument(
        "--sync-wait", type=float, default=300.0, help="seconds allowed to sync after ingest"
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="keep process logs here")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    args = parser.parse_args()
    if (args.scale_out or args.db == "postgresql") and not args.pg_url:
        parser.error("PostgreSQL needed: source /tmp/svc.env or pass --pg-url")
    return args


def settings_for(
    data_dir: Path, database_url: str, sandbox: ThreadedSandboxCrm, policy: dict[str, Any]
) -> Settings:
    """Cauce's settings for one round: the sandbox as HubSpot, quiet logs."""
    values: dict[str, Any] = {
        "env": "development",
        "data_dir": data_dir,
        "database_url": database_url,
        "log": {"level": "warning", "format": "json"},
        "crm": {
            "provider": "hubspot",
            "base_url": sandbox.url,
            "token": sandbox.crm.token,
            "allow_hosts": ("127.0.0.1",),
        },
        "upstreams": {"hubspot": policy},
    }
    return Settings(**values)


async def delivery_round(args: argparse.Namespace, database_url: str, data_dir: Path) -> bool:
    """Deliver `args.leads` pending leads; print the figures; True if every check passes."""
    policy = {
        **HUBSPOT_POLICY,
        "rate_limit": {**HUBSPOT_POLICY["rate_limit"], "rate": args.rate, "burst": args.burst},
        "retry": {"max_attempts": args.retry_attempts},
    }
    sandbox = start_sandbox_crm_in_thread(
        sandbox_config(args.error_rate, args.seed, args.latency_ms)
    )
    try:
        settings = settings_for(data_dir, database_url, sandbox, policy)
        configure_logging(settings)  # warnings only: a log line per batch costs CPU
        db = await migrated(settings)
        inserted = await insert_pending(db, args.leads)
        await db.dispose()
        print(f"inserted {args.leads} pending leads in {inserted:.1f} s ({args.db})")
        registry = build_registry()
        async with open_resources(
            settings, registry=registry, job_metrics=JobMetrics(registry)
        ) as resources:
            async with unit_of_work(resources.db.sessionmaker) as session:
                await request_delivery(session, resources.jobs, settings)
            worker = job_worker_for(resources)
            load_before = os.getloadavg()[0]
            started, cpu_started = time.monotonic(), time.process_time()
            await worker.start()
            # Generous: 6x the time the limit needs, plus a minute.
            deadline = started + 6 * args.leads / ceiling(args.error_rate) + 60
            samples = await sample_until(lambda: contacts(sandbox), args.leads, deadline)
            while time.monotonic() < deadline:
                # The last batch's bookkeeping lands just after its contacts.
                if not (await status_counts(resources.db)).get("pending", 0):
                    break
                await asyncio.sleep(0.5)
            total_seconds = time.monotonic() - started
            cpu = Cpu(time.process_time() - cpu_started, load_before, os.getloadavg()[0])
            await worker.stop()
            counts = await status_counts(resources.db)
        stats = sandbox.stats()
    finally:
        sandbox.stop()
    return report_delivery(args, samples.steady_rate(args.leads), total_seconds, counts, stats, cpu)


def report_delivery(
    args: argparse.Namespace,
    steady: float,
    seconds: float,
    counts: dict[str, int],
    stats: dict[str, Any],
    cpu: Cpu,
) -> bool:
    """Print the delivery figures and verdicts."""
    requests = stats["requests"]
    limit = ceiling(args.error_rate)
    target = TARGET_SHARE * limit
    lost = max(args.leads - counts.get("synced", 0), args.leads - int(stats["contacts"]))
    duplicated = int(stats["duplicate_count"])
    errors = sum(n for code, n in requests["by_status"].items() if code.startswith("5"))
    print(
        f"\n== CRM delivery: {args.leads} leads, {args.error_rate:.0%} injected 5xx,"
        f" sandbox latency {args.latency_ms:.0f} ms, {args.db}, seed {args.seed} =="
    )
    print(
        f"requests {requests['total']} ({errors} 5xx, {sum(requests['rate_limited'].values())}"
        f" 429) in {seconds:.1f} s = {requests['total'] / seconds:.1f}/s"
        f" (limit {LIMIT_REQUESTS / LIMIT_WINDOW:.0f}/s; Cauce's limiter {args.rate}/s"
        f" burst {args.burst}; {args.retry_attempts} attempts per request)"
    )
    print(f"overall: {args.leads / seconds:.0f} leads/s (start-up and tail included)")
    print(
        f"sustained (10 %-90 %): {steady:.0f} leads/s = {steady / limit:.2f}x the"
        f" {limit:.0f}/s the limit lets succeed; target >= {target:.0f}/s:"
        f" {'meets' if steady >= target else 'MISSES'}"
    )
    print(f"lost: {lost}; duplicated: {duplicated}; statuses {counts}")
    print(
        f"CPU (this process: Cauce, its worker and the sandbox thread): {cpu.seconds:.1f} s"
        f" in {seconds:.1f} s wall ({cpu.seconds / seconds:.0%} of one core),"
        f" {cpu.seconds / max(1, requests['total']) * 1000:.1f} ms per CRM request;"
        f" load average {cpu.load_before:.2f} -> {cpu.load_after:.2f}"
        f" ({os.cpu_count()} cores)"
    )
    return steady >= target and lost == 0 and duplicated == 0


async def main() -> int:
    """Run the rounds asked for; exit status 1 if a check fails."""
    args = _parse()
    if args.scale_out:
        from _crm_scaleout import scale_out

        return 0 if await scale_out(args) else 1
    with tempfile.TemporaryDirectory(prefix="cauce-crm-bench-") as tmp:
        data_dir = Path(tmp)
        if args.db == "sqlite":
            ok = await delivery_round(
                args, f"sqlite+aiosqlite:///{data_dir / 'cauce.db'}", data_dir
            )
        else:
            with fresh_pg_database(args.pg_url, "cauce_bench_crm") as url:
                ok = await delivery_round(args, url, data_dir)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

"""PostgreSQL: `cauce serve` plus three `cauce worker` processes, workers SIGKILLed at random.

Each kill picks, from the test's seed, either the worker running the CRM delivery right
now (found by its pid in the attempts table) or any worker, and starts a fresh worker in
its place. A killed worker's delivery stays `doing` until a surviving worker's sweeper
sees its heartbeat stop (`stalled_after_seconds`, shortened to 4 s here) and runs it
again; its batch is re-sent and the keyed upserts make that harmless.

`CAUCE_RELIABILITY_LEADS` changes the least number of leads sent; `CAUCE_RELIABILITY_SEED` replays
the kill moments of a failed run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cauce.core.jobs.models import JobAttempt
from cauce.demo import demo_leads
from cauce.sandbox import FaultSettings, SandboxCrmConfig
from tests.reliability.conftest import SandboxFactory
from tests.reliability.harness import (
    CauceProcess,
    Ingest,
    after_crm_requests,
    attempt_outcomes,
    cauce_env,
    check_delivered,
    free_port,
    log,
    prepare_database,
    sync_counts,
    wait_all_synced,
    wait_healthy,
)

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

LEADS = int(os.environ.get("CAUCE_RELIABILITY_LEADS", "10000"))
WORKERS = 3
KILLS = 6
POOL_FACTOR = 4  # leads on hand: ingest outlasts the kills, never runs dry
BUDGET_SECONDS = 240.0


@pytest.fixture(params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Separate workers exist only on PostgreSQL."""
    return str(request.param)


async def delivering_pid(engine: AsyncEngine, within: float) -> int | None:
    """The pid of the worker running a CRM delivery, waiting up to `within` seconds for
    one to start (deliveries run in bursts); None if none did."""
    give_up = time.monotonic() + within
    while True:
        async with engine.connect() as conn:
            worker = await conn.scalar(
                select(JobAttempt.worker_id)
                .where(JobAttempt.task == "crm.deliver", JobAttempt.outcome == "running")
                .order_by(JobAttempt.id.desc())
                .limit(1)
            )
        if worker is not None or time.monotonic() > give_up:
            break
        await asyncio.sleep(0.2)
    if worker is None:
        return None
    # "<host>:<pid>:procrastinate-<n>"
    parts = str(worker).split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


async def test_workers_killed_every_lead_synced_once(
    tmp_path: Path,
    database_url: str,
    seed: int,
    rng: random.Random,
    sandbox_factory: SandboxFactory,
    processes: list[CauceProcess],
) -> None:
    """With `cauce worker` processes SIGKILLed at 6 random moments (restarted each time),
    every lead Cauce accepted ends `synced` and is exactly one sandbox contact."""
    deadline = time.monotonic() + BUDGET_SECONDS
    sandbox = sandbox_factory(
        SandboxCrmConfig(
            extra_properties=("cauce_score", "cauce_owner"),
            faults=FaultSettings(error_rate=0.03),
            seed=seed,
        )
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    token = await prepare_database(data_dir, database_url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cauce_env(data_dir, port=port, sandbox=sandbox, database_url=database_url)
    serve = CauceProcess("serve", ("serve",), env, tmp_path)
    workers = [
        CauceProcess(f"worker{n}", ("worker", "--concurrency", "4"), env, tmp_path)
        for n in range(WORKERS)
    ]
    processes.extend([serve, *workers])
    for process in (serve, *workers):
        process.start()
    await wait_healthy(base, serve)
    engine = create_async_engine(database_url)
    try:
        ingest = Ingest([base], token, batch_size=500, deadline=deadline)
        # Leads keep arriving until the last kill (at least LEADS of them), so every
        # kill lands while work is outstanding, however fast this machine is.
        killed = asyncio.Event()
        pool = demo_leads(LEADS * POOL_FACTOR, seed)
        sending = asyncio.create_task(ingest.send(pool, minimum=LEADS, stop=killed))
        kills: list[dict[str, Any]] = []
        started = time.monotonic()
        while len(kills) < KILLS:
            # A random moment: after 0.5 to 2 s, then 1 to 10 more CRM requests.
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await after_crm_requests(sandbox, rng.randint(1, 10), within=4.0)
            pid = await delivering_pid(engine, within=3.0)
            by_pid = {w.proc.pid: w for w in workers if w.proc is not None and w.alive()}
            aim = pid in by_pid and rng.random() < 0.7
            victim = by_pid[pid] if aim and pid is not None else rng.choice(workers)
            counts = await sync_counts(engine)
            hit_delivery = victim.proc is not None and victim.proc.pid == pid
            victim.kill()
            victim.start()
            kills.append(
                {
                    "at": round(time.monotonic() - started, 1),
                    "worker": victim.name,
                    "hit_delivery": hit_delivery,
                    "ingesting": not sending.done(),
                    "counts": counts,
                    "outstanding": not sending.done() or counts.get("pending", 0) > 0,
                }
            )
        killed.set()
        tally = await sending
        counts = await wait_all_synced(engine, deadline)
        stats = await check_delivered(engine, sandbox)
        attempts = await attempt_outcomes(engine, "crm.deliver")
        log.info("kills: %s", kills)
        log.info("ingest: %s; final: %s; deliver attempts: %s", tally, counts, attempts)
        log.info("sandbox: %s; %.1f s", stats["requests"], time.monotonic() - started)

        assert sum(1 for k in kills if k["outstanding"]) >= 5, kills
        assert all(w.alive() for w in workers)
        assert LEADS <= tally.items < len(pool)  # the pool never ran dry
        assert tally.outcomes["rejected"] > 0
        assert counts == {"synced": tally.outcomes["created"]}
        assert "failed" not in attempts
    finally:
        await engine.dispose()

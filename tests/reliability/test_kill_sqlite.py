"""SQLite, embedded worker: `cauce serve` SIGKILLed again and again while leads arrive and sync.

The API and the job dispatcher share the process, so every kill interrupts both: batches
in flight (the client sends them again with the same `Idempotency-Key`) and CRM
deliveries in flight (the restarted dispatcher releases the orphaned job and re-sends
its batch; the upserts are keyed, so a contact is never created twice). Single leads
come now and then beside the batches, so batches commit in parts of 100 (ADR 0013) and
a kill may land between two parts: the retry goes on from the last part stored.

`CAUCE_RELIABILITY_LEADS` changes the least number of leads sent (default below) and
`CAUCE_RELIABILITY_SEED` replays the kill moments of a failed run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from cauce.demo import demo_leads
from cauce.sandbox import FaultSettings, SandboxCrmConfig
from tests.reliability.conftest import SandboxFactory
from tests.reliability.harness import (
    CauceProcess,
    Ingest,
    Singles,
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

pytestmark = pytest.mark.reliability

LEADS = int(os.environ.get("CAUCE_RELIABILITY_LEADS", "10000"))
KILLS = 6  # at least 5 of them while work is outstanding
POOL_FACTOR = 4  # leads on hand: ingest outlasts the kills, never runs dry
BUDGET_SECONDS = 240.0


async def test_serve_killed_five_times_every_lead_synced_once(
    tmp_path: Path,
    seed: int,
    rng: random.Random,
    sandbox_factory: SandboxFactory,
    processes: list[CauceProcess],
) -> None:
    """With `cauce serve` SIGKILLed at 5 random moments during ingest and sync, every lead
    Cauce accepted ends `synced` and is exactly one sandbox contact, none twice."""
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
    token = await prepare_database(data_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cauce_env(data_dir, port=port, sandbox=sandbox, CAUCE_LEADS__BATCH_TRANSACTION_SIZE="100")
    serve = CauceProcess("serve", ("serve",), env, tmp_path)
    processes.append(serve)
    serve.start()
    await wait_healthy(base, serve)
    engine = create_async_engine(f"sqlite+aiosqlite:///{data_dir / 'cauce.db'}")
    try:
        ingest = Ingest([base], token, batch_size=500, deadline=deadline)
        # Leads keep arriving until the last kill (at least LEADS of them), so every
        # kill lands while work is outstanding, however fast this machine is.
        killed = asyncio.Event()
        pool = demo_leads(LEADS * POOL_FACTOR, seed)
        sending = asyncio.create_task(ingest.send(pool, minimum=LEADS, stop=killed))
        singles = Singles(base, token, deadline=deadline)
        done_sending = asyncio.Event()
        trickle = asyncio.create_task(singles.send(done_sending))
        kills: list[dict[str, Any]] = []
        started = time.monotonic()
        while len(kills) < KILLS:
            # A random moment: after 0.5 to 2 s, then 1 to 10 more CRM requests.
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            await after_crm_requests(sandbox, rng.randint(1, 10), within=4.0)
            counts = await sync_counts(engine)
            outstanding = not sending.done() or counts.get("pending", 0) > 0
            serve.kill()
            requests = (await asyncio.to_thread(sandbox.stats))["requests"]["total"]
            kills.append(
                {
                    "at": round(time.monotonic() - started, 1),
                    "ingesting": not sending.done(),
                    "counts": counts,
                    "crm_requests": requests,
                    "outstanding": outstanding,
                }
            )
            serve.start()
            kills[-1]["restart_s"] = round(await wait_healthy(base, serve), 1)
        killed.set()
        tally = await sending
        done_sending.set()
        single_outcomes = await trickle
        counts = await wait_all_synced(engine, deadline)
        stats = await check_delivered(engine, sandbox)
        attempts = await attempt_outcomes(engine, "crm.deliver")
        log.info("kills: %s", kills)
        log.info("ingest: %s; final: %s; deliver attempts: %s", tally, counts, attempts)
        log.info("single leads: %s", single_outcomes)
        log.info("sandbox: %s; %.1f s", stats["requests"], time.monotonic() - started)

        assert sum(1 for k in kills if k["outstanding"]) >= 5, kills
        assert LEADS <= tally.items < len(pool)  # the pool never ran dry
        assert tally.outcomes["rejected"] > 0  # the invalid ones were refused...
        # ...and every accepted lead that was not merged into another is one lead row.
        assert single_outcomes["created"] > 0
        assert counts == {"synced": tally.outcomes["created"] + single_outcomes["created"]}
        assert "failed" not in attempts
    finally:
        await engine.dispose()

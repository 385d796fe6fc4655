"""A 30 s CRM outage with `cauce serve` (SQLite, embedded worker) as a real process.

While the sandbox answers every request 503, the HubSpot circuit opens (seen on
`/metrics`), the delivery job is postponed until the circuit lets a probe through, and
the sandbox receives no more requests than the half-open probes allow; when the CRM is
back, every lead is delivered, once.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from cauce.demo import demo_leads
from cauce.sandbox import SandboxCrmConfig
from tests.reliability.conftest import SandboxFactory
from tests.reliability.harness import (
    HUBSPOT_POLICY,
    CauceProcess,
    Ingest,
    attempt_outcomes,
    cauce_env,
    check_delivered,
    free_port,
    log,
    prepare_database,
    wait_all_synced,
    wait_healthy,
)

pytestmark = pytest.mark.reliability

OUTAGE_SECONDS = 30.0
OPEN_SECONDS = 5.0
PROBES = 1
MIN_CALLS = 5
ATTEMPTS = 3  # in-call attempts per request (the retry policy's max_attempts)
POLICY: dict[str, Any] = {
    **HUBSPOT_POLICY,
    "retry": {"max_attempts": ATTEMPTS},
    "breaker": {
        "minimum_number_of_calls": MIN_CALLS,
        "sliding_window_size": 20,
        "wait_duration_in_open_state": OPEN_SECONDS,
        "permitted_number_of_calls_in_half_open_state": PROBES,
    },
}
CIRCUIT = re.compile(r'^cauce_circuit_state\{upstream="hubspot"\} (\S+)$', re.M)


def probe_bound() -> int:
    """Requests the sandbox may see during the outage: the failures that open the circuit
    (each retried in the call), then one round of probes per open period, plus one."""
    return MIN_CALLS * ATTEMPTS + (int(OUTAGE_SECONDS / OPEN_SECONDS) + 1) * PROBES + 1


async def circuit_state(client: httpx.AsyncClient) -> float | None:
    """`cauce_circuit_state{upstream="hubspot"}` from `/metrics` (None before any call)."""
    match = CIRCUIT.search((await client.get("/metrics")).text)
    return float(match.group(1)) if match else None


async def test_outage_opens_the_circuit_probes_only_then_syncs_everything(
    tmp_path: Path,
    seed: int,
    sandbox_factory: SandboxFactory,
    processes: list[CauceProcess],
) -> None:
    """During a 30 s outage the circuit opens and the CRM sees at most the probe rate;
    after it every lead is synced, exactly once, and no delivery failed."""
    deadline = time.monotonic() + 150.0
    sandbox = sandbox_factory(
        SandboxCrmConfig(extra_properties=("cauce_score", "cauce_owner"), seed=seed)
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    token = await prepare_database(data_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = cauce_env(data_dir, port=port, sandbox=sandbox, policy=POLICY)
    serve = CauceProcess("serve", ("serve",), env, tmp_path)
    processes.append(serve)
    serve.start()
    await wait_healthy(base, serve)
    engine = create_async_engine(f"sqlite+aiosqlite:///{data_dir / 'cauce.db'}")
    leads = demo_leads(1500, seed)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            await Ingest([base], token, deadline=deadline, key_prefix="before").send(leads[:500])
            await wait_all_synced(engine, deadline)
            assert await circuit_state(client) == 0.0
            reply = await client.post(
                f"{sandbox.url}/_sandbox/faults", json={"outage": OUTAGE_SECONDS}
            )
            reply.raise_for_status()
            outage_ends = time.monotonic() + OUTAGE_SECONDS
            during = Ingest([base], token, deadline=deadline, key_prefix="during")
            sending = asyncio.create_task(during.send(leads[500:]))
            states: set[float | None] = set()
            while time.monotonic() < outage_ends - 0.5:
                states.add(await circuit_state(client))
                await asyncio.sleep(0.5)
            await asyncio.sleep(max(0.0, outage_ends - time.monotonic()) + 0.2)
            # Only requests answered inside the outage window increment this counter.
            stats = await asyncio.to_thread(sandbox.stats)
            during_outage = int(stats["requests"]["faults_injected"].get("outage", 0))
            await sending
            recovered_at = time.monotonic()
            await wait_all_synced(engine, deadline)
            recovery = time.monotonic() - recovered_at
        final = await check_delivered(engine, sandbox)
        attempts = await attempt_outcomes(engine, "crm.deliver")
        log.info(
            "outage %.0f s: %d requests (bound %d), circuit states %s; synced %.1f s after; "
            "deliver attempts %s; sandbox %s",
            OUTAGE_SECONDS,
            during_outage,
            probe_bound(),
            states,
            recovery,
            attempts,
            final["requests"],
        )

        assert 1.0 in states, "the circuit never opened"
        assert 0 < during_outage <= probe_bound()
        assert "failed" not in attempts
        assert attempts.get("postponed", 0) >= 1
    finally:
        await engine.dispose()

"""A long batch hands the event loop turns: other requests are answered meanwhile.

A 1,000-lead `POST /v1/leads/batch` is 0.5-1 s of CPU at 20k stored leads (deciding
each lead, building its rows). Without turns in between, `/healthz` waited for all of it
(a liveness probe with a 3 s timeout failed on a larger store). No timing here: a
`/healthz` started once the batch's loop has begun must be answered before that loop
ends, which it cannot be when the loop never gives the event loop a turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from cauce.leads.intake_writer import IntakeWriter
from cauce.leads.matching.plan import BatchMatcher
from cauce.leads.service import Pace

BATCH = 1000


def _lead(i: int) -> dict[str, Any]:
    return {
        "email": f"persona{i}@ejemplo{i % 7}.es",
        "first_name": f"Nombre{i}",
        "last_name": f"Apellido{i}",
        "company": f"Empresa {i} S.L.",
        "country": "ES",
    }


# The per-lead steps of a batch: deciding each lead, then building its rows.
LOOPS = {"deciding": (BatchMatcher, "best"), "building rows": (IntakeWriter, "create")}


@pytest.mark.parametrize("loop", list(LOOPS))
async def test_healthz_is_answered_while_a_batch_works_through_its_leads(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    owner, name = LOOPS[loop]
    original: Callable[..., Any] = getattr(owner, name)
    health: list[asyncio.Task[httpx.Response]] = []
    answered_at: list[bool] = []  # per lead of the loop: was /healthz answered yet?

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not health:  # the loop's first lead: ask for /healthz now
            health.append(asyncio.get_running_loop().create_task(api.get("/healthz")))
        answered_at.append(health[0].done())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, step)
    response = await api.post("/v1/leads/batch", json={"items": [_lead(i) for i in range(BATCH)]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == BATCH
    assert {item["outcome"] for item in body["items"]} == {"created"}
    assert len(answered_at) == BATCH
    assert (await health[0]).status_code == 200
    # Answered while the loop still had leads to go, not after it.
    assert answered_at[-1], f"/healthz waited for the whole loop ({loop})"


async def test_pace_takes_a_turn_every_so_many_items() -> None:
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    pace = Pace(items=10, seconds=3600)
    seen = []
    for _ in range(30):
        await pace()
        seen.append(turns)
    counter.cancel()
    # A turn at the 10th, 20th and 30th item, none in between.
    assert seen == [0] * 9 + [1] * 10 + [2] * 10 + [3]

"""Pieces of benchmarks/crm_delivery.py: the sandbox, databases, pending leads, sampling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url

from cauce.core.config import Settings
from cauce.core.db import Database, create_database
from cauce.core.db.base import utcnow
from cauce.core.db.migrate import upgrade
from cauce.leads.models import Lead
from cauce.sandbox import FaultSettings, SandboxCrmConfig, ThreadedSandboxCrm

# HubSpot's guards: the rate limit as `cauce demo` sets it (a token bucket of 18/s with a
# burst of 10 lets at most 10 + 18 x 10 = 190 requests into any 10 s, the sandbox's
# rolling limit); the upstream's default in-call retries (the demo sets 1 attempt); a
# breaker that a 10 % background of 5xx does not open.
HUBSPOT_POLICY: dict[str, Any] = {
    "breaker": {
        "minimum_number_of_calls": 20,
        "sliding_window_size": 50,
        "wait_duration_in_open_state": 2.0,
        "permitted_number_of_calls_in_half_open_state": 1,
    },
    "rate_limit": {"enabled": True, "rate": 18.0, "burst": 10, "max_wait": 15.0},
}
FIRST_NAMES = ("Lucía", "Hugo", "Martina", "Mateo", "Sofía", "Leo", "Valeria", "Daniel")
LAST_NAMES = ("García", "Rodríguez", "González", "Fernández", "López", "Martínez", "Sánchez")


def sandbox_config(error_rate: float, seed: int, latency_ms: float = 0.0) -> SandboxCrmConfig:
    """HubSpot's private-app limits: 190 requests per rolling 10 s, 100 inputs a batch;
    `latency_ms`: mean added latency per request (HubSpot's batch upsert: ~100-300 ms)."""
    return SandboxCrmConfig(
        rate_limit=190,
        rate_window_seconds=10.0,
        max_batch_inputs=100,
        extra_properties=("cauce_score", "cauce_owner"),
        faults=FaultSettings(error_rate=error_rate, latency_ms=latency_ms),
        seed=seed,
    )


def contacts(sandbox: ThreadedSandboxCrm) -> int:
    """Live contacts in the sandbox (cheap: the full stats scan every contact)."""
    count: int = sandbox.call(lambda: len(sandbox.crm.state.store.live))
    return count


def pending_rows(n: int, start: int = 0) -> Iterator[dict[str, Any]]:
    """Lead rows ready for delivery (unique emails), as a bulk insert wants them."""
    now = utcnow()
    for i in range(start, start + n):
        email = f"lead{i}@empresa{i % 997}.example.es"
        yield {
            "uid": str(uuid.uuid4()),
            "email": email,
            "email_key": email,
            "first_name": FIRST_NAMES[i % len(FIRST_NAMES)],
            "last_name": LAST_NAMES[i % len(LAST_NAMES)],
            "company": f"Empresa {i % 997}",
            "country": "ES",
            "source": "api",
            "score": i % 100,
            "version": 1,
            "sync_status": "pending",
            "synced_version": 0,
            "created_at": now,
            "updated_at": now,
        }


async def insert_pending(db: Database, n: int, chunk: int = 5000) -> float:
    """Insert `n` pending leads straight into the table; returns the seconds it took."""
    started = time.monotonic()
    for offset in range(0, n, chunk):
        rows = list(pending_rows(min(chunk, n - offset), offset))
        async with db.engine.begin() as conn:
            await conn.execute(insert(Lead), rows)
    # Planner statistics as a table filled over time would have them (autovacuum lags
    # behind a bulk insert, and without them the pending-batch query starts on a bad plan).
    async with db.engine.begin() as conn:
        await conn.execute(text("ANALYZE leads"))
    return time.monotonic() - started


async def status_counts(db: Database) -> dict[str, int]:
    """Leads by sync status."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(select(Lead.sync_status, func.count()).group_by(Lead.sync_status))
        return {str(status): int(n) for status, n in rows}


async def migrated(settings: Settings) -> Database:
    """The settings' database, migrated."""
    db = create_database(settings)
    await upgrade(db)
    return db


@contextmanager
def fresh_pg_database(admin_url: str, prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards unless `keep`."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    libpq = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            with psycopg.connect(libpq, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@dataclass
class Samples:
    """(seconds, contacts) pairs taken once a second while a delivery runs."""

    points: list[tuple[float, int]] = field(default_factory=list)

    def crossing(self, count: int) -> tuple[float, int] | None:
        """The first sample at or above `count`."""
        return next(((t, c) for t, c in self.points if c >= count), None)

    def steady_rate(self, total: int, low: float = 0.1, high: float = 0.9) -> float:
        """Contacts/s between the samples crossing `low` and `high` of `total`: start-up
        and the tail (the last partial window) left out."""
        first, last = self.crossing(int(total * low)), self.crossing(int(total * high))
        if first is None or last is None or last[0] <= first[0]:
            return 0.0
        return (last[1] - first[1]) / (last[0] - first[0])


async def sample_until(
    read: Callable[[], int], total: int, deadline: float, every: float = 1.0
) -> Samples:
    """Sample `read()` every `every` s until it reaches `total` (or the deadline)."""
    samples = Samples()
    started = time.monotonic()
    while True:
        value = await asyncio.to_thread(read)
        samples.points.append((time.monotonic() - started, value))
        if value >= total or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(every)

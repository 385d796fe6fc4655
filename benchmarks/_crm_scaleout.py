"""`crm_delivery.py --scale-out`: N `cauce serve` + M `cauce worker` processes on PostgreSQL.

Leads go through `POST /v1/leads/batch` (500 per call, 2 concurrent clients per API
process, each batch with its own Idempotency-Key) while the workers deliver them to the
sandbox CRM. Processes are started and found ready (every API answers /healthz, every
worker is registered with procrastinate) before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from pydantic import SecretStr
from sqlalchemy import text

from _crm_common import (
    HUBSPOT_POLICY,
    contacts,
    fresh_pg_database,
    migrated,
    sandbox_config,
    status_counts,
)
from cauce.core.config import Settings
from cauce.core.db import Database
from cauce.core.security.apikeys import ApiKeyService
from cauce.demo import API_FIELDS
from cauce.leads.synthetic import LeadFactory
from cauce.sandbox import ThreadedSandboxCrm, start_sandbox_crm_in_thread

SECRET = "bench-secret-key-0123456789abcdef0123456789"
BATCH = 500
SENDERS_PER_API = 2
CALL_TIMEOUT = 300.0  # seconds for one batch call
PAYLOAD_FIELDS = tuple(f for f in API_FIELDS if f != "email")  # emails made unique below


def payloads(n: int, seed: int) -> list[dict[str, Any]]:
    """Realistic, valid leads with unique emails (each becomes one CRM contact)."""
    factory = LeadFactory(seed)
    out = []
    for i in range(n):
        fields = factory.lead().fields
        item = {k: fields[k] for k in PAYLOAD_FIELDS if fields.get(k) not in (None, {}, "")}
        if fields.get("email"):  # leads without one are keyed by Cauce's id in the CRM
            local, domain = str(fields["email"]).split("@", 1)
            item["email"] = f"{local}.{i}@{domain}"
        out.append(item)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(url: str, data_dir: Path, sandbox: ThreadedSandboxCrm, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env.update(
        CAUCE_ENV="test",
        CAUCE_SECRET_KEY=SECRET,
        CAUCE_DATABASE_URL=url,
        CAUCE_DATA_DIR=str(data_dir),
        CAUCE_LOG__FORMAT="json",
        CAUCE_LOG__LEVEL="warning",
        CAUCE_HTTP__PORT=str(port),
        CAUCE_HTTP__ACCESS_LOG="false",
        CAUCE_CRM__PROVIDER="hubspot",
        CAUCE_CRM__BASE_URL=sandbox.url,
        CAUCE_CRM__TOKEN=sandbox.crm.token,
        CAUCE_CRM__ALLOW_HOSTS='["127.0.0.1"]',
        CAUCE_UPSTREAMS=orjson.dumps({"hubspot": HUBSPOT_POLICY}).decode(),
        CAUCE_LEADS__DEDUPE__REVIEW_THRESHOLD="0.9",
    )
    return env


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cauce", *argv], env=env, stdout=out, stderr=out
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _job_summary(db: Database) -> dict[str, int]:
    """crm.deliver attempts by outcome (a stuck or failing delivery shows here)."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT outcome, count(*) FROM job_attempts WHERE task = 'crm.deliver'"
                " GROUP BY outcome"
            )
        )
        return {str(outcome): int(n) for outcome, n in rows}


async def _ready(bases: list[str], db: Database, workers: int, within: float = 300) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=1.0) as client:
        for base in bases:
            while True:
                try:
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{base} did not start")
                await asyncio.sleep(0.2)
    while True:
        async with db.engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM procrastinate_workers"))
        if int(count or 0) >= workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not register")
        await asyncio.sleep(0.2)


@dataclass
class Sent:
    """What the clients saw: leads accepted, seconds per batch call, 5xx/409 resent."""

    accepted: int = 0
    latencies: list[float] = field(default_factory=list)
    resent: Counter[int] = field(default_factory=Counter)

    def summary(self) -> str:
        """Median / p95 / max seconds per call, and the answers that were resent."""
        if not self.latencies:
            return "no calls"
        ordered = sorted(self.latencies)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return (
            f"{len(ordered)} calls: median {statistics.median(ordered):.1f} s, p95 {p95:.1f} s,"
            f" max {ordered[-1]:.1f} s; resent after {dict(self.resent) or 'none'}"
        )


async def _send(bases: list[str], token: str, items: list[dict[str, Any]]) -> Sent:
    """Send every batch (a 5xx or 409 is sent again with the same Idempotency-Key)."""
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    todo: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in batches:
        todo.put_nowait(batch)
    sent = Sent()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def sender(base: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=CALL_TIMEOUT) as client:
            while not todo.empty():
                batch = todo.get_nowait()
                body = orjson.dumps({"items": batch})
                key = uuid.uuid4().hex
                while True:  # a 5xx (e.g. a deadlock) is answered by sending again
                    started = time.monotonic()
                    reply = await client.post(
                        "/v1/leads/batch", content=body, headers={**headers, "Idempotency-Key": key}
                    )
                    sent.latencies.append(time.monotonic() - started)
                    if reply.status_code < 500 and reply.status_code != 409:
                        break
                    sent.resent[reply.status_code] += 1
                    await asyncio.sleep(0.2)
                reply.raise_for_status()
                sent.accepted += int(reply.json()["accepted"])

    await asyncio.gather(*(sender(b) for b in bases for _ in range(SENDERS_PER_API)))
    return sent


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Waits:
    """What this database's backends were waiting on, sampled every second."""

    samples: int = 0
    seen: Counter[str] = field(default_factory=Counter)
    blocked: Counter[str] = field(default_factory=Counter)  # statements waiting on a lock

    def summary(self) -> str:
        """Average backends per state/wait over the samples, most frequent first."""
        if not self.samples:
            return "no samples"
        top = self.seen.most_common(6)
        text = ", ".join(f"{what} {n / self.samples:.1f}" for what, n in top)
        for query, n in self.blocked.most_common(2):
            text += f"\n  waiting on a lock ({n / self.samples:.1f} on average): {query}"
        return text


async def _sample_waits(db: Database, waits: Waits, stop: asyncio.Event) -> None:
    while not stop.is_set():
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'cpu'),"
                    " CASE WHEN wait_event_type = 'Lock' THEN left(query, 70) END"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
            )
            waits.samples += 1
            for state, wait, query in rows:
                waits.seen[f"{state}/{wait}"] += 1
                if query:
                    waits.blocked[" ".join(str(query).split())] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def _deliver_jobs(db: Database) -> dict[str, int]:
    """crm.deliver jobs by procrastinate status (a job stuck in `doing` blocks the lock)."""
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT status, count(*) FROM procrastinate_jobs"
                " WHERE task_name = 'crm.deliver' GROUP BY status"
            )
        )
        return {str(status): int(n) for status, n in rows}


async def scale_out(args: argparse.Namespace) -> bool:
    """Run the scale-out round; print the figures; True if nothing was lost or doubled."""
    sandbox = start_sandbox_crm_in_thread(
        sandbox_config(args.error_rate, args.seed, args.latency_ms)
    )
    procs: list[subprocess.Popen[bytes]] = []
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="cauce-scaleout-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    items = payloads(args.ingest_leads, args.seed)
    try:
        with fresh_pg_database(args.pg_url, "cauce_bench_scale", keep=args.keep_db) as url:
            data_dir = log_dir / "data"
            data_dir.mkdir(exist_ok=True)
            settings = Settings(
                env="test", secret_key=SecretStr(SECRET), data_dir=data_dir, database_url=url
            )
            db = await migrated(settings)
            keys = ApiKeyService(db.sessionmaker, SECRET.encode())
            token = (await keys.create("bench", ["leads:write", "leads:read"])).token
            bases = []
            commands = []
            for n in range(args.serves):
                port = _free_port()
                bases.append(f"http://127.0.0.1:{port}")
                commands.append((f"serve{n}", ["serve"], port))
            commands += [(f"worker{n}", ["worker"], _free_port()) for n in range(args.workers)]
            for name, argv, port in commands:
                env = _env(url, data_dir, sandbox, port)
                procs.append(_start(argv, env, log_dir / f"{name}.log"))
            try:
                await _ready(bases, db, args.workers)
                pids = {name: proc.pid for (name, _, _), proc in zip(commands, procs, strict=True)}
                cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
                load_before = os.getloadavg()[0]
                waits, stop = Waits(), asyncio.Event()
                sampler = asyncio.create_task(_sample_waits(db, waits, stop))
                started = time.monotonic()
                sent = await _send(bases, token, items)
                ingest_seconds = time.monotonic() - started
                stop.set()
                await sampler
                cpu = {name: _cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
                load_after = os.getloadavg()[0]
                synced_at_ingest_end = contacts(sandbox)
                deadline = time.monotonic() + args.sync_wait
                while time.monotonic() < deadline:
                    counts = await status_counts(db)
                    if not counts.get("pending", 0):
                        break
                    await asyncio.sleep(0.5)
                total_seconds = time.monotonic() - started
                counts = await status_counts(db)
                jobs = await _job_summary(db)
                deliver_jobs = await _deliver_jobs(db)
            finally:
                await db.dispose()
                _stop(procs)  # before the database is dropped
        stats = sandbox.stats()
    finally:
        _stop(procs)
        sandbox.stop()
    leads = sum(counts.values())
    lost = max(leads - counts.get("synced", 0), leads - int(stats["contacts"]))
    accepted = sent.accepted
    print(
        f"\n== Scale-out: {args.serves} x cauce serve + {args.workers} x cauce worker,"
        f" PostgreSQL, {args.ingest_leads} leads =="
    )
    print(
        f"ingest: {accepted} accepted in {ingest_seconds:.1f} s ="
        f" {accepted / ingest_seconds:.0f} leads/s ({args.serves * SENDERS_PER_API} clients,"
        f" {BATCH} per batch); {sent.summary()}"
    )
    print(
        f"sync: {synced_at_ingest_end} contacts by the end of ingest"
        f" ({synced_at_ingest_end / ingest_seconds:.0f}/s);"
        f" {stats['contacts']} after {total_seconds:.1f} s (waited up to {args.sync_wait:.0f} s"
        f" after ingest: {total_seconds - ingest_seconds:.1f} s);"
        f" overall {int(stats['contacts']) / total_seconds:.0f} contacts/s"
    )
    print(
        f"leads {leads} ({counts}); CRM requests {stats['requests']['total']};"
        f" not synced at the end (lost) {lost}; duplicated {stats['duplicate_count']}"
    )
    print(f"crm.deliver attempts {jobs}; crm.deliver jobs by status {deliver_jobs}")
    busy = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in cpu.items())
    print(
        f"CPU during ingest ({ingest_seconds:.0f} s wall, {os.cpu_count()} cores): {busy};"
        f" load average {load_before:.1f} -> {load_after:.1f}"
    )
    print(f"PostgreSQL backends during ingest (average per sample): {waits.summary()}")
    print(f"logs in {log_dir}")
    return lost == 0 and int(stats["duplicate_count"]) == 0

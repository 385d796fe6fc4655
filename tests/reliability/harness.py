"""What the reliability tests share: Cauce as real processes, a retrying client, the checks.

* :class:`CauceProcess` runs one `cauce serve` or `cauce worker` process, restarts it,
  and kills it with SIGKILL;
* :func:`cauce_env` is the environment every process of a test shares (one database, the
  sandbox CRM, HubSpot's guards as the demo sets them);
* :class:`Ingest` sends leads to `POST /v1/leads/batch` and, after a connection error or
  a 5xx, sends the same batch again with the same `Idempotency-Key`, so a batch the server
  committed before it died is answered from the stored response, never applied twice;
* :func:`sync_counts` and :func:`check_delivered` read Cauce's database directly and
  compare it with the sandbox: every lead Cauce holds is one contact, none twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cauce.core.db import create_database
from cauce.core.db.migrate import upgrade
from cauce.core.jobs.models import JobAttempt
from cauce.core.security.apikeys import ApiKeyService
from cauce.demo import HUBSPOT_GUARDS
from cauce.leads.models import Lead
from cauce.sandbox import ThreadedSandboxCrm
from tests.conftest import TEST_SECRET, make_settings

ROOT = Path(__file__).resolve().parents[2]
# Figures go to this logger: `pytest --log-cli-level=INFO` shows them live, and a failing
# test shows them with its captured output. Its own level, so that INFO records are not
# dropped while the root logger is at WARNING.
log = logging.getLogger("tests.reliability")
log.setLevel(logging.INFO)
# HubSpot's guards as `cauce demo` sets them, with in-call retries for the odd 5xx
# (hubspot.py's decision).
HUBSPOT_POLICY: dict[str, Any] = dict(HUBSPOT_GUARDS)
# Jobs of a killed `cauce worker` run again after `stalled_after_seconds` (20 s by
# default): shortened so five kills fit in the time budget.
FAST_RECOVERY = {
    "CAUCE_JOBS__HEARTBEAT_SECONDS": "1",
    "CAUCE_JOBS__STALLED_AFTER_SECONDS": "4",
    "CAUCE_JOBS__SWEEP_SECONDS": "1",
}


def entry_command(*args: str) -> list[str]:
    """The command line of `cauce ARGS`."""
    return [sys.executable, "-m", "cauce", *args]


def cauce_env(
    data_dir: Path,
    *,
    port: int,
    sandbox: ThreadedSandboxCrm,
    database_url: str | None = None,
    policy: dict[str, Any] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of every Cauce process in one test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env.update(
        CAUCE_ENV="test",
        CAUCE_SECRET_KEY=TEST_SECRET,
        CAUCE_DATA_DIR=str(data_dir),
        CAUCE_LOG__FORMAT="json",
        CAUCE_LOG__LEVEL="warning",
        CAUCE_HTTP__PORT=str(port),
        CAUCE_HTTP__ACCESS_LOG="false",
        CAUCE_HTTP__GRACEFUL_SHUTDOWN_SECONDS="2",
        CAUCE_JOBS__GRACEFUL_SHUTDOWN_SECONDS="2",
        CAUCE_CRM__PROVIDER="hubspot",
        CAUCE_CRM__BASE_URL=sandbox.url,
        CAUCE_CRM__TOKEN=sandbox.crm.token,
        CAUCE_CRM__ALLOW_HOSTS='["127.0.0.1"]',
        CAUCE_UPSTREAMS=orjson.dumps({"hubspot": policy or HUBSPOT_POLICY}).decode(),
        # Nobody reviews possible duplicates here: a lead merges or stands alone.
        CAUCE_LEADS__DEDUPE__REVIEW_THRESHOLD="0.9",
        **FAST_RECOVERY,
    )
    if database_url is not None:
        env["CAUCE_DATABASE_URL"] = database_url
    env.update(extra)
    return env


@dataclass
class CauceProcess:
    """One Cauce process that can be started, SIGKILLed and started again."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0

    def start(self) -> None:
        """Start (again); output goes to `<log_dir>/<name>-<n>.log`."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        log = (self.log_dir / f"{self.name}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            entry_command(*self.args), cwd=ROOT, env=self.env, stdout=log, stderr=log
        )
        log.close()  # the child holds its own descriptor
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as after a power cut or the OOM killer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def last_log(self, lines: int = 20) -> str:
        """The end of the newest log, for failure messages."""
        path = self.log_dir / f"{self.name}-{self.starts - 1}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


async def wait_healthy(base: str, process: CauceProcess, within: float = 60.0) -> float:
    """Wait until `GET /healthz` answers 200; returns the seconds it took."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            if not process.alive():
                raise AssertionError(f"{process.name} exited:\n{process.last_log()}")
            if time.monotonic() - started > within:
                raise AssertionError(f"{process.name} did not start:\n{process.last_log()}")
            await asyncio.sleep(0.1)


@dataclass
class IngestTally:
    """What the API answered, batch by batch (the final answer of each)."""

    batches: int = 0
    items: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    resends: int = 0  # batches sent again after a connection error or a 5xx/409
    replayed: int = 0  # answers the server replayed from a stored Idempotency-Key
    seconds: float = 0.0


# Answers a client sends its request again after (the key in use, the server failing).
RETRY_STATUSES = frozenset({409, 500, 502, 503, 504})


async def post_until_answered(
    client: httpx.AsyncClient,
    path: str,
    *,
    deadline: float,
    what: str,
    on_resend: Callable[[], None] | None = None,
    **request: Any,
) -> httpx.Response:
    """POST until an answer that is not one to retry after (`RETRY_STATUSES`, the server
    down or restarting); fails at `deadline`. `on_resend` is called before each resend."""
    first = True
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} still unanswered at the deadline")
        if not first and on_resend is not None:
            on_resend()
        first = False
        try:
            response = await client.post(path, **request)
        except httpx.TransportError:
            await asyncio.sleep(0.2)  # the server is down or restarting
            continue
        if response.status_code in RETRY_STATUSES:
            await asyncio.sleep(0.2)
            continue
        return response


class Ingest:
    """Send payloads in batches, each batch until it gets its answer (bounded by `deadline`)."""

    def __init__(
        self,
        bases: Sequence[str],
        token: str,
        *,
        batch_size: int = 500,
        senders: int = 1,
        deadline: float,
        key_prefix: str | None = None,
    ) -> None:
        self.bases = list(bases)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.batch_size = batch_size
        self.senders = senders
        self.deadline = deadline
        self.prefix = key_prefix or uuid.uuid4().hex[:12]
        self.tally = IngestTally()

    async def send(
        self,
        payloads: Sequence[dict[str, Any]],
        *,
        minimum: int | None = None,
        stop: asyncio.Event | None = None,
    ) -> IngestTally:
        """Send the payloads in order; returns the tally.

        With `stop`, sending ends at the first batch boundary past `minimum` payloads
        after `stop` is set (or when the payloads run out): a test that kills the server
        at moments of its own choosing keeps work arriving until its last kill, however
        fast the machine ingests and delivers."""
        batches = [
            list(payloads[i : i + self.batch_size])
            for i in range(0, len(payloads), self.batch_size)
        ]
        todo: asyncio.Queue[int] = asyncio.Queue()
        for number in range(len(batches)):
            todo.put_nowait(number)
        started = time.monotonic()
        taken = 0

        def more() -> bool:
            if todo.empty():
                return False
            if stop is None or not stop.is_set():
                return True
            return minimum is not None and taken < minimum

        async def sender(slot: int) -> None:
            nonlocal taken
            base = self.bases[slot % len(self.bases)]
            async with httpx.AsyncClient(base_url=base, timeout=60.0) as client:
                while more():
                    number = todo.get_nowait()
                    taken += len(batches[number])
                    await self._one(client, number, batches[number])

        await asyncio.gather(*(sender(slot) for slot in range(self.senders)))
        self.tally.seconds = time.monotonic() - started
        return self.tally

    def _resent(self) -> None:
        self.tally.resends += 1

    async def _one(
        self, client: httpx.AsyncClient, number: int, items: list[dict[str, Any]]
    ) -> None:
        headers = {**self.auth, "Idempotency-Key": f"{self.prefix}-{number}"}
        body = orjson.dumps({"items": items})
        headers["Content-Type"] = "application/json"
        response = await post_until_answered(
            client,
            "/v1/leads/batch",
            deadline=self.deadline,
            what=f"batch {number}",
            on_resend=self._resent,
            content=body,
            headers=headers,
        )
        assert response.status_code == 200, response.text
        result = response.json()
        self.tally.batches += 1
        self.tally.items += int(result["received"])
        if response.headers.get("Idempotent-Replayed") == "true":
            self.tally.replayed += 1
        for item in result["items"]:
            self.tally.outcomes[str(item["outcome"])] += 1


class Singles:
    """Single leads (`POST /v1/leads`) now and then beside the batches, as a web form
    sends them, each until it gets its answer (with an `Idempotency-Key`, so one whose
    answer a kill cut off is replayed, not taken twice). While they come, a large batch
    commits in parts (ADR 0013), so a kill can land between two parts of one."""

    def __init__(self, base: str, token: str, *, deadline: float, every: float = 0.25) -> None:
        self.base = base
        self.auth = {"Authorization": f"Bearer {token}"}
        self.deadline = deadline
        self.every = every
        self.prefix = uuid.uuid4().hex[:12]
        self.outcomes: Counter[str] = Counter()

    async def send(self, stop: asyncio.Event) -> Counter[str]:
        """Send one every `every` seconds until `stop` is set; the outcomes."""
        async with httpx.AsyncClient(base_url=self.base, timeout=60.0) as client:
            number = 0
            while not stop.is_set():
                number += 1
                await self._one(client, number)
                await asyncio.sleep(self.every)
        return self.outcomes

    async def _one(self, client: httpx.AsyncClient, number: int) -> None:
        tag = f"{self.prefix}{number}"
        lead = {
            "email": f"sola.{tag}@formulario-web.es",
            "first_name": f"Sola{tag}",
            "last_name": f"Formulario{tag}",
            "company": f"Tienda {tag}",
            "country": "ES",
        }
        headers = {**self.auth, "Idempotency-Key": f"single-{tag}"}
        response = await post_until_answered(
            client,
            "/v1/leads",
            deadline=self.deadline,
            what=f"single lead {number}",
            json=lead,
            headers=headers,
        )
        assert response.status_code in (200, 201), response.text
        self.outcomes[str(response.json()["outcome"])] += 1


async def sync_counts(engine: AsyncEngine) -> dict[str, int]:
    """Leads by `sync_status` (erased leads left out)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Lead.sync_status, func.count())
            .where(Lead.erased_at.is_(None))
            .group_by(Lead.sync_status)
        )
        return {str(status): int(n) for status, n in rows}


async def attempt_outcomes(engine: AsyncEngine, task: str) -> dict[str, int]:
    """Attempts of `task` by outcome, from the append-only attempts table."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(JobAttempt.outcome, func.count())
            .where(JobAttempt.task == task)
            .group_by(JobAttempt.outcome)
        )
        return {str(outcome): int(n) for outcome, n in rows}


async def wait_all_synced(
    engine: AsyncEngine,
    deadline: float,
    *,
    every: float = 0.5,
    on_poll: Callable[[dict[str, int]], None] | None = None,
) -> dict[str, int]:
    """Poll until no lead is `pending`; returns the final counts (fails at the deadline)."""
    while True:
        counts = await sync_counts(engine)
        if on_poll is not None:
            on_poll(counts)
        if counts.get("pending", 0) == 0:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"leads still pending at the deadline: {counts}")
        await asyncio.sleep(every)


async def check_delivered(engine: AsyncEngine, sandbox: ThreadedSandboxCrm) -> dict[str, Any]:
    """Assert every lead Cauce holds is `synced` and is exactly one sandbox contact.

    Compares identities, not only counts: the set of Cauce ids (`cauce_id`, written on
    every contact) in the sandbox is the set of lead uids, and the sandbox reports no key
    stored twice. Returns the sandbox's stats.
    """
    async with engine.connect() as conn:
        leads = (
            await conn.execute(
                select(Lead.uid, Lead.sync_status, Lead.crm_id).where(Lead.erased_at.is_(None))
            )
        ).all()
    statuses = Counter(str(row.sync_status) for row in leads)
    assert statuses == Counter({"synced": len(leads)}), f"not all synced: {statuses}"
    assert all(row.crm_id for row in leads), "a synced lead without its CRM id"
    stats: dict[str, Any] = await asyncio.to_thread(sandbox.stats)
    contacts = await asyncio.to_thread(
        sandbox.call, lambda: [dict(c.properties) for c in sandbox.crm.state.store.live.values()]
    )
    uids = [str(c.get("cauce_id")) for c in contacts]
    assert stats["duplicate_count"] == 0, stats["duplicates"]
    assert len(uids) == len(set(uids)), "a Cauce id stored on two contacts"
    assert set(uids) == {str(row.uid) for row in leads}, "sandbox contacts differ from leads"
    assert stats["contacts"] == len(leads)
    return stats


def kill_schedule(rng: random.Random, kills: int, low: float, high: float) -> list[float]:
    """Seconds to wait before each kill (uniform in [low, high]), from the test's seed."""
    return [rng.uniform(low, high) for _ in range(kills)]


def reliability_seed() -> int:
    """The seed of the random moments: `CAUCE_RELIABILITY_SEED`, else a fresh one (printed)."""
    raw = os.environ.get("CAUCE_RELIABILITY_SEED")
    return int(raw) if raw else random.SystemRandom().randrange(1_000_000)


async def prepare_database(data_dir: Path, database_url: str | None = None) -> str:
    """Migrate the database and create an API key for leads; returns the key.

    In this process rather than with `cauce db upgrade` / `cauce apikey create`: each CLI
    start costs seconds of imports, and what is under test is serving, not these commands.
    """
    overrides = {"database_url": database_url} if database_url else {}
    settings = make_settings(data_dir, **overrides)
    db = create_database(settings)
    try:
        await upgrade(db)
        keys = ApiKeyService(db.sessionmaker, settings.secret_key.get_secret_value().encode())
        created = await keys.create("reliability", ["leads:write", "leads:read"])
    finally:
        await db.dispose()
    return created.token


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def after_crm_requests(sandbox: ThreadedSandboxCrm, count: int, within: float) -> None:
    """Wait until the sandbox has seen `count` more requests (or `within` seconds passed):
    kill moments drawn in units of delivery progress land while there is work left,
    however fast the machine delivers."""
    start = (await asyncio.to_thread(sandbox.stats))["requests"]["total"]
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        await asyncio.sleep(0.1)
        if (await asyncio.to_thread(sandbox.stats))["requests"]["total"] >= start + count:
            return

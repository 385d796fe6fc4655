"""Soak: does a long-running `cauce serve` stay bounded under a realistic mix of work?

`cauce serve` (one process) on a fresh SQLite database with its embedded worker, the
HubSpot sandbox CRM (`cauce sandbox crm`, a process of its own, HubSpot's 190 requests per
10 s and 1 % of 5xx) as the CRM with the demo's guards; or, with `--backend postgresql`,
a fresh database on the PostgreSQL of CAUCE_TEST_POSTGRES_URL with `cauce serve` and one
`cauce worker`. For `--minutes` it is driven over HTTP, each kind of request paced at its
own rate (a slow server is not sent a backlog; see the options):

- single leads (`POST /v1/leads`, half with an `Idempotency-Key`), about a fifth of them
  people sent before with a typo (same email, a name misspelt; same phone, another
  mailbox; a free mailbox, the name misspelt, the same company and city): they merge or
  are held for review;
- batches of 200 to 1,000 (`POST /v1/leads/batch`, with an `Idempotency-Key`), the same
  share of repeats;
- searches (`q=` a surname, a company word, a phone's digits; score and `created_after`
  ranges; status, country, `held=true`), `GET /v1/leads/{id}`, `PATCH` and `DELETE`
  (erasures) of leads it created;
- a CSV import (`;`, Spanish headers, a third of its rows repeats) every minute, and a
  CSV export of the last five minutes' leads every minute (the whole table every
  `--full-export-minutes`);
- with `--webhooks`, the sandbox also posts HubSpot's signed change webhooks (a contact
  created, a property changed) to `POST /v1/webhooks/hubspot`.

Every `--sample-seconds` (30) it samples the server (and the worker): RSS (VmRSS), open
file descriptors, threads, CPU share in the window; the database (SQLite's file and
-wal, PostgreSQL's database size); the rows of the job tables, the job attempts and the
idempotency keys (and their stored answers' MiB), the lead history and the webhook
inbox; `/metrics` (its series, the sync backlog, the queue depth, any metric about a
cache); the CRM's contacts; and the p50 and p99 of single `POST /v1/leads` (and the p50
of searches) in the window. At the end: the table, and each figure's growth per 10,000
stored leads by least squares over the whole run and over its second half only (a
bounded figure flattens out: its second half's slope is near 0).

    .venv/bin/python benchmarks/leads_soak.py [--minutes 10] [--dir /tmp/soak --keep]
    .venv/bin/python benchmarks/leads_soak.py --candidate-cache 8192 --webhooks
    eval "$(scripts/services.sh start)"   # for PostgreSQL: CAUCE_TEST_POSTGRES_URL
    .venv/bin/python benchmarks/leads_soak.py --backend postgresql --minutes 10

Bounded: the load stops at `--minutes`, what is in flight then gets 120 s, and every
process started is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from _crm_common import fresh_pg_database
from cauce.demo import API_FIELDS, HUBSPOT_GUARDS
from cauce.leads.synthetic import LeadFactory
from leads_ingest import CAUCE, free_port, run_cli

SCOPES = "leads:write,leads:read,leads:admin,jobs:admin"
STATUSES = ("new", "working", "qualified", "won", "lost", "junk")
IMPORT_HEADER = "nombre;apellidos;correo;teléfono;empresa;ciudad;país;origen"
DRAIN_SECONDS = 120.0
WEBHOOK_SECRET = "soak-webhook-secret"  # the sandbox's app secret, made up here


# --------------------------------------------------------------------------------------
# People: new ones, and earlier ones again with a typo
# --------------------------------------------------------------------------------------


def _typo(text: str, rng: random.Random) -> str:
    """`text` as a hurried hand types it: two letters swapped, one dropped or doubled,
    or its accents left out."""
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 2)
    kind = rng.randrange(4)
    if kind == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    if kind == 2:
        return text[:i] + text[i] + text[i:]
    plain = unicodedata.normalize("NFKD", text)
    return "".join(c for c in plain if not unicodedata.combining(c))


class People:
    """Lead payloads: new people from `LeadFactory`, and about `repeat` of them someone
    sent before, again with a typo (see the module docstring)."""

    def __init__(self, seed: int, repeat: float) -> None:
        self.factory = LeadFactory(seed)
        self.rng = random.Random(seed + 7)
        self.repeat = repeat
        self.earlier: deque[dict[str, Any]] = deque(maxlen=20_000)
        self.repeats = 0

    def new(self) -> dict[str, Any]:
        """A new person (never of the US: its synthetic numbers are not valid there)."""
        fields = self.factory.lead().fields
        while fields["country"] == "US":
            fields = self.factory.lead().fields
        payload = {k: fields[k] for k in API_FIELDS if fields.get(k) not in (None, {}, "")}
        consent = fields["consent"]
        payload["consent"] = {
            "marketing": consent["marketing"],
            "given_at": consent["at"],
            "wording_version": consent["wording_version"],
            "source": consent["where"],
        }
        self.earlier.append(payload)
        return payload

    def again(self) -> dict[str, Any]:
        """Someone sent before, with a typo: merged by email or phone, or held."""
        rng = self.rng
        lead = dict(rng.choice(self.earlier))
        lead["source"] = rng.choice(("web_form", "event", "referral", "csv"))
        roll = rng.random()
        if roll < 0.4 and "email" in lead:  # the same mailbox, the name misspelt
            lead["first_name"] = _typo(lead["first_name"], rng)
            lead["email"] = lead["email"].upper() if rng.random() < 0.3 else lead["email"]
        elif roll < 0.7 and "phone" in lead:  # the same phone, another mailbox
            lead["email"] = f"{uuid.uuid4().hex[:8]}@gmail.com"
        else:  # a free mailbox, no phone, the surname misspelt: matched by name + company
            lead.pop("phone", None)
            lead["email"] = f"{uuid.uuid4().hex[:8]}@hotmail.com"
            lead["last_name"] = _typo(lead["last_name"], rng)
        self.repeats += 1
        return lead

    def one(self) -> dict[str, Any]:
        """A new person, or (`repeat` of the time, once there are some) an earlier one."""
        if len(self.earlier) > 50 and self.rng.random() < self.repeat:
            return self.again()
        return self.new()


def import_csv(people: People, rows: int) -> bytes:
    """`rows` leads as a Spanish `;` CSV, a third of them repeats."""
    lines = [IMPORT_HEADER]
    for _ in range(rows):
        lead = people.again() if people.rng.random() < 0.33 else people.new()
        cells = [
            lead.get(name) or ""
            for name in ("first_name", "last_name", "email", "phone", "company", "city")
        ]
        cells += [lead.get("country", ""), "csv"]
        lines.append(";".join(str(c).replace(";", " ") for c in cells))
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A process this script started, its log, and its CPU time at the last sample."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    cpu: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def start(name: str, args: list[str], env: dict[str, str], cwd: Path) -> Proc:
    """`cauce ARGS`, its output to `<cwd>/<name>.log`."""
    log = cwd / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen([*CAUCE, *args], env=env, cwd=cwd, stdout=out, stderr=out)
    return Proc(name, popen, log)


def wait_for(proc: Proc, ready: Callable[[], bool], what: str, within: float = 90.0) -> None:
    """Until `ready()`; exits when the process dies or `within` passes."""
    deadline = time.monotonic() + within
    while not ready():
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            tail = proc.log.read_text(errors="replace")[-2000:]
            sys.exit(f"{what} did not start (see {proc.log}):\n{tail}")
        time.sleep(0.2)


def healthy(base: str) -> bool:
    """Whether `GET /healthz` answers 200."""
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            out[name] = value.strip()
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_count(pid: int) -> int:
    """Open file descriptors of `pid`."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------------------
# The load
# --------------------------------------------------------------------------------------


class Pacer:
    """Slots `rate` a second shared by the workers of one kind; a slot missed is not
    made up (a slow server is not sent a backlog)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    async def wait(self) -> None:
        """Sleep until this worker's slot."""
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.interval
        await asyncio.sleep(slot - now)


@dataclass
class Load:
    """What the load sent and saw; the window's latencies are taken by each sample."""

    people: People
    uids: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # "kind status"
    outcomes: Counter[str] = field(default_factory=Counter)
    singles: list[float] = field(default_factory=list)  # ms, this window
    searches: list[float] = field(default_factory=list)
    all_singles: list[float] = field(default_factory=list)
    accepted: int = 0
    imports: dict[str, float] = field(default_factory=dict)  # id -> sent at
    imports_done: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    exported_rows: int = 0
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def keep(self, uid: str) -> None:
        """Remember a lead created (at most 20,000: a random one gives way)."""
        if len(self.uids) < 20_000:
            self.uids.append(uid)
        else:
            self.uids[random.randrange(len(self.uids))] = uid

    def note(self, kind: str, response: httpx.Response) -> None:
        """Count an answer; keep the body of an unexpected one."""
        self.statuses[f"{kind} {response.status_code}"] += 1
        if response.status_code >= 500 or response.status_code in (400, 401, 403, 404, 409):
            self.errors.append(f"{kind} {response.status_code}: {response.text[:300]}")

    def items(self, answer: dict[str, Any]) -> None:
        """Outcomes of a lead or a batch's items; created and held ones kept."""
        for item in answer.get("items", [answer]):
            outcome = str(item.get("outcome", "rejected"))
            self.outcomes[outcome] += 1
            if outcome in ("created", "merged", "held_for_review"):
                self.accepted += 1
            if outcome in ("created", "held_for_review") and item.get("id"):
                self.keep(str(item["id"]))


def _utc(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def search_params(load: Load, rng: random.Random) -> dict[str, str]:
    """One search a sales team makes: free text, ranges, filters."""
    earlier = rng.choice(load.people.earlier)
    now = datetime.now(UTC)
    kind = rng.randrange(7)
    if kind == 0:
        return {"q": earlier["last_name"].split()[0]}
    if kind == 1 and earlier.get("company"):
        return {"q": max(earlier["company"].split(), key=len)}
    if kind == 2 and earlier.get("phone"):
        digits = re.sub(r"\D", "", earlier["phone"])
        return {"q": f"{digits[-9:-6]} {digits[-6:-3]}"}
    if kind == 3:
        low = rng.randrange(0, 80, 10)
        recent = _utc(now - timedelta(minutes=5))
        return {"min_score": str(low), "max_score": str(low + 20), "created_after": recent}
    if kind == 4:
        start = now - timedelta(minutes=rng.randrange(2, 30))
        return {"created_after": _utc(start), "created_before": _utc(start + timedelta(minutes=2))}
    if kind == 5:
        return {"status": rng.choice(STATUSES), "country": earlier["country"]}
    return {"held": "true", "order": rng.choice(("newest", "oldest"))}


async def run_load(
    client: httpx.AsyncClient, load: Load, opts: argparse.Namespace, until: float
) -> None:
    """Every kind of request, each at its pace, until `until` (monotonic)."""
    rng = random.Random(opts.seed)
    people = load.people

    async def paced(kind: str, pacer: Pacer, one: Callable[[], Awaitable[None]]) -> None:
        """`one()` at `pacer`'s pace; a connection error is counted and the loop goes on."""
        while time.monotonic() < until:
            await pacer.wait()
            try:
                await one()
            except httpx.TransportError as exc:
                load.statuses[f"{kind} {type(exc).__name__}"] += 1
                load.errors.append(f"{kind}: {type(exc).__name__}: {exc}")

    async def single() -> None:
        headers = {"Idempotency-Key": uuid.uuid4().hex} if rng.random() < 0.5 else {}
        body = orjson.dumps(people.one())
        started = time.perf_counter()
        r = await client.post(
            "/v1/leads", content=body, headers=headers | {"Content-Type": "application/json"}
        )
        took = (time.perf_counter() - started) * 1000
        load.note("single", r)
        if r.status_code in (200, 201):
            load.singles.append(took)
            load.all_singles.append(took)
            load.items(r.json())

    async def batch() -> None:
        items = [people.one() for _ in range(rng.randint(200, 1000))]
        r = await client.post(
            "/v1/leads/batch",
            content=orjson.dumps({"items": items}),
            headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex},
        )
        load.note("batch", r)
        if r.status_code == 200:
            load.items(r.json())

    async def read() -> None:
        if not load.uids or len(people.earlier) < 50:
            return
        if rng.random() < 0.6:
            started = time.perf_counter()
            r = await client.get("/v1/leads", params=search_params(load, rng))
            load.note("search", r)
            if r.status_code == 200:
                load.searches.append((time.perf_counter() - started) * 1000)
        else:
            load.note("get", await client.get(f"/v1/leads/{rng.choice(load.uids)}"))

    async def edit() -> None:
        if len(load.uids) < 100:
            return
        if rng.random() < opts.erase_share:
            uid = load.uids.pop(rng.randrange(len(load.uids)))
            load.note("delete", await client.delete(f"/v1/leads/{uid}"))
            return
        patch: dict[str, Any] = rng.choice(
            (
                {"status": rng.choice(STATUSES)},
                {"job_title": rng.choice(("Gerente", "Directora de compras", "CTO"))},
                {"custom_fields": {"visita": rng.randrange(1000)}},
                {"owner": None},
            )
        )
        r = await client.patch(
            f"/v1/leads/{rng.choice(load.uids)}",
            content=orjson.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        load.note("patch", r)

    minute = 0

    async def upload() -> None:
        data = import_csv(people, opts.import_rows)
        r = await client.post("/v1/leads/import", files={"file": ("soak.csv", data, "text/csv")})
        load.note("import", r)
        if r.status_code == 202:
            load.imports[str(r.json()["id"])] = time.monotonic()

    async def export() -> None:
        nonlocal minute
        minute += 1
        full = opts.full_export_minutes and minute % opts.full_export_minutes == 0
        since = datetime.now(UTC) - timedelta(minutes=5)
        params = {} if full else {"created_after": _utc(since)}
        rows = 0
        async with client.stream("GET", "/v1/leads/export.csv", params=params) as r:
            async for chunk in r.aiter_bytes():
                rows += chunk.count(b"\r\n")
            load.note("export-all" if full else "export", r)
        load.exported_rows += max(rows - 1, 0)

    async def later(seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(seconds)
        await work()

    single_pacer, read_pacer = Pacer(opts.singles_rate), Pacer(opts.reads_rate)
    loops = [paced("single", single_pacer, single) for _ in range(opts.concurrency)]
    loops += [paced("read", read_pacer, read) for _ in range(2)]
    loops += [
        paced("batch", Pacer(1 / opts.batch_every), batch),
        paced("edit", Pacer(opts.edits_rate), edit),
        # A CSV import each minute from 20 s in, an export each minute from 50 s in.
        later(20, lambda: paced("import", Pacer(1 / 60), upload)),
        later(50, lambda: paced("export", Pacer(1 / 60), export)),
    ]
    await guarded([asyncio.create_task(loop) for loop in loops], load)


async def guarded(tasks: list[asyncio.Task[None]], load: Load) -> None:
    """Wait for the loops; one that fails is counted and not restarted (the rest go
    on). `drive` cuts them `DRAIN_SECONDS` past the end."""
    try:
        for task in asyncio.as_completed(tasks):
            try:
                await task
            except (httpx.HTTPError, ValueError, LookupError) as exc:  # a bad answer
                load.errors.append(f"a load loop stopped: {type(exc).__name__}: {exc}")
    finally:
        for task in tasks:
            task.cancel()


# --------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------


@dataclass
class Database:
    """How the sampler reads the database: a SQLite file, or a PostgreSQL URL."""

    sqlite: Path | None = None
    pg_url: str | None = None

    def _rows(self, queries: dict[str, str]) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.sqlite is not None:
            conn = sqlite3.connect(self.sqlite, timeout=10)
            try:
                for name, sql in queries.items():
                    out[name] = float(conn.execute(sql).fetchone()[0] or 0)
            finally:
                conn.close()
            return out
        import psycopg

        assert self.pg_url is not None
        with psycopg.connect(self.pg_url.replace("+psycopg", ""), autocommit=True) as pg:
            for name, sql in queries.items():
                row = pg.execute(sql.encode()).fetchone()
                out[name] = float(row[0] or 0) if row else 0.0
        return out

    def read(self) -> dict[str, float]:
        """Rows and sizes."""
        jobs = "cauce_jobs" if self.sqlite is not None else "procrastinate_jobs"
        queries = {
            "leads": "SELECT count(*) FROM leads",
            "jobs": f"SELECT count(*) FROM {jobs}",
            "jobs todo": f"SELECT count(*) FROM {jobs} WHERE status = 'todo'",
            "attempts": "SELECT count(*) FROM job_attempts",
            "idem keys": "SELECT count(*) FROM idempotency_keys",
            "idem MiB": "SELECT sum(length(body)) / 1048576.0 FROM idempotency_keys",
            "history": "SELECT count(*) FROM lead_history",
            "inbox": "SELECT count(*) FROM webhook_inbox",
        }
        if self.pg_url is not None:
            queries["db MiB"] = "SELECT pg_database_size(current_database()) / 1048576.0"
        out = self._rows(queries)
        if self.sqlite is not None:
            for name, suffix in (("db MiB", ""), ("wal MiB", "-wal")):
                path = Path(f"{self.sqlite}{suffix}")
                out[name] = path.stat().st_size / 2**20 if path.exists() else 0.0
        return out


_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def metric_figures(text: str) -> dict[str, float]:
    """What /metrics says that a soak reads: its series, the sync backlog, the queue
    depth, the pool, anything about a cache."""
    series, out = 0, {"series": 0.0, "backlog": 0.0, "queue": 0.0}
    for line in text.splitlines():
        match = _SAMPLE_LINE.match(line)
        if match is None:
            continue
        series += 1
        name, labels, value = match.group(1), match.group(2) or "", float(match.group(3))
        if name == "cauce_leads_sync_backlog":
            out["backlog"] += value
        elif name == "cauce_jobs_queue_depth" and "todo" in labels:
            out["queue"] += value
        elif "cache" in name:
            out[f"{name}{labels}"] = value
    out["series"] = float(series)
    return out


@dataclass
class Sample:
    """One row of the table."""

    t: float
    figures: dict[str, float]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def take_sample(
    client: httpx.AsyncClient,
    procs: list[Proc],
    db: Database,
    crm: str,
    load: Load,
    began: float,
) -> Sample:
    """The figures now (and of the window since the last sample)."""
    figures: dict[str, float] = {}
    now = time.monotonic()
    for proc in procs:
        pid = proc.popen.pid
        status = proc_status(pid)
        prefix = "" if proc.name == "serve" else f"{proc.name[0]}."
        figures[f"{prefix}rss MiB"] = int(status.get("VmRSS", "0 kB").split()[0]) / 1024
        figures[f"{prefix}fds"] = fd_count(pid)
        figures[f"{prefix}thr"] = int(status.get("Threads", "0"))
        cpu = cpu_seconds(pid)
        figures[f"{prefix}cpu%"] = 100 * (cpu - proc.cpu) / max(now - proc.at, 1e-6)
        proc.cpu, proc.at = cpu, now
    figures.update(await asyncio.to_thread(db.read))
    try:
        metrics = await client.get("/metrics")
        figures.update(metric_figures(metrics.text))
    except httpx.HTTPError:
        pass
    try:
        stats = (await client.get(f"{crm}/_sandbox/stats", headers={"Authorization": ""})).json()
        figures["crm"] = float(stats.get("contacts", 0))
    except (httpx.HTTPError, ValueError):
        pass
    window, load.singles = load.singles, []
    searched, load.searches = load.searches, []
    figures["accepted"] = load.accepted
    figures["singles"] = len(window)
    figures["p50 ms"] = _pct(window, 0.5)
    figures["p99 ms"] = _pct(window, 0.99)
    figures["search p50"] = _pct(searched, 0.5)
    for import_id, sent in list(load.imports.items()):
        try:
            r = await client.get(f"/v1/leads/import/{import_id}")
        except httpx.HTTPError:
            continue
        state = r.json() if r.status_code == 200 else {}
        if state.get("state") not in (None, "queued", "running"):
            load.imports_done.append((import_id, time.monotonic() - sent, state))
            del load.imports[import_id]
    return Sample(now - began, figures)


async def sampler(
    client: httpx.AsyncClient,
    procs: list[Proc],
    db: Database,
    crm: str,
    load: Load,
    opts: argparse.Namespace,
    began: float,
    until: float,
    samples: list[Sample],
) -> None:
    """A sample every `--sample-seconds` until `until`, printed as it comes."""
    columns: list[str] | None = None
    next_at = began
    while True:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        sample = await take_sample(client, procs, db, crm, load, began)
        samples.append(sample)
        if columns is None:
            columns = table_columns(sample)
            print(header(columns), flush=True)
        print(row(sample, columns), flush=True)
        next_at += opts.sample_seconds
        if next_at > until + 1:
            return


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


FIRST = ("leads", "accepted")


def table_columns(sample: Sample) -> list[str]:
    """The figures in the table's order."""
    rest = [name for name in sample.figures if name not in FIRST]
    return [*FIRST, *rest]


def _short(name: str) -> str:
    return name if len(name) <= 10 else name[:10]


def header(columns: list[str]) -> str:
    """The table's head."""
    return f"{'t s':>6}" + "".join(f"{_short(c):>11}" for c in columns)


def _cell(value: float | None) -> str:
    if value is None or value != value:
        return f"{'-':>11}"
    if abs(value) >= 100 or value == int(value):
        return f"{value:>11,.0f}"
    return f"{value:>11.2f}"


def row(sample: Sample, columns: list[str]) -> str:
    """A sample's row."""
    return f"{sample.t:>6.0f}" + "".join(_cell(sample.figures.get(c)) for c in columns)


def slope(points: list[tuple[float, float]]) -> float:
    """Least squares slope of y on x (nan with too few points or no spread)."""
    points = [(x, y) for x, y in points if y == y]
    if len(points) < 3:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def growth(samples: list[Sample]) -> None:
    """Each figure's growth per 10,000 stored leads: whole run, second half."""
    loaded = [s for s in samples if s.t > 0]  # the first sample is before any load
    if len(loaded) < 4:
        print("too few samples for growth figures")
        return
    half = loaded[len(loaded) // 2 :]
    columns = [c for c in table_columns(loaded[-1]) if c not in FIRST]
    stored = loaded[-1].figures["leads"] - samples[0].figures["leads"]
    print(
        f"\ngrowth per 10,000 stored leads ({stored:,.0f} stored in {loaded[-1].t / 60:.1f} min;"
        " least squares on the samples after the start; second half alone)\n"
    )
    if not any("cache" in name for name in columns):
        print("(/metrics has no series about a cache: the candidate cache's size is not shown)")
    print(f"{'figure':<14}{'start':>11}{'end':>11}{'/10k all':>11}{'/10k 2nd half':>15}")
    for name in columns:
        first = samples[0].figures.get(name, float("nan"))
        last = loaded[-1].figures.get(name, float("nan"))
        all_slope = slope([(s.figures["leads"], s.figures.get(name, float("nan"))) for s in loaded])
        half_slope = slope([(s.figures["leads"], s.figures.get(name, float("nan"))) for s in half])
        print(
            f"{_short(name):<14}{_cell(first)}{_cell(last)}{_cell(all_slope * 1e4)}"
            f"    {_cell(half_slope * 1e4)}"
        )


def summary(load: Load, opts: argparse.Namespace) -> None:
    """What was sent and answered."""
    print("\nanswers:", dict(sorted(load.statuses.items())))
    print("outcomes:", dict(load.outcomes), f"(repeats sent: {load.people.repeats:,})")
    singles = load.all_singles
    if singles:
        print(
            f"single POST over the run: {len(singles):,}, p50 {_pct(singles, 0.5):.1f} ms, "
            f"p99 {_pct(singles, 0.99):.1f} ms"
        )
    for import_id, seconds, state in load.imports_done:
        print(
            f"import {import_id}: {state.get('state')} in <= {seconds:.0f} s, created "
            f"{state.get('rows_created')}, merged {state.get('rows_merged')}, held "
            f"{state.get('rows_held')}, rejected {state.get('rows_rejected')}"
        )
    if load.imports:
        print(f"imports unfinished at the end: {len(load.imports)}")
    print(f"rows exported: {load.exported_rows:,}")
    for line in load.errors:
        print("  unexpected:", line)


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def work_dir(opts: argparse.Namespace) -> Iterator[Path]:
    """`--dir` (made; kept), or a temporary directory (removed unless `--keep`)."""
    if opts.dir:
        path = Path(opts.dir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="cauce-soak-"))
    try:
        yield path
    finally:
        if opts.keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def database_url(opts: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, Database]]:
    """The database's URL and how to sample it."""
    if opts.backend == "sqlite":
        path = tmp / "data" / "cauce.db"
        yield f"sqlite+aiosqlite:///{path}", Database(sqlite=path)
        return
    admin = os.environ.get("CAUCE_TEST_POSTGRES_URL")
    if not admin:
        sys.exit("--backend postgresql needs CAUCE_TEST_POSTGRES_URL (scripts/services.sh start)")
    with fresh_pg_database(admin, "cauce_soak", keep=opts.keep) as url:
        yield url, Database(pg_url=url)


def environment(
    tmp: Path, url: str, crm_url: str, port: int, opts: argparse.Namespace
) -> dict[str, str]:
    """Every Cauce process's environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env.update(
        CAUCE_DATA_DIR=str(tmp / "data"),
        CAUCE_DATABASE_URL=url,
        CAUCE_LOG__FORMAT="json",
        CAUCE_LOG__LEVEL="warning",
        CAUCE_HTTP__PORT=str(port),
        CAUCE_HTTP__ACCESS_LOG="false",
        CAUCE_CRM__PROVIDER="hubspot",
        CAUCE_CRM__BASE_URL=crm_url,
        CAUCE_CRM__TOKEN="sandbox-token",
        CAUCE_CRM__ALLOW_HOSTS='["127.0.0.1"]',
        CAUCE_UPSTREAMS=orjson.dumps({"hubspot": HUBSPOT_GUARDS}).decode(),
    )
    if opts.candidate_cache is not None:
        env["CAUCE_LEADS__CANDIDATE_CACHE_SIZE"] = str(opts.candidate_cache)
    if opts.webhooks:
        env["CAUCE_CRM__WEBHOOK_SECRET"] = WEBHOOK_SECRET
        env["CAUCE_CRM__WEBHOOK_URL"] = f"http://127.0.0.1:{port}/v1/webhooks/hubspot"
    return env


async def drive(
    base: str, key: str, procs: list[Proc], db: Database, crm: str, opts: argparse.Namespace
) -> tuple[list[Sample], Load]:
    """The load and the sampler, for `--minutes`."""
    load = Load(People(opts.seed, opts.repeat))
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(120.0),
        limits=limits,
    ) as client:
        began = time.monotonic()
        until = began + opts.minutes * 60
        sampling = asyncio.create_task(
            sampler(client, procs, db, crm, load, opts, began, until, samples)
        )
        loading: Awaitable[None] = run_load(client, load, opts, until)
        try:
            await asyncio.wait_for(loading, timeout=opts.minutes * 60 + DRAIN_SECONDS)
        except TimeoutError:
            load.errors.append(f"load still running {DRAIN_SECONDS:.0f} s past the end: cut")
        await asyncio.wait_for(sampling, timeout=opts.sample_seconds + DRAIN_SECONDS)
    return samples, load


def run(opts: argparse.Namespace) -> None:
    """Start the sandbox and Cauce, drive them, print the figures, stop them."""
    with work_dir(opts) as tmp, database_url(opts, tmp) as (url, db):
        procs: list[Proc] = []
        try:
            crm_port, port = free_port(), free_port()
            crm_url, base = f"http://127.0.0.1:{crm_port}", f"http://127.0.0.1:{port}"
            crm_args = ["sandbox", "crm", "--port", str(crm_port), "--seed", str(opts.seed)]
            crm_args += ["--error-rate", str(opts.crm_error_rate)]
            if opts.webhooks:
                hook = f"{base}/v1/webhooks/hubspot"
                crm_args += ["--webhook-url", hook, "--webhook-secret", WEBHOOK_SECRET]
            sandbox = start("sandbox", crm_args, dict(os.environ), tmp)
            procs.append(sandbox)
            wait_for(sandbox, lambda: b"sandbox crm ready" in sandbox.log.read_bytes(), "sandbox")
            env = environment(tmp, url, crm_url, port, opts)
            run_cli(["db", "upgrade"], env, tmp)
            key = run_cli(["apikey", "create", "--name", "soak", "--scopes", SCOPES], env, tmp)
            token = re.search(r"cauce_\S+", key)
            key = token.group(0) if token else key
            serve = start("serve", ["serve", "--port", str(port)], env, tmp)
            procs.append(serve)
            wait_for(serve, lambda: healthy(base), "cauce serve")
            sampled = [serve]
            if opts.backend == "postgresql":
                worker = start("worker", ["worker"], env, tmp)
                procs.append(worker)
                sampled.append(worker)
            print(
                f"{opts.backend}: cauce serve pid {serve.popen.pid} at {base}, sandbox CRM at "
                f"{crm_url}, data in {tmp}; {opts.minutes:g} min, a sample every "
                f"{opts.sample_seconds:g} s\n",
                flush=True,
            )
            samples, load = asyncio.run(drive(base, key, sampled, db, crm_url, opts))
            growth(samples)
            summary(load, opts)
        finally:
            for proc in reversed(procs):
                proc.stop()


def main() -> None:
    """Options, then the run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--sample-seconds", type=float, default=30.0)
    parser.add_argument("--singles-rate", type=float, default=30.0, help="single leads a second")
    parser.add_argument("--concurrency", type=int, default=4, help="single leads in flight")
    parser.add_argument("--batch-every", type=float, default=6.0, help="seconds between batches")
    parser.add_argument("--reads-rate", type=float, default=5.0, help="searches + GETs a second")
    parser.add_argument("--edits-rate", type=float, default=1.5, help="PATCH + DELETE a second")
    parser.add_argument("--erase-share", type=float, default=0.2, help="edits that are DELETEs")
    parser.add_argument("--import-rows", type=int, default=1000, help="rows of each CSV import")
    parser.add_argument("--full-export-minutes", type=int, default=5, help="0: never")
    parser.add_argument("--repeat", type=float, default=0.2, help="share of earlier people")
    parser.add_argument("--crm-error-rate", type=float, default=0.01)
    parser.add_argument(
        "--candidate-cache", type=int, help="Cauce's leads.candidate_cache_size (default: its own)"
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="the sandbox sends HubSpot's change webhooks to Cauce (its inbox is sampled)",
    )
    parser.add_argument("--seed", type=int, default=157)
    parser.add_argument("--dir", help="work here (kept) instead of a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    opts = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    run(opts)


if __name__ == "__main__":
    main()

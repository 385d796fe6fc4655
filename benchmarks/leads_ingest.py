"""Lead intake through the real HTTP stack, as ratios against a bare endpoint, same run.

Per database (SQLite, then PostgreSQL when CAUCE_TEST_POSTGRES_URL is set):

1. `cauce serve` on a fresh database, CRM provider `hubspot` pointed at a closed
   loopback port, with the embedded worker off (CAUCE_JOBS__EMBEDDED_WORKER=false): every
   accepted lead still defers its delivery job in the request's transaction (the first
   one inserts it, later ones meet the "one waits per account" dedupe key, as when a
   worker is busy), but no job runs, so no delivery competes for the CPU or the SQLite
   write lock and nothing reaches a network. On PostgreSQL no worker runs either.
2. The baseline: `_bare_ingest_app.py` (FastAPI + uvicorn with the same options, same
   driver) parsing the JSON body and inserting one row in one transaction.
3. wrk with `leads_ingest.lua` against `POST /v1/leads` of both, alternating, after a
   warm-up: a realistic Spanish lead per request, unique email and phone (each request
   creates a lead), Bearer key; then Cauce alone with ~10 % exact duplicates.
4. `POST /v1/leads/batch`, 1,000 leads per call, from a few concurrent connections
   (httpx): leads/s against the single endpoint's. Batches alone: they start
   `batch_parts.SINGLES_LATELY` (+1) seconds after the last single lead, so each is one
   transaction (ADR 0013; `leads_batch_interleave.py` measures batches beside singles).

When a figure misses its target, the paths are profiled in-process on the first database
that missed (`--profile always`: every database): the app with the same settings and
data behind httpx's ASGITransport, a SIGPROF sampling profiler (`Sampler`) and the wall
time of every SQL statement (`SqlTimer`); the top costs are printed.

    source /tmp/svc.env   # CAUCE_TEST_POSTGRES_URL; without it only SQLite runs
    .venv/bin/python benchmarks/leads_ingest.py [--seconds 8] [--rounds 2] [--profile auto]
        [--pg-workers N]   # PostgreSQL: N processes of each server (`serve --workers N`)

Needs `wrk` (Debian: `apt-get install -y wrk`). Targets: single >= 0.7x the bare
endpoint's req/s; batch >= 10x the single endpoint's leads/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from _jobs_profile import Sampler, Site, label
from cauce.leads.batch_parts import SINGLES_LATELY

HERE = Path(__file__).resolve().parent
LUA = HERE / "leads_ingest.lua"
BARE_APP = HERE / "_bare_ingest_app.py"
CAUCE = [sys.executable, "-m", "cauce"]
# Lead numbers: wrk runs take run ids from 0; the batch and the profile take their own.
BATCH_RUN, PROFILE_RUN, FLOOR_RUN = 19, 18, 17
SINGLE_TARGET, BATCH_TARGET = 0.7, 10.0


# --------------------------------------------------------------------------------------
# Leads: the same people as the Lua script, from the same pools
# --------------------------------------------------------------------------------------


class LeadMaker:
    """`maker(seq)` is the lead `leads_ingest.lua` sends for lead number `seq`."""

    _M = 2147483647
    _PLAIN = str.maketrans("áéíóúñÁÉÍÓÚÑ", "aeiounaeioun")

    def __init__(self, lua: Path = LUA) -> None:
        self.pools: dict[str, list[str]] = {}
        for line in lua.read_text(encoding="utf-8").splitlines():
            if m := re.fullmatch(r"local ([A-Z_]+) = \{(.*)\}", line):
                self.pools[m.group(1)] = re.findall(r'"([^"]*)"', m.group(2))

    def _pick(self, pool: str, h: int) -> str:
        values = self.pools[pool]
        return values[h % len(values)]

    def _ascii(self, text: str) -> str:
        return text.translate(self._PLAIN).lower().replace(" ", ".")

    def __call__(self, seq: int) -> dict[str, Any]:
        """One lead (a dict ready for JSON)."""
        h = [(seq + 1) * 48271 % self._M]
        for _ in range(13):
            h.append(h[-1] * 48271 % self._M)
        first, s1, s2 = (
            self._pick("FIRST_NAMES", h[0]),
            self._pick("SURNAMES", h[1]),
            self._pick("SURNAMES", h[2]),
        )
        city, region = self._pick("PLACES", h[3]).split("|")
        d = f"{600000000 + seq:09d}"
        phone = (
            f"+34 {d[:3]} {d[3:5]} {d[5:7]} {d[7:]}"
            if seq % 2 == 0
            else f"{d[:3]} {d[3:6]} {d[6:]}"
        )
        brand = self._pick("COMPANY_NAMES" if h[11] % 2 == 0 else "SURNAMES", h[12])
        company = f"{self._pick('COMPANY_KINDS', h[5])} {brand} {self._pick('LEGAL_FORMS', h[13])}"
        email = f"{self._ascii(first)}.{self._ascii(s1)}.{seq}@{self._pick('DOMAINS', h[4])}"
        return {
            "email": email,
            "phone": phone,
            "first_name": first,
            "last_name": f"{s1} {s2}",
            "company": company,
            "job_title": self._pick("JOB_TITLES", h[6]),
            "country": "ES",
            "region": region,
            "city": city,
            "language": "es",
            "source": self._pick("SOURCES", h[7]),
            "utm": {"source": "google", "medium": "cpc", "campaign": self._pick("CAMPAIGNS", h[8])},
            "consent": {
                "marketing": True,
                "given_at": "2025-10-14T09:30:00+02:00",
                "wording_version": "rgpd-2025-03",
                "source": "https://www.ejemplo.es/contacto",
            },
            "custom_fields": {
                "producto": self._pick("PRODUCTS", h[9]),
                "empleados": self._pick("EMPLOYEES", h[10]),
            },
        }

    def seq(self, run: int, i: int) -> int:
        """Lead number `i` of run `run` (thread 0's numbering in the Lua script)."""
        return run * 4 * 1_000_000 + i


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


# Options that set one of Cauce's settings (unset: the shipped default).
SETTING_OPTIONS = {
    "group_max": "CAUCE_LEADS__INTAKE_GROUP_MAX",
    "max_candidates": "CAUCE_LEADS__DEDUPE__MAX_CANDIDATES",
    "candidate_cache": "CAUCE_LEADS__CANDIDATE_CACHE_SIZE",
}


def add_setting_options(parser: argparse.ArgumentParser) -> None:
    """`--group-max`, `--max-candidates` and `--candidate-cache`, read by `cauce_env`."""
    parser.add_argument(
        "--group-max", type=int, help="Cauce's leads.intake_group_max (1: no group commit)"
    )
    parser.add_argument("--max-candidates", type=int, help="Cauce's leads.dedupe.max_candidates")
    parser.add_argument(
        "--candidate-cache", type=int, help="Cauce's leads.candidate_cache_size (0: none)"
    )


def free_port() -> int:
    """A free TCP port on loopback (also: a port nobody listens on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, base: str) -> Iterator[str]:
    """Start a server, wait for its /healthz, yield its base URL, stop it (SIGTERM)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    sys.exit(f"{cmd[-3:]} exited with {proc.returncode}; see {log}")
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit(f"{cmd[-3:]} did not become ready; see {log}")
                    time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run a `cauce` command; its stdout."""
    done = subprocess.run([*CAUCE, *args], env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"cauce {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def cauce_env(
    data_dir: Path, database_url: str | None, opts: argparse.Namespace | None = None
) -> dict[str, str]:
    """`cauce`'s environment: fresh data dir, HubSpot at a closed port, no worker; the
    leads settings given as options (`add_setting_options`), if any."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env.update(
        CAUCE_DATA_DIR=str(data_dir),
        CAUCE_LOG__FORMAT="json",
        CAUCE_CRM__PROVIDER="hubspot",
        CAUCE_CRM__TOKEN="bench-token-never-sent",
        CAUCE_CRM__BASE_URL=f"http://127.0.0.1:{free_port()}",
        CAUCE_JOBS__EMBEDDED_WORKER="false",
    )
    for option, name in SETTING_OPTIONS.items():
        if (value := getattr(opts, option, None)) is not None:
            env[name] = str(value)
    if database_url:
        env["CAUCE_DATABASE_URL"] = database_url
    return env


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


@dataclass
class WrkRun:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-2xx answers plus socket errors
    outcomes: dict[str, int] = field(default_factory=dict)
    groups: int = 0  # Cauce: transactions its leads were committed in (group commit)
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core (`CpuSplit`)


class CpuSplit:
    """Where the machine's CPU went during a run, in % of one core (100 % x cores in
    all): the servers (every other Python process), the database, wrk, and idle; and
    `loop`, the busiest thread of a server process (its event loop): near 100 % the
    server is bound by its one thread's CPU, well below it the loop waits."""

    _TICK = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _threads(pids: list[int]) -> dict[tuple[int, str], int]:
        found: dict[tuple[int, str], int] = {}
        for pid in pids:
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    with open(f"/proc/{pid}/task/{task}/stat") as stat:
                        fields = stat.read().rpartition(")")[2].split()
                    found[(pid, task)] = int(fields[11]) + int(fields[12])
                except (OSError, IndexError, ValueError):
                    continue
        return found

    @staticmethod
    def _processes() -> dict[int, tuple[str, int]]:
        found: dict[int, tuple[str, int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    head, _, rest = stat.read().rpartition(")")
                fields = rest.split()
                found[int(entry)] = (head.partition("(")[2], int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                continue
        return found

    @staticmethod
    def _machine() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]

    def __enter__(self) -> CpuSplit:
        self._before = self._processes()
        servers = [pid for pid, (name, _) in self._before.items() if name.startswith("python")]
        self._threads_before = self._threads(servers)
        self._machine_before = self._machine()
        self._children = os.times().children_user + os.times().children_system
        return self

    def __exit__(self, *_: object) -> None:
        total, idle = (a - b for a, b in zip(self._machine(), self._machine_before, strict=True))
        cores = os.cpu_count() or 1
        wall = total / cores  # ticks of one core
        used: dict[str, float] = {"server": 0.0, "database": 0.0, "other": 0.0}
        for pid, (name, ticks) in self._processes().items():
            spent = ticks - self._before.get(pid, (name, 0))[1]
            kind = "server" if name.startswith("python") else "database"
            used[kind if kind == "server" or name.startswith("postgres") else "other"] += spent
        children = os.times().children_user + os.times().children_system - self._children
        self.split = {k: 100 * v / wall for k, v in used.items()}
        self.split["wrk"] = 100 * children * self._TICK / wall
        self.split["idle"] = 100 * idle / wall
        pids = sorted({pid for pid, _ in self._threads_before})
        threads = [
            ticks - self._threads_before[key]
            for key, ticks in self._threads(pids).items()
            if key in self._threads_before
        ]
        self.split["loop"] = 100 * max(threads, default=0) / wall


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:  # wrk prints -nan when a run saw no answer at all
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[m.group(2)]


def _grab(pattern: str, text: str, default: str = "0") -> str:
    m = re.search(pattern, text)
    return m.group(1) if m else default


def wrk(base: str, key: str, opts: argparse.Namespace, run: int, dup: float, secs: int) -> WrkRun:
    """One wrk run of the Lua script against `base`/v1/leads."""
    cmd = ["wrk", f"-t{opts.threads}", f"-c{opts.connections}", f"-d{secs}s", "--latency"]
    cmd += ["--timeout", "30s", "-s", str(LUA), "-H", f"Authorization: Bearer {key}"]
    cmd += [f"{base}/v1/leads", "--", str(run), str(dup)]
    with CpuSplit() as cpu:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return WrkRun(
        rps=float(_grab(r"Requests/sec:\s+([\d.]+)", out)),
        # Anchored: a "+/- Stdev" column such as "87.50%" also ends in "50%".
        p50_ms=_ms(_grab(r"(?m)^\s+50%\s+(\S+)", out, "?")),
        p99_ms=_ms(_grab(r"(?m)^\s+99%\s+(\S+)", out, "?")),
        requests=int(_grab(r"(\d+) requests in", out)),
        bad=int(_grab(r"Non-2xx or 3xx responses: (\d+)", out)) + socket_errors,
        cpu=cpu.split,
    )


GROUPS = "(groups)"


def intake_counts(base: str) -> dict[str, int]:
    """Cauce's `cauce_leads_intake_total` by outcome, and its intake groups (under
    `GROUPS`), from /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        text = r.read().decode()
    found = re.findall(r'cauce_leads_intake_total\{outcome="(\w+)"\} ([\d.e+]+)', text)
    counts = {outcome: int(float(value)) for outcome, value in found}
    counts[GROUPS] = int(
        float(_grab(r"(?m)^cauce_leads_intake_group_leads_count ([\d.e+]+)", text))
    )
    return counts


def wrk_cauce(base: str, key: str, opts: argparse.Namespace, run: int, dup: float) -> WrkRun:
    """A wrk run against Cauce, with the outcomes it produced (read from /metrics, which
    sums a server's processes)."""
    before = intake_counts(base)
    result = wrk(base, key, opts, run, dup, opts.seconds)
    after = intake_counts(base)
    result.outcomes = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    result.groups = result.outcomes.pop(GROUPS, 0)
    return result


@dataclass
class BatchRun:
    """`POST /v1/leads/batch` calls."""

    leads: int
    seconds: float
    latencies: list[float]
    outcomes: dict[str, int]
    failed_calls: int

    @property
    def leads_per_s(self) -> float:
        """Leads accepted per second of wall time."""
        return self.leads / self.seconds


async def batches(base: str, key: str, opts: argparse.Namespace) -> BatchRun:
    """Send `opts.batches` batches of `opts.batch_size` new leads, `opts.batch_conns` at once."""
    maker = LeadMaker()
    bodies = [
        orjson.dumps(
            {
                "items": [
                    maker(maker.seq(BATCH_RUN, b * opts.batch_size + i))
                    for i in range(opts.batch_size)
                ]
            }
        )
        for b in range(opts.batches)
    ]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    result = BatchRun(0, 0.0, [], {}, 0)
    limits = httpx.Limits(max_connections=opts.batch_conns)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:

        async def sender() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                answer = await client.post("/v1/leads/batch", content=body, headers=headers)
                result.latencies.append(time.perf_counter() - t0)
                if answer.status_code != 200:
                    result.failed_calls += 1
                    continue
                payload = answer.json()
                result.leads += payload["accepted"]
                for item in payload["items"]:
                    result.outcomes[item["outcome"]] = result.outcomes.get(item["outcome"], 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(opts.batch_conns)))
        result.seconds = time.perf_counter() - start
    return result


_floor_calls = itertools.count()


def validation_floor(batch_size: int) -> float:
    """Leads/s of validating a batch alone (`validate_batch`: the schema, email, phone
    and text normalisation every lead goes through), in this process: no HTTP, no
    de-duplication, no database. No batch can take leads in faster than this. Each call
    takes leads never validated before (validation caches repeated values)."""
    from cauce.leads.schemas_batch import validate_batch

    maker = LeadMaker()
    first = next(_floor_calls) * 4 * batch_size
    runs = [
        [maker(maker.seq(FLOOR_RUN, first + r * batch_size + i)) for i in range(batch_size)]
        for r in range(4)
    ]
    validate_batch(runs[0])  # warm-up: imports, the caches of email domains and regions
    seconds = []
    for items in runs[1:]:
        started = time.perf_counter()
        checked = validate_batch(items)
        seconds.append(time.perf_counter() - started)
        assert not checked.invalid, checked.invalid[:1]
    return batch_size / min(seconds)


# --------------------------------------------------------------------------------------
# One database
# --------------------------------------------------------------------------------------


@dataclass
class Backend:
    """Everything measured on one database."""

    name: str
    cauce: list[WrkRun] = field(default_factory=list)
    bare: list[WrkRun] = field(default_factory=list)
    dup: WrkRun | None = None
    batch: BatchRun | None = None

    @property
    def single_rps(self) -> float:
        """Median req/s (= leads/s) of Cauce's single endpoint, unique leads."""
        return statistics.median(r.rps for r in self.cauce)

    @property
    def bare_rps(self) -> float:
        """Median req/s of the bare endpoint."""
        return statistics.median(r.rps for r in self.bare)

    @property
    def single_ratio(self) -> float:
        """Cauce / bare."""
        return self.single_rps / self.bare_rps

    @property
    def batch_ratio(self) -> float:
        """Batch leads/s / single leads/s."""
        return self.batch.leads_per_s / self.single_rps if self.batch else 0.0


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def pg_database(admin_url: str, label: str) -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); its SQLAlchemy URL."""
    name = f"cauce_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def measure(
    name: str, tmp: Path, cauce_url: str | None, bare_url: str, opts: argparse.Namespace
) -> tuple[Backend, dict[str, str], str]:
    """Run every measurement on one database; the result, Cauce's env and its key."""
    result = Backend(name)
    env = cauce_env(tmp / "cauce-data", cauce_url, opts)
    if cauce_url:
        run_cli(["db", "upgrade"], env, tmp)
    key = run_cli(
        ["apikey", "create", "--name", "bench", "--scopes", "leads:write,leads:read"], env, tmp
    )
    cauce_port, bare_port = free_port(), free_port()
    bare_cmd = [sys.executable, str(BARE_APP), "--port", str(bare_port), "--database-url", bare_url]
    cauce_cmd = [*CAUCE, "serve", "--port", str(cauce_port)]
    processes = opts.pg_workers if cauce_url else 1  # the same for both (SQLite: one)
    if processes > 1:
        cauce_cmd += ["--workers", str(processes)]
        bare_cmd += ["--workers", str(processes)]
    with (
        served(
            cauce_cmd,
            env,
            tmp,
            tmp / "cauce.log",
            f"http://127.0.0.1:{cauce_port}",
        ) as cauce,
        served(bare_cmd, env, tmp, tmp / "bare.log", f"http://127.0.0.1:{bare_port}") as bare,
    ):
        run = 0
        for base in (cauce, bare):  # warm-up: imports, caches, pools, the first job row
            wrk(base, key, opts, run, 0.0, opts.warmup)
            run += 1
        for i in range(opts.rounds):
            order = ((cauce, result.cauce), (bare, result.bare))
            for base, runs in order if i % 2 == 0 else order[::-1]:
                runs.append(
                    wrk_cauce(base, key, opts, run, 0.0)
                    if base == cauce
                    else wrk(base, key, opts, run, 0.0, opts.seconds)
                )
                run += 1
        result.dup = wrk_cauce(cauce, key, opts, run, 0.1)
        # Batches alone: while single leads come a batch commits in parts, which costs it
        # ~25 % of its leads/s (benchmarks/leads_batch_interleave.py measures that case).
        time.sleep(SINGLES_LATELY + 1)
        result.batch = asyncio.run(batches(cauce, key, opts))
    return result, env, key


# --------------------------------------------------------------------------------------
# Profile (only when a figure misses its target)
# --------------------------------------------------------------------------------------


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Run with `env` as os.environ (Cauce's settings read it), then restore."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class SqlTimer:
    """Wall time per SQL statement (class-level engine events: every engine in-process).

    The time runs from the cursor call to its result, so on SQLite it includes the hop to
    aiosqlite's thread and, for `BEGIN IMMEDIATE`, the wait for the write lock.
    """

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.params: dict[str, int] = {}  # bound values: an IN list's length shows here
        self._started: dict[int, float] = {}

    def _before(self, _conn: Any, cursor: Any, *_: Any) -> None:
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, _conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        elapsed = time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())
        self.params[statement] = self.params.get(statement, 0) + len(params or ())
        # Raw statements are tallied; shortening them for display waits for `print`, so
        # the profile does not pay for it.
        self.total[statement] = self.total.get(statement, 0.0) + elapsed
        self.count[statement] = self.count.get(statement, 0) + 1

    @staticmethod
    def shorten(statement: str) -> str:
        """A statement as one readable line: placeholders and long column lists elided."""
        text = re.sub(r"\s+", " ", statement).strip()
        text = re.sub(r"\((?:\s*(?:\?|%\(\w+\)s(?:::\w+)?|\$\d+)\s*,?)+\)", "(...)", text)
        text = re.sub(r"(?:\(\.\.\.\), )+\(\.\.\.\)", "(...)", text)
        text = re.sub(r"^(SELECT )(.{28})[^()]{4,}?( FROM )", r"\1\2...\3", text)
        text = re.sub(r"^(INSERT INTO \w+ \()(.{20})[^()]{4,}?(\))", r"\1\2...\3", text)
        text = re.sub(r"sa_savepoint_\d+", "sa_savepoint_N", text)
        return text[:120]

    def __enter__(self) -> SqlTimer:
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._before)
        event.remove(Engine, "after_cursor_execute", self._after)

    def print(self, units: int, unit: str) -> None:
        """The statements by total time, per `unit` (request or lead)."""
        total: dict[str, float] = {}
        count: dict[str, int] = {}
        params: dict[str, int] = {}
        for statement, seconds in self.total.items():
            short = self.shorten(statement)
            total[short] = total.get(short, 0.0) + seconds
            count[short] = count.get(short, 0) + self.count[statement]
            params[short] = params.get(short, 0) + self.params[statement]
        print(f"  SQL by total wall time: ms per {unit}, calls per {unit}, bound values per call")
        for text, seconds in sorted(total.items(), key=lambda t: -t[1])[:10]:
            calls = count[text]
            print(
                f"    {1000 * seconds / units:7.2f} ms {calls / units:5.1f}x "
                f"{params[text] / calls:6.1f}  {text}"
            )
        print(f"    {1000 * sum(total.values()) / units:7.2f} ms  in all statements")


IDLE = "other threads (aiosqlite running SQLite) while the loop waits"


def _area(file: str, func: str) -> str:
    if file.endswith("selectors.py") and func == "select":
        return IDLE
    if "/src/cauce/" in file:
        return ".".join(file.split("/src/", 1)[1].removesuffix(".py").split("/")[:3])
    if "site-packages/" in file:
        parts = file.split("site-packages/", 1)[1].removesuffix(".py").split("/")
        return ".".join(parts[:2]) if parts[0] == "sqlalchemy" else parts[0]
    if file.startswith("<"):
        return "generated code (pydantic/dataclass)"
    stem = re.search(r"python3\.\d+/([^/]+)", file)
    return f"stdlib {stem.group(1).removesuffix('.py')}" if stem else Path(file).name


def print_profile(sampler: Sampler, title: str) -> None:
    """Self time by area, top functions by self and by inclusive share."""
    n = sampler.samples or 1
    areas: dict[str, int] = {}
    for (file, _, func), count in sampler.leaf.items():
        areas[_area(file, func)] = areas.get(_area(file, func), 0) + count
    print(
        f"\n  {title}\n  {sampler.wall:.1f} s wall, {sampler.cpu:.1f} s CPU of which "
        f"{sampler.main_cpu:.1f} s in the event-loop thread; {sampler.samples} CPU samples"
    )
    print("  CPU self time by area (C calls count for their Python caller):")
    for name, count in sorted(areas.items(), key=lambda a: -a[1])[:12]:
        print(f"    {100 * count / n:5.1f} %  {name}")
    print("  top functions by CPU self time:")
    for site, count in sorted(sampler.leaf.items(), key=lambda r: -r[1])[:12]:
        print(f"    {100 * count / n:5.1f} %  {label(site)}")
    print("  Cauce functions by inclusive CPU time (on the stack):")
    mine = [(s, c) for s, c in sampler.inclusive.items() if "/src/cauce/" in s[0]]
    for site, count in sorted(mine, key=lambda r: -r[1])[:22]:
        print(f"    {100 * count / n:5.1f} %  {label(site)}")


def _tree_path(stack: tuple[Site, ...], root: str) -> tuple[str, ...] | None:
    """The stack from the Cauce function `root` down: Cauce frames, then the first
    frame outside Cauce each one calls (the library entry point) and nothing below."""
    frames = stack[::-1]  # outermost first
    starts = [i for i, s in enumerate(frames) if s[2] == root and "/src/cauce/" in s[0]]
    if not starts:
        return None
    path: list[str] = []
    for site in frames[starts[-1] :]:
        path.append(label(site))
        if "/src/cauce/" not in site[0]:
            break
    return tuple(path)


def print_tree(sampler: Sampler, root: str, floor: float = 1.5) -> None:
    """Inclusive CPU share below `root`, as a tree of Cauce calls and library entries."""
    n = sampler.samples or 1
    counts: dict[tuple[str, ...], int] = {}
    for stack, count in sampler.stacks.items():
        path = _tree_path(stack, root)
        for depth in range(1, len(path) + 1 if path else 0):
            prefix = path[:depth] if path else ()
            counts[prefix] = counts.get(prefix, 0) + count
    print(f"  call tree below {root} (inclusive CPU share, >= {floor} %):")

    def walk(prefix: tuple[str, ...]) -> None:
        children = [p for p in counts if len(p) == len(prefix) + 1 and p[:-1] == prefix]
        for child in sorted(children, key=lambda p: -counts[p]):
            share = 100 * counts[child] / n
            if share >= floor:
                print(f"    {share:5.1f} % {'  ' * len(prefix)}{child[-1]}")
                walk(child)

    walk(())


@asynccontextmanager
async def app_client(
    settings: Any, key: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """Cauce's app in this process behind httpx's ASGI transport; the client and the
    headers a request needs."""
    from asgi_lifespan import LifespanManager

    from cauce.app import create_app

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cauce") as client:
            yield client, headers


async def send_singles(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    maker: LeadMaker,
    numbers: Iterator[int],
    n: int,
) -> None:
    """`POST /v1/leads` the next `n` leads of `numbers`, one at a time."""
    for _ in range(n):
        body = orjson.dumps(maker(next(numbers)))
        r = await client.post("/v1/leads", content=body, headers=headers)
        assert r.status_code in (200, 201), r.text


Profiled = tuple[str, Sampler, SqlTimer, int, str]  # title, samples, SQL, units, unit name


async def _profile_load(
    settings: Any, key: str, opts: argparse.Namespace, batch: bool
) -> list[Profiled]:
    """Drive the app in-process and sample it while it serves the measured requests."""
    maker = LeadMaker()
    seqs = iter(range(maker.seq(PROFILE_RUN, 0), maker.seq(PROFILE_RUN + 1, 0)))
    out: list[Profiled] = []
    async with app_client(settings, key) as (client, headers):

        async def singles(n: int) -> None:
            await send_singles(client, headers, maker, seqs, n)

        await asyncio.gather(*(singles(10) for _ in range(8)))  # warm-up
        each = opts.profile_requests // 8
        t0 = time.perf_counter()
        with Sampler() as sampler, SqlTimer() as sql:
            await asyncio.gather(*(singles(each) for _ in range(8)))
        rate = each * 8 / (time.perf_counter() - t0)
        title = f"POST /v1/leads x {each * 8}, 8 at a time, {rate:.0f} req/s"
        out.append((title, sampler, sql, each * 8, "request"))
        if batch:
            items = [maker(next(seqs)) for _ in range(opts.profile_batch)]
            body = orjson.dumps({"items": items})
            t0 = time.perf_counter()
            with Sampler() as sampler, SqlTimer() as sql:
                r = await client.post("/v1/leads/batch", content=body, headers=headers)
            assert r.status_code == 200, r.text
            rate = len(items) / (time.perf_counter() - t0)
            title = f"POST /v1/leads/batch with {len(items)} leads, {rate:.0f} leads/s"
            out.append((title, sampler, sql, len(items), "lead"))
    return out


def profile(
    result: Backend,
    env: dict[str, str],
    key: str,
    tmp: Path,
    opts: argparse.Namespace,
    profiled: bool,
) -> bool:
    """Profile the paths that missed their target and print the top costs; True if run.

    With `--profile auto` only the first database that misses is profiled (the Python
    side is the same on both; it keeps the run short)."""
    from cauce.core.config import load_settings
    from cauce.core.observability.logging import configure_logging

    batch_missed = result.batch_ratio < BATCH_TARGET
    missed = result.single_ratio < SINGLE_TARGET or batch_missed
    if opts.profile == "never" or (opts.profile == "auto" and (profiled or not missed)):
        return False
    print(f"\n{result.name}: sampled profile, in-process (httpx ASGITransport -> the app, same")
    print("settings and database, after the measurements; no uvicorn HTTP parsing)")
    with environment(env):
        settings = load_settings()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    with open(tmp / "profile.log", "w") as log:
        configure_logging(settings, stream=log)  # the JSON access log is part of the path
        batch = opts.profile == "always" or batch_missed
        try:
            for title, sampler, sql, units, unit in asyncio.run(
                _profile_load(settings, key, opts, batch)
            ):
                print_profile(sampler, title)
                print_tree(sampler, "_intake")
                sql.print(units, unit)
        finally:
            root.handlers[:], root.level = saved
    return True


# --------------------------------------------------------------------------------------
# Report and main
# --------------------------------------------------------------------------------------


def _row(label: str, runs: list[WrkRun]) -> str:
    outcomes: dict[str, int] = {}
    for r in runs:
        for k, v in r.outcomes.items():
            outcomes[k] = outcomes.get(k, 0) + v
    bad = sum(r.bad for r in runs)
    groups = sum(r.groups for r in runs)
    return (
        f"  {label:<30} {statistics.median(r.rps for r in runs):>8.0f} "
        f"{statistics.median(r.p50_ms for r in runs):>8.1f} "
        f"{statistics.median(r.p99_ms for r in runs):>8.1f}   "
        + " ".join(f"{r.rps:.0f}" for r in runs)
        + ("   " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) if outcomes else "")
        + (f"; {sum(outcomes.values()) / groups:.1f} leads per transaction" if groups else "")
        + (f"   ({bad} FAILED)" if bad else "")
    )


def print_backend(b: Backend, opts: argparse.Namespace) -> None:
    """The figures of one database."""
    print(f"\n{b.name}")
    print(f"  {'endpoint':<30} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}   runs req/s   outcomes")
    if b.name == "PostgreSQL" and opts.pg_workers > 1:
        print(f"  {opts.pg_workers} processes a server")
    print(_row("bare: FastAPI + 1 INSERT", b.bare))
    print(_row("cauce POST /v1/leads", b.cauce))
    for name, runs in (("bare", b.bare), ("cauce", b.cauce)):
        split = {k: statistics.median(r.cpu.get(k, 0.0) for r in runs) for k in runs[0].cpu}
        print(
            f"  CPU during {name}, % of one core: "
            + ", ".join(f"{k} {v:.0f}" for k, v in split.items() if v >= 0.5)
        )
    if b.dup:
        print(_row("cauce, ~10 % duplicates", [b.dup]))
    print(f"  single / bare: {b.single_ratio:.2f}x (target >= {SINGLE_TARGET:.2f}x)", end="")
    print(f"; with ~10 % duplicates: {b.dup.rps / b.bare_rps:.2f}x" if b.dup else "")
    if b.batch:
        lat = sorted(b.batch.latencies)
        print(
            f"  batch: {opts.batches} x {opts.batch_size} leads, {opts.batch_conns} connections: "
            f"{b.batch.leads_per_s:.0f} leads/s ({b.batch.leads} leads in {b.batch.seconds:.1f} s, "
            f"per call median {statistics.median(lat):.1f} s, max {lat[-1]:.1f} s"
            + (f", {b.batch.failed_calls} calls FAILED" if b.batch.failed_calls else "")
            + ")"
        )
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(b.batch.outcomes.items()))
        print(f"  batch outcomes: {outcomes}")
        print(f"  batch / single leads/s: {b.batch_ratio:.1f}x (target >= {BATCH_TARGET:.0f}x)")
        floor = validation_floor(opts.batch_size)
        print(
            f"  the target needs {BATCH_TARGET * b.single_rps:.0f} leads/s in batches; validating "
            f"{opts.batch_size} leads alone (in-process, no HTTP, dedupe or database) runs at "
            f"{floor:.0f} leads/s ({1e6 / floor:.0f} us a lead)"
        )


def wanted_backends(text: str) -> tuple[list[str], str | None]:
    """`--backends` (comma-separated), without PostgreSQL when CAUCE_TEST_POSTGRES_URL is
    not set; and that URL."""
    backends = [b.strip() for b in text.split(",") if b.strip()]
    admin_url = os.environ.get("CAUCE_TEST_POSTGRES_URL")
    if "postgresql" in backends and not admin_url:
        print("CAUCE_TEST_POSTGRES_URL is not set: PostgreSQL skipped")
        backends.remove("postgresql")
    return backends, admin_url


def main() -> None:
    """Run every measurement and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="per measured wrk run")
    parser.add_argument("--warmup", type=int, default=2, help="wrk warm-up per server, s")
    parser.add_argument("--rounds", type=int, default=2, help="alternating cauce/bare rounds")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, choices=(1, 2, 3, 4))
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-conns", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--pg-workers",
        type=int,
        default=1,
        help="PostgreSQL: processes of both servers (`cauce serve --workers N`)",
    )
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--profile-requests", type=int, default=240)
    parser.add_argument("--profile-batch", type=int, default=200, help="leads in the batch")
    add_setting_options(parser)
    opts = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    backends, admin_url = wanted_backends(opts.backends)
    print(
        f"wrk -t{opts.threads} -c{opts.connections} -d{opts.seconds}s after a {opts.warmup} s "
        f"warm-up, {opts.rounds} alternating rounds; {os.cpu_count()} cores shared by the "
        "server, wrk and the database"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per batch call
    started = time.monotonic()
    results: list[Backend] = []
    profiled = False
    for name in backends:
        with tempfile.TemporaryDirectory(prefix=f"leads-ingest-{name}-") as tmp_name:
            tmp = Path(tmp_name)
            if name == "sqlite":
                bare_url = f"sqlite+aiosqlite:///{tmp / 'bare' / 'bare.db'}"
                (tmp / "bare").mkdir()
                result, env, key = measure("SQLite", tmp, None, bare_url, opts)
                print_backend(result, opts)
                profiled = profile(result, env, key, tmp, opts, profiled) or profiled
            else:
                assert admin_url is not None
                with (
                    pg_database(admin_url, "leads") as cauce_url,
                    pg_database(admin_url, "bare") as bare_url,
                ):
                    result, env, key = measure("PostgreSQL", tmp, cauce_url, bare_url, opts)
                    print_backend(result, opts)
                    profiled = profile(result, env, key, tmp, opts, profiled) or profiled
            results.append(result)
    print(f"\nsummary ({time.monotonic() - started:.0f} s)")
    for b in results:
        print(
            f"  {b.name:<11} single {b.single_rps:.0f} req/s = {b.single_ratio:.2f}x bare "
            f"{b.bare_rps:.0f} (p99 {statistics.median(r.p99_ms for r in b.cauce):.0f} ms vs "
            f"{statistics.median(r.p99_ms for r in b.bare):.0f} ms); batch "
            f"{b.batch.leads_per_s if b.batch else 0:.0f} leads/s = {b.batch_ratio:.1f}x single"
        )


if __name__ == "__main__":
    main()

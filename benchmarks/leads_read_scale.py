"""Reading the leads at scale: the search, one lead, the CSV export and intake, at the
sizes a company reaches after two years (100,000 to 1,000,000 stored leads).

`cauce serve` (one process, no embedded worker, HubSpot at a closed port) on SQLite and on
PostgreSQL, driven over HTTP one request at a time; the figures are each request's wall
time as the client sees it (p50 and p99 of `--repeat` requests after two warm-ups), the
export's rows, MiB and time, and the server's peak RSS during it (VmHWM, reset before
each export through /proc/<pid>/clear_refs): an export that loaded every lead would
grow with the table.

The leads: `--base` synthetic Spanish and Latin American leads (`cauce.leads.synthetic`,
Faker's es_ES and es_MX, with statuses, owners and consents drawn as a sales team's) go
in through `POST /v1/leads/batch`, a quarter of them arriving again from another source
(merges), plus one account that arrived 150 times with 60 namesakes held for review
against it (`GET /v1/leads/{id}` of a lead with many arrivals, history lines and
duplicates). The base is then copied, with the server stopped, up to each size: every
copy of a lead gets a new id and uid, its email, phone and other contacts changed (the
copy number added to the mailbox, the number's last digits moved), and its search text
and blocking keys computed again by the app's own functions (`models.search_text`,
`matching.plan.stored_keys`), its arrivals and history lines copied with it, a held copy
held against the copy of its lead. Last, `created_at` is spread over two years in id
order (newest now) and the planner's statistics refreshed (SQLite `ANALYZE`, as the
hourly `core.db_analyze` job does; PostgreSQL `VACUUM FULL` + `ANALYZE` after that
update). This takes ~10x less than sending every lead through the API (~1,200 leads/s).

`--compare-revision REV` measures each size twice in the same run: with the schema
brought down to REV (alembic downgrade) and back at head, printing both.
`--keep DIR` keeps the seeded databases in DIR and reuses them on the next run (the same
`--base`; a size already reached is not seeded again). `--explain` prints, for the
searches slower than `--slow-ms`, the plan of the SQL the app issues (captured from
`repository_lead.search` run in-process: EXPLAIN QUERY PLAN, or EXPLAIN ANALYZE).
`--searches created,month` measures only the searches and exports whose names hold one of
those words (no lead views, no intake): old and new code back to back, with
`PYTHONPATH=<a tree>/src` choosing the server's code.

    source /tmp/svc.env   # optional: also PostgreSQL (CAUCE_TEST_POSTGRES_URL)
    .venv/bin/python benchmarks/leads_read_scale.py [--sizes 100000,500000] [--base 25000]
    .venv/bin/python benchmarks/leads_read_scale.py --sizes 100000,500000 --keep /tmp/rs \\
        --compare-revision 0024 --explain
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
from sqlalchemy import Table, create_engine, event, func, insert, select, text
from sqlalchemy.engine import Engine, make_url

from leads_ingest import CAUCE, cauce_env, environment, free_port, run_cli, served

STATUSES = (("new", 30), ("working", 20), ("qualified", 10), ("won", 8), ("lost", 25), ("junk", 7))
OWNERS = (
    "Marta Ruiz", "Jorge Martín", "Lucía Fernández", "Iñaki Etxeberria", "Valentina Rojas",
    "Diego Hernández", "Camila Torres", "Sofía Castro", "Andrés Gómez", "Paula Navarro",
    "Mateo Silva", "Carmen López",
)  # fmt: skip
HOT = {
    "first_name": "José Antonio",
    "last_name": "García Fernández",
    "company": "Bodegas García Fernández S.L.",
    "city": "Valladolid",
    "region": "Castilla y León",
    "country": "ES",
    "job_title": "Director Comercial",
}
HOT_EMAIL = "ja.garcia@bodegasgarciafernandez.es"
HOT_ARRIVALS, HOT_NAMESAKES = 150, 60
SPAN = timedelta(days=730)
BATCH = 1000
ROWS_AT_ONCE = 4000


# --------------------------------------------------------------------------------------
# The leads
# --------------------------------------------------------------------------------------


_SENT = (
    "email", "phone", "first_name", "last_name", "company", "job_title", "country", "region",
    "city", "language", "source", "utm",
)  # fmt: skip


def _payload(fields: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A synthetic lead's fields as `POST /v1/leads` takes them, with a sales team's
    status and owner and, for one in ten, no consent."""
    consent = fields["consent"]
    body = {name: fields[name] for name in _SENT if fields[name] is not None and fields[name] != {}}
    body["status"] = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
    if rng.random() < 0.85:
        body["owner"] = rng.choice(OWNERS)
    if rng.random() < 0.9:
        body["consent"] = {
            "marketing": consent["marketing"],
            "given_at": consent["at"],
            "wording_version": consent["wording_version"],
            "source": consent["where"],
        }
    return body


def _base_items(n: int) -> list[dict[str, Any]]:
    """`n` leads, then a quarter of them again from another source."""
    from cauce.leads.synthetic import LeadFactory

    factory, rng = LeadFactory(20260), random.Random(20261)
    items = [_payload(factory.lead().fields, rng) for _ in range(n)]
    again = [dict(item, source="event") for item in rng.sample(items, n // 4)]
    # Namesakes (same name and place, another mailbox, no company): held for review.
    held = [
        {name: item[name] for name in _NAMESAKE if name in item}
        | {"email": f"contacto.{i}@gmail.com", "source": "web_form"}
        for i, item in enumerate(rng.sample(items, n // 30))
    ]
    return items + again + held


_NAMESAKE = ("first_name", "last_name", "city", "region", "country", "status", "owner")


def _post(client: httpx.Client, path: str, body: Any, key: str) -> Any:
    r = client.post(
        path,
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


def seed_base(base: str, key: str, n: int) -> dict[str, int]:
    """The base leads through the API; outcomes counted."""
    outcomes: dict[str, int] = {}
    items = _base_items(n)
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=300) as client:
        for at in range(0, len(items), BATCH):
            answer = _post(client, "/v1/leads/batch", {"items": items[at : at + BATCH]}, key)
            for item in answer["items"]:
                outcomes[item.get("outcome", "?")] = outcomes.get(item.get("outcome", "?"), 0) + 1
        hot = dict(HOT, email=HOT_EMAIL, phone="+34 983 12 34 56")
        sources = ("web_form", "event", "api", "csv", "referral")
        for i in range(HOT_ARRIVALS):
            sent = dict(hot, source=sources[i % len(sources)], custom_fields={"visita": i})
            outcome = _post(client, "/v1/leads", sent, key).get("outcome", "?")
            outcomes["hot:" + outcome] = outcomes.get("hot:" + outcome, 0) + 1
        for i in range(HOT_NAMESAKES):
            namesake = {name: HOT[name] for name in _NAMESAKE if name in HOT} | {
                "email": f"josea.garcia{i}@gmail.com",
                "phone": f"+34 699 {i:06d}",
            }
            outcome = _post(client, "/v1/leads", namesake, key).get("outcome", "?")
            outcomes["namesake:" + outcome] = outcomes.get("namesake:" + outcome, 0) + 1
    rate = len(items) / (time.perf_counter() - started)
    print(f"    base: {len(items):,} items ({rate:,.0f} a second): {outcomes}", flush=True)
    return outcomes


# --------------------------------------------------------------------------------------
# Copies
# --------------------------------------------------------------------------------------


def _tables() -> tuple[Table, Table, Table, Table]:
    from cauce.leads.models import Lead, LeadEvent, LeadMatchKey, LeadSource

    return cast(
        tuple[Table, Table, Table, Table],
        tuple(m.__table__ for m in (Lead, LeadSource, LeadEvent, LeadMatchKey)),
    )


def _email(value: str | None, k: int) -> str | None:
    if not value or "@" not in value:
        return value
    local, _, domain = value.rpartition("@")
    return f"{local}c{k}@{domain}"


def _phone(value: str | None, k: int) -> str | None:
    if not value or len(value) < 8 or not value[-7:].isdigit():
        return value
    return value[:-7] + f"{(int(value[-7:]) + k * 7919) % 10**7:07d}"


def _spaced(value: str | None, k: int, one: Any) -> str | None:
    return " ".join(one(v, k) for v in value.split()) if value else value


def _copy_lead(
    row: dict[str, Any], k: int, top: int, place: dict[int, int]
) -> tuple[dict[str, Any], list[str]]:
    """Copy `k` of a base lead, its id `top` + its place among the base leads."""
    from cauce.leads.matching.plan import MATCH_COLUMNS, record_of, stored_keys
    from cauce.leads.matching.record import prepare
    from cauce.leads.models import SEARCHED, search_text

    new = dict(row)
    new.update(
        id=top + place[row["id"]],
        uid=str(uuid.uuid4()),
        email=_email(row["email"], k),
        email_key=_email(row["email_key"], k),
        phone=_phone(row["phone"], k),
        other_emails=_spaced(row["other_emails"], k, _email),
        other_phones=_spaced(row["other_phones"], k, _phone),
        possible_duplicate_of=(
            top + place[row["possible_duplicate_of"]] if row["possible_duplicate_of"] else None
        ),
    )
    new["search_text"] = search_text(" ".join(v for name in SEARCHED if (v := new[name])))
    keys = stored_keys(prepare(record_of({name: new[name] for name in MATCH_COLUMNS})))
    return new, sorted(keys)


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for at in range(0, len(rows), ROWS_AT_ONCE):
        yield rows[at : at + ROWS_AT_ONCE]


def grow(engine: Engine, base_max: int, size: int) -> None:
    """Copy the base leads (ids 1..base_max) until `size` leads are stored."""
    leads, sources, events, keys = _tables()
    with engine.connect() as conn:
        stored = int(conn.scalar(select(func.count()).select_from(leads)) or 0)
        top = int(conn.scalar(select(func.max(leads.c.id))) or 0)
        base = [
            dict(r._mapping)
            for r in conn.execute(select(leads).where(leads.c.id <= base_max).order_by(leads.c.id))
        ]
        arrivals = [
            dict(r._mapping)
            for r in conn.execute(
                select(sources).where(sources.c.lead_id <= base_max).order_by(sources.c.id)
            )
        ]
        history = [
            dict(r._mapping)
            for r in conn.execute(
                select(events).where(events.c.lead_id <= base_max).order_by(events.c.id)
            )
        ]
    by_lead: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for arrival in arrivals:
        by_lead.setdefault(arrival["lead_id"], ([], []))[0].append(arrival)
    for line in history:
        by_lead.setdefault(line["lead_id"], ([], []))[1].append(line)
    place = {row["id"]: i + 1 for i, row in enumerate(base)}
    k, started, copied = max(1, top // base_max), time.perf_counter(), 0
    while stored < size:
        rows = base[: size - stored]
        new_leads, new_keys, new_sources, new_events = [], [], [], []
        for row in rows:
            lead, lead_keys = _copy_lead(row, k, top, place)
            new_leads.append(lead)
            new_keys += [{"lead_id": lead["id"], "key": key} for key in lead_keys]
            its_sources, its_events = by_lead.get(row["id"], ([], []))
            for arrival in its_sources:
                new_sources.append(
                    {name: value for name, value in arrival.items() if name != "id"}
                    | {
                        "lead_id": lead["id"],
                        "email": _email(arrival["email"], k),
                        "phone": _phone(arrival["phone"], k),
                    }
                )
            for line in its_events:
                new_events.append(
                    {name: value for name, value in line.items() if name != "id"}
                    | {"lead_id": lead["id"]}
                )
        with engine.begin() as conn:
            for table, table_rows in (
                (leads, new_leads),
                (keys, new_keys),
                (sources, new_sources),
                (events, new_events),
            ):
                for chunk in _chunks(table_rows):
                    conn.execute(insert(table), chunk)
        stored += len(rows)
        copied += len(rows)
        top += len(base)
        k += 1
        print(
            f"    copied to {stored:,} leads ({copied / (time.perf_counter() - started):,.0f} "
            "a second)",
            flush=True,
        )


def retime(engine: Engine) -> None:
    """`created_at` (and `updated_at`) over two years in id order, newest now; then the
    planner's statistics."""
    end = datetime.now(UTC).replace(microsecond=0)
    started = time.perf_counter()
    with engine.begin() as conn:
        top = int(conn.scalar(text("SELECT max(id) FROM leads")) or 1)
        step = SPAN.total_seconds() / top
        if engine.dialect.name == "sqlite":
            spread = (
                "strftime('%Y-%m-%d %H:%M:%S', :end, '-' || CAST((:top - id) * :step AS INTEGER)"
                " || ' seconds') || '.000000'"
            )
            conn.execute(
                text(f"UPDATE leads SET created_at = {spread}, updated_at = {spread}"),
                {"end": end.replace(tzinfo=None).isoformat(" "), "top": top, "step": step},
            )
        else:
            spread = "CAST(:end AS timestamptz) - (:top - id) * :step * interval '1 second'"
            conn.execute(
                text(f"UPDATE leads SET created_at = {spread}, updated_at = {spread}"),
                {"end": end, "top": top, "step": step},
            )
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    else:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM FULL leads"))
            conn.execute(text("VACUUM ANALYZE"))
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('leads', 'id'), max(id)) FROM leads")
            )
    print(f"    created_at spread, statistics: {time.perf_counter() - started:.1f} s", flush=True)


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured request kind."""

    name: str
    p50: float  # ms
    p99: float
    rows: int = 0
    extra: str = ""


@dataclass
class Sample:
    """What the queries are about, read from the stored leads."""

    hot: str  # uid of the lead with many arrivals and held namesakes
    plain: str
    held: str
    email_part: str  # a rare email fragment (one lead's mailbox)
    company_word: str
    phone_part: str
    newest: datetime
    top: int
    queries: list[tuple[str, dict[str, str]]] = field(default_factory=list)


def sample(engine: Engine) -> Sample:
    """Uids and values for the queries, from leads at known places of the table."""
    with engine.connect() as conn:
        top = int(conn.scalar(text("SELECT max(id) FROM leads")) or 0)
        newest = conn.scalar(text("SELECT max(created_at) FROM leads"))
        hot = conn.scalar(text("SELECT uid FROM leads WHERE email = :e"), {"e": HOT_EMAIL})
        mid = conn.execute(
            text(
                "SELECT uid, email, phone, company FROM leads WHERE id >= :id AND email IS NOT "
                "NULL AND phone IS NOT NULL AND company IS NOT NULL ORDER BY id LIMIT 1"
            ),
            {"id": top // 3},
        ).one()
        held = conn.scalar(
            text("SELECT uid FROM leads WHERE sync_status = 'held' ORDER BY id DESC LIMIT 1")
        )
    if isinstance(newest, str):
        newest = datetime.fromisoformat(newest)
    newest = newest.replace(tzinfo=UTC) if newest.tzinfo is None else newest
    company_word = max(mid.company.split(), key=len)
    return Sample(
        hot=hot,
        plain=mid.uid,
        held=held or mid.uid,
        email_part=mid.email.partition("@")[0],
        company_word=company_word,
        phone_part=f"{mid.phone[-9:-6]} {mid.phone[-6:-3]}",
        newest=newest,
        top=top,
    )


def _day(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S")


def _old_month(s: Sample) -> dict[str, str]:
    """A month 13 months before the newest lead."""
    old_from = s.newest - timedelta(days=400)
    return {"created_after": _day(old_from), "created_before": _day(old_from + timedelta(days=30))}


def searches(s: Sample) -> list[tuple[str, dict[str, str]]]:
    """The searches measured: (name, query parameters). A `cursor` of `MIDDLE` is one at
    the middle id; `PAGE2`, the first page's `next_cursor`; `LAST`, the cursor of the
    search's last page (followed page by page)."""
    recent = {"created_after": _day(s.newest - timedelta(days=30))}
    old = _old_month(s)
    quarter = {"created_after": _day(s.newest - timedelta(days=90))}
    year = {
        "created_after": _day(s.newest - timedelta(days=365)),
        "created_before": _day(s.newest + timedelta(days=1)),
    }
    es_won = {"country": "ES", "status": "won"}
    return [
        ("all, first page", {}),
        ("all, page at the middle", {"cursor": "MIDDLE"}),
        ("all, order=oldest", {"order": "oldest"}),
        ("status=new", {"status": "new"}),
        ("status=won", {"status": "won"}),
        ("source=crm", {"source": "crm"}),
        ("owner=Iñaki Etxeberria", {"owner": "Iñaki Etxeberria"}),
        ("country=ES", {"country": "ES"}),
        ("country=PE", {"country": "PE"}),
        ("created last 30 days", recent),
        ("created last 30 days, order=oldest", recent | {"order": "oldest"}),
        ("created a year up to now", year),
        ("created a month, 13 months ago", old),
        ("created a month, 13 months ago, order=oldest", old | {"order": "oldest"}),
        ("created a month, 13 months ago, page 2", old | {"cursor": "PAGE2"}),
        ("created before 13 months ago", {"created_before": old["created_after"]}),
        ("min_score=80", {"min_score": "80"}),
        ("score 40-60", {"min_score": "40", "max_score": "60"}),
        ("held=true", {"held": "true"}),
        ("held=true&order=oldest", {"held": "true", "order": "oldest"}),
        ("consent_marketing=false", {"consent_marketing": "false"}),
        ("consent_marketing=none", {"consent_marketing": "none"}),
        ("country=MX+status=qualified+90 days", {"country": "MX", "status": "qualified"} | quarter),
        ("country=ES+status=won+month 13 ago", es_won | old),
        ("country=ES+status=won+month 13 ago, page 2", es_won | old | {"cursor": "PAGE2"}),
        ("country=ES+status=won+month 13 ago, last page", es_won | old | {"cursor": "LAST"}),
        ("owner=Iñaki Etxeberria+month 13 ago", {"owner": "Iñaki Etxeberria"} | old),
        ("owner+status=working", {"owner": "Marta Ruiz", "status": "working"}),
        ("q=García", {"q": "García"}),
        ("q=garcía fernández", {"q": "garcía fernández"}),
        ("q=<one lead's mailbox>", {"q": s.email_part}),
        ("q=<company word>", {"q": s.company_word}),
        ("q=<phone 3+3 digits>", {"q": s.phone_part}),
        ("q=zzqxj (no match)", {"q": "zzqxj"}),
        ("q=García+country=PE+status=won", {"q": "García", "country": "PE", "status": "won"}),
    ]


def _middle_cursor(top: int, region: str) -> str:
    from cauce.leads.endpoints_search import _cursor_for
    from cauce.leads.repository_lead import LeadQuery

    return _cursor_for(top // 2, LeadQuery(phone_region=region.upper()))


def _cursor_of(
    client: httpx.Client, params: dict[str, str], s: Sample, region: str
) -> dict[str, str]:
    """`params` with its `cursor` marker (`searches`) made a cursor."""
    marker = params.get("cursor")
    if marker == "MIDDLE":
        return params | {"cursor": _middle_cursor(s.top, region)}
    if marker not in ("PAGE2", "LAST"):
        return params
    first = {k: v for k, v in params.items() if k != "cursor"}
    cursor = client.get("/v1/leads", params=first).json()["next_cursor"]
    while marker == "LAST":
        after = client.get("/v1/leads", params=first | {"cursor": cursor}).json()["next_cursor"]
        if after is None:
            break
        cursor = after
    return first | {"cursor": cursor}


def _timed(client: httpx.Client, path: str, params: dict[str, str], repeat: int) -> list[float]:
    times = []
    for i in range(repeat + 2):
        started = time.perf_counter()
        r = client.get(path, params=params)
        took = (time.perf_counter() - started) * 1000
        assert r.status_code == 200, (path, params, r.status_code, r.text[:300])
        if i >= 2:
            times.append(took)
    return times


def _figure(name: str, times: list[float], rows: int = 0, extra: str = "") -> Figure:
    times = sorted(times)
    p99 = times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)]
    return Figure(name, statistics.median(times), p99, rows, extra)


def _rss(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _server_pid(port: int) -> int:
    """The pid listening on `port` (the `cauce serve` process)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmd and str(port).encode() in cmd:
            return int(proc.name)
    raise RuntimeError("no server process")


def measure(
    base: str, key: str, s: Sample, opts: argparse.Namespace, port: int, exports: bool = True
) -> list[Figure]:
    """Every request kind, one at a time (the exports only with `exports`)."""
    figures: list[Figure] = []
    pid = _server_pid(port)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
        for name, params in searches(s):
            if opts.searches and not any(part in name for part in opts.searches):
                continue
            params = _cursor_of(client, params, s, opts.region)
            times = _timed(client, "/v1/leads", params, opts.repeat)
            rows = len(client.get("/v1/leads", params=params).json()["items"])
            figures.append(_figure("GET /v1/leads " + name, times, rows))
            print(f"      {figures[-1].name:<55} {figures[-1].p50:8.1f} ms", flush=True)
        views = (
            [] if opts.searches else [("hot (150 arrivals, 60 held)", s.hot), ("plain", s.plain)]
        )
        for name, uid in views:
            times = _timed(client, f"/v1/leads/{uid}", {}, opts.repeat)
            figures.append(_figure(f"GET /v1/leads/{{id}} {name}", times))
            print(f"      {figures[-1].name:<55} {figures[-1].p50:8.1f} ms", flush=True)
        for name, params in (
            ("whole", {}),
            ("country=PE&status=won", {"country": "PE", "status": "won"}),
            ("held=true&order=oldest", {"held": "true", "order": "oldest"}),
            ("created a month, 13 months ago", _old_month(s)),
        ):
            if opts.searches and not any(part in name for part in opts.searches):
                continue
            if not exports:
                figures.append(Figure(f"GET /v1/leads/export.csv {name}", 0, 0, 0, "-"))
                continue
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            before = _rss(pid, "VmRSS")
            started, size, lines = time.perf_counter(), 0, 0
            with client.stream("GET", "/v1/leads/export.csv", params=params) as r:
                assert r.status_code == 200, r.status_code
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\r\n")
            took = (time.perf_counter() - started) * 1000
            peak = _rss(pid, "VmHWM")
            figures.append(
                Figure(
                    f"GET /v1/leads/export.csv {name}",
                    took,
                    took,
                    lines - 1,
                    f"{size / 2**20:.0f} MiB, RSS {before:.0f} -> peak {peak:.0f} MiB",
                )
            )
            print(f"      {figures[-1].name:<55} {took:8.0f} ms {figures[-1].extra}", flush=True)
        if opts.searches:
            return figures
        from cauce.leads.synthetic import LeadFactory

        factory, rng = LeadFactory(int(time.time())), random.Random()
        intake: list[float] = []
        sent = 0
        while len(intake) < opts.intake:
            lead = factory.lead().fields
            while lead["country"] == "US":  # its synthetic numbers are not valid there
                lead = factory.lead().fields
            body = orjson.dumps(_payload(lead, rng))
            started = time.perf_counter()
            r = client.post("/v1/leads", content=body, headers={"Content-Type": "application/json"})
            took = (time.perf_counter() - started) * 1000
            if r.status_code == 422:  # a synthetic number the region refuses: not counted
                continue
            assert r.status_code in (200, 201), r.text
            sent += 1
            if sent > 5:  # after five warm-ups
                intake.append(took)
        figures.append(_figure("POST /v1/leads (one new lead)", intake))
        print(f"      {figures[-1].name:<55} {figures[-1].p50:8.1f} ms", flush=True)
    return figures


# --------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------


async def _explain(url: str, s: Sample, region: str, names: set[str]) -> None:
    """The plan of each named search's SQL, as `repository_lead.search` issues it."""
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from cauce.leads.endpoints_search import LeadSearch, query_for
    from cauce.leads.repository_lead import search

    engine = create_async_engine(url)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        captured.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    pg = engine.dialect.name == "postgresql"
    for name, params in searches(s):
        if "GET /v1/leads " + name not in names:
            continue
        filters = LeadSearch.model_validate({k: v for k, v in params.items() if k != "cursor"})
        query = query_for(filters, region)
        before = None
        async with AsyncSession(engine) as session:
            if params.get("cursor") == "MIDDLE":
                before = s.top // 2
            elif params.get("cursor") in ("PAGE2", "LAST"):  # as the endpoint's pages go
                while len(page := await search(session, query, before_id=before, limit=51)) > 50:
                    before = page[49].id
                    if params["cursor"] == "PAGE2":
                        break
        captured.clear()
        async with AsyncSession(engine) as session:
            await search(session, query, before_id=before, limit=51)
            statement, bound = captured[-1]
            prefix = "EXPLAIN (ANALYZE, BUFFERS) " if pg else "EXPLAIN QUERY PLAN "
            conn = await session.connection()
            plan = (await conn.exec_driver_sql(prefix + statement, bound)).all()
        where = statement[statement.find("WHERE") :].replace("\n", " ")
        print(f"\n    -- {name}: ...{where[:400]}")
        for row in plan:
            print("      " + str(row[0] if pg else row[-1]))
    await engine.dispose()


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def _sync_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    return url


def _schema_at(env: dict[str, str], revision: str, compared: str) -> None:
    """The schema of `revision` (the `compared` one), recorded as head (SQLite's `cauce
    serve` would migrate it up at start-up); `head`: back from `compared` to the head."""
    from alembic import command

    from cauce.core.db.migrate import alembic_config

    engine = create_engine(_sync_url(env["CAUCE_DATABASE_URL"]))
    with engine.begin() as conn:
        if revision == "head":
            command.stamp(alembic_config(conn), compared, purge=True)
            command.upgrade(alembic_config(conn), "head")
        else:
            command.downgrade(alembic_config(conn), revision)
            command.stamp(alembic_config(conn), "head", purge=True)
    engine.dispose()


WARMED = b'"leads.candidates_warmed"'


def _serve(env: dict[str, str], tmp: Path, work: Any) -> Any:
    """`work(base, port)` against a `cauce serve` of this database, once its candidate
    cache has warmed (it reads every lead in the background after start-up: requests
    measured meanwhile share the process with it)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "serve.log"
    warmed = log.read_bytes().count(WARMED) if log.exists() else 0
    with served([*CAUCE, "serve", "--port", str(port)], env, tmp, log, base):
        deadline = time.monotonic() + 900
        while log.read_bytes().count(WARMED) == warmed and time.monotonic() < deadline:
            time.sleep(0.5)
        lines = [x for x in log.read_bytes().splitlines() if WARMED in x]
        if lines:
            print(f"    candidate cache warmed in {orjson.loads(lines[-1])['seconds']} s")
        return work(base, port)


@contextmanager
def _database(label: str, opts: argparse.Namespace) -> Iterator[tuple[dict[str, str], Path]]:
    """The database's environment and a directory of its own (kept with `--keep`)."""
    keep = Path(opts.keep) / label if opts.keep else None
    with tempfile.TemporaryDirectory(prefix="leads-read-") as tmp_name:
        tmp = keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        if label == "SQLite":
            url = f"sqlite+aiosqlite:///{tmp / 'cauce.db'}"
            yield cauce_env(tmp / "data", url), tmp
            return
        admin = make_url(os.environ["CAUCE_TEST_POSTGRES_URL"])
        name = f"cauce_read_scale_{opts.base}"
        import psycopg

        libpq = admin.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(libpq, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"'.encode())
        pg_url = admin.set(drivername="postgresql+psycopg", database=name)
        try:
            yield cauce_env(tmp / "data", pg_url.render_as_string(hide_password=False)), tmp
        finally:
            if not keep:
                with psycopg.connect(libpq, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def run(label: str, opts: argparse.Namespace) -> dict[tuple[int, str], list[Figure]]:
    """Seed and measure one database at each size."""
    results: dict[tuple[int, str], list[Figure]] = {}
    with _database(label, opts) as (env, tmp):
        env["CAUCE_LEADS__DEFAULT_REGION"] = opts.region
        run_cli(["db", "upgrade"], env, tmp)
        key_file = tmp / "key"
        if not key_file.exists():
            scopes = "leads:write,leads:read"
            key_file.write_text(
                run_cli(["apikey", "create", "--name", "b", "--scopes", scopes], env, tmp)
            )
        key = key_file.read_text().strip()
        engine = create_engine(_sync_url(env["CAUCE_DATABASE_URL"]))
        leads = _tables()[0]
        with engine.connect() as conn:
            stored = int(conn.scalar(select(func.count()).select_from(leads)) or 0)
        if stored == 0:
            print(f"  {label}: {opts.base:,} base leads through POST /v1/leads/batch", flush=True)
            _serve(env, tmp, lambda base, _port: seed_base(base, key, opts.base))
        marker = tmp / "base_max"  # the base's last id, before any copy
        if not marker.exists():
            with engine.connect() as conn:
                marker.write_text(str(int(conn.scalar(text("SELECT max(id) FROM leads")) or 0)))
        base_max = int(marker.read_text())
        for size in opts.sizes:
            with engine.connect() as conn:
                stored = int(conn.scalar(select(func.count()).select_from(leads)) or 0)
            if stored < size:
                print(f"  {label}: copying up to {size:,} leads", flush=True)
                grow(engine, base_max, size)
                retime(engine)
            s = sample(engine)
            revisions = [opts.compare_revision, "head"] if opts.compare_revision else ["head"]
            for revision in revisions:
                if revision != "head":
                    _schema_at(env, revision, revision)
                    if engine.dialect.name == "sqlite":
                        with engine.begin() as conn:
                            conn.execute(text("ANALYZE"))
                else:
                    run_cli(["db", "upgrade"], env, tmp)
                    if engine.dialect.name == "sqlite":
                        with engine.begin() as conn:
                            conn.execute(text("ANALYZE"))
                    else:
                        with engine.connect().execution_options(
                            isolation_level="AUTOCOMMIT"
                        ) as conn:
                            conn.execute(text("ANALYZE leads"))
                print(
                    f"  {label} at {stored if stored > size else size:,} leads, schema {revision}:"
                )
                # The exports do not read what a compared revision changes: measured once.
                exports = revision == "head"

                def work(base: str, port: int, s: Sample = s, exports: bool = exports) -> Any:
                    return measure(base, key, s, opts, port, exports)

                try:
                    figures = _serve(env, tmp, work)
                    results[(size, revision)] = figures
                    if opts.explain:
                        slow = {f.name for f in figures if f.p50 >= opts.slow_ms}
                        with environment(env):
                            asyncio.run(_explain(env["CAUCE_DATABASE_URL"], s, opts.region, slow))
                finally:
                    if revision != "head":  # back at head even when stopped midway (`--keep`)
                        _schema_at(env, "head", revision)
        engine.dispose()
    return results


def print_table(label: str, results: dict[tuple[int, str], list[Figure]]) -> None:
    """Markdown: one row per request kind, p50 / p99 per size and schema."""
    columns = list(results)
    head = " | ".join(f"{size // 1000}k {rev} p50 / p99 ms" for size, rev in columns)
    print(f"\n### {label}\n\n| request | {head} |")
    print("|---" * (len(columns) + 1) + "|")
    names = [f.name for f in results[columns[0]]]
    for i, name in enumerate(names):
        cells = []
        for column in columns:
            f = results[column][i]
            cell = f"{f.p50:.1f} / {f.p99:.1f}" if f.p50 != f.p99 else f"{f.p50:.0f}"
            if f.extra == "-":
                cell = "-"
            elif f.extra:
                cell += f" ({f.rows:,} rows, {f.extra})"
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    """Seed and measure each database at each size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,500000")
    parser.add_argument("--base", type=int, default=25000, help="leads sent through the API")
    parser.add_argument("--repeat", type=int, default=15, help="requests a search (after 2)")
    parser.add_argument("--intake", type=int, default=100, help="single leads sent a size")
    parser.add_argument("--region", default="ES", help="leads.default_region")
    parser.add_argument("--keep", help="keep the seeded databases here (and reuse them)")
    parser.add_argument("--compare-revision", help="also measure with the schema at this one")
    parser.add_argument("--explain", action="store_true", help="plans of the slow searches")
    parser.add_argument("--slow-ms", type=float, default=100.0)
    parser.add_argument("--only", choices=("SQLite", "PostgreSQL"), help="one database only")
    parser.add_argument(
        "--searches",
        help="only the searches and exports whose names hold one of these (comma-separated); "
        "no lead views or intake",
    )
    opts = parser.parse_args()
    opts.sizes = sorted(int(s) for s in opts.sizes.split(","))
    opts.searches = opts.searches.split(",") if opts.searches else []
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for label in ("SQLite", "PostgreSQL"):
        if opts.only not in (None, label):
            continue
        if label == "PostgreSQL" and not os.environ.get("CAUCE_TEST_POSTGRES_URL"):
            print("CAUCE_TEST_POSTGRES_URL is not set: PostgreSQL skipped")
            continue
        print_table(label, run(label, opts))


if __name__ == "__main__":
    main()

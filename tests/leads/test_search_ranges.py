"""The lead search with a creation or score range finds exactly the leads a plain filter
over them finds, in id order, page after page: whether the range is read through its
index's ids first (`repository_lead._deferred_range`, SQLite with a range bounded on both
sides), bounded by the lowest and highest id of the leads its creation range holds
(`repository_lead.bounds_pay`, both databases) or as the other conditions are, with the
other filters, erased leads, cursors and both orders, in the list (`search`), the
export's rows (`search_rows`) and over HTTP; with creation times out of id order (the
first lead created last of all, the last one in the first range, one in seven anywhere:
`SKEWED`, `_row`)."""

from __future__ import annotations

import csv
import dataclasses
import io
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, insert, select

from cauce.core.db import Database, create_database
from cauce.leads import repository_lead as repo_lead
from cauce.leads.models import Lead, search_text
from cauce.leads.repository_lead import LeadQuery
from tests.conftest import make_settings

T0 = datetime(2024, 1, 1, tzinfo=UTC)
N = 320
STATUSES = ("new", "working", "won", "lost")
COUNTRIES = ("ES", "MX", "PE", None)
NAMES = ("García", "López", "Martín", "Ruiz")


def _row(i: int, rng: random.Random) -> dict[str, Any]:
    """Lead number `i` (ids ascend with `i`); `created_at` mostly grows with the id, as
    it does in a real table, with some leads out of order (imports, clock skew)."""
    created = T0 + timedelta(days=i * 2, hours=rng.randrange(24))
    if rng.random() < 0.15:
        created = T0 + timedelta(days=rng.randrange(2 * N))
    name = rng.choice(NAMES)
    given = {"given_at": "2024-01-01T00:00:00Z", "wording_version": "v1"}
    consent = rng.choice([None, {"marketing": True} | given, {"marketing": False} | given])
    return {
        "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "email": f"p{i}@example.com",
        "last_name": name,
        "source": rng.choice(("api", "crm")),
        "status": rng.choice(STATUSES),
        "country": rng.choice(COUNTRIES),
        "owner": rng.choice(("Marta", "Jorge", None)),
        "score": rng.choice((0, 5, 40, 45, 50, 55, 60, 61, 80, 100, rng.randrange(101))),
        "sync_status": "held" if rng.random() < 0.1 else "pending",
        "consent": consent,
        "erased_at": created + timedelta(days=1) if rng.random() < 0.08 else None,
        "search_text": search_text(f"{name} p{i}@example.com"),
        "created_at": created,
        "updated_at": created,
    }


@pytest.fixture
async def stored(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Database, list[Lead]]]:
    """A database with `N` leads, and those leads as read back (by id)."""
    db = create_database(make_settings(tmp_path), url=database_url)
    rng = random.Random(20240601)
    async with db.sessionmaker() as session:
        # one at a time: ids ascend with `i`
        for i in range(N):
            row = _row(i, rng)
            if i in SKEWED:
                row["created_at"] = row["updated_at"] = SKEWED[i]
            await session.execute(insert(Lead).values(**row))
        await session.commit()
    async with db.sessionmaker() as session:
        leads = list((await session.scalars(select(Lead).order_by(Lead.id))).all())
    try:
        yield db, leads
    finally:
        await db.dispose()


def _matches(query: LeadQuery) -> Callable[[Lead], bool]:
    """The query as a plain filter over leads (the conditions the search applies)."""

    def match(lead: Lead) -> bool:
        consent = lead.consent.get("marketing") if isinstance(lead.consent, dict) else None
        checks = [
            query.include_erased or lead.erased_at is None,
            query.status is None or lead.status == query.status,
            query.source is None or lead.source == query.source,
            query.owner is None or lead.owner == query.owner,
            query.country is None or lead.country == query.country,
            query.held is None or (lead.sync_status == "held") == query.held,
            query.consent_marketing is None
            or {"true": consent is True, "false": consent is False, "none": consent is None}[
                query.consent_marketing
            ],
            query.created_after is None or lead.created_at >= query.created_after,
            query.created_before is None or lead.created_at < query.created_before,
            query.min_score is None or lead.score >= query.min_score,
            query.max_score is None or lead.score <= query.max_score,
            query.text is None or query.text.lower().replace("í", "i") in lead.search_text,
        ]
        return all(checks)

    return match


def _expected(leads: list[Lead], query: LeadQuery) -> list[int]:
    ids = [lead.id for lead in leads if _matches(query)(lead)]
    return ids if query.oldest_first else ids[::-1]


def _day(n: int) -> datetime:
    return T0 + timedelta(days=n)


# The first lead created last of all, the last one inside the first range of `RANGES` and
# one in the middle before every other: the ids of a range's leads then reach from one
# end of the table to the other.
SKEWED = {0: _day(2 * N + 5), N - 1: _day(101), N // 2: T0 - timedelta(days=3)}


RANGES: list[dict[str, Any]] = [
    {"created_after": _day(100), "created_before": _day(160)},
    {"created_after": _day(0), "created_before": _day(2 * N + 10)},  # all of them
    {"created_after": _day(400), "created_before": _day(400)},  # empty
    {"created_after": _day(500), "created_before": _day(502)},
    {"created_after": _day(300)},
    {"created_before": _day(90)},
    {"min_score": 40, "max_score": 60},
    {"min_score": 100, "max_score": 100},
    {"min_score": 0, "max_score": 100},
    {"min_score": 101, "max_score": 200},  # none
    {"min_score": 61},
    {"max_score": 5},
    {"created_after": _day(100), "created_before": _day(400), "min_score": 40, "max_score": 60},
    {"created_after": _day(200), "min_score": 40, "max_score": 60},
    {"created_before": _day(300), "min_score": 45, "max_score": 80},
    {"created_after": _day(50), "created_before": _day(450), "min_score": 50},
]
OTHERS: list[dict[str, Any]] = [
    {},
    {"include_erased": True},
    {"status": "won"},
    {"country": "ES", "status": "lost"},
    {"owner": "Marta"},
    {"source": "crm"},
    {"held": True},
    {"held": False},
    {"consent_marketing": "none"},
    {"consent_marketing": "true"},
    {"text": "garcia"},
]


def _queries() -> list[LeadQuery]:
    return [
        LeadQuery(**ranged, **other, oldest_first=oldest)
        for ranged in RANGES
        for other in OTHERS
        for oldest in (False, True)
    ]


async def test_a_range_pages_through_exactly_the_leads_it_holds(
    stored: tuple[Database, list[Lead]],
) -> None:
    db, leads = stored
    assert sum(lead.erased_at is not None for lead in leads) > 5
    for query in _queries():
        expected = _expected(leads, query)
        for limit in (7, 51):
            found: list[int] = []
            before: int | None = None
            while True:
                async with db.sessionmaker() as session:
                    page = await repo_lead.search(session, query, before_id=before, limit=limit)
                assert len(page) <= limit
                found.extend(lead.id for lead in page)
                if len(page) < limit:
                    break
                before = page[-1].id
            assert found == expected, (query, limit)


async def test_a_cursor_from_anywhere_continues_with_the_next_leads(
    stored: tuple[Database, list[Lead]],
) -> None:
    """A cursor at any id (not only one of the search's own leads: an erased one, one the
    range leaves out) gives the leads past it."""
    db, leads = stored
    ids = [lead.id for lead in leads]
    cursors = [ids[0] - 1, ids[0], ids[37], ids[len(ids) // 2], ids[-5], ids[-1], ids[-1] + 1]
    for query in _queries():
        expected = _expected(leads, query)
        for before in cursors:
            past = [i for i in expected if (i > before if query.oldest_first else i < before)]
            async with db.sessionmaker() as session:
                page = await repo_lead.search(session, query, before_id=before, limit=10)
            assert [lead.id for lead in page] == past[:10], (query, before)


async def test_the_exports_rows_are_the_lists_leads(
    stored: tuple[Database, list[Lead]],
) -> None:
    db, leads = stored
    by_id = {lead.id: lead for lead in leads}
    for query in _queries():
        expected = _expected(leads, query)
        found: list[int] = []
        before: int | None = None
        while True:
            async with db.sessionmaker() as session:
                rows = await repo_lead.search_rows(
                    session, query, ("id", "uid", "score"), before_id=before, limit=40
                )
            found.extend(row[0] for row in rows)
            for lead_id, uid, score in rows:
                assert (uid, score) == (by_id[lead_id].uid, by_id[lead_id].score)
            if len(rows) < 40:
                break
            before = rows[-1][0]
        assert found == expected, query


async def test_ranges_over_http_list_and_export(
    stored: tuple[Database, list[Lead]], api: httpx.AsyncClient
) -> None:
    """`GET /v1/leads` page after page by its cursors, and the CSV export, in both orders."""
    _, leads = stored
    uid_of = {lead.id: lead.uid for lead in leads}
    cases = [
        {"created_after": "2024-04-10T00:00:00Z", "created_before": "2024-06-09T00:00:00Z"},
        {"min_score": "40", "max_score": "60"},
        {"min_score": "40", "max_score": "60", "country": "ES"},
        {"created_after": "2024-02-01", "created_before": "2025-01-01", "q": "García"},
        {"min_score": "61"},
    ]
    for params in cases:
        for order in ("newest", "oldest"):
            query = LeadQuery(
                created_after=_instant(params.get("created_after")),
                created_before=_instant(params.get("created_before")),
                min_score=int(params["min_score"]) if "min_score" in params else None,
                max_score=int(params["max_score"]) if "max_score" in params else None,
                country=params.get("country"),
                text=params.get("q"),
                oldest_first=order == "oldest",
            )
            expected = [uid_of[i] for i in _expected(leads, query)]
            sent = params | {"order": order, "limit": "9"}
            found: list[str] = []
            while True:
                response = await api.get("/v1/leads", params=sent)
                assert response.status_code == 200, response.text
                body = response.json()
                found.extend(item["id"] for item in body["items"])
                if body["next_cursor"] is None:
                    break
                sent = sent | {"cursor": body["next_cursor"]}
            assert found == expected, (params, order)
            response = await api.get("/v1/leads/export.csv", params=params | {"order": order})
            assert response.status_code == 200, response.text
            rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
            assert [row[0] for row in rows[1:]] == expected, (params, order)


def _instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ranged_queries() -> list[LeadQuery]:
    """`_queries` with a creation range (the ones a bound can apply to)."""
    return [q for q in _queries() if q.created_after is not None or q.created_before is not None]


@pytest.mark.parametrize("bounded", [True, False])
async def test_bounded_or_not_a_page_holds_the_same_leads(
    stored: tuple[Database, list[Lead]], monkeypatch: pytest.MonkeyPatch, bounded: bool
) -> None:
    """Whatever `bounds_pay` decides, on every page: the ids of the creation range's leads
    bound the walk (`search_statement(bounded=True)`), never the leads found, even where
    ids and creation times disagree (`SKEWED`), for the range with no lead in it, past
    cursors anywhere and in the export's rows."""
    db, leads = stored

    async def decided(*_: Any, **__: Any) -> bool:
        return bounded

    monkeypatch.setattr(repo_lead, "_bounded", decided)
    ids = [lead.id for lead in leads]
    cursors = [ids[0] - 1, ids[0], ids[37], ids[len(ids) // 2], ids[-5], ids[-1], ids[-1] + 1]
    for query in _ranged_queries():
        expected = _expected(leads, query)
        found: list[int] = []
        before: int | None = None
        while True:
            async with db.sessionmaker() as session:
                page = await repo_lead.search(session, query, before_id=before, limit=7)
            found.extend(lead.id for lead in page)
            if len(page) < 7:
                break
            before = page[-1].id
        assert found == expected, (query, bounded)
        for cursor in cursors:
            past = [i for i in expected if (i > cursor if query.oldest_first else i < cursor)]
            async with db.sessionmaker() as session:
                page = await repo_lead.search(session, query, before_id=cursor, limit=10)
            assert [lead.id for lead in page] == past[:10], (query, cursor, bounded)
        async with db.sessionmaker() as session:
            rows = await repo_lead.search_rows(session, query, ("id",), before_id=None, limit=500)
        assert [row[0] for row in rows] == expected, (query, bounded)


async def test_creation_span_reads_where_the_range_lies(
    stored: tuple[Database, list[Lead]],
) -> None:
    """The table's lowest and highest id, and the ids of the range's oldest and newest lead
    by creation (the erased ones too; ties by id), as a plain look over the leads finds
    them: the estimates `bounds_pay` decides by."""
    db, leads = stored
    ids = [lead.id for lead in leads]
    for ranged in RANGES:
        created = {k: v for k, v in ranged.items() if k.startswith("created_")}
        if not created:
            continue
        query = LeadQuery(**created, include_erased=True)
        inside = sorted((lead.created_at, lead.id) for lead in leads if _matches(query)(lead))
        async with db.sessionmaker() as session:
            span = await repo_lead.creation_span(session, query)
        oldest, newest = (inside[0][1], inside[-1][1]) if inside else (None, None)
        assert span == repo_lead.CreationSpan(min(ids), max(ids), oldest, newest), ranged


def _span(oldest: int | None, newest: int | None) -> tuple[int | None, ...]:
    """A `CreationSpan` (as its values) of a range in a table of ids 1 to 500,000."""
    return (1, 500_000, oldest, newest)


_MONTH = _span(225_001, 245_000)  # a month 13 months ago, in two years' leads


@pytest.mark.parametrize(
    ("span", "oldest_first", "before_id", "bounded"),
    [
        # a month 13 months ago: 250,000 newer leads ahead of it, 225,000 older
        (_MONTH, False, None, True),
        (_MONTH, True, None, True),
        # its second page (the cursor inside it): the walk is in the range at once
        (_MONTH, False, 244_950, False),
        (_MONTH, True, 225_051, False),
        # its last pages: few of its ids left, then the whole table past it (a page with
        # other filters may well not be filled by a thousand)
        (_MONTH, False, 225_010, True),
        (_MONTH, True, 244_990, True),
        (_MONTH, False, 226_000, True),
        (_MONTH, False, 235_000, False),
        # a cursor above it, newest first (a page after a lead outside the range)
        (_MONTH, False, 400_000, True),
        # the last 30 days: newest first the walk starts in them, oldest first it does not
        (_span(480_001, 500_000), False, None, False),
        (_span(480_001, 500_000), True, None, True),
        # a year up to now: bounding would read 250,000 ids for a page found at once
        (_span(250_001, 500_000), False, None, False),
        # a year from 2 to 1 years ago: as many leads ahead as in it
        (_span(1, 250_000), False, None, True),
        # creation times out of id order (the oldest created lead has the higher id)
        (_span(245_000, 225_001), False, None, True),
        (_span(500_000, 480_001), False, None, False),
        # a range holding no lead: the bounds end the search at once
        (_span(None, None), False, None, True),
        (_span(None, None), True, 10, True),
        # no lead at all
        ((None, None, None, None), False, None, False),
    ],
)
def test_bounds_pay_where_the_walk_would_read_outside_the_range(
    span: tuple[int | None, ...], oldest_first: bool, before_id: int | None, bounded: bool
) -> None:
    spanned = repo_lead.CreationSpan(*span)
    paid = repo_lead.bounds_pay(spanned, oldest_first=oldest_first, before_id=before_id, limit=51)
    assert paid is bounded


@pytest.fixture
async def timeline(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Database, list[int]]]:
    """1,000 leads, one a day from `T0`, ids in creation order; their ids, by day."""
    db = create_database(make_settings(tmp_path), url=database_url)
    rng = random.Random(7)
    rows = [
        _row(i, rng) | {"created_at": _day(i), "updated_at": _day(i), "erased_at": None}
        for i in range(1000)
    ]
    async with db.sessionmaker() as session:
        await session.execute(insert(Lead), rows)
        await session.commit()
        read = (await session.execute(select(Lead.id, Lead.created_at).order_by(Lead.id))).all()
    assert [at for _, at in read] == sorted(at for _, at in read)
    try:
        yield db, [lead_id for lead_id, _ in read]
    finally:
        await db.dispose()


async def test_a_range_far_from_the_walks_start_is_read_between_its_ids(
    timeline: tuple[Database, list[int]], backend: str
) -> None:
    """The statements a search issues: a range the walk would reach only after most of the
    table (200 days, 600 days before the newest lead) asks where it lies and is bounded by
    its ids, newest or oldest first, as is a page after its last lead; a page inside it,
    and the newest 200 days newest first (up to now, or to an end still to come), are
    read as before: the first page without asking on PostgreSQL (its statistics of the
    times serve), after one look-up on SQLite."""
    db, ids = timeline
    issued: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        issued.append(statement)

    async def read(query: LeadQuery, before: int | None = None) -> tuple[int, bool]:
        """How many statements came before the page's, and whether it was bounded."""
        issued.clear()
        async with db.sessionmaker() as session:
            await repo_lead.search(session, query, before_id=before, limit=5)
        return len(issued) - 1, "creation_span" in issued[-1]

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        old = LeadQuery(created_after=_day(200), created_before=_day(400))
        assert await read(old) == (1, True)
        assert await read(dataclasses.replace(old, oldest_first=True)) == (1, True)
        assert await read(old, before=ids[200]) == (1, True)  # after its last lead
        assert await read(old, before=ids[300]) == (1, False)  # inside it
        recent = LeadQuery(created_after=_day(800))
        asked = 0 if backend == "postgresql" else 1
        assert await read(recent) == (asked, False)
        assert await read(recent, before=ids[900]) == (1, False)
        tomorrow = datetime.now(UTC) + timedelta(days=1)  # an end still to come
        assert await read(dataclasses.replace(recent, created_before=tomorrow)) == (asked, False)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)

"""Queries of stored leads after intake: one lead read for its views (by public id, its
arrivals, history and possible duplicates), the lead list searched (`GET /v1/leads`), a
lead's personal data erased, and what review's merge moves from one lead to another.

Intake's queries (its locks, candidate look-ups, match keys and the routing rotation) are
in `repository`; the service decides, these modules read and write.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Select,
    Text,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from cauce.core.db.base import utcnow
from cauce.core.db.text_fold import contains_folded
from cauce.leads.models import Lead, LeadEvent, LeadMatchKey, LeadSource, search_fold
from cauce.leads.phones import DEFAULT_PHONE_REGION, normalise_phone


async def arrivals(session: AsyncSession, lead_id: int) -> int:
    """How many times the lead arrived (one source row per arrival)."""
    return int(
        await session.scalar(
            select(func.count()).select_from(LeadSource).where(LeadSource.lead_id == lead_id)
        )
        or 0
    )


async def by_uid(session: AsyncSession, uid: str, *, for_update: bool = False) -> Lead | None:
    """A lead by its public id (erased ones included: they are tombstones)."""
    query = select(Lead).where(Lead.uid == uid)
    if for_update:
        # Locked, and as committed now, even if this session read it before; `FOR NO KEY
        # UPDATE`, as `repository.leads_by_id` locks and for the same reason.
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    return await session.scalar(query)


async def sources_of(session: AsyncSession, lead_id: int) -> list[LeadSource]:
    """Every arrival of a lead, oldest first."""
    result = await session.scalars(
        select(LeadSource).where(LeadSource.lead_id == lead_id).order_by(LeadSource.id)
    )
    return list(result.all())


@dataclass(frozen=True, slots=True)
class ListedExtras:
    """What a lead's view shows beyond its own row, for a page of leads: each one's
    sources (first arrival first) and the public id of the lead it is held against."""

    sources: dict[int, list[str]]
    held_against: dict[int, str]


async def listed_extras(session: AsyncSession, leads: list[Lead]) -> ListedExtras:
    """`ListedExtras` of `leads`, in two statements whatever their number."""
    ids = [lead.id for lead in leads]
    sources: dict[int, list[str]] = {}
    if ids:
        rows = await session.execute(
            select(LeadSource.lead_id, LeadSource.source)
            .where(LeadSource.lead_id.in_(ids))
            .order_by(LeadSource.id)
        )
        for lead_id, source in rows.all():
            seen = sources.setdefault(lead_id, [])
            if source not in seen:
                seen.append(source)
    wanted = {lead.possible_duplicate_of for lead in leads} - {None}
    uids: dict[int, str] = {}
    if wanted:
        rows = await session.execute(
            select(Lead.id, Lead.uid).where(Lead.id.in_(wanted), Lead.erased_at.is_(None))
        )
        uids = {lead_id: uid for lead_id, uid in rows.all()}
    held = {
        lead.id: uids[lead.possible_duplicate_of]
        for lead in leads
        if lead.possible_duplicate_of is not None and lead.possible_duplicate_of in uids
    }
    return ListedExtras(sources, held)


async def history_count(session: AsyncSession, lead_id: int) -> int:
    """How many history lines a lead has."""
    count = select(func.count()).select_from(LeadEvent).where(LeadEvent.lead_id == lead_id)
    return int(await session.scalar(count) or 0)


async def history_of(session: AsyncSession, lead_id: int, limit: int = 100) -> list[LeadEvent]:
    """A lead's history, newest first."""
    result = await session.scalars(
        select(LeadEvent)
        .where(LeadEvent.lead_id == lead_id)
        .order_by(LeadEvent.id.desc())
        .limit(limit)
    )
    return list(result.all())


async def related_duplicates(session: AsyncSession, lead: Lead, limit: int = 50) -> list[Lead]:
    """Leads held as possible duplicates of this one, and the one it is held against,
    live ones only (an erased or merged lead has nothing left to review, and the list
    of held leads shows no erased lead either); oldest first (by id: the order they
    arrived in, on either database, however updates moved their rows). `limit` bounds
    those held against it; the one it is held against is read apart, never left out (a
    review may have pointed it at a newer lead)."""
    held = await session.scalars(
        select(Lead)
        .where(Lead.possible_duplicate_of == lead.id, Lead.erased_at.is_(None))
        .order_by(Lead.id)
        .limit(limit)
    )
    related = list(held.all())
    if lead.possible_duplicate_of is not None:
        target = await session.get(Lead, lead.possible_duplicate_of)
        if target is not None and target.erased_at is None:
            related = sorted([*related, target], key=lambda d: d.id)
    return related


async def held_against_count(session: AsyncSession, lead_id: int) -> int:
    """How many live leads are held as possible duplicates of this one."""
    count = (
        select(func.count())
        .select_from(Lead)
        .where(Lead.possible_duplicate_of == lead_id, Lead.erased_at.is_(None))
    )
    return int(await session.scalar(count) or 0)


@dataclass(frozen=True, slots=True)
class LeadQuery:
    """Filters of `GET /v1/leads` (all optional)."""

    status: str | None = None
    source: str | None = None
    owner: str | None = None
    country: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    min_score: int | None = None
    max_score: int | None = None
    text: str | None = None
    held: bool | None = None  # held for review (True), or not (False)
    # The lead's marketing consent: given (`true`), refused (`false`), or none recorded
    # (`none`: no consent, or one without `marketing`).
    consent_marketing: Literal["true", "false", "none"] | None = None
    oldest_first: bool = False  # the order of the leads (and of the cursor's pages)
    include_erased: bool = False
    # The region a national phone number in `text` is read in (`leads.default_region`).
    phone_region: str = DEFAULT_PHONE_REGION


async def search(
    session: AsyncSession, query: LeadQuery, *, before_id: int | None, limit: int
) -> list[Lead]:
    """Leads matching `query`, newest first (by id: the order they arrived in) past the
    cursor `before_id` (below it; above it, oldest first, with `query.oldest_first`)."""
    statement = await _search_statement(session, query, before_id=before_id, limit=limit)
    return list((await session.scalars(statement)).all())


async def _search_statement(
    session: AsyncSession, query: LeadQuery, *, before_id: int | None, limit: int
) -> Select[Lead]:
    """`search_statement` for this session's database, bounded when `_bounded` says so."""
    dialect = session.get_bind().dialect.name
    bounded = await _bounded(session, query, dialect, before_id=before_id, limit=limit)
    return search_statement(query, dialect, before_id=before_id, limit=limit, bounded=bounded)


async def _bounded(
    session: AsyncSession, query: LeadQuery, dialect: str, *, before_id: int | None, limit: int
) -> bool:
    """Whether a page of the search is read bounded by the ids of its creation range:
    when `creation_span` shows the page's walk would read many leads outside the range
    (`bounds_pay`).

    Not asked on PostgreSQL for a first page whose walk starts inside the range (newest
    first without `created_before` or with one still to come, oldest first without
    `created_after`): the walk then meets the range's leads at once, and PostgreSQL reads
    a range too narrow to fill the page (the last hour, one in the future) from the
    creation index by its statistics; the question would only add its ~0.7 ms. SQLite
    keeps no statistics of the times: there such a range walks the whole table unless
    bounded, and the question costs ~0.1 ms."""
    oldest = query.oldest_first
    if query.created_after is None and query.created_before is None:
        return False
    if oldest:
        open_ahead = query.created_after is None
    else:
        end = query.created_before
        open_ahead = end is None or (end.tzinfo is not None and end > utcnow())
    if dialect == "postgresql" and before_id is None and open_ahead:
        return False
    span = await creation_span(session, query)
    return bounds_pay(span, oldest_first=oldest, before_id=before_id, limit=limit)


def search_statement(
    query: LeadQuery,
    dialect: str,
    *,
    before_id: int | None,
    limit: int,
    bounded: bool = False,
) -> Select[Lead]:
    """The statement `search` runs (on a `dialect` database): the list's and the export's
    filters, order and pages, from one place. `bounded`: the leads are also kept between
    the lowest and the highest id of the leads created in the query's creation range
    (`_creation_bounds`), which changes which leads are found in no way, only how far the
    database walks the leads by id looking for them."""
    oldest = query.oldest_first
    statement = select(Lead).order_by(Lead.id if oldest else Lead.id.desc()).limit(limit)
    conditions: list[Any] = []
    if not query.include_erased:
        conditions.append(Lead.erased_at.is_(None))
    if before_id is not None:
        conditions.append(Lead.id > before_id if oldest else Lead.id < before_id)
    if bounded:
        conditions.extend(_creation_bounds(query))
    for column, value in (
        (Lead.status, query.status),
        (Lead.source, query.source),
        (Lead.owner, query.owner),
        (Lead.country, query.country),
    ):
        if value is not None:
            conditions.append(column == value)
    if query.held is not None:
        held = Lead.sync_status == "held"
        conditions.append(held if query.held else ~held)
    if query.consent_marketing is not None:
        conditions.append(consent_condition(query.consent_marketing))
    ranges = [_created_range(Lead, query), _score_range(Lead, query)]
    deferred = None if bounded else _deferred_range(query, dialect, before_id)
    if deferred is not None:
        # the page's leads among the ids of one range (the other range checked on each)
        which, ids = deferred
        conditions.append(Lead.id.in_(ids))
        del ranges[which]
    conditions.extend(condition for kept in ranges for condition in kept)
    phones, rest = phone_runs(query.text)
    words = search_words(rest)
    # each word somewhere; accents, case and punctuation aside (search_text_of)
    conditions.extend(Lead.search_text.like(f"%{word}%") for word in words)
    # each phone number somewhere, in one of the forms it may be stored in (digits only,
    # as `search_text` keeps a phone): one condition, not one per group of digits
    for run in phones:
        forms = phone_forms(run, query.phone_region)
        conditions.append(or_(*(Lead.search_text.like(f"%{form}%") for form in forms)))
    # Words in another script ("Женя", which `search_text` does not keep), each on its
    # own, or a query of punctuation alone ("@") whole: as typed but for case and
    # accents, alike on both databases (text_fold.py). A scan of the leads.
    others = other_script_words(query.text)
    if not words and not others and not phones and query.text:
        others = [query.text]
    for other in others:
        conditions.append(
            or_(
                *(
                    contains_folded(column, other, dialect)
                    for column in (Lead.email, Lead.first_name, Lead.last_name, Lead.company)
                )
            )
        )
    if conditions:
        statement = statement.where(*conditions)
    return statement


def _created_range(leads: Any, query: LeadQuery) -> list[Any]:
    """The conditions of the query's creation range, on `leads` (the table or an alias)."""
    conditions = []
    if query.created_after is not None:
        conditions.append(leads.created_at >= query.created_after)
    if query.created_before is not None:
        conditions.append(leads.created_at < query.created_before)
    return conditions


def _score_range(leads: Any, query: LeadQuery) -> list[Any]:
    """The conditions of the query's score range, on `leads` (the table or an alias)."""
    conditions = []
    if query.min_score is not None:
        conditions.append(leads.score >= query.min_score)
    if query.max_score is not None:
        conditions.append(leads.score <= query.max_score)
    return conditions


@dataclass(frozen=True, slots=True)
class CreationSpan:
    """Where a creation range lies among the leads' ids (`creation_span`): the lowest and
    the highest id of all leads, and the ids of the range's oldest and newest lead by
    creation (None: no lead was created in the range). Ids grow with creation times in
    most of a table, not in all of it (a lead takes its id when written, its time a
    moment before, so two processes writing at once, or with clocks apart, take them in
    either order), so these say roughly which ids the range holds, never which it does
    not: they choose a plan, never the leads found."""

    first: int | None
    last: int | None
    oldest: int | None
    newest: int | None


async def creation_span(session: AsyncSession, query: LeadQuery) -> CreationSpan:
    """`CreationSpan` of the query's creation range: four look-ups of one index entry each
    (the primary key's ends, the creation index's at the range's ends), in one statement."""
    statement = _span_statement(query.created_after is not None, query.created_before is not None)
    values = {"after": query.created_after, "before": query.created_before}
    return CreationSpan(*(await session.execute(statement, values)).one())


@functools.cache
def _span_statement(after: bool, before: bool) -> Select[Any]:
    """`creation_span`'s statement for a range with a start (`after`), an end (`before`),
    or both, the instants as the parameters `after` and `before` (built once: building
    it took longer than running it)."""
    conditions = []
    if after:
        conditions.append(Lead.created_at >= bindparam("after"))
    if before:
        conditions.append(Lead.created_at < bindparam("before"))
    at = (Lead.created_at, Lead.id)

    def end(*order: Any) -> Any:
        return select(Lead.id).where(*conditions).order_by(*order).limit(1).scalar_subquery()

    return select(
        select(func.min(Lead.id)).scalar_subquery(),
        select(func.max(Lead.id)).scalar_subquery(),
        end(*at),
        end(*(column.desc() for column in at)),
    )


# Reading one id of a creation range from the creation index costs a fifth (PostgreSQL)
# to a twentieth (SQLite) of walking one lead by id and checking it. At 500,000 leads:
# a month's 20,548 ids in 2.4 and 2.0 ms; 253,530 leads walked in ~160 ms on PostgreSQL,
# ~115,000 along SQLite's country index in ~250 ms.
_WALK_COST = 4


def bounds_pay(
    span: CreationSpan, *, oldest_first: bool, before_id: int | None, limit: int
) -> bool:
    """Whether a page of a search with this creation range should be bounded by the ids
    of its leads (`search_statement(bounded=True)`).

    A search walks the leads by id (newest first, or oldest) from its cursor and keeps
    those matching it, until the page is full: both databases take a creation range's
    leads as spread over all ids, but they are mostly together, where the leads created
    then are. A month 13 months ago, newest first, walked past 253,529 newer leads on
    PostgreSQL before its first (150-180 ms at 500,000 leads), and a page that is not
    full walks on to the end of the table. Bounding the walk by the range's lowest and
    highest id reads each of the range's ids from the creation index once: worth it when
    the walk would read more leads outside the range than a quarter as many as the range
    holds (`_WALK_COST`). Those ahead of it are read for certain; those past it only by
    a page the range's leads left to walk do not fill, taken as likely as the page's
    size over the ids left (certain once fewer are left than the page holds: the last
    page of a list, the empty one an export ends with). Not for a range the walk starts
    in (the last 30 days, newest first, or a cursor inside the range) with many of its
    ids left, where the walk is cheap and the range may be most of the table. The ids of
    `span` are estimates: a wrong one costs time, never a lead."""
    if span.first is None or span.last is None:
        return False  # no leads
    if span.oldest is None or span.newest is None:
        return True  # none created in the range: bounded by nothing, the search ends at once
    low, high = sorted((span.oldest, span.newest))
    if oldest_first:
        start = span.first if before_id is None else before_id + 1
        ahead = max(0, low - start)
        left = max(0, high - max(start, low) + 1)
        past = max(0, span.last - max(start, high + 1) + 1)
    else:
        start = span.last if before_id is None else before_id - 1
        ahead = max(0, start - high)
        left = max(0, min(start, high) - low + 1)
        past = max(0, min(start, low - 1) - span.first + 1)
    walked = ahead + past * min(1.0, limit / max(left, 1))
    return walked * _WALK_COST > high - low + 1


def _creation_bounds(query: LeadQuery) -> list[Any]:
    """The leads' id between the lowest and the highest id of the leads created in the
    query's creation range (erased ones too), in the statement itself: one pass over the
    range in the creation index (`id + 0`: PostgreSQL would otherwise read `min(id)` and
    `max(id)` walking the primary key from each end, the walk this avoids), read by both
    conditions. No lead of the range lies outside them, whatever order ids and creation
    times are in; none in the range: NULL, and the search finds nothing."""
    plain = Lead.id + literal_column("0")
    span = (
        select(func.min(plain).label("low"), func.max(plain).label("high"))
        .where(*_created_range(Lead, query))
        .cte("creation_span")
    )
    return [
        Lead.id >= select(span.c.low).scalar_subquery(),
        Lead.id <= select(span.c.high).scalar_subquery(),
    ]


def _deferred_range(
    query: LeadQuery, dialect: str, before_id: int | None
) -> tuple[int, Select[Any]] | None:
    """The ids of the leads in a range bounded on both sides (creation, else score), read
    from that range's index alone, when the search's page should be read through them:
    which range (0: creation, 1: score) and the statement of its ids.

    SQLite takes a range bounded on both sides for a narrow one (it keeps no histogram)
    and reads it through its index: every lead in it whole, then sorted by id for the
    page, 500-800 ms for a score range holding 40 % of 500,000 leads, ~100 ms for a month.
    Its ids alone come from the index (which holds the rowid), and the leads are then read
    newest (or oldest) first by id among them, until the page is full: a month 13 months
    ago in ~5 ms, that score range in ~70-90 (every id of the range is still read).

    Only for a first page without an equality filter that has an index of its own
    (status, source, owner, country, held). With one, SQLite walks that index in id order
    and stops at the page (a broad range through its ids: 0.5 -> 90-130 ms); past a
    cursor, it walks the leads by id from the cursor, which the ids of a broad score range
    would make slower (0.6 -> 70-230 ms), and a cursor of the search's own pages lies in
    its range. Nor for a page bounded by the ids of its creation range (`bounds_pay`):
    its walk is short already."""
    if dialect != "sqlite" or before_id is not None:
        return None
    if query.status or query.source or query.owner or query.country or query.held is not None:
        return None
    ranged = aliased(Lead, name="ranged")
    if query.created_after is not None and query.created_before is not None:
        which, conditions = 0, _created_range(ranged, query)
    elif query.min_score is not None and query.max_score is not None:
        which, conditions = 1, _score_range(ranged, query)
    else:
        return None
    return which, select(ranged.id).where(*conditions)


async def search_rows(
    session: AsyncSession,
    query: LeadQuery,
    columns: Sequence[str],
    *,
    before_id: int | None,
    limit: int,
) -> Sequence[Sequence[Any]]:
    """`search`'s leads, as rows of the lead attributes `columns` rather than ORM objects
    (the CSV export reads every lead: loading each whole was most of its time). The
    statement is `search`'s (`search_statement`), its columns swapped: the export's
    filters, order and pages can never drift from the list's.

    A JSON column is read as its text and decoded here as SQLAlchemy decodes it, each
    text of the page once: most leads share theirs (no UTM, no custom fields), and
    decoding every one was a third of the reading. The values decoded are shared between
    the rows that hold the same text: read them, do not change them."""
    dialect = session.get_bind().dialect
    statement = await _search_statement(session, query, before_id=before_id, limit=limit)
    attributes = [getattr(Lead, name) for name in columns]
    texts = [i for i, attribute in enumerate(attributes) if isinstance(attribute.type, JSON)]
    for i in texts:
        attributes[i] = sql_cast(attributes[i], Text)
    rows = (await session.execute(statement.with_only_columns(*attributes))).all()
    if not texts:
        return rows
    loads = getattr(dialect, "_json_deserializer", None) or json.loads
    decoded: dict[str, Any] = {}
    read: list[list[Any]] = []
    for row in rows:
        values = list(row)
        for i in texts:
            text = values[i]
            if text is not None:
                value = decoded.get(text, decoded)  # (`decoded` itself: not seen yet)
                if value is decoded:
                    value = decoded[text] = loads(text)
                values[i] = value
        read.append(values)
    return read


async def live_uids(session: AsyncSession, ids: Collection[int]) -> dict[int, str]:
    """The public ids of the leads `ids` that are not erased (`listed_extras`' lookup of
    the leads a page's held ones are held against)."""
    if not ids:
        return {}
    rows = await session.execute(
        select(Lead.id, Lead.uid).where(Lead.id.in_(ids), Lead.erased_at.is_(None))
    )
    return {lead_id: uid for lead_id, uid in rows.all()}


def consent_condition(value: Literal["true", "false", "none"]) -> Any:
    """Leads whose consent's `marketing` is true, false, or missing (`none`).

    `consent` is a JSON column: a lead without a consent holds a JSON `null` (or an SQL
    NULL, as an update may write it), and a consent without `marketing` says nothing
    either. The member read as a boolean (SQLite's `JSON_EXTRACT`, PostgreSQL's `->>`
    cast) is NULL in all three, and a JSON `false` is false, not missing."""
    marketing = Lead.consent["marketing"].as_boolean()
    if value == "none":
        return marketing.is_(None)
    return marketing.is_(value == "true")


def search_words(text: str | None) -> list[str]:
    """The words of a free-text query, folded as `search_text` is, each once, leaving out
    a word inside another (`ana` finds every lead `a` would): each is one LIKE over the
    whole table, so "e a o i ..." is not a hundred of them."""
    words = sorted(set(search_fold(text).split()), key=len, reverse=True)
    kept: list[str] = []
    for word in words:
        if not any(word in longer for longer in kept):
            kept.append(word)
    return kept


# A word of a phone number: digits, with dots, dashes or brackets (`(91)`, `123-45-67`);
# only the first word of a number may start with `+` (or `(+`: `(+34) 612...`).
_PHONE_WORD = re.compile(r"\(?\+?[0-9().\-]*[0-9][0-9().\-]*")
# Fewer digits than this, without a `+` or `00` before them, are words, not a number:
# `5 28` (a street number and a floor) is two words, as it always was.
_PHONE_MIN_DIGITS = 6


def phone_runs(text: str | None) -> tuple[list[str], str]:
    """The phone numbers of a free-text query, and the rest of it (for `search_words`).

    A number is a run of consecutive words of digits (`_PHONE_WORD`: spaces, dots, dashes
    and brackets between groups), with a `+` or `00` before it or at least
    `_PHONE_MIN_DIGITS` digits: `María 612 34 56 78` is the word `María` and the number
    `612 34 56 78`, searched whole (`phone_forms`), never as four numbers found anywhere
    (which found +34612038756 for it)."""
    phones: list[str] = []
    rest: list[str] = []
    run: list[str] = []

    def close() -> None:
        digits = "".join(c for c in "".join(run) if c.isdigit())
        prefixed = bool(run) and run[0].lstrip("(").startswith(("+", "00"))
        if run and (prefixed or len(digits) >= _PHONE_MIN_DIGITS):
            phones.append(" ".join(run))
        else:
            rest.extend(run)
        run.clear()

    for word in (text or "").split():
        if not _PHONE_WORD.fullmatch(word):
            close()
            rest.append(word)
            continue
        if word.lstrip("(").startswith("+"):
            close()
        run.append(word)
    close()
    return phones, " ".join(rest)


def phone_forms(number: str, region: str = DEFAULT_PHONE_REGION) -> list[str]:
    """The digit strings a number of `phone_runs` is searched as (`search_text` keeps a
    phone's E.164 digits, without its `+`): its digits as written, which find it inside
    a stored number (`612 34 56 78`, `+34 612`); after a leading `00`, the digits as if
    it were a `+` (`0034 612...`); and the number read in `region`, as intake reads it,
    as E.164 (a national number with a trunk 0: `020 7946 0958` in GB is +442079460958).
    A form holding another is left out: the other finds all it finds."""
    digits = "".join(c for c in number if c.isdigit())
    forms = {digits}
    readings = [number]
    compact = number.lstrip("(")
    if compact.startswith("00"):
        forms.add(digits[2:])
        readings.append("+" + compact[2:])
    for reading in readings:
        try:
            e164 = normalise_phone(reading, region)
        except ValueError:
            continue
        forms.add(e164.partition(";")[0].lstrip("+"))
    forms.discard("")
    kept = sorted(forms, key=len)
    return [form for i, form in enumerate(kept) if not any(k in form for k in kept[:i])]


def other_script_words(text: str | None) -> list[str]:
    """The words of a free-text query with a letter `search_words` drops (Cyrillic,
    Greek...), each once: `Женя Иванова` finds Женя's first name and Иванова's last
    name, `Женя ivanova` both scripts."""
    found: list[str] = []
    for word in (text or "").split():
        if any(c.isalpha() and not search_fold(c) for c in word) and word not in found:
            found.append(word)
    return found


async def erase_personal_data(session: AsyncSession, lead_id: int) -> None:
    """Remove what identifies a person from the lead's sources, history and keys."""
    await delete_match_keys(session, lead_id)
    await session.execute(
        update(LeadSource)
        .where(LeadSource.lead_id == lead_id)
        .values(
            external_id=None, email=None, phone=None, phone_extension=None, utm={}, consent=None
        )
    )
    await session.execute(update(LeadEvent).where(LeadEvent.lead_id == lead_id).values(changes={}))


async def uid_of(session: AsyncSession, lead_id: int) -> str | None:
    """The public id of the lead with this row id."""
    return await session.scalar(select(Lead.uid).where(Lead.id == lead_id))


async def move_sources(session: AsyncSession, from_id: int, to_id: int) -> None:
    """Every arrival of one lead becomes another's (a lead merged into it)."""
    await session.execute(
        update(LeadSource).where(LeadSource.lead_id == from_id).values(lead_id=to_id)
    )


async def held_against(session: AsyncSession, lead_id: int) -> list[int]:
    """The live leads held for review against `lead_id`."""
    rows = await session.scalars(
        select(Lead.id).where(Lead.possible_duplicate_of == lead_id, Lead.erased_at.is_(None))
    )
    return list(rows)


async def hold_against(session: AsyncSession, from_id: int, to_id: int) -> None:
    """Live leads held against `from_id` are held against `to_id` instead (`from_id` was
    merged into it). `to_id` itself is left out."""
    await session.execute(
        update(Lead)
        .where(Lead.possible_duplicate_of == from_id, Lead.erased_at.is_(None), Lead.id != to_id)
        .values(possible_duplicate_of=to_id)
    )


async def delete_match_keys(session: AsyncSession, lead_id: int) -> None:
    """A lead is no candidate any more (its match keys go)."""
    await session.execute(delete(LeadMatchKey).where(LeadMatchKey.lead_id == lead_id))

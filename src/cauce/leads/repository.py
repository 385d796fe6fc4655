"""Queries of the leads context (the service decides, this module reads and writes)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.leads.matching import MatchRecord
from cauce.leads.models import Lead, LeadEvent, LeadMatchKey, LeadSource, RoutingCursor

# Exact keys (email, phone, tax id) are never skipped, however many leads share them.
EXACT_KEY_PREFIXES = ("e:", "p:", "t:")
MAX_CANDIDATES = 200


def match_record(values: dict[str, Any] | Lead) -> MatchRecord:
    """The fields de-duplication compares, from a lead row or a dict of its values."""

    def get(name: str) -> Any:
        return values.get(name) if isinstance(values, dict) else getattr(values, name)

    return MatchRecord(
        email=get("email"),
        phone=get("phone"),
        first_name=get("first_name"),
        last_names=get("last_name"),
        company=get("company"),
        city=get("city"),
        region=get("region"),
        country=get("country"),
    )


def _insert_for(session: AsyncSession) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def candidate_ids(
    session: AsyncSession, keys: Iterable[str], max_block_size: int
) -> list[int]:
    """Leads sharing a blocking key, skipping fuzzy keys too common to discriminate."""
    key_list = sorted(keys)
    if not key_list:
        return []
    rows = await session.execute(
        select(LeadMatchKey.key, LeadMatchKey.lead_id)
        .where(LeadMatchKey.key.in_(key_list))
        .limit(len(key_list) * (max_block_size + 1))
    )
    by_key: dict[str, list[int]] = defaultdict(list)
    for key, lead_id in rows:
        by_key[key].append(lead_id)
    ids: dict[int, None] = {}
    # Exact keys first, so they are never crowded out by the candidate cap.
    for key in sorted(by_key, key=lambda k: not k.startswith(EXACT_KEY_PREFIXES)):
        members = by_key[key]
        if not key.startswith(EXACT_KEY_PREFIXES) and len(members) > max_block_size:
            continue
        for lead_id in members:
            ids.setdefault(lead_id, None)
    return list(ids)[:MAX_CANDIDATES]


async def live_leads(session: AsyncSession, ids: Sequence[int]) -> list[Lead]:
    """The leads with these ids that are not erased."""
    if not ids:
        return []
    result = await session.scalars(
        select(Lead).where(Lead.id.in_(list(ids)), Lead.erased_at.is_(None))
    )
    return list(result.all())


async def replace_match_keys(
    session: AsyncSession, lead_id: int, keys: Iterable[str], *, fresh: bool = False
) -> None:
    """Store a lead's blocking keys (`fresh`: the lead is new, nothing to delete)."""
    if not fresh:
        await session.execute(delete(LeadMatchKey).where(LeadMatchKey.lead_id == lead_id))
    rows = [{"lead_id": lead_id, "key": key[:200]} for key in sorted(set(keys))]
    if rows:
        insert = _insert_for(session)
        await session.execute(insert(LeadMatchKey).values(rows).on_conflict_do_nothing())


async def next_route_position(session: AsyncSession, team: str) -> int:
    """Advance a team's rotation in this transaction; returns the position to use."""
    insert = _insert_for(session)
    statement = (
        insert(RoutingCursor)
        .values(team=team, position=1)
        .on_conflict_do_update(
            index_elements=["team"], set_={"position": RoutingCursor.position + 1}
        )
        .returning(RoutingCursor.position)
    )
    return int((await session.execute(statement)).scalar_one()) - 1


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
        query = query.with_for_update()
    return await session.scalar(query)


async def sources_of(session: AsyncSession, lead_id: int) -> list[LeadSource]:
    """Every arrival of a lead, oldest first."""
    result = await session.scalars(
        select(LeadSource).where(LeadSource.lead_id == lead_id).order_by(LeadSource.id)
    )
    return list(result.all())


async def history_of(session: AsyncSession, lead_id: int, limit: int = 100) -> list[LeadEvent]:
    """A lead's history, newest first."""
    result = await session.scalars(
        select(LeadEvent)
        .where(LeadEvent.lead_id == lead_id)
        .order_by(LeadEvent.id.desc())
        .limit(limit)
    )
    return list(result.all())


async def related_duplicates(session: AsyncSession, lead: Lead) -> list[Lead]:
    """Leads held as possible duplicates of this one, and the one it is held against."""
    conditions = [Lead.possible_duplicate_of == lead.id]
    if lead.possible_duplicate_of is not None:
        conditions.append(Lead.id == lead.possible_duplicate_of)
    result = await session.scalars(select(Lead).where(or_(*conditions)).limit(50))
    return list(result.all())


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
    include_erased: bool = False


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search(
    session: AsyncSession, query: LeadQuery, *, before_id: int | None, limit: int
) -> list[Lead]:
    """Leads matching `query`, newest first, below the cursor `before_id`."""
    statement = select(Lead).order_by(Lead.id.desc()).limit(limit)
    conditions: list[Any] = []
    if not query.include_erased:
        conditions.append(Lead.erased_at.is_(None))
    if before_id is not None:
        conditions.append(Lead.id < before_id)
    for column, value in (
        (Lead.status, query.status),
        (Lead.source, query.source),
        (Lead.owner, query.owner),
        (Lead.country, query.country),
    ):
        if value is not None:
            conditions.append(column == value)
    if query.created_after is not None:
        conditions.append(Lead.created_at >= query.created_after)
    if query.created_before is not None:
        conditions.append(Lead.created_at < query.created_before)
    if query.min_score is not None:
        conditions.append(Lead.score >= query.min_score)
    if query.max_score is not None:
        conditions.append(Lead.score <= query.max_score)
    if query.text:
        pattern = f"%{_escape_like(query.text.lower())}%"
        conditions.append(
            or_(
                *(
                    func.lower(column).like(pattern, escape="\\")
                    for column in (Lead.email, Lead.first_name, Lead.last_name, Lead.company)
                )
            )
        )
    if conditions:
        statement = statement.where(*conditions)
    return list((await session.scalars(statement)).all())


async def erase_personal_data(session: AsyncSession, lead_id: int) -> None:
    """Remove what identifies a person from the lead's sources, history and keys."""
    await session.execute(delete(LeadMatchKey).where(LeadMatchKey.lead_id == lead_id))
    await session.execute(
        update(LeadSource)
        .where(LeadSource.lead_id == lead_id)
        .values(external_id=None, utm={}, consent=None)
    )
    await session.execute(update(LeadEvent).where(LeadEvent.lead_id == lead_id).values(changes={}))

"""Queries of lead intake: the locks it takes, its candidate look-ups, the match keys it
stores and the routing rotation (the service decides, this module reads and writes).

The queries of stored leads' views, search, erasure and review are in `repository_lead`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    BigInteger,
    Table,
    any_,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cauce.leads.matching import MatchRecord
from cauce.leads.matching.blocking import EXACT_PREFIXES
from cauce.leads.matching.plan import MATCH_COLUMNS, record_of
from cauce.leads.models import Lead, LeadEvent, LeadMatchKey, LeadSource, RoutingCursor

LEADS = cast(Table, Lead.__table__)
KEYS = cast(Table, LeadMatchKey.__table__)
SOURCES = cast(Table, LeadSource.__table__)
EVENTS = cast(Table, LeadEvent.__table__)


def match_record(values: dict[str, Any] | Lead) -> MatchRecord:
    """The fields de-duplication compares, from a lead row or a dict of its values."""

    if isinstance(values, dict):
        return record_of(values)
    return record_of({name: getattr(values, name) for name in MATCH_COLUMNS})


def _postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _insert_for(session: AsyncSession) -> Any:
    return postgresql.insert if _postgres(session) else sqlite.insert


# Candidate look-ups take any number of keys or ids as one parameter (a JSON array), so
# one statement serves a lead or a batch of 1,000. A key's members come as one array
# (one row a key, not one a member), at most `:cap` of them: a key that has more is too
# common anyway (unless it is exact: an email, a phone, a tax id). The lowest ids, on
# either database whatever its plan (without the ORDER BY, PostgreSQL's bitmap or table
# scans took the first rows stored). The (key, lead_id) index gives them in that order:
# SQLite and PostgreSQL's generic plan read it and stop at `:cap`; a custom plan on
# pages autovacuum has not yet marked all-visible may read the whole key by bitmap and
# sort it instead (measured: ~1 ms more for a key of 3,000 leads).
_MEMBERS_SQLITE = text(
    "SELECT j.value AS key, (SELECT json_group_array(s.lead_id) FROM "
    "(SELECT m.lead_id FROM lead_match_keys AS m WHERE m.key = j.value "
    "ORDER BY m.lead_id LIMIT :cap) AS s) "
    "AS ids FROM json_each(:keys) AS j"
)
_MEMBERS_PG = text(
    "SELECT k.key, (SELECT array_agg(s.lead_id) FROM "
    "(SELECT m.lead_id FROM lead_match_keys AS m WHERE m.key = k.key "
    "ORDER BY m.lead_id LIMIT :cap) AS s) "
    "AS ids FROM json_array_elements_text(CAST(:keys AS json)) AS k(key)"
)
_LIVE_SQLITE = (
    LEADS.c.id.in_(select(literal_column("value")).select_from(func.json_each(bindparam("ids")))),
    LEADS.c.erased_at.is_(None),
)
# PostgreSQL takes the ids as an array: `id = ANY(...)` is one index scan, cheaper than
# joining the elements of a JSON array (the statement psycopg prepares runs for every
# intake, with thousands of ids once the leads number in the tens of thousands).
_LIVE_PG = (
    LEADS.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(BigInteger()))),
    LEADS.c.erased_at.is_(None),
)
_MATCH_SELECT = select(
    LEADS.c.id, LEADS.c.uid, LEADS.c.version, *(LEADS.c[name] for name in MATCH_COLUMNS)
)
_MATCH_ROWS_SQLITE = _MATCH_SELECT.where(*_LIVE_SQLITE)
_MATCH_ROWS_PG = _MATCH_SELECT.where(*_LIVE_PG)
# Versions come as two arrays in one row: an intake checks hundreds of candidates, and a
# row each costs more to fetch than the versions themselves.
_VERSIONS_SQLITE = select(
    func.json_group_array(LEADS.c.id), func.json_group_array(LEADS.c.version)
).where(*_LIVE_SQLITE)
_VERSIONS_PG = select(func.array_agg(LEADS.c.id), func.array_agg(LEADS.c.version)).where(*_LIVE_PG)


# Two processes taking in one new email (phone, tax id) at once would each find no lead
# under it and each create one. On PostgreSQL an intake first locks each of its exact
# keys, in hash order (two intakes never wait for each other in a circle); the second
# then reads after the first has committed (READ COMMITTED: each statement sees what was
# committed before it began). Fuzzy keys (names, companies) are not locked: they are
# shared by many unrelated leads, and locking them would make every process wait for the
# others. SQLite needs none: a unit of work starts with `BEGIN IMMEDIATE`, one writer at
# a time (uow.py).
#
# A key's lock is a row of `lead_key_locks` (models.LeadKeyLock: the key's 64-bit hash),
# inserted by the intake and deleted again at once, in the same transaction. An intake
# inserting the same hash meanwhile waits on the unique index until the first one ends,
# although the row is gone: PostgreSQL makes a would-be inserter wait for a conflicting
# row's uncommitted inserter, which may yet commit without deleting it (the manual's
# "Index Uniqueness Checks"). It then finds no row and takes its turn. The table is empty
# outside these statements, and unlogged (migration 0020): nothing in it outlives a
# transaction. A row lock lives in the row, not in PostgreSQL's shared lock table (about
# `max_locks_per_transaction` x connections slots for the whole server, which advisory
# locks, one a key, filled with a few batches of 1,000): intakes of any size that share
# no key run side by side, in one process or in several. A row left over (none should be)
# still works as a lock: `DO UPDATE` locks it. Order, always: the key locks by hash, then
# lead rows (`leads_by_id`), then the routing rotations by team, after the writes
# (`advance_route`), then the delivery request's queueing lock; a transaction calls this
# before any row lock (again, with the same keys it holds already, when it decides again:
# `service._intake`). One exception: a part of a batch first holds its idempotency key's
# claim row (`batch_parts`), and runs again when PostgreSQL ends it as a deadlock's victim.
# Sorted and distinct (one statement cannot lock a row twice): inserted in hash order.
_LOCK_KEYS_PG = text(
    "INSERT INTO lead_key_locks (h) SELECT DISTINCT hashtextextended(k.key, 0) AS h "
    "FROM json_array_elements_text(CAST(:keys AS json)) AS k(key) ORDER BY h "
    "ON CONFLICT (h) DO UPDATE SET h = EXCLUDED.h RETURNING h"
)
# The hashes by value (`= ANY`): with the table's statistics saying empty, a join with
# the keys' hashes was planned as a scan of its whole index, dead entries included.
_UNLOCK_KEYS_PG = text("DELETE FROM lead_key_locks WHERE h = ANY(CAST(:hashes AS bigint[]))")
# Two-int advisory locks of this module, in their own space ("LEAD"): the job queue's
# one-bigint locks never meet them.
_LOCK_SPACE = 0x4C454144
_LOCK_ALL_PG = text("SELECT pg_advisory_xact_lock(:space, :id)")


# The import queue's room (`imports_upload.check_room`): the transactions recording an
# import count the unfinished ones under it, one at a time, so two processes cannot both
# see the last place free (SQLite's writer is one already).
_IMPORT_ROOM = {"space": _LOCK_SPACE + 2, "id": 0}


async def lock_import_room(session: AsyncSession) -> None:
    """Wait for, then hold until the transaction ends, the import room's lock
    (PostgreSQL; nothing on SQLite)."""
    if _postgres(session):
        conn = await _connection(session)
        await conn.execute(_LOCK_ALL_PG, _IMPORT_ROOM)


async def lock_exact_keys(session: AsyncSession, keys: Collection[str]) -> None:
    """Wait for, then hold until the transaction ends, the intake locks of the exact
    keys among `keys` (PostgreSQL; nothing on SQLite). See `_LOCK_KEYS_PG` above."""
    exact = sorted(key for key in keys if key.startswith(EXACT_PREFIXES))
    if not exact or not _postgres(session):
        return
    conn = await _connection(session)
    locked = await conn.execute(_LOCK_KEYS_PG, {"keys": orjson.dumps(exact).decode()})
    await conn.execute(_UNLOCK_KEYS_PG, {"hashes": list(locked.scalars())})


async def _connection(session: AsyncSession) -> AsyncConnection:
    # Core statements on the session's own connection and transaction, without the
    # ORM's per-statement bookkeeping (these rows are never loaded as objects).
    return await session.connection()


@dataclass(frozen=True, slots=True)
class KeyMembers:
    """Per blocking key, the leads filed under it; and the fuzzy keys too common to use."""

    members: dict[str, list[int]]
    too_common: frozenset[str]


async def key_members(session: AsyncSession, keys: Collection[str], cap: int) -> KeyMembers:
    """The members of each key (at most `cap` per key); a fuzzy key with `cap` members or
    more is reported too common instead. Keys nobody is filed under are left out."""
    if not keys:
        return KeyMembers({}, frozenset())
    conn = await _connection(session)
    pg = _postgres(session)
    statement = _MEMBERS_PG if pg else _MEMBERS_SQLITE
    result = await conn.execute(statement, {"keys": orjson.dumps(list(keys)).decode(), "cap": cap})
    members: dict[str, list[int]] = {}
    too_common: set[str] = set()
    for key, found in result.all():
        ids: list[int] = (found or []) if pg else orjson.loads(found)
        if not ids:
            continue
        if len(ids) >= cap and not key.startswith(EXACT_PREFIXES):
            too_common.add(key)
        else:
            members[key] = ids
    return KeyMembers(members, frozenset(too_common))


def _ids_param(session: AsyncSession, ids: Collection[int]) -> dict[str, Any]:
    # An array on PostgreSQL, a JSON array on SQLite (see `_LIVE_PG`).
    ordered = sorted(ids)
    return {"ids": ordered if _postgres(session) else orjson.dumps(ordered).decode()}


def _match_tuples(result: Result[Any]) -> list[tuple[int, str, int, tuple[str | None, ...]]]:
    # Rows of `_MATCH_SELECT`: id, uid, version, then the `MATCH_COLUMNS` values.
    rows: list[tuple[Any, ...]] = [tuple(row) for row in result.all()]
    return [(row[0], row[1], row[2], row[3:]) for row in rows]


async def match_rows(
    session: AsyncSession, ids: Collection[int]
) -> list[tuple[int, str, int, tuple[str | None, ...]]]:
    """(id, uid, version, `MATCH_COLUMNS` values) of the leads with these ids not erased."""
    if not ids:
        return []
    conn = await _connection(session)
    statement = _MATCH_ROWS_PG if _postgres(session) else _MATCH_ROWS_SQLITE
    result = await conn.execute(statement, _ids_param(session, ids))
    return _match_tuples(result)


async def newest_match_rows(
    session: AsyncSession, before: int | None, limit: int
) -> list[tuple[int, str, int, tuple[str | None, ...]]]:
    """`match_rows` of the newest leads not erased with ids below `before` (None: all),
    at most `limit`, newest first (a walk down the primary key, one page at a time)."""
    statement = _MATCH_SELECT.where(LEADS.c.erased_at.is_(None))
    if before is not None:
        statement = statement.where(LEADS.c.id < before)
    conn = await _connection(session)
    result = await conn.execute(statement.order_by(LEADS.c.id.desc()).limit(limit))
    return _match_tuples(result)


async def last_history_id(session: AsyncSession) -> int:
    """The newest history row's id (0: none)."""
    conn = await _connection(session)
    return int((await conn.execute(select(func.max(EVENTS.c.id)))).scalar() or 0)


async def erased_at_or_after(session: AsyncSession, since: datetime) -> list[int]:
    """The leads erased at `since` or later (a scan of the leads: for a rare check)."""
    conn = await _connection(session)
    rows = await conn.execute(select(LEADS.c.id).where(LEADS.c.erased_at >= since))
    return [lead_id for (lead_id,) in rows]


async def erased_since(session: AsyncSession, after: int) -> tuple[list[int], int]:
    """The leads erased in history rows with ids above `after`, and the newest history
    id (`after` if none): a range of the primary key, the filter in the database."""
    newest = max(await last_history_id(session), after)
    if newest == after:
        return [], after
    conn = await _connection(session)
    rows = await conn.execute(
        select(EVENTS.c.lead_id).where(
            EVENTS.c.id > after, EVENTS.c.id <= newest, EVENTS.c.action == "erased"
        )
    )
    return [lead_id for (lead_id,) in rows], newest


async def live_versions(session: AsyncSession, ids: Collection[int]) -> list[tuple[int, int]]:
    """(id, version) of the leads with these ids not erased."""
    if not ids:
        return []
    conn = await _connection(session)
    pg = _postgres(session)
    statement = _VERSIONS_PG if pg else _VERSIONS_SQLITE
    ids_found, versions = (await conn.execute(statement, _ids_param(session, ids))).one()
    if not pg:
        ids_found, versions = orjson.loads(ids_found), orjson.loads(versions)
    return list(zip(ids_found or (), versions or (), strict=True))


async def leads_by_id(session: AsyncSession, ids: Collection[int]) -> dict[int, Lead]:
    """Lead objects, locked for changing them (on PostgreSQL; SQLite's writer holds the
    whole database), as committed now, by id.

    Without the lock two transactions merging into one lead both read version n and
    both write n + 1, each with its own fields: one update is lost, and one version
    would have two contents (which `KnownLeads` relies on never happening).

    The lock is `FOR NO KEY UPDATE` (`key_share=True`: a lead's id never changes). It
    excludes every other such lock but not the `FOR KEY SHARE` a foreign-key check takes
    on the row it references. A lead updated twice in one transaction has its
    `possible_duplicate_of` checked again; with `FOR UPDATE` that check waited for
    whoever held the lead it is held against, who could be waiting for this lead (a
    review beside a PATCH, or beside another review, deadlocked on PostgreSQL).
    """
    if not ids:
        return {}
    statement = (
        select(Lead)
        .where(Lead.id.in_(sorted(ids)))
        .order_by(Lead.id)  # one lock order for every transaction
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    result = await session.scalars(statement)
    return {lead.id: lead for lead in result}


async def sharing_addresses(session: AsyncSession, coming: Mapping[int, str]) -> set[int]:
    """The other live leads, not held for review, on the address of each lead of `coming`
    (lead id -> the email an arrival brings it) that the arrival's differs from (as
    committed now, unlocked): those a merge replacing it may hand the address to. One
    look-up by primary key and one by `ix_leads_email_key`."""
    rows = await session.execute(
        select(Lead.id, Lead.email_key).where(
            Lead.id.in_(sorted(coming)), Lead.email_key.is_not(None)
        )
    )
    keys = {key for lead_id, key in rows.all() if key is not None and key != coming[lead_id]}
    if not keys:
        return set()
    others = await session.scalars(
        select(Lead.id).where(
            Lead.email_key.in_(sorted(keys)),
            Lead.erased_at.is_(None),
            Lead.sync_status != "held",
            Lead.id.not_in(sorted(coming)),
        )
    )
    return set(others.all())


async def held_against(session: AsyncSession, ids: Collection[int]) -> dict[int, int]:
    """Of the leads `ids`, those held for review, each with the lead it is held against
    (as committed now, unlocked). One look-up by primary key."""
    if not ids:
        return {}
    rows = await session.execute(
        select(Lead.id, Lead.possible_duplicate_of).where(
            Lead.id.in_(sorted(ids)),
            Lead.sync_status == "held",
            Lead.possible_duplicate_of.is_not(None),
        )
    )
    return {lead_id: target for lead_id, target in rows.all() if target is not None}


async def email_owners(session: AsyncSession, emails: Collection[str]) -> dict[str, set[int]]:
    """The live leads whose own email each of `emails` is (as stored: `email_key`).
    One indexed look-up (`ix_leads_email_key`)."""
    if not emails:
        return {}
    rows = await session.execute(
        select(Lead.email_key, Lead.id).where(
            Lead.email_key.in_(sorted(emails)), Lead.erased_at.is_(None)
        )
    )
    owners: dict[str, set[int]] = {}
    for email, lead_id in rows:
        if email is not None:
            owners.setdefault(email, set()).add(lead_id)
    return owners


async def arrivals_of(session: AsyncSession, ids: Collection[int]) -> dict[int, int]:
    """How many times each lead arrived (one source row per arrival)."""
    if not ids:
        return {}
    rows = await session.execute(
        select(LeadSource.lead_id, func.count())
        .where(LeadSource.lead_id.in_(sorted(ids)))
        .group_by(LeadSource.lead_id)
    )
    counts = {lead_id: 0 for lead_id in ids}
    counts.update({lead_id: int(n) for lead_id, n in rows})
    return counts


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


async def route_positions(session: AsyncSession, teams: Collection[str]) -> dict[str, int]:
    """The teams' rotation positions as committed now, without locking them (a team not
    started yet is at 0): `advance_route` later says where the rotation really was."""
    conn = await _connection(session)  # no ORM flush first: nothing here reads the leads
    rows = await conn.execute(
        select(RoutingCursor.team, RoutingCursor.position).where(
            RoutingCursor.team.in_(sorted(teams))
        )
    )
    found: dict[str, int] = {team: int(position) for team, position in rows.all()}
    return {team: found.get(team, 0) for team in teams}


def locks_rows(session: AsyncSession) -> bool:
    """True where transactions side by side lock rows (PostgreSQL); SQLite's one writer
    runs them one at a time."""
    return _postgres(session)


async def advance_route(session: AsyncSession, team: str, steps: int) -> int:
    """Advance a team's rotation by `steps` in this transaction; returns the first position."""
    insert_ = _insert_for(session)
    statement = (
        insert_(RoutingCursor)
        .values(team=team, position=steps)
        .on_conflict_do_update(
            index_elements=["team"], set_={"position": RoutingCursor.position + steps}
        )
        .returning(RoutingCursor.position)
    )
    return int((await session.execute(statement)).scalar_one()) - steps

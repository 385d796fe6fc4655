"""Bulk writes of lead intake: the new leads, their keys, arrivals and history, in one
statement per table whatever the batch size (the reads are in `repository.py`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import JSON, Table, Text, bindparam, delete, func, select, text, update
from sqlalchemy import cast as cast_
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cauce.leads.repository import EVENTS, KEYS, LEADS, SOURCES, _connection, _postgres

_HOLD = (
    update(LEADS)
    .where(LEADS.c.id == bindparam("lead_id"))
    .values(possible_duplicate_of=bindparam("held_against"))
)


class _Bulk:
    """An INSERT of any number of rows in one statement.

    PostgreSQL gets one parameter, a JSON document it unpacks with `json_to_recordset`
    (JSON columns travel as text, cast back in SQL): a multi-row VALUES of 1,000 leads
    has 39,000 placeholders, which psycopg parses afresh each time (it caches only small
    statements). SQLite, in process, is fastest with a plain executemany (measured, its
    `json_each` re-parses each row once per column) of tuples converted by the columns'
    own bind processors, as SQLAlchemy would store them, but without its per-row
    parameter bookkeeping (~5 us a row; a batch of 1,000 leads writes some 13,000 rows).
    """

    def __init__(
        self,
        table: Table,
        names: Sequence[str],
        *,
        conflicts: bool = False,
        returning: Sequence[str] = (),
    ):
        self.table = table
        self.names = tuple(names)
        self.json = {n for n in self.names if isinstance(table.c[n].type, JSON)}
        # JSON columns where None is SQL NULL, not JSON null (`JSON(none_as_null=True)`).
        self.sql_nulls = {n for n in self.json if getattr(table.c[n].type, "none_as_null", False)}
        typed = [sql_column(n, Text() if n in self.json else table.c[n].type) for n in self.names]
        document = cast_(bindparam("rows", type_=Text()), JSON())
        pg_rows = (
            func.json_to_recordset(document).table_valued(*typed).render_derived(with_types=True)
        )
        pg_values = [
            cast_(pg_rows.c[n], JSON()) if n in self.json else pg_rows.c[n] for n in self.names
        ]
        pg = postgresql.insert(table).from_select(list(self.names), select(*pg_values))
        lite = sqlite.insert(table).values({n: bindparam(n) for n in self.names})
        if conflicts:
            pg, lite = pg.on_conflict_do_nothing(), lite.on_conflict_do_nothing()
        self.pg = pg.returning(*(table.c[n] for n in returning)) if returning else pg
        compiled = lite.compile(dialect=sqlite.dialect())
        # The tuples below follow the placeholders' order.
        assert compiled.positiontup == list(self.names)
        self.lite_sql = str(compiled)
        returns = lite.returning(*(table.c[n] for n in returning)) if returning else lite
        self.lite_returning_sql = str(returns.compile(dialect=sqlite.dialect()))
        assert len(self.names) > 1  # so `pick` gives a tuple
        self.pick = itemgetter(*self.names)
        self._lite_processors: tuple[Any, list[tuple[int, Any]]] | None = None

    def _processors(self, dialect: Any) -> list[tuple[int, Any]]:
        """The columns' bind processors, by position (built once per dialect: a
        processor is a fresh closure each time a type is asked for one)."""
        cached = self._lite_processors
        if cached is not None and cached[0] is dialect:
            return cached[1]
        columns = self.table.c
        processors = [
            (i, process)
            for i, n in enumerate(self.names)
            if (process := columns[n].type.dialect_impl(dialect).bind_processor(dialect))
        ]
        self._lite_processors = (dialect, processors)
        return processors

    def pg_params(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        pick = self.pick
        return self.pg_tuples([pick(row) for row in rows])

    def pg_tuples(self, rows: Sequence[tuple[Any, ...]]) -> dict[str, str]:
        """Rows given as tuples (in `names` order), as the one JSON parameter."""
        names, json_columns, sql_nulls = self.names, self.json, self.sql_nulls
        records: list[dict[str, Any]] = []
        for row in rows:
            record = dict(zip(names, row, strict=True))
            for n in json_columns:
                value = record[n]
                if value is None and n in sql_nulls:
                    continue  # a JSON null in the document: SQL NULL in the row
                # As SQLAlchemy's JSON type stores it (None as JSON null).
                record[n] = orjson.dumps(value).decode()
            records.append(record)
        return {"rows": orjson.dumps(records).decode()}

    def lite_params(
        self, session: AsyncSession, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[Any, ...]]:
        pick = self.pick
        return self.lite_tuples(session, [pick(row) for row in rows])

    def lite_tuples(
        self, session: AsyncSession, rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Rows given as tuples (in `names` order), converted for SQLite."""
        processors = self._processors(_dialect(session))
        if not processors:
            return rows
        # Many values repeat: empty JSON ones (no UTM, no custom fields, no match keys),
        # and one timestamp object for every row of an intake. Each is converted once per
        # call (the rows keep their values alive, so an object's id is not reused).
        done: dict[tuple[int, object], Any] = {}
        out: list[tuple[Any, ...]] = []
        for row in rows:
            values = list(row)
            for i, process in processors:
                value = values[i]
                if value is None or value == {} or value == []:
                    marker: tuple[int, object] = (i, repr(value))
                else:
                    marker = (i, id(value))
                if marker in done:
                    values[i] = done[marker]
                else:
                    values[i] = done[marker] = process(value)
            out.append(tuple(values))
        return out


def _dialect(session: AsyncSession) -> Any:
    assert session.bind is not None
    return session.bind.dialect


LEAD_COLUMNS = tuple(c.name for c in LEADS.columns if c.name != "id")
_LEADS_BULK = _Bulk(LEADS, LEAD_COLUMNS, returning=("uid", "id"))
_IDS_BY_UID_SQLITE = text(
    "SELECT uid, id FROM leads WHERE uid IN (SELECT value FROM json_each(:uids))"
)
_KEYS_BULK = _Bulk(KEYS, ("lead_id", "key"), conflicts=True)
_SOURCES_BULK = _Bulk(
    SOURCES,
    (
        "lead_id",
        "source",
        "external_id",
        "email",
        "phone",
        "phone_extension",
        "utm",
        "consent",
        "received_at",
    ),
)
_EVENTS_BULK = _Bulk(EVENTS, ("lead_id", "action", "changes", "actor", "at"))


async def _bulk_insert(
    session: AsyncSession, bulk: _Bulk, rows: Sequence[Mapping[str, Any]]
) -> None:
    conn = await _connection(session)
    if _postgres(session):
        await conn.execute(bulk.pg, bulk.pg_params(rows))
    else:
        await conn.exec_driver_sql(bulk.lite_sql, bulk.lite_params(session, rows))


async def insert_leads(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Insert leads (every column but `id` given); returns their ids by `uid`."""
    if not rows:
        return {}
    conn = await _connection(session)
    if _postgres(session):
        result = await conn.execute(_LEADS_BULK.pg, _LEADS_BULK.pg_params(rows))
    elif len(rows) == 1:
        params = _LEADS_BULK.lite_params(session, rows)[0]
        result = await conn.exec_driver_sql(_LEADS_BULK.lite_returning_sql, params)
    else:
        # An executemany returns no rows: the ids are read back by the unique `uid`.
        await _bulk_insert(session, _LEADS_BULK, rows)
        uids = orjson.dumps([row["uid"] for row in rows]).decode()
        result = await conn.execute(_IDS_BY_UID_SQLITE, {"uids": uids})
    return {uid: lead_id for uid, lead_id in result.all()}


async def hold_against(session: AsyncSession, pairs: Sequence[tuple[int, int]]) -> None:
    """Point leads at the lead each may duplicate: (lead id, held against id)."""
    if pairs:
        conn = await _connection(session)
        params = [{"lead_id": lead_id, "held_against": other} for lead_id, other in pairs]
        await conn.execute(_HOLD, params)


_OWNER = update(LEADS).where(LEADS.c.id == bindparam("lead_id")).values(owner=bindparam("owner"))


async def set_owners(session: AsyncSession, owners: Sequence[tuple[int, str | None]]) -> None:
    """Give stored leads their owners: (lead id, owner)."""
    if owners:
        conn = await _connection(session)
        await conn.execute(_OWNER, [{"lead_id": i, "owner": owner} for i, owner in owners])


async def insert_match_keys(
    session: AsyncSession, keys: Mapping[int, Iterable[str]], *, replace: Collection[int] = ()
) -> None:
    """File leads under their blocking keys; leads in `replace` lose their old keys first."""
    if replace:
        conn = await _connection(session)
        await conn.execute(delete(KEYS).where(KEYS.c.lead_id.in_(sorted(replace))))
    rows = [
        (lead_id, key[:200])
        for lead_id, lead_keys in keys.items()
        for key in sorted(set(lead_keys))
    ]
    if not rows:
        return
    conn = await _connection(session)
    if _postgres(session):
        await conn.execute(_KEYS_BULK.pg, _KEYS_BULK.pg_tuples(rows))
    else:
        await conn.exec_driver_sql(_KEYS_BULK.lite_sql, _KEYS_BULK.lite_tuples(session, rows))


async def insert_sources(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Record arrivals (lead_id, source, external_id, email, phone, phone_extension, utm,
    consent, received_at)."""
    if rows:
        await _bulk_insert(session, _SOURCES_BULK, rows)


async def insert_events(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Record history lines (lead_id, action, changes, actor, at)."""
    if rows:
        await _bulk_insert(session, _EVENTS_BULK, rows)

"""Rows written as SQL for the migration tests: at an older revision, today's models
describe columns the tables do not have yet."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_stored_lead(
    conn: AsyncConnection,
    *,
    city: str | None = None,
    synced: bool = False,
    source_phone: str | None = None,
) -> None:
    """Lead 1 (`a@b.es`, `synced` or pending), with one arrival (from `source_phone`)
    and one history line: the columns every revision since 0011 has."""
    version = 1 if synced else 0
    await conn.execute(
        text(
            "INSERT INTO leads (id, uid, email, city, source, utm, custom_fields, "
            "email_disposable, email_free, status, score, score_model, score_reasons, "
            "match_keys, version, sync_status, synced_version, sync_attempts, "
            "created_at, updated_at, search_text) VALUES (1, 'u1', 'a@b.es', :city, 'api', "
            "'{}', '{}', false, false, 'new', 0, 'points', '[]', '[]', 1, :status, "
            ":version, :version, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '')"
        ),
        {"city": city, "status": "synced" if synced else "pending", "version": version},
    )
    await conn.execute(
        text(
            "INSERT INTO lead_sources (lead_id, source, phone, utm, received_at) "
            "VALUES (1, 'api', :phone, '{}', CURRENT_TIMESTAMP)"
        ),
        {"phone": source_phone},
    )
    await conn.execute(
        text(
            "INSERT INTO lead_history (lead_id, action, changes, at) "
            "VALUES (1, 'created', '{}', CURRENT_TIMESTAMP)"
        )
    )

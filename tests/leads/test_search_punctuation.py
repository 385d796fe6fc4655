"""Free-text search ignores punctuation: a word it splits is found by its letters run
together too (`obrien` finds O'Brien, `sl` finds S.L.), on both databases, for new leads
and, through migration 0011, for leads stored before it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from cauce.core.db import create_database
from cauce.core.db.migrate import alembic_config, upgrade
from cauce.leads.models import search_fold, search_text
from tests.conftest import make_settings

LEAD = {
    "email": "sean.obrien@construcciones-levante.es",
    "first_name": "Seán",
    "last_name": "O'Brien-Levante",
    "company": "Construcciones O'Brien-Levante S.L.",
}


def test_search_text_adds_the_words_punctuation_split_joined() -> None:
    assert search_text("O'Brien S.L.") == "o brien s l obrien sl"
    assert search_text("María García") == "maria garcia"  # nothing split: as before


@given(st.text(max_size=40))
def test_search_text_keeps_every_folded_word(value: str) -> None:
    """What `q` matched before still matches: the folded text comes first, unchanged (as
    `search_fold` folds it, which `q` is folded with too)."""
    assert search_text(value).startswith(search_fold(value))


async def _found(api: httpx.AsyncClient, q: str) -> list[str]:
    response = await api.get("/v1/leads", params={"q": q})
    assert response.status_code == 200, response.text
    return [lead["email"] for lead in response.json()["items"]]


@pytest.mark.parametrize(
    "q", ["obrien", "OBRIEN", "o'brien", "sl", "s.l.", "brien levante", "obrienlevante"]
)
async def test_q_finds_a_word_with_or_without_its_punctuation(
    api: httpx.AsyncClient, q: str
) -> None:
    created = await api.post("/v1/leads", json=LEAD)
    assert created.status_code == 201, created.text
    other = await api.post("/v1/leads", json={"email": "ana@bodegas.es", "company": "Bodegas"})
    assert other.status_code == 201, other.text
    assert await _found(api, q) == [LEAD["email"]]


async def test_migration_0011_refills_the_search_text_of_stored_leads(
    empty_database_url: str, tmp_path: Path
) -> None:
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    insert = text(
        "INSERT INTO leads (uid, email, company, erased_at, status, source, score, score_model,"
        " version, sync_status, synced_version, sync_attempts, email_disposable, email_free,"
        " utm, custom_fields, score_reasons, match_keys, search_text, created_at, updated_at)"
        " VALUES (:uid, :email, :company, :erased, 'new', 'api', 0, 'points', 1, 'pending', 0,"
        " 0, false, false, '{}', '{}', '[]', '[]', :folded, :now, :now)"
    )
    read = text("SELECT uid, search_text FROM leads ORDER BY uid")
    now = datetime.now(UTC)
    try:
        await upgrade(db, "0010")
        async with db.engine.begin() as conn:
            for uid, erased in (("a", None), ("b", now)):
                await conn.execute(
                    insert,
                    {
                        "uid": uid,
                        "email": None if erased else "x@obrien.es",
                        "company": None if erased else "O'Brien S.L.",
                        "erased": erased,
                        "folded": "" if erased else "o brien s l x obrien es",
                        "now": now,
                    },
                )
        await upgrade(db)
        async with db.engine.connect() as conn:
            rows = [tuple(row) for row in (await conn.execute(read)).all()]
        assert rows == [("a", "o brien s l x obrien es obrien sl xobrienes"), ("b", "")]
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0010"))
        async with db.engine.connect() as conn:
            rows = [tuple(row) for row in (await conn.execute(read)).all()]
        assert rows == [("a", "o brien s l x obrien es"), ("b", "")]
    finally:
        await db.dispose()

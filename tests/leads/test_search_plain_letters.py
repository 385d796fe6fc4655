"""Free-text search reads the Latin letters Unicode does not decompose (ł, ø, æ, œ, đ,
ð, þ, dotless i...) as the plain letters a keyboard without them types: the search text dropped
them (Łukasz was `ukasz`, Søren `s ren`), so `q=lukasz` and `q=soren` found nobody. On
both databases, for new leads and, through migration 0023, for leads stored before it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy import text

from cauce.core.db import create_database
from cauce.core.db.migrate import alembic_config, upgrade
from cauce.leads.models import search_fold, search_text
from tests.conftest import make_settings
from tests.leads.api_client import post_lead


async def _found(api: httpx.AsyncClient, q: str) -> list[str]:
    response = await api.get("/v1/leads", params={"q": q})
    assert response.status_code == 200, response.text
    return [lead["id"] for lead in response.json()["items"]]


@pytest.mark.parametrize(
    ("typed", "folded"),
    [
        ("Łukasz Wałęsa", "lukasz walesa"),
        ("Søren Ørsted", "soren orsted"),
        ("ÆRØ Œuvre", "aero oeuvre"),
        ("Đorđe Þór", "dorde thor"),
        ("IŞIK Kad\u0131köy", "isik kadikoy"),
        ("José María Núñez", "jose maria nunez"),
        ("Женя", ""),
    ],
)
def test_search_fold_keeps_letters_without_decomposition(typed: str, folded: str) -> None:
    assert search_fold(typed) == folded


def test_search_text_joins_a_word_split_by_punctuation_after_the_letters() -> None:
    assert search_text("Øster-Dał S.L.") == "oster dal s l osterdal sl"


async def test_q_finds_names_with_letters_a_keyboard_lacks(api: httpx.AsyncClient) -> None:
    lukasz = await post_lead(
        api, {"email": "lk@firma.pl", "first_name": "Łukasz", "last_name": "Wałęsa"}
    )
    soren = await post_lead(
        api,
        {"email": "so@vind.dk", "first_name": "Søren", "last_name": "Ørsted", "company": "Æbelø"},
    )
    isik = await post_lead(
        api, {"email": "ik@firma.tr", "first_name": "I\u015f\u0131k", "last_name": "Öz"}
    )
    other = await post_lead(
        api, {"email": "uk@firma.es", "first_name": "Ukasz", "last_name": "Ren"}
    )
    for q in ("lukasz", "Łukasz", "LUKASZ WALESA", "wałęsa"):
        assert await _found(api, q) == [lukasz["id"]], q
    for q in ("soren", "Søren", "orsted", "aebelo", "Æbelø"):
        assert await _found(api, q) == [soren["id"]], q
    for q in ("isik", "I\u015f\u0131k", "IŞIK"):
        assert await _found(api, q) == [isik["id"]], q
    # The plain spelling finds the lead spelled so too, and no one else.
    assert await _found(api, "ukasz ren") == [other["id"]]


async def test_migration_0023_refills_the_search_text_of_stored_leads(
    empty_database_url: str, tmp_path: Path
) -> None:
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    insert = text(
        "INSERT INTO leads (uid, email, first_name, last_name, company, erased_at,"
        " status, source, score, score_model, version, sync_status, synced_version,"
        " sync_attempts, email_disposable, email_free, utm, custom_fields, score_reasons,"
        " match_keys, search_text, created_at, updated_at)"
        " VALUES (:uid, :email, :first, :last, :company, :erased, 'new', 'api', 0,"
        " 'points', 1, 'pending', 0, 0, false, false, '{}', '{}', '[]', '[]', :folded, :now,"
        " :now)"
    )
    read = text("SELECT uid, search_text FROM leads ORDER BY uid")
    now = datetime.now(UTC)
    rows_before = [
        # as 0015's fold left them
        (
            "a",
            "lk@firma.pl",
            "Łukasz",
            "Wałęsa",
            None,
            None,
            "ukasz wa esa lk firma pl waesa lkfirmapl",
        ),
        (
            "b",
            "ana@bodegas.es",
            "Ana",
            "García",
            "Bodegas",
            None,
            "ana garcia bodegas ana bodegas es anabodegases",
        ),
        ("c", None, None, None, None, now, ""),
    ]
    try:
        await upgrade(db, "0022")
        async with db.engine.begin() as conn:
            for uid, email, first, last, company, erased, folded in rows_before:
                await conn.execute(
                    insert,
                    {
                        "uid": uid,
                        "email": email,
                        "first": first,
                        "last": last,
                        "company": company,
                        "erased": erased,
                        "folded": folded,
                        "now": now,
                    },
                )
        await upgrade(db)
        async with db.engine.connect() as conn:
            rows = [tuple(row) for row in (await conn.execute(read)).all()]
        assert rows == [
            ("a", "lukasz walesa lk firma pl lkfirmapl"),
            ("b", "ana garcia bodegas ana bodegas es anabodegases"),
            ("c", ""),
        ]
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0022"))
        async with db.engine.connect() as conn:
            rows = [tuple(row) for row in (await conn.execute(read)).all()]
        assert rows == [(uid, folded) for uid, *_, folded in rows_before]
    finally:
        await db.dispose()

"""Free-text search finds a lead by its phone and by the other emails and phones a merge
kept (a black-box audit found `q` blind to both: a person asking what is held about them
was told "nothing" while the export showed their address), on both databases, for new
leads and, through migration 0015, for leads stored before it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
from alembic import command
from sqlalchemy import text

from cauce.core.db import create_database
from cauce.core.db.migrate import alembic_config, upgrade
from tests.conftest import make_settings
from tests.leads.api_client import JOSE, post_lead


async def _found(api: httpx.AsyncClient, q: str) -> list[str]:
    response = await api.get("/v1/leads", params={"q": q})
    assert response.status_code == 200, response.text
    return [lead["id"] for lead in response.json()["items"]]


async def test_q_finds_phones_and_other_contacts(api: httpx.AsyncClient) -> None:
    jose = await post_lead(api, {**JOSE, "phone": "+34 954 12 34 56"})
    # Pepe merges into José with another email and phone: they become José's others.
    pepe = await post_lead(
        api,
        {
            "first_name": "Pepe",
            "last_name": "Fernandez Ruiz",
            "company": "Aceitunas del Sur",
            "city": "Sevilla",
            "email": "pepe.fr@gmail.com",
            "phone": "+34 699 00 01 11",
        },
    )
    assert (pepe["outcome"], pepe["id"]) == ("merged", jose["id"])
    other = await post_lead(api, {"email": "ana@bodegas.es", "phone": "+34 600 11 22 33"})
    for q in (
        "954123456",
        "+34 954 12 34 56",
        "699000111",
        "699 00 01 11",
        "pepe.fr@gmail.com",
        "pepe fr gmail",
    ):
        assert await _found(api, q) == [jose["id"]], q
    assert await _found(api, "600 11 22 33") == [other["id"]]
    # An erasure takes them out of the search too.
    assert (await api.delete(f"/v1/leads/{jose['id']}")).status_code == 204
    assert await _found(api, "699000111") == []
    assert await _found(api, "pepe.fr@gmail.com") == []


async def test_migration_0015_refills_the_search_text_of_stored_leads(
    empty_database_url: str, tmp_path: Path
) -> None:
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    insert = text(
        "INSERT INTO leads (uid, email, phone, other_emails, other_phones, company, erased_at,"
        " status, source, score, score_model, version, sync_status, synced_version,"
        " sync_attempts, email_disposable, email_free, utm, custom_fields, score_reasons,"
        " match_keys, search_text, created_at, updated_at)"
        " VALUES (:uid, :email, :phone, :others, :phones, 'Acme', :erased, 'new', 'api', 0,"
        " 'points', 1, 'pending', 0, 0, false, false, '{}', '{}', '[]', '[]', :folded, :now,"
        " :now)"
    )
    read = text("SELECT uid, search_text FROM leads ORDER BY uid")
    now = datetime.now(UTC)
    try:
        await upgrade(db, "0014")
        async with db.engine.begin() as conn:
            await conn.execute(
                insert,
                {
                    "uid": "a",
                    "email": "x@acme.es",
                    "phone": "+34612345678",
                    "others": "y@acme.es",
                    "phones": "+34699000111",
                    "erased": None,
                    "folded": "acme x acme es",
                    "now": now,
                },
            )
            await conn.execute(
                insert,
                {
                    "uid": "b",
                    "email": None,
                    "phone": None,
                    "others": None,
                    "phones": None,
                    "erased": now,
                    "folded": "",
                    "now": now,
                },
            )
        await upgrade(db)
        async with db.engine.connect() as conn:
            rows = [tuple(row) for row in (await conn.execute(read)).all()]
        assert rows == [
            ("a", "acme x acme es 34612345678 y acme es 34699000111 xacmees yacmees"),
            ("b", ""),
        ]
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0014"))
        async with db.engine.connect() as conn:
            rows = [tuple(row) for row in (await conn.execute(read)).all()]
        assert rows == [("a", "acme x acme es xacmees"), ("b", "")]
    finally:
        await db.dispose()

"""A lead's other emails and phones are match keys: an arrival with one of them is the
lead's exact duplicate, as with its own (both databases, single leads and batches)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from cauce.core.db import create_database
from cauce.core.db.migrate import alembic_config, upgrade
from cauce.leads.matching.blocking import keys_of
from cauce.leads.matching.compare import bits_needed, compare_features
from cauce.leads.matching.plan import MAX_OTHER_CONTACTS, other_contacts
from cauce.leads.matching.record import MatchRecord, prepare
from cauce.leads.matching.screen import Screen
from cauce.leads.matching.settings import DedupeSettings
from tests.conftest import make_settings
from tests.leads.api_client import JOSE as GUIDE_JOSE
from tests.leads.api_client import post_lead

JOSE = {**GUIDE_JOSE, "phone": "+34 954 12 34 56"}
# The same person from his personal address and mobile: a fuzzy match, merged.
PEPE = {
    "first_name": "Pepe",
    "last_name": "Fernandez Ruiz",
    "company": "Aceitunas del Sur",
    "city": "Sevilla",
    "email": "jfr2@hotmail.com",
    "phone": "+34 612 34 56 78",
}


# --- matching ---------------------------------------------------------------------------


def test_other_contacts_lists_what_a_merge_did_not_keep() -> None:
    """The arrival's email and phone join the list when they are not the lead's own (by
    match key: Gmail dots do not count), once each, first come first, at most ten."""
    lead = {"email": "jose@acme.es", "phone": None, "other_emails": None}
    arrival = {"email": "j.f.r@gmail.com", "phone": "+34612345678"}
    # The phone fills the lead's empty one: it is the lead's own, not another.
    merged = {**lead, "phone": "+34612345678"}
    assert other_contacts(lead, merged, arrival) == {"other_emails": "j.f.r@gmail.com"}
    again = {**merged, "other_emails": "j.f.r@gmail.com"}
    assert other_contacts(again, again, {"email": "jfr@gmail.com"}) == {}
    assert other_contacts(again, again, {"email": "jose@acme.es"}) == {}
    assert other_contacts(again, again, {"phone": "+34699000111"}) == {
        "other_phones": "+34699000111"
    }
    full = {"email": "a@a.es", "other_emails": " ".join(f"{i}@b.es" for i in range(10))}
    assert MAX_OTHER_CONTACTS == 10
    assert other_contacts(full, full, {"email": "new@b.es"}) == {}
    # A merge that overwrites the email (`overwrite_fields`) keeps the old one as another.
    overwritten = {**lead, "email": "nuevo@acme.es"}
    assert other_contacts(lead, overwritten, {"email": "nuevo@acme.es"}) == {
        "other_emails": "jose@acme.es"
    }


def test_another_email_or_phone_of_the_lead_is_an_exact_match() -> None:
    """An arrival with one of the lead's other emails is a duplicate outright (rule
    `same_email`), both ways round; a phone too, unless the names are two people's. The
    keys file the lead under them, and the screen lets the pair through."""
    dedupe = DedupeSettings()
    stored = prepare(
        MatchRecord(
            email="jose@aceitunasdelsur.es",
            phone="+34954123456",
            first_name="José",
            last_names="Fernández Ruiz",
            other_emails=("jfr2@hotmail.com",),
            other_phones=("+34612345678",),
        )
    )
    assert {"e:jfr2@hotmail.com", "p:+34612345678"} <= keys_of(stored)
    by_email = prepare(MatchRecord(email="JFR2@hotmail.com", first_name="Pepito"))
    for a, b in ((by_email, stored), (stored, by_email)):
        decision = compare_features(a, b, dedupe)
        assert (decision.rule, decision.score) == ("same_email", 1.0)
    assert "same mailbox as another of the lead's" in "\n".join(decision.explain())
    assert Screen(by_email, True, bits_needed(0.5)).admits(stored)
    by_phone = prepare(MatchRecord(phone="+34 612 345 678", first_name="José"))
    assert compare_features(by_phone, stored, dedupe).rule == "same_phone"
    assert Screen(by_phone, True, bits_needed(0.5)).admits(stored)
    stranger = prepare(
        MatchRecord(phone="+34612345678", first_name="Lucía", last_names="Olmedo Sanz")
    )
    assert compare_features(stranger, stored, dedupe).rule is None
    # Without the other contacts the first arrival is a stranger.
    plain = prepare(MatchRecord(email="jose@aceitunasdelsur.es", first_name="José"))
    assert compare_features(by_email, plain, dedupe).score < dedupe.review_threshold


def test_a_shared_mailbox_is_not_another_contact_and_names_guard_the_rest() -> None:
    """`info@` (a team's) never joins a lead's other contacts; and another contact the
    lead does list decides a match only when the names are not two people's, as a
    shared phone does: it is then strong evidence, not a rule."""
    lead = {"email": "jose@acme.es"}
    assert other_contacts(lead, lead, {"email": "Info@acme.es"}) == {}
    assert other_contacts(lead, lead, {"email": "ventas+web@acme.es"}) == {}
    dedupe = DedupeSettings()
    stored = prepare(
        MatchRecord(
            email="jose@acme.es",
            first_name="José",
            last_names="Fernández Ruiz",
            other_emails=("oficina.sevilla@acme.es",),
        )
    )
    ana = prepare(
        MatchRecord(email="oficina.sevilla@acme.es", first_name="Ana", last_names="Olmedo Sanz")
    )
    decision = compare_features(ana, stored, dedupe)
    assert decision.rule is None
    assert decision.score < dedupe.merge_threshold
    assert Screen(ana, True, bits_needed(0.5)).admits(stored)
    # Without an own email (a PATCH cleared it) the other ones are neither keys nor
    # compared.
    bare = prepare(MatchRecord(phone="+34600000001", other_emails=("pepe@x.es",)))
    assert not any(key.startswith("e:") for key in keys_of(bare))
    assert compare_features(prepare(MatchRecord(email="pepe@x.es")), bare, dedupe).rule is None


_emails = st.sampled_from(["a@x.es", "b@x.es", "c@gmail.com", "c.@gmail.com", "d@y.es"])
_phones = st.sampled_from(["+34600000001", "+34600000002", "+34600000003"])


@st.composite
def _records(draw: st.DrawFn) -> MatchRecord:
    return MatchRecord(
        email=draw(st.none() | _emails),
        phone=draw(st.none() | _phones),
        first_name=draw(st.sampled_from([None, "José", "Pepe", "Lucía"])),
        last_names=draw(st.sampled_from([None, "Fernández Ruiz", "Olmedo"])),
        other_emails=tuple(draw(st.lists(_emails, max_size=2))),
        other_phones=tuple(draw(st.lists(_phones, max_size=2))),
    )


@settings(max_examples=300, deadline=None)
@given(_records(), _records())
def test_other_contacts_keep_comparison_symmetric_and_screen_exact(
    a: MatchRecord, b: MatchRecord
) -> None:
    """With other contacts on either side, score(a, b) == score(b, a), and the screen
    never rules out a pair that scores at or above its floor."""
    dedupe = DedupeSettings()
    fa, fb = prepare(a), prepare(b)
    ab, ba = compare_features(fa, fb, dedupe), compare_features(fb, fa, dedupe)
    assert (ab.score, ab.rule) == (ba.score, ba.rule)
    for floor in (0.5, 0.9):
        if ab.score >= floor:
            assert Screen(fa, True, bits_needed(floor)).admits(fb)


# --- the API, both databases --------------------------------------------------------------


async def test_a_merge_keeps_the_contacts_the_arrival_brought(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A fuzzy duplicate with its own email and phone is merged into the stored lead,
    which keeps its own: the arrival's are kept with its source and shown as the lead's
    other contacts (a phone fills the lead's empty one), and erasure removes them."""
    first = await post_lead(api, {name: v for name, v in JOSE.items() if name != "phone"})
    second = await post_lead(api, PEPE)
    assert second["id"] == first["id"]
    lead = (await api.get(f"/v1/leads/{first['id']}")).json()
    assert lead["email"] == "jose@aceitunasdelsur.es"
    assert lead["phone"] == "+34612345678"  # filled: the lead had none
    assert (lead["other_emails"], lead["other_phones"]) == (["jfr2@hotmail.com"], [])
    assert (await api.delete(f"/v1/leads/{first['id']}")).status_code == 204
    factory = leads_app.state.resources.db.sessionmaker
    async with factory() as session:
        kept = (await session.execute(text("SELECT email, phone FROM lead_sources"))).all()
    assert [tuple(row) for row in kept] == [(None, None), (None, None)]


async def test_an_arrival_with_another_email_of_a_lead_merges_into_it(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """José's personal address came with a fuzzy duplicate; an arrival with only that
    address (or only that mobile) and a name typed otherwise is the same lead, matched by
    email (phone). Before, it was a new lead. The merge's history says what was added,
    and erasure takes the keys away."""
    first = await post_lead(api, JOSE)
    second = await post_lead(api, PEPE)
    assert (second["id"], second["duplicate"]["match"]) == (first["id"], "fuzzy")
    by_email = await post_lead(api, {"email": "jfr2@hotmail.com", "first_name": "J."})
    assert by_email["outcome"] == "merged"
    assert by_email["id"] == first["id"]
    assert by_email["duplicate"]["match"] == "email"
    by_phone = await post_lead(api, {"phone": "612 345 678", "company": "Aceitunas del Sur"})
    assert (by_phone["id"], by_phone["duplicate"]["match"]) == (first["id"], "phone")
    lead = (await api.get(f"/v1/leads/{first['id']}")).json()
    assert (lead["other_emails"], lead["other_phones"]) == (["jfr2@hotmail.com"], ["+34612345678"])
    merges = [line for line in lead["history"] if line["action"] == "merged"]
    assert merges[-1]["changes"]["added"] == ["other_emails", "other_phones"]  # PEPE's
    assert (await api.delete(f"/v1/leads/{first['id']}")).status_code == 204
    factory = leads_app.state.resources.db.sessionmaker
    async with factory() as session:
        row = (await session.execute(text("SELECT other_emails, other_phones FROM leads"))).one()
    assert tuple(row) == (None, None)
    again = await post_lead(api, {"email": "jfr2@hotmail.com", "first_name": "José"})
    assert (again["outcome"], again["duplicate"]) == ("created", None)


async def test_a_batch_matches_another_email_filed_by_an_earlier_item(
    api: httpx.AsyncClient,
) -> None:
    """In one batch: José, his fuzzy duplicate with a personal address, then that address
    alone. The third item merges into the lead the first created, as it would arriving
    after them; a later single lead finds the stored key."""
    items = [JOSE, PEPE, {"email": "jfr2@hotmail.com", "first_name": "Pepe"}]
    response = await api.post("/v1/leads/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["items"]
    assert [r["outcome"] for r in results] == ["created", "merged", "merged"]
    assert {r["id"] for r in results} == {results[0]["id"]}
    assert results[2]["duplicate"]["match"] == "email"
    later = await post_lead(api, {"email": "jfr2@hotmail.com"})
    assert (later["id"], later["duplicate"]["match"]) == (results[0]["id"], "email")


async def test_a_shared_mailbox_brought_by_a_merge_pulls_nobody_in(
    api: httpx.AsyncClient,
) -> None:
    """Pepe merges into José with the company's `info@`: that address is not José's, so
    Ana, arriving with it, is a lead of her own."""
    first = await post_lead(api, JOSE)
    pepe = await post_lead(api, {**PEPE, "email": "info@aceitunasdelsur.es"})
    assert pepe["id"] == first["id"]
    ana = await post_lead(
        api,
        {"first_name": "Ana", "last_name": "Olmedo Sanz", "email": "info@aceitunasdelsur.es"},
    )
    assert (ana["outcome"], ana["duplicate"]) == ("created", None)


async def test_a_patch_keeps_the_old_email_as_another_and_drops_the_new_one(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A PATCH to another email keeps the old one among the other contacts (an arrival
    with it is still the lead's), and a PATCH to one of the other emails takes it out of
    the list; a PATCH that clears the email keeps nothing of it."""
    first = await post_lead(api, JOSE)
    await post_lead(api, PEPE)  # jfr2@hotmail.com becomes another email
    uid = first["id"]

    async def others() -> tuple[Any, ...]:
        factory = leads_app.state.resources.db.sessionmaker
        async with factory() as session:
            row = await session.execute(
                text("SELECT other_emails, other_phones FROM leads WHERE uid = :uid"),
                {"uid": uid},
            )
            return tuple(row.one())

    patched = await api.patch(f"/v1/leads/{uid}", json={"email": "jfr2@hotmail.com"})
    assert patched.status_code == 200, patched.text
    assert (await others())[0] == "jose@aceitunasdelsur.es"
    old = await post_lead(api, {"email": "jose@aceitunasdelsur.es"})
    assert (old["id"], old["duplicate"]["match"]) == (uid, "email")
    patched = await api.patch(f"/v1/leads/{uid}", json={"phone": "+34 699 000 111"})
    assert patched.status_code == 200, patched.text
    assert await others() == ("jose@aceitunasdelsur.es", "+34612345678 +34954123456")
    cleared = await api.patch(f"/v1/leads/{uid}", json={"email": None})
    assert cleared.status_code == 200, cleared.text
    assert await others() == ("jose@aceitunasdelsur.es", "+34612345678 +34954123456")
    alone = await post_lead(api, {"email": "jose@aceitunasdelsur.es", "first_name": "Lucía"})
    assert alone["outcome"] == "created"


async def test_migration_0010_files_the_other_contacts_of_stored_leads(
    empty_database_url: str, tmp_path: Path
) -> None:
    """Leads merged before 0010 get their arrivals' other emails and phones listed and
    filed as keys (an erased lead's stay empty)."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    lead = text(
        "INSERT INTO leads (uid, email, phone, erased_at, status, source, score, score_model,"
        " version, sync_status, synced_version, sync_attempts, email_disposable, email_free,"
        " utm, custom_fields, score_reasons, match_keys, search_text, created_at, updated_at)"
        " VALUES (:uid, :email, :phone, :erased, 'new', 'api', 0, 'points', 1, 'pending', 0,"
        " 0, false, false, '{}', '{}', '[]', '[]', '', :now, :now)"
    )
    source = text(
        "INSERT INTO lead_sources (lead_id, source, email, phone, utm, received_at)"
        " SELECT id, 'api', :email, :phone, '{}', :now FROM leads WHERE uid = :uid"
    )
    now = datetime.now(UTC)
    try:
        await upgrade(db, "0009")
        async with db.engine.begin() as conn:
            for uid, erased in (("a", None), ("b", now)):
                await conn.execute(
                    lead,
                    {
                        "uid": uid,
                        "email": "jose@acme.es",
                        "phone": None,
                        "erased": erased,
                        "now": now,
                    },
                )
                for email, phone in (
                    ("jose@acme.es", None),
                    ("jfr2@hotmail.com", "+34612345678"),
                    ("j.f.r2@hotmail.com", None),
                    ("pepe@gmail.com", "+34612345678"),
                ):
                    await conn.execute(
                        source, {"uid": uid, "email": email, "phone": phone, "now": now}
                    )
        await upgrade(db)
        async with db.engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT uid, other_emails, other_phones FROM leads"))
            ).all()
            keys = (
                await conn.execute(
                    text(
                        "SELECT k.key FROM lead_match_keys AS k JOIN leads AS l"
                        " ON l.id = k.lead_id WHERE l.uid = 'a' ORDER BY k.key"
                    )
                )
            ).scalars()
            filed = list(keys)
        assert sorted(tuple(row) for row in rows) == [
            ("a", "jfr2@hotmail.com j.f.r2@hotmail.com pepe@gmail.com", "+34612345678"),
            ("b", None, None),
        ]
        assert filed == [
            "e:j.f.r2@hotmail.com",
            "e:jfr2@hotmail.com",
            "e:pepe@gmail.com",
            "p:+34612345678",
        ]
        # Down again: the other contacts' keys go, and (SQLite) no row goes with them.
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0009"))
        async with db.engine.connect() as conn:
            counts = await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM lead_sources), (SELECT count(*) FROM"
                    " lead_match_keys WHERE key LIKE 'e:j%' OR key LIKE 'p:%')"
                )
            )
            assert tuple(counts.one()) == (8, 0)
    finally:
        await db.dispose()

# ruff: noqa: RUF001, RUF003  (Greek, Cyrillic and full-width letters are the point here)
"""The same requests answer the same on SQLite and PostgreSQL (an audit ran them against
both): a lead's `duplicates` in arrival order, an `updated` history line's fields in one
order in every process, a too-big key's first members by id, and `q` in Cyrillic or Greek
found without regard to case or accents, whatever PostgreSQL's locale."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import unicodedata
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import literal, select, text, update

from cauce.app import Resources
from cauce.core.db import create_database, unit_of_work
from cauce.core.db.text_fold import _RANGES, contains_folded, fold_char, fold_text
from cauce.leads import repository as repo
from cauce.leads.models import Lead, LeadMatchKey
from tests.conftest import make_settings
from tests.leads.api_client import post_lead


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@empresa.es"


def _resources(app: FastAPI) -> Resources:
    resources: Resources = app.state.resources
    return resources


async def _ids(app: FastAPI, uids: list[str]) -> dict[str, int]:
    async with _resources(app).db.sessionmaker() as session:
        rows = await session.execute(select(Lead.uid, Lead.id).where(Lead.uid.in_(uids)))
        return {uid: lead_id for uid, lead_id in rows.all()}


async def test_a_leads_duplicates_are_listed_in_arrival_order(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """`duplicates` of `GET /v1/leads/{id}` lists the leads held against it oldest
    first, also after one of them changed (PostgreSQL then stores its row elsewhere)."""
    main = (await post_lead(api, {"email": _email(), "first_name": "Ana"}))["id"]
    held = [(await post_lead(api, {"email": _email()}))["id"] for _ in range(3)]
    ids = await _ids(leads_app, [main, *held])
    # Held directly: the order shown is under test here, not the matching.
    async with unit_of_work(_resources(leads_app).db.sessionmaker) as session:
        await session.execute(
            update(Lead)
            .where(Lead.uid.in_(held))
            .values(possible_duplicate_of=ids[main], sync_status="held")
        )
    patched = await api.patch(f"/v1/leads/{held[0]}", json={"job_title": "Gerente"})
    assert patched.status_code == 200, patched.text
    body = (await api.get(f"/v1/leads/{main}")).json()
    assert [d["lead_id"] for d in body["duplicates"]] == held
    assert all(d["held_for_review"] for d in body["duplicates"])


# Sent in an order of its own; the history line names them in the order LeadPatch
# declares its fields.
PATCH_BODY = {
    "city": "Bilbao",
    "job_title": "CTO",
    "company": "Zubi S.L.",
    "last_name": "Zubizarreta",
    "first_name": "Iker",
    "status": "working",
}
PATCHED_FIELDS = ["status", "first_name", "last_name", "company", "job_title", "city"]


async def test_an_updated_history_line_lists_its_fields_in_the_declared_order(
    api: httpx.AsyncClient,
) -> None:
    """A PATCH's `updated` line names the fields it changed in `LeadPatch`'s order, not in
    the order they were sent (nor a set's)."""
    lead = (await post_lead(api, {"email": _email(), "first_name": "Ana"}))["id"]
    patched = await api.patch(f"/v1/leads/{lead}", json=PATCH_BODY)
    assert patched.status_code == 200, patched.text
    history = (await api.get(f"/v1/leads/{lead}")).json()["history"]
    assert history[0]["action"] == "updated"
    assert history[0]["changes"]["fields"] == PATCHED_FIELDS


def test_a_patchs_changes_come_in_one_order_in_every_process() -> None:
    """`LeadPatch.changes()` keeps one order whatever a process's string hashes (a set of
    names iterated would come out in another order from one process to the next)."""
    code = (
        "import sys, orjson\n"
        "from cauce.leads.schemas import LeadPatch\n"
        "print(','.join(LeadPatch.model_validate(orjson.loads(sys.argv[1])).changes()))\n"
    )
    seen: set[str] = set()
    for seed in ("0", "1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-c", code, orjson.dumps(PATCH_BODY).decode()],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        seen.add(done.stdout.strip())
    assert seen == {",".join(PATCHED_FIELDS)}


async def test_a_key_with_more_members_than_the_cap_gives_its_lowest_ids(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A key filed under more leads than the cap yields the `cap` lowest lead ids, however
    its rows were stored (here, highest id first)."""
    uids = [(await post_lead(api, {"email": _email()}))["id"] for _ in range(8)]
    ids = sorted((await _ids(leads_app, uids)).values())
    key = "e:shared@parity.test"
    async with unit_of_work(_resources(leads_app).db.sessionmaker) as session:
        for lead_id in reversed(ids):
            session.add(LeadMatchKey(lead_id=lead_id, key=key))
    # With statistics saying the key is most of the table, PostgreSQL reads it by a scan
    # of the table (rows in storage order), not its index (rows by id).
    async with _resources(leads_app).db.engine.begin() as conn:
        await conn.execute(text("ANALYZE lead_match_keys"))
    async with _resources(leads_app).db.sessionmaker() as session:
        found = await repo.key_members(session, [key], cap=3)
    assert sorted(found.members[key]) == ids[:3]
    assert not found.too_common


SOCRATES = {"first_name": "Σωκράτης", "last_name": "ΠΑΠΑΔΌΠΟΥΛΟΣ", "email": "sokratis@parity.gr"}
ZHENYA = {"first_name": "Женя", "last_name": "Иванова", "email": "zhenya@parity.ru"}
# Upper case kept (a company is not re-cased): its final Σ folds as σ, as ς does.
COMPANY = {"company": "ΠΑΠΑΔΌΠΟΥΛΟΣ Α.Ε.", "email": "info@parity.gr"}
LATIN = {"first_name": "María", "last_name": "García", "email": "maria@parity.es"}


async def _found(api: httpx.AsyncClient, q: str) -> set[str]:
    response = await api.get("/v1/leads", params={"q": q})
    assert response.status_code == 200, response.text
    return {item["email"] for item in response.json()["items"]}


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("женя", {ZHENYA["email"]}),
        ("ЖЕНЯ", {ZHENYA["email"]}),
        ("Иванов", {ZHENYA["email"]}),
        ("σωκράτης", {SOCRATES["email"]}),
        ("ΣΩΚΡΆΤΗΣ", {SOCRATES["email"]}),
        ("παπαδόπουλος", {SOCRATES["email"], COMPANY["email"]}),
        ("παπαδοπουλος", {SOCRATES["email"], COMPANY["email"]}),  # accents aside
        ("ΠΑΠΑΔΟΠΟΥΛΟΣ", {SOCRATES["email"], COMPANY["email"]}),
        ("α.ε.", {COMPANY["email"]}),
        ("@", {lead["email"] for lead in (SOCRATES, ZHENYA, COMPANY, LATIN)}),
        ("ivanova", set()),  # Latin letters: the words of search_text, which keeps none
        # Each word on its own: a first and a last name, two scripts (left alone by the
        # helper that fixed the rest, done then).
        ("Женя Иванова", {ZHENYA["email"]}),
        ("Женя zhenya", {ZHENYA["email"]}),
        ("Женя maria", set()),
        ("σωκράτης Α.Ε.", set()),
    ],
)
async def test_q_in_another_script_finds_the_same_leads_on_both_databases(
    api: httpx.AsyncClient, q: str, expected: set[str]
) -> None:
    """`q` without a Latin letter or digit (Cyrillic, Greek) finds its leads regardless of
    case and accents, as on PostgreSQL under any locale so on SQLite."""
    for lead in (SOCRATES, ZHENYA, COMPANY, LATIN):
        await post_lead(api, lead)
    assert await _found(api, q) == expected


async def test_the_export_finds_a_cyrillic_name(api: httpx.AsyncClient) -> None:
    """`GET /v1/leads/export.csv?q=женя` has her row, and no other."""
    for lead in (SOCRATES, ZHENYA, LATIN):
        await post_lead(api, lead)
    response = await api.get("/v1/leads/export.csv", params={"q": "женя"})
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"), newline="")))
    assert [(row["email"], row["first_name"]) for row in rows] == [(ZHENYA["email"], "Женя")]


def test_fold_text_folds_one_character_to_one() -> None:
    """The fold maps each character to one (PostgreSQL matches position for position),
    and folding again changes nothing."""
    sample = "Женя ЁЛКА Σωκράτης ΠΑΠΑΔΌΠΟΥΛΟΣ ς İstanbul Straße ﬁ ǅ ÅNGSTRÖM ＠ 東京"
    folded = fold_text(sample)
    assert folded == "женя елка σωκρατησ παπαδοπουλοσ σ istanbul straße ﬁ ǆ angstrom @ 東京"
    assert fold_text(folded) == folded


def test_the_planes_the_fold_table_skips_have_nothing_to_fold() -> None:
    """Outside the table's ranges every character is unassigned or private use, which
    the fold leaves as it is (a newer Unicode assigning one there fails this)."""
    points = range(0x110000)
    skipped = (p for p in points if not any(start <= p < stop for start, stop in _RANGES))
    assigned = [p for p in skipped if unicodedata.category(chr(p)) not in ("Cn", "Co")]
    assert assigned == []
    assert fold_char("\U000f0041") == "\U000f0041"


# (stored text, searched text): the database must agree with Python's fold.
FOLD_CASES = [
    ("ΠΑΠΑΔΌΠΟΥΛΟΣ Α.Ε.", "παπαδόπουλος"),
    ("Παπαδόπουλος", "ΠΑΠΑΔΟΠΟΥΛΟΣ"),
    ("Σωκράτης", "σωκράτησ"),
    ("ЁЛКА", "елка"),
    ("Grüße", "GRÜSSE"),  # ß folds to itself: "ss" is two characters
    ("Grüße", "ÜSS"),
    ("ǅemal", "ǆ"),
    ("𝐀𝐁𝐂", "αβγ"),
    ("a(b)[c]{d}.*+?^$|\\e", "(b)[c]{d}.*+?^$|\\"),
    ("a.b", ".b"),
    ("axb", ".b"),
    ("100%_x", "%_"),
    ("100ab", "%_"),
    ("ＡＢ＠", "@"),
    ("Ş-Ğ", "ş-ğ"),
    ("東京", "京"),
    (None, "@"),
]


async def test_the_databases_fold_as_python_does(backend: str, database_url: str) -> None:
    """`contains_folded` answers on each database what Python's fold says: case and
    accents aside, every other character literally (no pattern or regex syntax)."""
    db = create_database(make_settings(Path(".")), url=database_url)
    try:
        async with db.engine.connect() as conn:
            for stored, wanted in FOLD_CASES:
                found = await conn.scalar(
                    select(contains_folded(literal(stored), wanted, db.dialect))
                )
                folded = fold_text(stored)
                expected = folded is not None and (fold_text(wanted) or "") in folded
                assert bool(found) is expected, (stored, wanted)
    finally:
        await db.dispose()

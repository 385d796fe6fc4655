"""Phone extensions are stored: a phone sent with one (`+34 91 123 45 67 ext. 123`) keeps
its E.164 number in `phone` and the extension's digits in `phone_extension`, through the
API, batches, merges, PATCH, CSV import and export, and erasure (both databases).

Before, such a phone was refused with its lead (E.164 has no place for an extension),
and before that the extension was dropped without a word.
"""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, inspect, text

from cauce.core.db import create_database
from cauce.core.db.migrate import alembic_config, upgrade
from cauce.core.jobs.factory import JobWorker
from cauce.leads.errors import NormalisationError
from cauce.leads.phones import normalise_extension, normalise_phone, split_extension
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_batch import validate_lead
from tests.conftest import make_settings
from tests.leads.import_client import error_report, import_csv
from tests.leads.stored_rows import insert_stored_lead

# Every way phonenumbers recognises an extension after a number.
MARKERS = st.sampled_from(
    [" ext. ", " ext ", " x", " x ", " #", ";ext=", " extension ", " anexo ", " ext.", " Ext "]
)
SPANISH_MOBILES = st.integers(600_000_000, 699_999_999).map(str)


@given(SPANISH_MOBILES, st.sampled_from(["", "+34 ", "0034"]), MARKERS, st.integers(1, 99_999))
@settings(deadline=None)
@example("612345679", "+34 ", " ext. ", 123)
def test_a_phone_with_an_extension_keeps_it(
    number: str, prefix: str, marker: str, extension: int
) -> None:
    """Whatever the marker, the number becomes E.164 and the extension follows it in RFC
    3966's form; normalising again changes nothing, and the two parts split apart."""
    try:
        alone = normalise_phone(prefix + number, "ES")
    except NormalisationError:
        return  # not a valid number to begin with
    with_extension = normalise_phone(f"{prefix}{number}{marker}{extension}", "ES")
    assert with_extension == f"{alone};ext={extension}"
    assert normalise_phone(with_extension, "ES") == with_extension
    assert split_extension(with_extension) == (alone, str(extension))
    assert split_extension(alone) == (alone, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123", "123"),
        (" 12 34 ", "1234"),
        ("1-2-3", "123"),
        ("0", "0"),
        ("ext. 12", "12"),
        ("Extensión 7", "7"),
        ("anexo 44", "44"),
        ("x12", "12"),
        ("#5", "5"),
    ],
)
def test_an_extension_sent_alone_is_its_digits(raw: str, expected: str) -> None:
    """Digits, after an optional marker as a spreadsheet's `Extensión` column may hold."""
    assert normalise_extension(raw) == expected


@pytest.mark.parametrize(
    "raw", ["12a", "ext", "n/a", "12.0", "1x2", "12345678901", "\u0661\u0662\u0663", "-"]
)
def test_an_extension_that_is_not_digits_is_refused(raw: str) -> None:
    """Anything but digits after the marker is refused (`12.0` too: a spreadsheet's
    number, which may have lost a leading zero), saying what an extension is."""
    with pytest.raises(NormalisationError) as info:
        normalise_extension(raw)
    assert info.value.code == "phone_extension_invalid"
    assert info.value.reason == "is 1 to 10 digits, optionally after `ext.`"


def _lead(**fields: Any) -> LeadIn:
    outcome = validate_lead(fields)
    assert isinstance(outcome, LeadIn), outcome
    return outcome


def _refusal(**fields: Any) -> list[tuple[str, str]]:
    outcome = validate_lead(fields)
    assert not isinstance(outcome, LeadIn)
    return [(e["pointer"], e["type"]) for e in outcome]


def test_the_schema_parts_number_and_extension() -> None:
    """In `phone` or in `phone_extension`, or both when they agree; an extension needs a
    number, and two that disagree, or one too long, are refused at their field."""
    lead = _lead(phone="+34 91 123 45 67 ext. 123")
    assert (lead.phone, lead.phone_extension) == ("+34911234567", "123")
    lead = _lead(phone="91 123 45 67", phone_extension=" 45 ")
    assert (lead.phone, lead.phone_extension) == ("+34911234567", "45")
    lead = _lead(phone="91 123 45 67 x45", phone_extension="45")
    assert (lead.phone, lead.phone_extension) == ("+34911234567", "45")
    assert _lead(email="ana@empresa.es", phone_extension="  ").phone_extension is None
    assert _refusal(phone="91 123 45 67 x45", phone_extension="46") == [
        ("/phone_extension", "phone_extension_mismatch")
    ]
    # A web form's empty extension field beside a phone written with one says nothing.
    for empty in ("", "  ", None):
        lead = _lead(phone="91 123 45 67 x45", phone_extension=empty)
        assert (lead.phone, lead.phone_extension) == ("+34911234567", "45")
    assert _refusal(email="ana@empresa.es", phone_extension="46") == [
        ("/phone_extension", "phone_required")
    ]
    assert _refusal(phone="91 123 45 67", phone_extension="4x") == [
        ("/phone_extension", "phone_extension_invalid")
    ]
    assert _refusal(phone="91 123 45 67 ext 12345678901") == [("/phone", "phone_invalid")]


# --- through the API, on both databases ---------------------------------------------------


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@empresa.es"


async def _get(api: httpx.AsyncClient, uid: str) -> dict[str, Any]:
    response = await api.get(f"/v1/leads/{uid}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _post(api: httpx.AsyncClient, lead: dict[str, Any], status: int) -> dict[str, Any]:
    response = await api.post("/v1/leads", json=lead)
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_lead_and_a_batch_keep_their_extensions(api: httpx.AsyncClient) -> None:
    """A lead keeps its extension; a batch item does too, and one whose two extensions
    disagree is refused on its own, at its `phone_extension`."""
    created = await _post(api, {"email": _email(), "phone": "+34 91 123 45 67 ext. 123"}, 201)
    lead = await _get(api, created["id"])
    assert (lead["phone"], lead["phone_extension"]) == ("+34911234567", "123")
    batch = await api.post(
        "/v1/leads/batch",
        json={
            "items": [
                {"email": _email(), "phone": "912 345 678", "phone_extension": "7"},
                {"email": _email(), "phone": "912 345 679 x8", "phone_extension": "9"},
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["items"]
    assert (await _get(api, first["id"]))["phone_extension"] == "7"
    assert [(e["pointer"], e["type"]) for e in second["errors"]] == [
        ("/items/1/phone_extension", "phone_extension_mismatch")
    ]


async def test_a_merge_moves_an_extension_only_with_its_number(api: httpx.AsyncClient) -> None:
    """The arrival's extension fills the lead's when both have one number, and comes with
    the number when the merge fills the lead's phone; the extension of another number stays
    with its arrival, and a different one for the same number is kept, not overwritten."""
    email = _email()
    created = await _post(api, {"email": email, "phone": "+34 91 123 45 67"}, 201)
    merged = await _post(api, {"email": email, "phone": "+34911234567 ext 12"}, 200)
    assert merged["duplicate"]["merged_fields"] == ["phone_extension"]
    await _post(api, {"email": email, "phone": "+34 91 765 43 21", "phone_extension": "9"}, 200)
    await _post(api, {"email": email, "phone": "+34911234567", "phone_extension": "13"}, 200)
    lead = await _get(api, created["id"])
    assert (lead["phone"], lead["phone_extension"]) == ("+34911234567", "12")
    # Other numbers are kept with their extensions, as they are keyed (a bare
    # switchboard number would be a key of everyone on it).
    assert lead["other_phones"] == ["+34917654321;ext=9", "+34911234567;ext=13"]
    history = [h["changes"] for h in lead["history"] if h["action"] == "merged"]
    assert [(h["filled"], h["overwritten"], h["kept"]) for h in reversed(history)] == [
        (["phone_extension"], [], []),
        ([], [], ["phone"]),  # the other number, and its extension, stay with the arrival
        ([], [], ["phone_extension"]),
    ]

    other = _email()
    no_phone = await _post(api, {"email": other}, 201)
    await _post(api, {"email": other, "phone": "+34 91 123 45 68 ext. 5"}, 200)
    lead = await _get(api, no_phone["id"])
    assert (lead["phone"], lead["phone_extension"]) == ("+34911234568", "5")


async def test_colleagues_on_one_switchboard_are_not_one_lead(api: httpx.AsyncClient) -> None:
    """Two people on one number with extensions of their own, nothing else shared, are
    two leads: the extension makes each phone its own. The same number and extension
    again is the same phone, an exact match."""
    number = "+34 91 123 45 67"
    first = await _post(api, {"email": _email(), "phone": f"{number} ext 101"}, 201)
    second = await _post(api, {"email": _email(), "phone": f"{number} ext 202"}, 201)
    assert first["id"] != second["id"]
    again = await _post(api, {"email": _email(), "phone": number, "phone_extension": "101"}, 200)
    assert (again["id"], again["duplicate"]["match"]) == (first["id"], "phone")


async def test_patch_keeps_an_extension_with_its_number(api: httpx.AsyncClient) -> None:
    """A PATCH sets or clears the extension; a new number without one clears it; an
    extension without a number is refused."""
    created = await _post(api, {"email": _email(), "phone": "+34 91 123 45 67 ext. 123"}, 201)
    uid = created["id"]

    async def patch(changes: dict[str, Any], status: int = 200) -> dict[str, Any]:
        response = await api.patch(f"/v1/leads/{uid}", json=changes)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        return body

    assert (await patch({"phone_extension": "45"}))["phone_extension"] == "45"
    # A new number without an extension: the old number's extension goes.
    moved = await patch({"phone": "+34 91 765 43 21"})
    assert (moved["phone"], moved["phone_extension"]) == ("+34917654321", None)
    moved = await patch({"phone": "+34 91 765 43 21 ext 6"})
    assert (moved["phone"], moved["phone_extension"]) == ("+34917654321", "6")
    cleared = await patch({"phone": None})
    assert (cleared["phone"], cleared["phone_extension"]) == (None, None)
    refused = await patch({"phone_extension": "7"}, 422)
    assert [(e["pointer"], e["type"]) for e in refused["errors"]] == [
        ("/phone_extension", "phone_required")
    ]
    assert (await _get(api, uid))["phone_extension"] is None


async def test_patch_to_another_leads_phone_and_extension_is_refused(
    api: httpx.AsyncClient,
) -> None:
    """A PATCH giving a lead another lead's number and extension is a 409 (intake would
    have merged them); the same number with an extension of its own is another phone."""
    number = "+34 91 123 45 67"
    await _post(api, {"email": _email(), "phone": f"{number} ext 101"}, 201)
    other = await _post(api, {"email": _email()}, 201)
    taken = await api.patch(f"/v1/leads/{other['id']}", json={"phone": f"{number} ext 101"})
    assert taken.status_code == 409, taken.text
    assert taken.json()["code"] == "lead_duplicate"
    own = await api.patch(f"/v1/leads/{other['id']}", json={"phone": f"{number} ext 102"})
    assert own.status_code == 200, own.text
    assert (own.json()["phone"], own.json()["phone_extension"]) == ("+34911234567", "102")


async def test_csv_import_and_export_carry_extensions(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """A Spanish `Extensión` column, or the extension written in the phone, is imported;
    a disagreement is a row error naming the column; the export has the column last."""
    emails = [_email() for _ in range(3)]
    data = (
        "Email;Teléfono;Extensión\r\n"
        f"{emails[0]};91 123 45 67;12\r\n"
        f"{emails[1]};91 123 45 68 ext. 34;\r\n"
        f"{emails[2]};91 123 45 69 ext. 34;35\r\n"
    ).encode("cp1252")
    status = await import_csv(api, worker, data)
    assert (status["rows_created"], status["rows_rejected"]) == (2, 1)
    assert await error_report(api, status) == [
        ["row", "column", "field", "reason"],
        [
            "4",
            "Extensión",
            "phone_extension",
            "differs from the extension written in phone: send it in one place",
        ],
    ]
    export = await api.get("/v1/leads/export.csv")
    assert export.status_code == 200, export.text
    rows = list(csv.DictReader(io.StringIO(export.text.lstrip("\ufeff"))))
    columns = list(rows[0])
    assert columns[columns.index("phone_extension") :] == [
        "phone_extension", "team", "duplicate_of", "score_model"
    ]  # fmt: skip
    by_email = {row["email"]: row for row in rows}
    assert by_email[emails[0]]["phone_extension"] == "12"
    assert by_email[emails[1]]["phone_extension"] == "34"
    assert emails[2] not in by_email


async def test_erasure_removes_the_extensions(api: httpx.AsyncClient, leads_app: FastAPI) -> None:
    """Erasure clears the lead's extension and every arrival's."""
    email = _email()
    created = await _post(api, {"email": email, "phone": "+34 91 123 45 67 ext. 123"}, 201)
    await _post(api, {"email": email, "phone": "+34 91 765 43 21 ext. 9"}, 200)
    assert (await api.delete(f"/v1/leads/{created['id']}")).status_code == 204
    async with leads_app.state.resources.db.sessionmaker() as session:
        lead = (
            await session.execute(
                text("SELECT id, phone_extension FROM leads WHERE uid = :uid"),
                {"uid": created["id"]},
            )
        ).one()
        sources = await session.execute(
            text("SELECT phone, phone_extension FROM lead_sources WHERE lead_id = :id"),
            {"id": lead[0]},
        )
        assert lead[1] is None
        assert sources.all() == [(None, None), (None, None)]


# --- the migration ----------------------------------------------------------------------


def _extension_columns(connection: Connection) -> list[str]:
    return [
        table
        for table in ("leads", "lead_sources")
        if "phone_extension" in {c["name"] for c in inspect(connection).get_columns(table)}
    ]


def _downgrade_to_0012(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "0012")


async def test_migration_0013_adds_the_columns_and_its_downgrade_keeps_the_leads(
    empty_database_url: str, tmp_path: Path
) -> None:
    """0013 adds `phone_extension` to leads and their arrivals (stored leads have none);
    its downgrade drops them and keeps every lead, arrival and history line (on SQLite a
    table copy of `leads` would delete its arrivals and history with it)."""
    db = create_database(make_settings(tmp_path), url=empty_database_url)
    try:
        await upgrade(db, "0012")
        async with db.engine.begin() as conn:
            await insert_stored_lead(conn, source_phone="+34911234567")
        await upgrade(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_extension_columns) == ["leads", "lead_sources"]
            stored = await conn.execute(text("SELECT phone_extension FROM lead_sources"))
            assert stored.all() == [(None,)]
        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_0012)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_extension_columns) == []
            counts = [
                await conn.scalar(text(f"SELECT count(*) FROM {table}"))
                for table in ("leads", "lead_sources", "lead_history")
            ]
        assert counts == [1, 1, 1]
    finally:
        await db.dispose()

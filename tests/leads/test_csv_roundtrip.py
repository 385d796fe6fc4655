"""Cauce's own export imports back as it was, without a mapping (both databases): the
columns Cauce computes are ignored, `custom_fields` (JSON) fills the custom fields, and a
file that is not an export is read as before (its `id` fills `external_id`)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from cauce.app import create_app
from cauce.core.db import create_database
from cauce.core.db.migrate import upgrade
from cauce.core.jobs.factory import JobWorker
from cauce.leads.csv_export import EXPORT_COLUMNS, csv_export
from tests.conftest import make_settings
from tests.leads.api_client import JOSE as GUIDE_JOSE
from tests.leads.api_client import post_lead
from tests.leads.import_client import error_report, import_csv
from tests.leads.test_delivery import MemoryCrm

# The export's columns that are Cauce's, not the lead's.
COMPUTED = (
    "id", "score", "is_disposable_email", "is_free_email", "created_at", "updated_at",
    "other_emails", "other_phones", "team", "duplicate_of", "score_model",
)  # fmt: skip
# What the lead API shows that an import cannot carry over: Cauce's id, the score,
# routing, de-duplication and the times (the email flags are compared: they follow the
# email).
NOT_CARRIED = (
    "id", "sources", "score", "score_model", "score_reasons", "team", "duplicate_of",
    "created_at", "updated_at",
)  # fmt: skip

BODEGA = {
    "source": "web_form",
    "status": "qualified",
    "external_id": "HS-1001",
    "first_name": "María José",
    "last_name": "García Núñez",
    "email": "mj.garcia@bodegasriojanas.es",
    "phone": "+34 941 12 34 56",
    "company": "Bodegas Riojanas Ñandú, S.L.",
    "job_title": "Directora de compras",
    "country": "ES",
    "region": "La Rioja",
    "city": "Logroño",
    "language": "es",
    "owner": "lucia.ortega",
    "utm": {"source": "google", "medium": "cpc", "campaign": "vendimia-2025"},
    "consent": {
        "marketing": True,
        "given_at": "2025-03-01T10:15:00+01:00",
        "wording_version": "rgpd-v3",
        "source": "formulario-web",
    },
    "custom_fields": {
        "sector": "Vinos y licores",
        "empleados": 45,
        "cliente_vip": True,
        "nota": '=HYPERLINK("http://malo.example","pulsa")',
    },
}
# A phone-only lead, national number, with cells a spreadsheet would take for formulas.
FORMULAS = {
    "source": "event",
    "first_name": "Íñigo",
    "last_name": "Muñoz",
    "phone": "612 34 56 78",
    "country": "ES",
    "company": "=SUMA(A1:A3)",
    "job_title": "@compras",
    "city": "-3",
    "custom_fields": {"pedido_minimo": "-5%", "descuento": -2.5},
}
JOSE = {**GUIDE_JOSE, "phone": "+34 954 12 34 56", "custom_fields": {"feria": "Alimentaria 2025"}}
# Arrivals merged into José: his personal address and mobile, then another address.
PEPE = {
    "first_name": "Pepe",
    "last_name": "Fernandez Ruiz",
    "company": "Aceitunas del Sur",
    "city": "Sevilla",
    "email": "jfr2@hotmail.com",
    "phone": "+34 612 34 56 78",
}
JOSE_GMAIL = {
    "first_name": "José",
    "last_name": "Fernández Ruiz",
    "email": "jose.fernandez.ruiz@gmail.com",
    "phone": "+34 954 12 34 56",
}


@pytest.fixture
async def source_api(empty_database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A second Cauce, on its own database and data directory, whose leads are exported."""
    (tmp_path / "source").mkdir()
    settings = make_settings(
        tmp_path / "source",
        database_url=empty_database_url,
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
    )
    db = create_database(settings)
    await upgrade(db)
    await db.dispose()
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app):
        key = await app.state.resources.api_keys.create("t", ["leads:read", "leads:write"])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://source.test",
            headers={"Authorization": f"Bearer {key.token}"},
        ) as client:
            yield client


async def _export(api: httpx.AsyncClient) -> bytes:
    response = await api.get("/v1/leads/export.csv")
    assert response.status_code == 200, response.text
    return response.content


def _table(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))


async def _leads(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Every lead, by its email (or phone, without one)."""
    response = await api.get("/v1/leads", params={"limit": 200})
    assert response.status_code == 200, response.text
    return {lead["email"] or lead["phone"]: lead for lead in response.json()["items"]}


async def test_an_export_imports_into_another_cauce_as_it_was(
    source_api: httpx.AsyncClient, api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """Spanish leads (accents, +34 phones, custom fields, formula-like cells, a lead with
    other emails and phones from merges) exported by one Cauce and imported by a fresh
    one without a mapping are the same leads field by field; the computed columns are
    ignored (the status says so), none becomes a custom field, and the other contacts
    are in the export."""
    jose = await post_lead(source_api, JOSE)
    assert (await post_lead(source_api, PEPE))["id"] == jose["id"]
    assert (await post_lead(source_api, JOSE_GMAIL))["id"] == jose["id"]
    await post_lead(source_api, BODEGA)
    await post_lead(source_api, FORMULAS)
    originals = await _leads(source_api)
    assert len(originals) == 3
    exported = await _export(source_api)

    table = _table(exported)
    assert list(table[0]) == list(EXPORT_COLUMNS)
    assert list(EXPORT_COLUMNS[-6:-4]) == ["other_emails", "other_phones"]
    merged = next(row for row in table if row["email"] == "jose@aceitunasdelsur.es")
    assert merged["other_emails"] == "jfr2@hotmail.com; jose.fernandez.ruiz@gmail.com"
    assert merged["other_phones"] == "'+34612345678"  # neutralised like every cell
    assert merged["phone"] == "'+34954123456"
    others = [row for row in table if row is not merged]
    assert all(row["other_emails"] == row["other_phones"] == "" for row in others)

    status = await import_csv(api, worker, exported)
    assert (status["rows_read"], status["rows_created"], status["rows_rejected"]) == (3, 3, 0)
    fields = {column["column"]: column["field"] for column in status["columns"]}
    assert {name: fields[name] for name in COMPUTED} == dict.fromkeys(COMPUTED)
    assert fields["custom_fields"] == "custom_fields"
    assert (fields["source"], fields["owner"], fields["external_id"]) == (
        "source",
        "owner",
        "external_id",
    )

    imported = await _leads(api)
    assert set(imported) == set(originals)
    for key, original in originals.items():
        copy = imported[key]
        assert copy["id"] != original["id"]  # a lead of its own, not the export's id
        for name in NOT_CARRIED:
            original.pop(name, None)
            copy.pop(name, None)
        assert copy == original, key
        assert not set(copy["custom_fields"]) & {*COMPUTED, "custom_fields", "external_id"}
    assert imported["+34612345678"]["company"] == "=SUMA(A1:A3)"

    # Exported again, the lead's columns are the same cells.
    again = {row["email"] or row["phone"]: row for row in _table(await _export(api))}
    for row in table:
        copy = again[row["email"] or row["phone"]]
        for name in COMPUTED:
            row.pop(name)
            copy.pop(name)
        assert copy == row


async def test_a_broken_custom_fields_cell_fails_its_row_naming_the_column(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """In an export, a `custom_fields` cell that is not JSON, not an object, or holds a
    value no custom field takes fails its row, the report naming the column; the other
    rows are imported, their JSON expanded."""
    rows = [
        {"email": "ana@empresa.es", "custom_fields": {"sector": "Construcción"}},
        {"email": "luis@empresa.es", "custom_fields": "{sector: 'vino'"},
        {"email": "eva@empresa.es", "custom_fields": '["vino"]'},
        {"email": "raul@empresa.es", "custom_fields": '{"direccion": {"calle": "Mayor"}}'},
    ]
    data = b"".join(csv_export(rows, EXPORT_COLUMNS))
    status = await import_csv(api, worker, data)
    assert (status["rows_created"], status["rows_rejected"]) == (1, 3)
    report = await error_report(api, status)
    assert [line[:3] for line in report[1:]] == [
        ["3", "custom_fields", "custom_fields"],
        ["4", "custom_fields", "custom_fields"],
        ["5", "custom_fields", "custom_fields.direccion"],
    ]
    assert report[1][3].startswith("is not valid JSON")
    assert report[2][3] == "is an array in JSON, not an object of custom fields"
    ana = (await _leads(api))["ana@empresa.es"]
    assert ana["custom_fields"] == {"sector": "Construcción"}


async def test_an_id_column_fills_external_id_unless_the_file_is_cauce_s_export(
    api: httpx.AsyncClient, worker: JobWorker
) -> None:
    """A CRM's file with `id`, `score`, `created_at` and `updated_at` of its own is not
    an export: its `id` still fills `external_id` and the rest are custom fields. In an
    export `id` is Cauce's own and ignored, `external_id` filling the field, and an
    explicit mapping still wins over the export's defaults."""
    crm = (
        b"id;email;nombre;score;created_at;updated_at\n"
        b"CRM-7;ana@empresa.es;Ana;80;2024-01-01;2024-02-01\n"
    )
    status = await import_csv(api, worker, crm)
    assert status["columns"][0] == {"column": "id", "field": "external_id"}
    ana = (await _leads(api))["ana@empresa.es"]
    assert ana["external_id"] == "CRM-7"
    assert ana["custom_fields"] == {
        "score": "80",
        "created_at": "2024-01-01",
        "updated_at": "2024-02-01",
    }

    rows = [
        {"id": "0b6c-uid", "email": "luis@empresa.es", "external_id": "CRM-8", "score": 70},
        {"id": "1c7d-uid", "email": "eva@empresa.es", "score": 55, "owner": "marta"},
    ]
    status = await import_csv(api, worker, b"".join(csv_export(rows, EXPORT_COLUMNS)))
    assert status["columns"][0] == {"column": "id", "field": None}
    leads = await _leads(api)
    luis, eva = leads["luis@empresa.es"], leads["eva@empresa.es"]
    assert (luis["external_id"], luis["custom_fields"]) == ("CRM-8", {})
    assert (eva["external_id"], eva["custom_fields"], eva["owner"]) == (None, {}, "marta")

    rows = [{"id": "2e8f-uid", "email": "raul@empresa.es", "score": 40, "owner": "marta"}]
    mapping = {"score": "custom_fields.puntuacion", "owner": None}
    status = await import_csv(
        api, worker, b"".join(csv_export(rows, EXPORT_COLUMNS)), {"mapping": mapping}
    )
    raul = (await _leads(api))["raul@empresa.es"]
    assert (raul["custom_fields"], raul["owner"]) == ({"puntuacion": "40"}, None)

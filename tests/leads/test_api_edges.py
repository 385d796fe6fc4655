"""Edges of the leads API on both databases: inputs that once got a 500 (or a wrong
answer) get a clear one, and limits that were too tight or too loose are right."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from cauce.app import create_app, job_worker_for
from cauce.leads.models import LeadSource
from cauce.leads.responses import LeadDetailOut
from tests.conftest import SettingsFactory
from tests.leads.test_delivery import MemoryCrm


@pytest.fixture
async def leads_app(settings_factory: SettingsFactory) -> AsyncIterator[FastAPI]:
    """The app with a small request body limit (4 KiB) and no background worker."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        http={"max_body_bytes": 4096},
    )
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app):
        yield app


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@empresa.es"


def _pointers(response: httpx.Response) -> set[str]:
    return {error["pointer"] for error in response.json()["errors"]}


async def test_a_csv_upload_is_not_held_to_the_json_body_limit(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """`http.max_body_bytes` bounds JSON bodies; an import streams its file to disk under
    `leads.max_import_bytes` instead, so a CSV far past the JSON limit is taken in."""
    rows = "".join(f"Lead {i};lead{i}@empresa.es;6{i:08d}\n" for i in range(300))
    data = ("nombre;correo;teléfono\n" + rows).encode()
    assert len(data) > 2 * 4096
    too_big = await api.post("/v1/leads", json={"email": _email(), "company": "x" * 5000})
    assert too_big.status_code == 413
    response = await api.post("/v1/leads/import", files={"file": ("leads.csv", data, "text/csv")})
    assert response.status_code == 202, response.text
    await job_worker_for(leads_app.state.resources).run_until_idle(60)
    status = (await api.get(f"/v1/leads/import/{response.json()['id']}")).json()
    assert (status["state"], status["rows_created"]) == ("succeeded", 300)


async def test_a_batch_is_held_to_its_own_body_limit(
    settings_factory: SettingsFactory,
) -> None:
    """`POST /v1/leads/batch` takes bodies past `http.max_body_bytes` (1,000 leads with
    their custom fields are megabytes) up to `leads.max_batch_bytes`; past it, a 413
    problem; every other JSON route keeps `http.max_body_bytes`."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        http={"max_body_bytes": 4096},
        leads={"max_batch_bytes": 64 * 1024},
    )
    app = create_app(settings, crm=MemoryCrm())
    custom = {f"campo_{i}": "v" * 100 for i in range(20)}
    items = [{"email": _email(), "custom_fields": custom} for _ in range(10)]
    async with LifespanManager(app):
        resources = app.state.resources
        token = (await resources.api_keys.create("t", ["leads:write", "leads:read"])).token
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as client:
            taken = await client.post("/v1/leads/batch", json={"items": items})
            assert len(taken.request.content) > 4 * 4096
            assert taken.status_code == 200, taken.text
            assert [r["outcome"] for r in taken.json()["items"]] == ["created"] * 10
            too_big = await client.post("/v1/leads/batch", json={"items": items * 4})
            assert len(too_big.request.content) > 64 * 1024
            assert too_big.status_code == 413
            assert too_big.headers["content-type"].startswith("application/problem+json")
            one = await client.post("/v1/leads", json={"email": _email(), "company": "x" * 5000})
            assert one.status_code == 413


async def test_every_field_at_its_longest_is_stored(api: httpx.AsyncClient) -> None:
    """Each text field at the longest its schema takes fits its column on both
    databases (PostgreSQL refuses longer strings, SQLite does not); one character more
    is a 422 naming the field, and in a batch it fails that item only."""
    longest: dict[str, Any] = {
        "email": _email(),
        "external_id": "e" * 200,
        "first_name": "N" * 100,
        "last_name": "A" * 100,
        "company": "C" * 200,
        "job_title": "T" * 150,
        "region": "R" * 100,
        "city": "M" * 100,
        "owner": "o" * 100,
    }
    stored = await api.post("/v1/leads", json=longest)
    assert stored.status_code == 201, stored.text
    lead = (await api.get(f"/v1/leads/{stored.json()['id']}")).json()
    assert lead["external_id"] == "e" * 200
    assert lead["company"] == "C" * 200
    one_more = await api.post("/v1/leads", json={"email": _email(), "external_id": "e" * 201})
    assert one_more.status_code == 422
    assert _pointers(one_more) == {"/external_id"}
    batch = await api.post(
        "/v1/leads/batch",
        json={"items": [{"email": _email(), "external_id": "e" * 201}, {"email": _email()}]},
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["accepted"] == 1


async def test_search_filters_are_checked(api: httpx.AsyncClient) -> None:
    """A date without an offset is read as UTC; an empty range, an unknown status or
    source, and page parameters on the export are refused with the parameter named."""
    created = await api.post("/v1/leads", json={"email": _email()})
    assert created.status_code == 201
    found = await api.get("/v1/leads", params={"created_after": "2020-01-01"})
    assert found.status_code == 200
    assert [item["id"] for item in found.json()["items"]] == [created.json()["id"]]
    naive = await api.get("/v1/leads", params={"created_before": "2020-01-01T10:00:00"})
    assert (naive.status_code, naive.json()["items"]) == (200, [])
    export = await api.get("/v1/leads/export.csv", params={"created_after": "2020-01-01"})
    assert export.status_code == 200
    assert export.text.count("\n") == 2  # the header and the lead
    cases: list[tuple[dict[str, str | int], str]] = [
        ({"min_score": 50, "max_score": 10}, "max_score"),
        ({"created_after": "2024-02-01", "created_before": "2024-01-01"}, "created_before"),
        ({"status": "nope"}, "status"),
        ({"source": "nope"}, "source"),
        # Whole numbers are digits: pydantic read `0.0` as 0 (the OpenAPI fuzz test).
        ({"min_score": "0.0"}, "min_score"),
        ({"max_score": "3.00"}, "max_score"),
        ({"limit": "10.0"}, "limit"),
    ]
    for params, pointer in cases:
        refused = await api.get("/v1/leads", params=params)
        assert refused.status_code == 422, params
        assert any(p.endswith(pointer) for p in _pointers(refused)), refused.json()
    paged = await api.get("/v1/leads/export.csv", params={"cursor": "abc"})
    assert paged.status_code == 422


@pytest.mark.parametrize("raw", ["²", "9" * 30, "0", "-1"])
async def test_ids_that_cannot_be_ids_are_not_found(api: httpx.AsyncClient, raw: str) -> None:
    """A cursor or an import id that is no row id (a non-ASCII digit, past BIGINT) is a
    422 or a 404, not a database error."""
    cursor = await api.get("/v1/leads", params={"cursor": raw})
    assert cursor.status_code == 422
    assert _pointers(cursor) == {"#query/cursor"}
    for path in (f"/v1/leads/import/{raw}", f"/v1/leads/import/{raw}/errors.csv"):
        assert (await api.get(path)).status_code == 404


@pytest.mark.parametrize(
    "url",
    ["/v1/leads?q=%00", "/v1/leads?owner=a%00b", "/v1/leads/a%00b", "/v1/leads/export.csv?q=%00"],
)
async def test_a_nul_in_the_url_is_refused(api: httpx.AsyncClient, url: str) -> None:
    """PostgreSQL text cannot hold NUL: a URL with one is a 400 on both databases."""
    response = await api.get(url)
    assert response.status_code == 400
    assert response.json()["code"] == "nul_in_url"


async def test_patch_reads_a_national_phone_in_the_leads_country(api: httpx.AsyncClient) -> None:
    """A PATCH of a national number reads it in the lead's stored country, as intake
    does; a country sent with it wins."""
    created = await api.post("/v1/leads", json={"email": _email(), "country": "MX"})
    lead_id = created.json()["id"]
    patched = await api.patch(f"/v1/leads/{lead_id}", json={"phone": "55 1234 5678"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["phone"] == "+525512345678"
    moved = await api.patch(f"/v1/leads/{lead_id}", json={"phone": "612 345 678", "country": "ES"})
    assert moved.json()["phone"] == "+34612345678"


async def test_patch_of_a_foreign_phone_gives_a_lead_without_country_its_country(
    api: httpx.AsyncClient,
) -> None:
    """As at intake, a lead without a country takes that of a number with another
    country's code (scoring's market rule and routing read it); a country stored or sent
    beside it stays, and a national number says nothing (the default region's own typed
    with +34 fills it too: test_country_inference)."""
    created = await api.post("/v1/leads", json={"email": _email()})
    lead_id = created.json()["id"]
    national = await api.patch(f"/v1/leads/{lead_id}", json={"phone": "612 345 678"})
    assert (national.json()["phone"], national.json()["country"]) == ("+34612345678", None)
    abroad = await api.patch(f"/v1/leads/{lead_id}", json={"phone": "+52 55 1234 5678"})
    assert abroad.status_code == 200, abroad.text
    assert abroad.json()["country"] == "MX"
    history = (await api.get(f"/v1/leads/{lead_id}")).json()["history"]
    assert {"phone", "country"} <= set(history[0]["changes"]["fields"])
    kept = await api.patch(f"/v1/leads/{lead_id}", json={"phone": "+1 809 555 0123"})
    assert kept.json()["country"] == "MX"  # stored: a change of number does not move it
    other = await api.post("/v1/leads", json={"email": _email(), "country": "CO"})
    sent = await api.patch(
        f"/v1/leads/{other.json()['id']}", json={"phone": "+52 55 8765 4321", "country": None}
    )
    assert sent.json()["country"] is None  # cleared in the same patch: as sent


async def test_patch_null_custom_fields_removes_them_all(api: httpx.AsyncClient) -> None:
    """RFC 7396: `custom_fields: null` removes every custom field; a key set to null
    removes that key."""
    created = await api.post(
        "/v1/leads", json={"email": _email(), "custom_fields": {"a": 1, "b": "x", "c": True}}
    )
    lead_id = created.json()["id"]
    one = await api.patch(f"/v1/leads/{lead_id}", json={"custom_fields": {"a": None}})
    assert one.json()["custom_fields"] == {"b": "x", "c": True}
    every = await api.patch(f"/v1/leads/{lead_id}", json={"custom_fields": None})
    assert every.status_code == 200
    assert every.json()["custom_fields"] == {}


async def test_an_import_honours_its_idempotency_key(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """The same file with the same key answers the first import (replayed, nothing
    imported twice, no second upload kept); the key with another file is refused."""
    data = b"nombre;correo\nLucia;lucia@empresa.es\nPablo;pablo@empresa.es\n"
    key = {"Idempotency-Key": uuid.uuid4().hex}

    async def send(body: bytes) -> httpx.Response:
        files = {"file": ("leads.csv", body, "text/csv")}
        return await api.post("/v1/leads/import", files=files, headers=key)

    first = await send(data)
    assert first.status_code == 202, first.text
    again = await send(data)
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await send(data + b"Ana;ana@empresa.es\n")
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    settings = leads_app.state.resources.settings
    assert len(list((settings.data_dir / "imports").iterdir())) == 1  # the first upload
    await job_worker_for(leads_app.state.resources).run_until_idle(60)
    listed = (await api.get("/v1/leads")).json()["items"]
    assert len(listed) == 2


async def test_one_key_sent_twice_at_once_is_applied_once(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A batch and its retry under one key at the same instant (on PostgreSQL the second
    waits for the first's intake locks, then found its stored answer and wrote over it):
    every lead arrives once; the other answer is the replay or a 409 to retry. A single
    lead too (both may meet in one group commit)."""
    for path in ("/v1/leads/batch",) * 3 + ("/v1/leads",) * 3:
        items = [{"email": _email(), "first_name": "Ana"} for _ in range(20)]
        if path == "/v1/leads":
            items = items[:1]
        body = {"items": items} if path.endswith("batch") else items[0]
        key = {"Idempotency-Key": uuid.uuid4().hex}
        answers = await asyncio.gather(*(api.post(path, json=body, headers=key) for _ in range(2)))
        codes = sorted(
            (a.status_code, a.headers.get("Idempotent-Replayed") or a.json().get("code") or "")
            for a in answers
        )
        first = 201 if path == "/v1/leads" else 200
        assert (first, "") in codes, [a.text for a in answers]
        codes.remove((first, ""))
        assert codes[0] in ((first, "true"), (409, "idempotency_key_in_use")), codes
        for answer in answers:
            if answer.status_code == 409:  # when to retry for the replay
                assert answer.headers["Retry-After"] == "1"
        factory = leads_app.state.resources.db.sessionmaker
        emails = [item["email"] for item in items]
        async with factory() as session:
            arrivals = await session.scalar(
                select(func.count()).select_from(LeadSource).where(LeadSource.email.in_(emails))
            )
        assert arrivals == len(items)


async def test_import_options_that_are_not_json_are_named(api: httpx.AsyncClient) -> None:
    """`options` that does not parse is a 400 saying so, not a mapping complaint."""
    response = await api.post(
        "/v1/leads/import",
        files={"file": ("leads.csv", b"correo\nana@empresa.es\n", "text/csv")},
        data={"options": "{mapping: nope"},
    )
    assert response.status_code == 400
    assert "options" in response.json()["detail"]


async def test_refusals_of_a_whole_request_name_what_they_refuse(api: httpx.AsyncClient) -> None:
    """Broken JSON, a bad or reused Idempotency-Key: each problem has an `errors` entry
    pointing at the body (with where the parser stopped) or at the header."""
    json_header = {"Content-Type": "application/json"}
    for path, body in (("/v1/leads", b'{"email": "a@b.es",'), ("/v1/leads/batch", b"[1, 2")):
        broken = await api.post(path, content=body, headers=json_header)
        assert broken.status_code == 400
        assert broken.json()["code"] == "malformed_body"
        [error] = broken.json()["errors"]
        assert error["pointer"] == ""
        assert error["type"] == "json_invalid"
        assert f"column {len(body)}" in error["detail"]
        assert error["detail"] in broken.json()["detail"]
    options = await api.post(
        "/v1/leads/import",
        files={"file": ("leads.csv", b"correo\nana@empresa.es\n", "text/csv")},
        data={"options": "{mapping: nope"},
    )
    assert _pointers(options) == {"/options"}
    key = uuid.uuid4().hex
    first = await api.post("/v1/leads", json={"email": _email()}, headers={"Idempotency-Key": key})
    assert first.status_code == 201
    reused = await api.post("/v1/leads", json={"email": _email()}, headers={"Idempotency-Key": key})
    assert reused.status_code == 422
    assert _pointers(reused) == {"#header/Idempotency-Key"}
    invalid = await api.post(
        "/v1/leads", json={"email": _email()}, headers={"Idempotency-Key": "x" * 300}
    )
    assert invalid.status_code == 400
    assert invalid.json()["code"] == "idempotency_key_invalid"
    assert _pointers(invalid) == {"#header/Idempotency-Key"}


async def test_the_export_carries_every_field_and_imports_back(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """External id, language, email flags, UTM, consent proof and custom fields are in
    the export (after the first fifteen columns, in their old order); the exported file
    imports as a new lead with the same contact, UTM and consent."""
    email = _email()
    lead = {
        "email": email,
        "phone": "+34 612 345 678",
        "first_name": "Begoña",
        "last_name": "Ibáñez",
        "external_id": "web-77",
        "language": "es",
        "utm": {"source": "google", "campaign": "feria-2026"},
        "consent": {
            "marketing": True,
            "given_at": "2026-11-02T10:00:00Z",
            "wording_version": "v3",
            "source": "https://empresa.es/alta",
        },
        "custom_fields": {"sector": "vino", "empleados": 40},
    }
    assert (await api.post("/v1/leads", json=lead)).status_code == 201
    export = await api.get("/v1/leads/export.csv")
    assert export.status_code == 200
    [row] = list(csv.DictReader(io.StringIO(export.text.lstrip("\ufeff"))))
    assert list(row)[:4] == ["id", "status", "email", "phone"]
    assert row["phone"] == "'+34612345678"
    assert (row["external_id"], row["language"]) == ("web-77", "es")
    assert (row["utm.source"], row["utm.campaign"], row["utm.medium"]) == (
        "google",
        "feria-2026",
        "",
    )
    assert (row["consent.marketing"], row["consent.wording_version"]) == ("true", "v3")
    assert row["consent.given_at"].startswith("2026-11-02T10:00:00")
    assert json.loads(row["custom_fields"]) == {"empleados": 40, "sector": "vino"}
    assert (row["is_free_email"], row["is_disposable_email"]) == ("false", "false")

    # Back in under another email: the consent and UTM columns find their fields.
    data = export.text.replace(email, "otra." + email).replace("'+34612345678", "+34622345678")
    mapping = {"id": None, "external_id": "external_id", "custom_fields": None}
    response = await api.post(
        "/v1/leads/import",
        files={"file": ("leads.csv", data.encode(), "text/csv")},
        data={"options": json.dumps({"mapping": mapping, "unknown_columns": "ignore"})},
    )
    assert response.status_code == 202, response.text
    await job_worker_for(leads_app.state.resources).run_until_idle(60)
    status = (await api.get(f"/v1/leads/import/{response.json()['id']}")).json()
    assert status["state"] == "succeeded", status
    found = (await api.get("/v1/leads", params={"q": "otra."})).json()["items"]
    assert len(found) == 1
    again = (await api.get(f"/v1/leads/{found[0]['id']}")).json()
    utm = {name: value for name, value in again["utm"].items() if value is not None}
    assert utm == {"source": "google", "campaign": "feria-2026"}
    assert again["consent"]["wording_version"] == "v3"
    assert again["consent"]["marketing"] is True


async def test_free_text_search_ignores_accents_case_and_punctuation(
    api: httpx.AsyncClient,
) -> None:
    """`q` finds García with `garcia` or `GARCÍA`, Núñez with `nunez`, across first name,
    surnames, company and email; and keeps up with merges, PATCHes and erasures."""

    async def found(q: str) -> set[str]:
        response = await api.get("/v1/leads", params={"q": q})
        assert response.status_code == 200, response.text
        return {item.get("email") or item["id"] for item in response.json()["items"]}

    maria = {
        "first_name": "María José",
        "last_name": "García Núñez",
        "email": "mj.garcia@bodegas-duero.es",
        "city": "Valladolid",
        "country": "ES",
    }
    created = await api.post("/v1/leads", json=maria)
    assert created.status_code == 201
    inaki = _email()
    other = await api.post("/v1/leads", json={"first_name": "Iñaki", "email": inaki})
    assert other.status_code == 201
    mine = {"mj.garcia@bodegas-duero.es"}
    for q in ("garcia", "GARCÍA", "nunez", "María García", "mj.garcia@bodegas", "DUERO"):
        assert await found(q) == mine, q
    assert await found("maría lópez") == set()  # every word must be found
    assert await found("inaki") == {inaki}
    assert await found("lopez") == set()
    # A merge fills the company; a PATCH replaces it; the search follows both.
    merged = await api.post("/v1/leads", json={**maria, "company": "Viñedos Ébano"})
    assert merged.status_code == 200
    assert await found("vinedos ebano") == mine
    lead_id = created.json()["id"]
    patched = await api.patch(f"/v1/leads/{lead_id}", json={"company": "Cellers Pujol"})
    assert patched.status_code == 200
    assert (await found("ebano"), await found("pujol")) == (set(), mine)
    assert (await api.delete(f"/v1/leads/{lead_id}")).status_code == 204
    assert await found("garcia") == set()
    assert await found("@") == {inaki}  # only punctuation: as typed


async def test_the_detail_answer_is_the_one_openapi_describes(api: httpx.AsyncClient) -> None:
    """`GET /v1/leads/{id}` answers exactly the fields of `LeadDetailOut`, which OpenAPI
    names as its answer; a list item (`LeadOut`) has no `duplicates`."""
    first = await api.post("/v1/leads", json={"email": _email(), "first_name": "Ana"})
    lead_id = first.json()["id"]
    await api.post("/v1/leads", json={"email": _email(), "phone": "+34 612 000 111"})
    body = (await api.get(f"/v1/leads/{lead_id}")).json()
    assert set(body) == set(LeadDetailOut.model_fields)
    shown = LeadDetailOut.model_validate(body)
    assert (shown.id, shown.arrivals, shown.sync.version) == (lead_id, 1, 1)
    assert [line.action for line in shown.history] == ["created"]
    schema = (await api.get("/openapi.json")).json()
    answer = schema["paths"]["/v1/leads/{lead_id}"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/LeadDetailOut")
    items = (await api.get("/v1/leads")).json()["items"]
    assert items
    assert all("duplicates" not in item for item in items)


async def test_a_patch_may_be_sent_as_a_json_merge_patch(api: httpx.AsyncClient) -> None:
    """RFC 7396's media type is accepted for PATCH (and only there); `null` clears."""
    email = _email()
    created = await api.post("/v1/leads", json={"email": email, "company": "Acme"})
    lead_id = created.json()["id"]
    patched = await api.patch(
        f"/v1/leads/{lead_id}",
        content=b'{"company": null, "job_title": "CTO"}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["company"], patched.json()["job_title"]) == (None, "CTO")
    posted = await api.post(
        "/v1/leads",
        content=b'{"email": "x@empresa.es"}',
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert posted.status_code == 415
    text = await api.patch(
        f"/v1/leads/{lead_id}", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    assert "application/merge-patch+json" in text.json()["detail"]


async def test_a_patch_cannot_give_a_lead_another_leads_email_or_phone(
    api: httpx.AsyncClient,
) -> None:
    """Intake merges leads with one email or phone; a PATCH that would make two of them
    is a 409 naming the other lead, and changes nothing. Other edits still pass."""
    taken = await api.post("/v1/leads", json={"email": "ocupado@empresa.es", "phone": "612345678"})
    email = _email()
    lead_id = (await api.post("/v1/leads", json={"email": email})).json()["id"]
    for change in ({"email": "OCUPADO@empresa.es"}, {"phone": "+34 612 345 678"}):
        refused = await api.patch(f"/v1/leads/{lead_id}", json=change)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "lead_duplicate"
        assert refused.json()["duplicate_of"] == taken.json()["id"]
    unchanged = (await api.get(f"/v1/leads/{lead_id}")).json()
    assert (unchanged["email"], unchanged["phone"]) == (email, None)
    renamed = await api.patch(f"/v1/leads/{lead_id}", json={"company": "Otra SL"})
    assert renamed.status_code == 200
    same = await api.patch(
        f"/v1/leads/{taken.json()['id']}", json={"email": "ocupado@empresa.es", "city": "Vigo"}
    )
    assert same.status_code == 200  # its own email again is no conflict


async def test_a_merge_keeps_a_lead_within_its_custom_field_limit(api: httpx.AsyncClient) -> None:
    """A lead with 48 custom fields meets an arrival bringing 5 new ones: the first 2 fill
    the room left (50), the other 3 are reported kept in its history, not stored."""
    email = _email()
    first = {f"campo_{i:02d}": "x" for i in range(48)}
    created = await api.post("/v1/leads", json={"email": email, "custom_fields": first})
    assert created.status_code == 201, created.text
    extra = {f"nuevo_{i}": "y" for i in range(5)}
    merged = await api.post("/v1/leads", json={"email": email, "custom_fields": extra})
    assert merged.status_code == 200, merged.text
    assert merged.json()["duplicate"]["merged_fields"] == [
        "custom_fields.nuevo_0",
        "custom_fields.nuevo_1",
    ]
    lead = (await api.get(f"/v1/leads/{created.json()['id']}")).json()
    assert len(lead["custom_fields"]) == 50
    assert {"nuevo_0", "nuevo_1"} <= lead["custom_fields"].keys()
    assert "nuevo_2" not in lead["custom_fields"]
    merge_line = next(h for h in lead["history"] if h["action"] == "merged")
    assert merge_line["changes"]["kept"] == [f"custom_fields.nuevo_{i}" for i in (2, 3, 4)]

"""Fixes of two security findings on the intake routes (`POST /v1/leads`, `/batch`).

1. Error amplification: an object with thousands of unknown members (or of bad custom
   field names) made an error of each, so 16 MiB of batch answered 137 MiB after seconds
   of a blocked event loop. Now an object with far more members than its model has
   fields is refused with one error (`too_many_fields`), the custom fields are counted
   before their keys are validated, and an item's answer lists at most
   `MAX_ITEM_ERRORS` errors and a `too_many_errors` entry.
2. A write-only key (`leads:write` without `leads:read`, a web form's) could learn which
   emails and phones Cauce holds from its intake's answer (`outcome: merged`, the stored
   lead's id, score and owner). Now it gets 202 `{"accepted": true}` whatever became of
   the lead, and a batch answers only whether each item was accepted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import select

from cauce.app import Resources
from cauce.core.web.idempotency import IdempotencyRecord
from cauce.leads.field_types import MAX_CUSTOM_FIELDS
from cauce.leads.schemas import LeadIn
from cauce.leads.schemas_batch import (
    MAX_ITEM_ERRORS,
    TOO_MANY_ERRORS,
    TOO_MANY_FIELDS,
    crowded,
    field_errors,
    validate_batch,
    validate_lead,
)
from cauce.leads.service import LeadsRuntime
from tests.conftest import SettingsFactory
from tests.leads.api_client import JOSE, leads_api

# The audit's bodies, scaled down: each item had 1,480 unknown members, the single lead
# 60,000. Any count past the limit (19 fields + 20) gives the same single error.
UNKNOWN_PER_ITEM = 1480
UNKNOWN_SINGLE = 6000
READ_WRITE = ["leads:read", "leads:write"]
WRITE_ONLY = ["leads:write"]


def _crowded_lead(unknown: int, email: str = "x@y.es") -> dict[str, Any]:
    return {"email": email, **{f"u{i}": 1 for i in range(unknown)}}


async def _client(app: FastAPI, scopes: list[str]) -> httpx.AsyncClient:
    resources: Resources = app.state.resources
    key = await resources.api_keys.create("+".join(scopes), scopes)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://cauce.test",
        headers={"Authorization": f"Bearer {key.token}"},
    )


@asynccontextmanager
async def _app(
    settings_factory: SettingsFactory, **leads: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, httpx.AsyncClient]]:
    """The app, a reading and writing client and a write-only one."""
    async with (
        leads_api(settings_factory, **leads) as (app, reader),
        await _client(app, WRITE_ONLY) as writer,
    ):
        yield app, reader, writer


def _errors(response: httpx.Response, status: int = 422) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text[:500]
    errors: list[dict[str, Any]] = response.json()["errors"]
    return errors


# --- 1. error amplification --------------------------------------------------------------


def test_a_crowded_object_is_one_error_naming_its_count_and_first_unknown_members() -> None:
    """An object with more members than a lead's fields by over 20 is refused whole with
    one error at its pointer, saying how many members and naming the first unknown ones;
    one within the margin gets pydantic's own errors."""
    error = crowded(_crowded_lead(UNKNOWN_PER_ITEM), LeadIn, "/items/7")
    assert error is not None
    assert (error["pointer"], error["type"]) == ("/items/7", TOO_MANY_FIELDS)
    assert "1481 members" in error["detail"]
    assert '"u0", "u1", "u2", "u3", "u4"' in error["detail"]
    assert '"u5"' not in error["detail"]
    nested = crowded({"email": "x@y.es", "utm": {f"k{i}": 1 for i in range(100)}}, LeadIn)
    assert nested is not None
    assert nested["pointer"] == "/utm"
    assert crowded(_crowded_lead(20), LeadIn) is None
    assert crowded([1] * 1000, LeadIn) is None


def test_an_items_errors_are_capped_with_a_last_entry_saying_how_many_more() -> None:
    """Past `MAX_ITEM_ERRORS` errors, the rest are summed up in one `too_many_errors`
    entry at the item; fewer are listed as before."""
    outcome = validate_lead(_crowded_lead(30), pointer_prefix="/items/2", most_errors=20)
    assert isinstance(outcome, list)
    assert len(outcome) == MAX_ITEM_ERRORS + 1
    assert all(e["type"] == "extra_forbidden" for e in outcome[:-1])
    assert outcome[-1]["pointer"] == "/items/2"
    assert outcome[-1]["type"] == TOO_MANY_ERRORS
    assert "10 more" in outcome[-1]["detail"]
    few = validate_lead(_crowded_lead(3), most_errors=20)
    assert isinstance(few, list)
    assert [e["type"] for e in few] == ["extra_forbidden"] * 3
    with pytest.raises(ValidationError) as info:
        LeadIn.model_validate(_crowded_lead(30))
    assert len(field_errors(info.value)) == 30  # uncapped unless asked


def test_custom_fields_past_the_limit_are_one_error_before_their_keys_are_checked() -> None:
    """Thousands of invalid custom field names were an error each: the count is now
    checked first, one `too_long` at `/custom_fields`."""
    bad = {"email": "x@y.es", "custom_fields": {f"Bad Key {i}": 1 for i in range(5000)}}
    outcome = validate_lead(bad)
    assert isinstance(outcome, list)
    assert [(e["pointer"], e["type"]) for e in outcome] == [("/custom_fields", "too_long")]
    assert f"at most {MAX_CUSTOM_FIELDS} items, not 5000" in outcome[0]["detail"]
    checked = validate_batch([bad, {"email": "ok@y.es"}])
    assert [i for i, _ in checked.valid] == [1]


async def test_the_single_route_answers_a_crowded_lead_with_one_small_error(
    settings_factory: SettingsFactory,
) -> None:
    """The audit's single lead (1 MiB, 60,000 unknown members) answered a 5.3 MB 422; a
    crowded lead, its `utm`, or its custom fields now answer one error."""
    async with _app(settings_factory) as (_, reader, writer):
        for client in (reader, writer):
            response = await client.post("/v1/leads", json=_crowded_lead(UNKNOWN_SINGLE))
            errors = _errors(response)
            assert [(e["pointer"], e["type"]) for e in errors] == [("", TOO_MANY_FIELDS)]
            assert f"{UNKNOWN_SINGLE + 1} members" in errors[0]["detail"]
            assert len(response.content) < 2_000
        utm = {"email": "x@y.es", "utm": {f"u{i}": "a" for i in range(UNKNOWN_SINGLE)}}
        errors = _errors(await reader.post("/v1/leads", json=utm))
        assert [(e["pointer"], e["type"]) for e in errors] == [("/utm", TOO_MANY_FIELDS)]
        custom = {"email": "x@y.es", "custom_fields": {f"U{i}": 1 for i in range(UNKNOWN_SINGLE)}}
        errors = _errors(await reader.post("/v1/leads", json=custom))
        assert [(e["pointer"], e["type"]) for e in errors] == [("/custom_fields", "too_long")]


async def test_the_single_route_lists_at_most_twenty_errors_and_their_count(
    settings_factory: SettingsFactory,
) -> None:
    """A lead with 30 unknown members (within the margin) gets 20 of their errors, then
    one saying 10 more were left out; the problem's detail counts all 30."""
    async with _app(settings_factory) as (_, reader, _writer):
        response = await reader.post("/v1/leads", json=_crowded_lead(30))
        errors = _errors(response)
        assert len(errors) == MAX_ITEM_ERRORS + 1
        assert {e["type"] for e in errors[:-1]} == {"extra_forbidden"}
        assert (errors[-1]["pointer"], errors[-1]["type"]) == ("", TOO_MANY_ERRORS)
        assert "10 more" in errors[-1]["detail"]
        assert response.json()["detail"] == "30 field(s) are invalid"
        # A body Python's own parser alone reads (an integer past 64 bits) still works.
        big = orjson.dumps(_crowded_lead(30)).replace(b'"u0":1', b'"u0":' + b"9" * 30)
        response = await reader.post(
            "/v1/leads", content=big, headers={"Content-Type": "application/json"}
        )
        assert len(_errors(response)) == MAX_ITEM_ERRORS + 1


async def test_a_change_with_crowded_members_is_one_error(
    settings_factory: SettingsFactory,
) -> None:
    """The same bound holds for a PATCH body (the same error path)."""
    async with _app(settings_factory) as (_, reader, _writer):
        created = await reader.post("/v1/leads", json={"email": "patch@empresa.es"})
        assert created.status_code == 201, created.text
        patch = {f"u{i}": 1 for i in range(UNKNOWN_SINGLE)}
        response = await reader.patch(f"/v1/leads/{created.json()['id']}", json=patch)
        assert [(e["pointer"], e["type"]) for e in _errors(response)] == [("", TOO_MANY_FIELDS)]


@pytest.mark.parametrize("scopes", [READ_WRITE, WRITE_ONLY])
async def test_a_crowded_batch_answers_small_and_keeps_its_valid_items(
    settings_factory: SettingsFactory, scopes: list[str]
) -> None:
    """The audit's batch (items of 1,480 unknown members each) answered 137 MiB: each such
    item is now rejected with one error, items with many errors list 20 and a count, and
    the valid items are stored all the same."""
    crowded_items = [_crowded_lead(UNKNOWN_PER_ITEM, f"c{i}@y.es") for i in range(40)]
    many_errors = _crowded_lead(35, "m@y.es")
    bad_custom = {"email": "b@y.es", "custom_fields": {f"K{i}": 1 for i in range(3000)}}
    valid = [{"email": "valida.uno@empresa.es"}, {"email": "valida.dos@empresa.es"}]
    items = [valid[0], *crowded_items, many_errors, bad_custom, valid[1]]
    body = orjson.dumps({"items": items})
    async with _app(settings_factory) as (_, reader, writer):
        client = writer if scopes == WRITE_ONLY else reader
        response = await client.post(
            "/v1/leads/batch", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == (202 if scopes == WRITE_ONLY else 200), response.text
        assert len(response.content) < 40_000 < len(body)
        answer = response.json()
        assert (answer["received"], answer["accepted"], answer["rejected"]) == (44, 2, 42)
        by_index = {item["index"]: item for item in answer["items"]}
        for index in range(1, 41):
            errors = by_index[index]["errors"]
            assert [(e["pointer"], e["type"]) for e in errors] == [
                (f"/items/{index}", TOO_MANY_FIELDS)
            ]
        capped = by_index[41]["errors"]
        assert len(capped) == MAX_ITEM_ERRORS + 1
        assert (capped[-1]["pointer"], capped[-1]["type"]) == ("/items/41", TOO_MANY_ERRORS)
        assert "15 more" in capped[-1]["detail"]
        assert [(e["pointer"], e["type"]) for e in by_index[42]["errors"]] == [
            ("/items/42/custom_fields", "too_long")
        ]
        assert by_index[0]["errors"] == by_index[43]["errors"] == []
        listed = (await reader.get("/v1/leads", params={"q": "valida"})).json()["items"]
        emails = {lead["email"] for lead in listed}
        assert {"valida.uno@empresa.es", "valida.dos@empresa.es"} <= emails


async def test_a_crowded_batch_envelope_is_one_error(settings_factory: SettingsFactory) -> None:
    """Unknown members beside `items` are bounded as well."""
    body = {"items": [{"email": "x@y.es"}], **{f"u{i}": 1 for i in range(UNKNOWN_SINGLE)}}
    async with _app(settings_factory) as (_, reader, _writer):
        errors = _errors(await reader.post("/v1/leads/batch", json=body))
        assert [(e["pointer"], e["type"]) for e in errors] == [("", TOO_MANY_FIELDS)]


# --- 2. a write-only key learns nothing of the stored leads ------------------------------

# docs/leads.md's possible duplicate of José: same name and city, another email.
HELD = {"first_name": "José", "last_name": "Fernández Ruiz", "city": "Sevilla", "email": "h@x.es"}
PHONE = "+34699887766"


async def _stored_lead(reader: httpx.AsyncClient) -> dict[str, Any]:
    response = await reader.post("/v1/leads", json={**JOSE, "phone": PHONE})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("group_max", [64, 1], ids=["group-commit", "alone"])
async def test_a_write_only_key_gets_one_answer_whatever_became_of_its_lead(
    settings_factory: SettingsFactory, group_max: int
) -> None:
    """A new lead, one merged into a stored lead (by phone, as in the audit) and one held
    against a stored lead all answer 202 `{"accepted": true}` to a key without
    `leads:read`; the intake happened all the same, and a reading key is shown all."""
    async with _app(settings_factory, intake_group_max=group_max) as (app, reader, writer):
        rt: LeadsRuntime = app.state.leads
        assert (rt.groups is not None) == (group_max > 1)
        jose = await _stored_lead(reader)
        answers = [
            await writer.post("/v1/leads", json={"email": "nuevo@empresa.es"}),
            await writer.post("/v1/leads", json={"phone": PHONE}),
            await writer.post("/v1/leads", json=HELD),
        ]
        for response in answers:
            assert response.status_code == 202, response.text
            assert response.json() == {"accepted": True}
            assert response.content == answers[0].content
        detail = (await reader.get(f"/v1/leads/{jose['id']}")).json()
        assert detail["arrivals"] == 2  # the phone-only arrival merged into José
        assert [d["held_for_review"] for d in detail["duplicates"]] == [True]
        forbidden = await writer.get(f"/v1/leads/{jose['id']}")
        assert forbidden.status_code == 403
        merged = await reader.post("/v1/leads", json={"phone": PHONE})
        assert merged.status_code == 200
        assert merged.json()["outcome"] == "merged"
        assert merged.json()["duplicate"]["match"] == "phone"


@pytest.mark.parametrize("group_max", [64, 1], ids=["group-commit", "alone"])
async def test_a_write_only_keys_replay_is_what_it_was_shown(
    settings_factory: SettingsFactory, group_max: int
) -> None:
    """An `Idempotency-Key` replay answers a write-only key the same 202; where the
    request ran on its own, what is stored under the key is what it was shown."""
    async with _app(settings_factory, intake_group_max=group_max) as (app, reader, writer):
        await _stored_lead(reader)
        headers = {"Idempotency-Key": "formulario-1"}
        first = await writer.post("/v1/leads", json={"phone": PHONE}, headers=headers)
        again = await writer.post("/v1/leads", json={"phone": PHONE}, headers=headers)
        assert (first.status_code, first.json()) == (202, {"accepted": True})
        assert (again.status_code, again.json()) == (202, {"accepted": True})
        assert again.headers["Idempotent-Replayed"] == "true"
        batch = {"items": [{"phone": PHONE}, {"email": "bad@"}]}
        first = await writer.post("/v1/leads/batch", json=batch, headers={"Idempotency-Key": "b"})
        again = await writer.post("/v1/leads/batch", json=batch, headers={"Idempotency-Key": "b"})
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        rt: LeadsRuntime = app.state.leads
        async with rt.sessionmaker() as session:
            stored = {
                r.key: (r.status_code, orjson.loads(r.body))
                for r in await session.scalars(select(IdempotencyRecord))
            }
        assert stored["b"] == (202, first.json())
        if group_max == 1:
            assert stored["formulario-1"] == (202, {"accepted": True})


async def test_a_write_only_keys_batch_shows_only_what_became_of_its_items(
    settings_factory: SettingsFactory,
) -> None:
    """A batch answers a write-only key 202 with each item's index, whether it was
    accepted and a rejected item's errors: no id, outcome, score, owner or duplicate."""
    async with _app(settings_factory) as (_, reader, writer):
        jose = await _stored_lead(reader)
        items = [{"phone": PHONE}, {"email": "ana.torres@"}, {"email": "otra@empresa.es"}, HELD]
        response = await writer.post("/v1/leads/batch", json={"items": items})
        assert response.status_code == 202, response.text
        answer = response.json()
        assert (answer["received"], answer["accepted"], answer["rejected"]) == (4, 3, 1)
        assert [set(item) for item in answer["items"]] == [{"index", "accepted", "errors"}] * 4
        assert [item["accepted"] for item in answer["items"]] == [True, False, True, True]
        assert [e["pointer"] for e in answer["items"][1]["errors"]] == ["/items/1/email"]
        assert jose["id"] not in response.text
        full = await reader.post("/v1/leads/batch", json={"items": items[:1]})
        assert full.status_code == 200
        assert full.json()["items"][0]["outcome"] == "merged"


async def test_the_openapi_document_describes_the_write_only_answers(
    settings_factory: SettingsFactory,
) -> None:
    """Both intake routes document their 202 for a key without `leads:read`."""
    async with _app(settings_factory) as (_, reader, _writer):
        document = (await reader.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for path, model in (("/v1/leads", "LeadAccepted"), ("/v1/leads/batch", "BatchAccepted")):
        answer = document["paths"][path]["post"]["responses"]["202"]
        assert "leads:read" in answer["description"]
        schema = answer["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}
    assert schemas["LeadAccepted"]["properties"]["accepted"]["const"] is True
    item = schemas["BatchItemAccepted"]["properties"]
    assert set(item) == {"index", "accepted", "errors"}


async def test_import_options_with_thousands_of_members_answer_small(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """The CSV import's `options` form field, up to 1 MiB of JSON, is bounded as a lead
    is: thousands of unknown members are one error, a mapping past 500 entries one error
    before its entries are read, and otherwise at most 20 errors and a count of the rest."""
    csv = ("email\n" + "ana@empresa.es\n").encode()

    async def upload(options: Any) -> httpx.Response:
        return await api.post(
            "/v1/leads/import",
            files={"file": ("leads.csv", csv, "text/csv")},
            data={"options": orjson.dumps(options).decode()},
        )

    crowded_options = await upload({f"u{i}": 1 for i in range(20_000)})
    assert crowded_options.status_code == 422
    assert len(crowded_options.content) < 2_000
    assert [e["type"] for e in crowded_options.json()["errors"]] == [TOO_MANY_FIELDS]

    big_mapping = await upload({"mapping": {f"col{i}": 1 for i in range(20_000)}})
    assert big_mapping.status_code == 422
    assert len(big_mapping.content) < 2_000
    assert [(e["pointer"], e["type"]) for e in big_mapping.json()["errors"]] == [
        ("/options/mapping", "too_long")
    ]

    bad_values = await upload({"mapping": {f"col{i}": i for i in range(30)}})
    assert bad_values.status_code == 422
    errors = bad_values.json()["errors"]
    assert len(errors) == MAX_ITEM_ERRORS + 1
    assert errors[-1]["type"] == TOO_MANY_ERRORS


async def test_a_write_only_key_cannot_import(leads_app: FastAPI) -> None:
    """An import's answer, and its replay, show the import's counts (rows merged into
    stored leads): an upload needs `leads:read` too, as the status does."""
    async with await _client(leads_app, WRITE_ONLY) as writer:
        response = await writer.post(
            "/v1/leads/import",
            files={"file": ("leads.csv", b"email\nknown@empresa.es\n", "text/csv")},
            headers={"Idempotency-Key": "probe-1"},
        )
    assert response.status_code == 403, response.text
    assert "leads:read" in response.json()["detail"]
    rt: LeadsRuntime = leads_app.state.leads
    imports_dir = rt.settings.data_dir / "imports"
    assert not imports_dir.exists() or not any(imports_dir.iterdir())

"""Marketing consent shown and filtered (helper-118, a data protection officer's audit),
on both databases: `consent_marketing=true|false|none` filters the list and the export
(validated, bound into the cursor; a JSON false, a consent without `marketing`, a JSON
null and an SQL NULL told apart), and a lead's detail lists every arrival's own consent
(`consents`, oldest first, the last 100 with `consents_total`)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import null, select, update

from cauce.app import Resources
from cauce.leads import repository_lead as repo_lead
from cauce.leads.models import Lead, LeadSource
from tests.leads.api_client import post_lead
from tests.leads.test_search_audit import _errors, _found

YES = {"marketing": True, "wording_version": "rgpd-2024-03", "source": "https://form.es/a"}
NO = {"marketing": False, "source": "https://form.es/baja"}


async def _exported(api: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await api.get("/v1/leads/export.csv", params=params)
    assert response.status_code == 200, response.text
    rows = csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline=""))
    return [row["email"] for row in rows]


async def _set_consent(app: FastAPI, uid: str, value: Any) -> None:
    """Store `value` as the lead's consent column as it is (an SQL NULL with `null()`)."""
    resources: Resources = app.state.resources
    async with resources.db.sessionmaker() as session:
        await session.execute(update(Lead).where(Lead.uid == uid).values(consent=value))
        await session.commit()


# 1. The filter -------------------------------------------------------------------------


async def _kinds(api: httpx.AsyncClient, app: FastAPI) -> dict[str, str]:
    """A lead of each consent state: yes, no, none sent (a JSON null) and an SQL NULL
    column (none recorded either)."""
    ids = {
        "yes": (await post_lead(api, {"email": "si@empresa.es", "consent": YES}))["id"],
        "no": (await post_lead(api, {"email": "no@empresa.es", "consent": NO}))["id"],
        "unsent": (await post_lead(api, {"email": "nada@empresa.es"}))["id"],
        "sql_null": (await post_lead(api, {"email": "nulo@empresa.es"}))["id"],
    }
    await _set_consent(app, ids["sql_null"], null())
    return ids


async def test_consent_marketing_filters_the_list_and_the_export(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    """`true` finds the leads that said yes, `false` those that said no (a JSON false,
    not a missing one), `none` those without a consent recorded: none sent (a JSON null)
    or an SQL NULL column. The export takes the same filter."""
    ids = await _kinds(api, leads_app)
    assert await _found(api, consent_marketing="true") == [ids["yes"]]
    assert await _found(api, consent_marketing="false") == [ids["no"]]
    assert set(await _found(api, consent_marketing="none")) == {ids["unsent"], ids["sql_null"]}
    assert len(await _found(api)) == 4
    # With another filter, ANDed as every filter is.
    assert await _found(api, consent_marketing="true", q="si@empresa.es") == [ids["yes"]]
    assert await _found(api, consent_marketing="false", q="si@empresa.es") == []

    assert await _exported(api, consent_marketing="true") == ["si@empresa.es"]
    assert await _exported(api, consent_marketing="false") == ["no@empresa.es"]
    assert set(await _exported(api, consent_marketing="none")) == {
        "nada@empresa.es",
        "nulo@empresa.es",
    }


async def test_a_stored_consent_without_marketing_is_none(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    """A consent whose `marketing` is missing or a JSON null (never written by Cauce, but
    a row edited by hand may hold one) records no consent: `none`, not `false`."""
    ids = await _kinds(api, leads_app)
    missing = (await post_lead(api, {"email": "parcial@empresa.es"}))["id"]
    json_null = (await post_lead(api, {"email": "nulo2@empresa.es"}))["id"]
    await _set_consent(leads_app, missing, {"source": "legacy"})
    await _set_consent(leads_app, json_null, {"marketing": None, "source": "legacy"})
    resources: Resources = leads_app.state.resources
    found: dict[str, set[str]] = {}
    async with resources.db.sessionmaker() as session:
        for value in ("true", "false", "none"):
            query = repo_lead.LeadQuery(consent_marketing=value)
            leads = await repo_lead.search(session, query, before_id=None, limit=50)
            found[value] = {lead.uid for lead in leads}
    assert found == {
        "true": {ids["yes"]},
        "false": {ids["no"]},
        "none": {ids["unsent"], ids["sql_null"], missing, json_null},
    }


async def test_the_filter_follows_the_lead_s_current_consent(api: httpx.AsyncClient) -> None:
    """A later opt-out merged into a lead that said yes makes it a `false` lead; an
    erased lead is in no list."""
    first = await post_lead(api, {"email": "ana@empresa.es", "consent": YES})
    later = {**NO, "given_at": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}
    await post_lead(api, {"email": "ana@empresa.es", "consent": later})
    assert await _found(api, consent_marketing="true") == []
    assert await _found(api, consent_marketing="false") == [first["id"]]
    assert (await api.delete(f"/v1/leads/{first['id']}")).status_code in (200, 204)
    for value in ("true", "false", "none"):
        assert await _found(api, consent_marketing=value) == []


@pytest.mark.parametrize("path", ["/v1/leads", "/v1/leads/export.csv"])
async def test_a_bad_consent_marketing_is_a_422_naming_it(
    api: httpx.AsyncClient, path: str
) -> None:
    """Another value is a 422 at `#query/consent_marketing` listing the values (in lower
    case, as the OpenAPI enum says, as `status` takes its values); given twice it is
    `repeated`, as every filter."""
    await post_lead(api, {"email": "b@empresa.es", "consent": YES})
    for bad in ("yes", "1", "si", "", "null", "TRUE", "None"):
        response = await api.get(path, params={"consent_marketing": bad})
        assert _errors(response) == [("#query/consent_marketing", "literal_error")], bad
        detail = response.json()["errors"][0]["detail"]
        assert "'true'" in detail
        assert "'false'" in detail
        assert "'none'" in detail
    assert (await api.get(path, params={"consent_marketing": "none"})).status_code == 200
    twice = await api.get(
        path, params=(("consent_marketing", "true"), ("consent_marketing", "true"))
    )
    assert _errors(twice) == [("#query/consent_marketing", "repeated")]


async def test_the_cursor_is_bound_to_the_consent_filter(api: httpx.AsyncClient) -> None:
    """A page of `consent_marketing=true` goes on only with that filter: without it, or
    with another value, its cursor is `cursor_mismatch`; with it, the next page comes.
    A search without the filter pages as it did."""
    ids = [
        (await post_lead(api, {"email": f"c{n}@empresa.es", "consent": YES}))["id"]
        for n in range(3)
    ]
    await post_lead(api, {"email": "sin@empresa.es"})
    first = await api.get("/v1/leads", params={"consent_marketing": "true", "limit": 1})
    cursor = first.json()["next_cursor"]
    assert first.json()["items"][0]["id"] == ids[2]
    for other in ({}, {"consent_marketing": "false"}, {"consent_marketing": "none"}):
        refused = await api.get("/v1/leads", params={**other, "cursor": cursor})
        assert _errors(refused) == [("#query/cursor", "cursor_mismatch")], other
    more = await api.get("/v1/leads", params={"consent_marketing": "true", "cursor": cursor})
    assert [lead["id"] for lead in more.json()["items"]] == [ids[1], ids[0]]

    plain = await api.get("/v1/leads", params={"limit": 1})
    rest = await api.get("/v1/leads", params={"cursor": plain.json()["next_cursor"]})
    assert rest.status_code == 200, rest.text
    assert len(rest.json()["items"]) == 3


async def test_the_openapi_document_describes_the_filter_and_the_consents(
    leads_app: FastAPI,
) -> None:
    """Both searches list `consent_marketing` with its three values; the lead's detail
    lists `consents` (each arrival's consent) and `consents_total`."""
    document = leads_app.openapi()
    for path in ("/v1/leads", "/v1/leads/export.csv"):
        parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        described = str(parameters["consent_marketing"])
        assert all(f"'{value}'" in described for value in ("true", "false", "none")), described
        assert "no consent" in parameters["consent_marketing"].get("description", "")
    detail = document["components"]["schemas"]["LeadDetailOut"]["properties"]
    assert "consents" in detail
    assert "consents_total" in detail
    event = document["components"]["schemas"]["ConsentEvent"]["properties"]
    assert set(event) == {"received_at", "source", "consent"}


# 2. The consent events ------------------------------------------------------------------


async def test_the_detail_lists_each_arrival_s_consent_oldest_first(api: httpx.AsyncClient) -> None:
    """Every arrival that sent a consent is listed, as stored (its time, wording and
    source), with when it arrived and where from; an arrival without one is not. The
    lead's own `consent` is the current one."""
    given = "2025-01-10T09:00:00Z"
    first = await post_lead(
        api,
        {"email": "eva@empresa.es", "source": "web_form", "consent": {**YES, "given_at": given}},
    )
    await post_lead(api, {"email": "eva@empresa.es", "source": "event"})
    await post_lead(api, {"email": "eva@empresa.es", "source": "api", "consent": NO})
    detail = (await api.get(f"/v1/leads/{first['id']}")).json()
    assert detail["arrivals"] == 3
    assert detail["consents_total"] == 2
    consents = detail["consents"]
    assert [(c["source"], c["consent"]["marketing"]) for c in consents] == [
        ("web_form", True),
        ("api", False),
    ]
    assert consents[0]["consent"] == {
        "marketing": True,
        "given_at": given,
        "wording_version": "rgpd-2024-03",
        "source": "https://form.es/a",
    }
    assert consents[1]["consent"]["wording_version"] is None
    assert consents[1]["consent"]["source"] == "https://form.es/baja"
    assert consents[1]["consent"]["given_at"] is not None  # the time it was received
    received = [c["received_at"] for c in consents]
    assert received == sorted(received)
    assert all(r.endswith("Z") for r in received)
    assert detail["consent"]["marketing"] is False


async def test_a_lead_without_any_consent_lists_none(api: httpx.AsyncClient) -> None:
    lead = await post_lead(api, {"email": "sin@empresa.es"})
    detail = (await api.get(f"/v1/leads/{lead['id']}")).json()
    assert (detail["consents"], detail["consents_total"]) == ([], 0)


async def test_the_consents_shown_are_the_last_100(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    """Of 105 consents the last 100 are shown, oldest first, and `consents_total` counts
    them all."""
    lead = await post_lead(api, {"email": "mucho@empresa.es", "consent": YES})
    resources: Resources = leads_app.state.resources
    start = datetime(2025, 1, 1, tzinfo=UTC)
    async with resources.db.sessionmaker() as session:
        lead_id = await session.scalar(select(Lead.id).where(Lead.uid == lead["id"]))
        assert lead_id is not None
        session.add_all(
            LeadSource(
                lead_id=lead_id,
                source="web_form",
                utm={},
                consent={
                    **YES,
                    "given_at": f"2025-01-01T00:00:{n:02d}Z",
                    "wording_version": f"v{n}",
                }
                if n % 10
                else None,  # every tenth arrival sent no consent
                received_at=start + timedelta(minutes=n),
            )
            for n in range(1, 117)
        )
        await session.commit()
    detail = (await api.get(f"/v1/leads/{lead['id']}")).json()
    # 1 (the lead's own) + 116 arrivals, 11 of them without a consent: 106 consents.
    assert detail["arrivals"] == 117
    assert detail["consents_total"] == 106
    shown = [c["consent"]["wording_version"] for c in detail["consents"]]
    assert len(shown) == 100
    kept = [f"v{n}" for n in range(1, 117) if n % 10]
    assert shown == kept[-100:]


async def test_an_erased_lead_keeps_no_consent_of_its_arrivals(
    api: httpx.AsyncClient, leads_app: FastAPI
) -> None:
    """Erasure clears every arrival's consent: the lead's detail is a 410, and its
    source rows hold no consent a detail could show."""
    lead = await post_lead(api, {"email": "borrar@empresa.es", "consent": YES})
    await post_lead(api, {"email": "borrar@empresa.es", "consent": NO})
    assert (await api.delete(f"/v1/leads/{lead['id']}")).status_code in (200, 204)
    assert (await api.get(f"/v1/leads/{lead['id']}")).status_code == 410
    resources: Resources = leads_app.state.resources
    async with resources.db.sessionmaker() as session:
        rows = (
            await session.scalars(
                select(LeadSource.consent)
                .join(Lead, Lead.id == LeadSource.lead_id)
                .where(Lead.uid == lead["id"])
            )
        ).all()
    assert len(rows) == 2
    assert all(not row for row in rows)

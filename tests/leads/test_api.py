"""The leads HTTP API on both databases, through the real app, job engine and a CRM at the port."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from cauce.app import Resources, job_worker_for
from cauce.core.security.apikeys import ApiKeyService
from cauce.leads.ports import CrmKey
from tests.leads.test_delivery import MemoryCrm


async def _drain(app: FastAPI) -> None:
    resources: Resources = app.state.resources
    worker = job_worker_for(resources)
    await worker.run_until_idle(30)


def _lead(**fields: Any) -> dict[str, Any]:
    base = {"email": f"{uuid.uuid4().hex[:8]}@empresa.es", "first_name": "Ana"}
    base.update(fields)
    return base


async def test_post_lead_answers_score_owner_and_syncs_once(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """A lead is accepted (201) with its score; after the worker runs it is in the CRM."""
    response = await api.post("/v1/leads", json=_lead(phone="612345678", country="ES"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["outcome"] == "created"
    assert body["score"] > 0
    assert body["score_reasons"]
    await _drain(leads_app)
    assert len(crm.contacts) == 1
    detail = (await api.get(f"/v1/leads/{body['id']}")).json()
    assert detail["sync"]["status"] == "synced"
    assert detail["phone"] == "+34612345678"
    assert [h["action"] for h in detail["history"]] == ["created"]


async def test_synced_leads_are_counted_in_the_metrics(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """`cauce_leads_synced_total{crm}` counts the leads the delivery jobs synced (it was
    declared, on the dashboard's list, and never counted)."""
    registry = leads_app.state.resources.registry
    for _ in range(3):
        assert (await api.post("/v1/leads", json=_lead())).status_code == 201
    await _drain(leads_app)
    assert len(crm.contacts) == 3
    assert registry.get_sample_value("cauce_leads_synced_total", {"crm": crm.name}) == 3
    assert (await api.post("/v1/leads", json=_lead())).status_code == 201
    await _drain(leads_app)
    assert registry.get_sample_value("cauce_leads_synced_total", {"crm": crm.name}) == 4


async def test_a_duplicate_is_merged_and_says_so(api: httpx.AsyncClient) -> None:
    """The same email again answers 200 `merged`, naming the lead and the fields filled."""
    first = (await api.post("/v1/leads", json=_lead(email="dup@empresa.es"))).json()
    again = await api.post("/v1/leads", json=_lead(email="DUP@empresa.es", company="Acme"))
    assert again.status_code == 200
    body = again.json()
    assert body["outcome"] == "merged"
    assert body["id"] == first["id"]
    assert body["duplicate"]["lead_id"] == first["id"]
    assert body["duplicate"]["merged_fields"] == ["company"]


async def test_bad_input_names_each_field(api: httpx.AsyncClient) -> None:
    """Invalid fields are 422 problems with JSON pointers; a non-JSON body is 400/415."""
    response = await api.post("/v1/leads", json={"email": "nope@", "phone": "12", "x": 1})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert {"/email", "/phone", "/x"} <= pointers
    assert (
        await api.post("/v1/leads", content=b"{", headers={"content-type": "application/json"})
    ).status_code == 400
    assert (
        await api.post("/v1/leads", content=b"a", headers={"content-type": "text/csv"})
    ).status_code == 415


async def test_batch_keeps_valid_items(api: httpx.AsyncClient) -> None:
    """A batch answers per item; valid items are stored even when others fail."""
    items = [_lead(), {"email": "bad"}, _lead(), "not an object"]
    response = await api.post("/v1/leads/batch", json={"items": items})
    assert response.status_code == 200
    body = response.json()
    assert (body["received"], body["accepted"], body["rejected"]) == (4, 2, 2)
    outcomes = [item["outcome"] for item in body["items"]]
    assert outcomes == ["created", "rejected", "created", "rejected"]
    assert body["items"][1]["errors"][0]["pointer"].startswith("/items/1/")


async def test_idempotency_key_replays_and_refuses_other_bodies(api: httpx.AsyncClient) -> None:
    """Same key + body replays the first answer; same key + other body is 422."""
    headers = {"Idempotency-Key": "order-42"}
    lead = _lead()
    first = await api.post("/v1/leads", json=lead, headers=headers)
    replay = await api.post("/v1/leads", json=lead, headers=headers)
    assert replay.status_code == first.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    other = await api.post("/v1/leads", json=_lead(), headers=headers)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    page = (await api.get("/v1/leads")).json()
    assert len(page["items"]) == 1


async def test_patch_erase_and_crm_erasure(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """PATCH changes and re-syncs; DELETE erases here (410 after) and in the CRM."""
    created = (await api.post("/v1/leads", json=_lead())).json()
    await _drain(leads_app)
    patched = await api.patch(f"/v1/leads/{created['id']}", json={"company": "Nueva SL"})
    assert patched.status_code == 200
    assert patched.json()["company"] == "Nueva SL"
    await _drain(leads_app)
    assert any(c.get("company") == "Nueva SL" for c in crm.contacts.values())
    assert (await api.delete(f"/v1/leads/{created['id']}")).status_code == 204
    await _drain(leads_app)
    assert crm.contacts == {}
    gone = await api.get(f"/v1/leads/{created['id']}")
    assert gone.status_code == 410
    assert (await api.get("/v1/leads/no-such-lead")).status_code == 404


async def test_export_neutralises_formulas(api: httpx.AsyncClient) -> None:
    """A company starting with `=` is exported with a leading apostrophe."""
    await api.post("/v1/leads", json=_lead(company="=HYPERLINK(1)"))
    response = await api.get("/v1/leads/export.csv")
    assert response.status_code == 200
    assert "'=HYPERLINK(1)" in response.text


async def test_export_in_semicolons_for_a_spanish_excel(api: httpx.AsyncClient) -> None:
    """`delimiter=;` writes the file a Spanish Excel opens in columns; a comma in a cell
    needs no quotes there, a `;` does; any other delimiter is a 422 naming it."""
    await api.post("/v1/leads", json=_lead(company="Bodegas, S.L.; Ribera"))
    response = await api.get("/v1/leads/export.csv", params={"delimiter": ";"})
    assert response.status_code == 200, response.text
    header, row = response.text.lstrip("\ufeff").splitlines()[:2]
    assert header.startswith("id;status;email;phone;")
    assert ';"Bodegas, S.L.; Ribera";' in row
    refused = await api.get("/v1/leads/export.csv", params={"delimiter": "|"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["pointer"].endswith("delimiter")


async def test_scopes_are_enforced(leads_app: FastAPI) -> None:
    """A read-only key cannot write or erase."""
    resources: Resources = leads_app.state.resources
    keys: ApiKeyService = resources.api_keys
    reader = await keys.create("r", ["leads:read"])
    transport = httpx.ASGITransport(app=leads_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        auth = {"Authorization": f"Bearer {reader.token}"}
        assert (await client.post("/v1/leads", json=_lead(), headers=auth)).status_code == 403
        assert (await client.get("/v1/leads", headers=auth)).status_code == 200
        assert (await client.get("/v1/leads")).status_code == 401
        # The two intake routes check the key in their body (auth.authorize), not by a
        # dependency: the same answers, before the body is even read.
        basic = {"Authorization": f"Basic {reader.token}"}
        for path in ("/v1/leads", "/v1/leads/batch"):
            for headers, status in (({}, 401), (basic, 401), (auth, 403)):
                answer = await client.post(path, content=b"not json", headers=headers)
                assert answer.status_code == status, (path, headers, answer.text)
                assert answer.headers["content-type"] == "application/problem+json"
        spec = (await client.get("/openapi.json")).json()
        for path in ("/v1/leads", "/v1/leads/batch"):
            assert spec["paths"][path]["post"]["security"] == [{"ApiKey": []}]


async def test_csv_import_runs_as_a_job(leads_app: FastAPI, api: httpx.AsyncClient) -> None:
    """An upload is queued (202), the job imports it, the status and report tell the result."""
    data = "nombre;correo;teléfono\nLucía;lucia@empresa.es;612345678\nMal;mal@;12\n"
    response = await api.post(
        "/v1/leads/import",
        files={"file": ("leads.csv", data.encode("cp1252"), "text/csv")},
    )
    assert response.status_code == 202, response.text
    import_id = response.json()["id"]
    await _drain(leads_app)
    status = (await api.get(f"/v1/leads/import/{import_id}")).json()
    assert (status["state"], status["rows_created"], status["rows_rejected"]) == (
        "succeeded",
        1,
        1,
    )
    assert status["columns"] == [  # the default Spanish headers, as read
        {"column": "nombre", "field": "first_name"},
        {"column": "correo", "field": "email"},
        {"column": "teléfono", "field": "phone"},
    ]
    report = await api.get(f"/v1/leads/import/{import_id}/errors.csv")
    assert report.status_code == 200
    assert "email" in report.text


async def test_colleagues_on_a_team_mailbox_are_two_contacts_in_the_crm(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    """Two people writing from `info@` are two leads, and two contacts: the first keeps
    the email (a CRM keeps an email on one contact), the second is keyed by its Cauce id
    and sent without it. Before, both upserted the one contact keyed by the email, the
    last writer's name won, and erasing one lead deleted the other's contact (found by a
    black-box audit of CRM sync)."""
    ana = (
        await api.post(
            "/v1/leads",
            json={"email": "info@muebles-garcia.es", "full_name": "Ana Gil Moreno"},
        )
    ).json()
    luis = (
        await api.post(
            "/v1/leads",
            json={"email": "info@muebles-garcia.es", "full_name": "Luis Mora Pérez"},
        )
    ).json()
    assert ana["id"] != luis["id"]
    await _drain(leads_app)
    by_lead = {str(p.get("cauce_id")): (key, p) for key, p in crm.contacts.items()}
    assert set(by_lead) == {ana["id"], luis["id"]}
    ana_key, ana_contact = by_lead[ana["id"]]
    luis_key, luis_contact = by_lead[luis["id"]]
    assert (ana_key.property, ana_contact["email"]) == ("email", "info@muebles-garcia.es")
    assert (luis_key.property, "email" in luis_contact) == ("cauce_id", False)
    assert (ana_contact["firstname"], luis_contact["firstname"]) == ("Ana", "Luis")
    assert (await api.delete(f"/v1/leads/{ana['id']}")).status_code == 204
    await _drain(leads_app)
    # Ana's contact went with her; Luis is sent again, now with the mailbox.
    assert {str(p.get("cauce_id")) for p in crm.contacts.values()} == {luis["id"]}
    handed = crm.contacts[CrmKey("email", "info@muebles-garcia.es")]
    assert (handed["cauce_id"], handed["firstname"]) == (luis["id"], "Luis")

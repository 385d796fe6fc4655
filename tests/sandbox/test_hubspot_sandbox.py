"""The sandbox CRM answers the contacts API as HubSpot does: upserts, unique keys, batches."""

from __future__ import annotations

from typing import Any

import httpx

from cauce.core.config import DEFAULT_CRM_FIELDS
from cauce.sandbox.config import SandboxCrmConfig

from .conftest import ARCHIVE, CONTACTS, READ, UPSERT, StartCrm, by_email


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    """The inspection report."""
    response = await client.get("/_sandbox/stats")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_upsert_creates_then_updates_the_same_contacts(
    crm_client: httpx.AsyncClient,
) -> None:
    """The first upsert creates (new=true); the same keys again update the same ids (new=false)."""
    first = await crm_client.post(UPSERT, json=by_email("a@x.es", "b@x.es", firstname="Ana"))
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "COMPLETE"
    assert [r["new"] for r in body["results"]] == [True, True]
    ids = [r["id"] for r in body["results"]]
    assert all(r["archived"] is False and r["createdAt"].endswith("Z") for r in body["results"])

    second = await crm_client.post(UPSERT, json=by_email("a@x.es", "b@x.es", firstname="Eva"))
    assert second.status_code == 200
    results = second.json()["results"]
    assert [r["id"] for r in results] == ids
    assert [r["new"] for r in results] == [False, False]
    assert {r["properties"]["firstname"] for r in results} == {"Eva"}
    report = await stats(crm_client)
    assert report["contacts"] == 2
    assert report["duplicate_count"] == 0


async def test_email_keys_are_case_insensitive_and_stored_lowercase(
    crm_client: httpx.AsyncClient,
) -> None:
    """HubSpot lowercases emails: Ana@X.es and ana@x.es are one contact."""
    first = await crm_client.post(UPSERT, json=by_email("Ana@X.es"))
    second = await crm_client.post(UPSERT, json=by_email(" ana@x.es"))
    assert first.json()["results"][0]["properties"]["email"] == "ana@x.es"
    assert second.json()["results"][0]["id"] == first.json()["results"][0]["id"]
    assert second.json()["results"][0]["new"] is False


async def test_the_same_id_twice_in_one_batch_rejects_the_batch(
    crm_client: httpx.AsyncClient,
) -> None:
    """Two inputs with one email: 400 'Duplicate IDs found in batch input', nothing written."""
    response = await crm_client.post(UPSERT, json=by_email("dup@x.es", "other@x.es", "DUP@x.es"))
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error"
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"] == "Duplicate IDs found in batch input: [dup@x.es]. IDs must be unique"
    assert body["context"] == {"ids": ["dup@x.es"]}
    assert body["correlationId"]
    assert (await stats(crm_client))["contacts"] == 0


async def test_more_than_100_inputs_is_a_validation_error(crm_client: httpx.AsyncClient) -> None:
    """101 inputs: 400 VALIDATION_ERROR and nothing written; exactly 100 is accepted."""
    emails = [f"p{i}@x.es" for i in range(101)]
    response = await crm_client.post(UPSERT, json=by_email(*emails))
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"
    assert "100" in response.json()["message"]
    assert (await stats(crm_client))["contacts"] == 0
    ok = await crm_client.post(UPSERT, json=by_email(*emails[:100]))
    assert ok.status_code == 200
    assert len(ok.json()["results"]) == 100
    too_many_reads = await crm_client.post(READ, json={"inputs": [{"id": "1"}] * 101})
    assert too_many_reads.status_code == 400


async def test_id_property_must_have_unique_values(crm_client: httpx.AsyncClient) -> None:
    """Upserting on a non-unique property is refused as HubSpot refuses it."""
    body = {"inputs": [{"idProperty": "firstname", "id": "Ana", "properties": {}}]}
    response = await crm_client.post(UPSERT, json=body)
    assert response.status_code == 400
    assert response.json()["message"].startswith(
        "Unable to perform update/upsert by non-unique 0-1 property firstname"
    )


async def test_custom_unique_property_keys_leads_without_email(
    crm_client: httpx.AsyncClient,
) -> None:
    """Upserts on cauce_id create once and then update, even without an email."""
    body = {"inputs": [{"idProperty": "cauce_id", "id": "L-1", "properties": {"phone": "600"}}]}
    first = await crm_client.post(UPSERT, json=body)
    again = await crm_client.post(UPSERT, json=body)
    assert first.json()["results"][0]["new"] is True
    assert again.json()["results"][0]["new"] is False
    assert again.json()["results"][0]["id"] == first.json()["results"][0]["id"]
    assert again.json()["results"][0]["properties"]["cauce_id"] == "L-1"


async def test_an_email_owned_by_another_contact_is_a_conflict(
    crm_client: httpx.AsyncClient,
) -> None:
    """Keyed on cauce_id, an email that another contact has gives 409 and writes nothing."""
    owner = await crm_client.post(UPSERT, json=by_email("taken@x.es"))
    owner_id = owner.json()["results"][0]["id"]
    body = {
        "inputs": [
            {"idProperty": "cauce_id", "id": "L-9", "properties": {"firstname": "Ok"}},
            {"idProperty": "cauce_id", "id": "L-2", "properties": {"email": "taken@x.es"}},
        ]
    }
    response = await crm_client.post(UPSERT, json=body)
    assert response.status_code == 409
    assert response.json()["category"] == "CONFLICT"
    assert response.json()["message"] == f"Contact already exists. Existing ID: {owner_id}"
    assert (await stats(crm_client))["contacts"] == 1


async def test_trace_ids_on_a_custom_key_give_a_partial_207(
    crm_client: httpx.AsyncClient,
) -> None:
    """Trace ids on every input (key not email): valid inputs land, 207 lists the failed ones."""
    body = {
        "inputs": [
            {"idProperty": "cauce_id", "id": "L-1", "objectWriteTraceId": "t1",
             "properties": {"email": "good@x.es"}},
            {"idProperty": "cauce_id", "id": "L-2", "objectWriteTraceId": "t2",
             "properties": {"email": "not-an-email"}},
        ]
    }  # fmt: skip
    response = await crm_client.post(UPSERT, json=body)
    assert response.status_code == 207
    data = response.json()
    assert data["numErrors"] == 1
    assert [r["objectWriteTraceId"] for r in data["results"]] == ["t1"]
    error = data["errors"][0]
    assert error["status"] == "error"
    assert error["category"] == "VALIDATION_ERROR"
    assert error["context"] == {"objectWriteTraceId": ["t2"]}
    assert "INVALID_EMAIL" in error["message"]
    assert (await stats(crm_client))["contacts"] == 1


async def test_no_partial_upserts_when_keyed_on_email(crm_client: httpx.AsyncClient) -> None:
    """Keyed on email, one bad input fails the whole batch even with trace ids."""
    body = by_email("fine@x.es", "bad@x.es")
    for i, item in enumerate(body["inputs"]):
        item["objectWriteTraceId"] = f"t{i}"
    body["inputs"][1]["properties"] = {"nosuchproperty": "x"}
    response = await crm_client.post(UPSERT, json=body)
    assert response.status_code == 400
    assert "PROPERTY_DOESNT_EXIST" in response.json()["message"]
    assert (await stats(crm_client))["contacts"] == 0


async def test_unknown_properties_are_accepted_only_when_not_strict(
    start_crm: StartCrm,
) -> None:
    """A lenient portal stores properties it does not know; a strict one refuses them."""
    _, lenient = await start_crm(strict_properties=False)
    ok = await lenient.post(UPSERT, json=by_email("a@x.es", anything="1"))
    assert ok.status_code == 200
    _, declared = await start_crm(extra_properties=("cauce_score",))
    assert (
        await declared.post(UPSERT, json=by_email("a@x.es", cauce_score="7"))
    ).status_code == 200


async def test_batch_read_names_the_missing_ids(crm_client: httpx.AsyncClient) -> None:
    """Reading by email returns what exists and a 207 OBJECT_NOT_FOUND listing the rest."""
    await crm_client.post(UPSERT, json=by_email("here@x.es", firstname="Ana"))
    body = {"idProperty": "email", "properties": ["firstname"],
            "inputs": [{"id": "here@x.es"}, {"id": "gone@x.es"}]}  # fmt: skip
    partial = await crm_client.post(READ, json=body)
    assert partial.status_code == 207
    data = partial.json()
    assert [r["properties"]["firstname"] for r in data["results"]] == ["Ana"]
    assert data["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert data["errors"][0]["context"] == {"ids": ["gone@x.es"]}
    full = await crm_client.post(
        READ, json={"idProperty": "email", "inputs": [{"id": "here@x.es"}]}
    )
    assert full.status_code == 200
    assert "errors" not in full.json()


async def test_archive_then_upsert_creates_a_new_contact(crm_client: httpx.AsyncClient) -> None:
    """Archived contacts leave the unique index: the same email upserted later is new."""
    created = await crm_client.post(UPSERT, json=by_email("bye@x.es"))
    contact_id = created.json()["results"][0]["id"]
    archived = await crm_client.post(ARCHIVE, json={"inputs": [{"id": contact_id}, {"id": "9"}]})
    assert archived.status_code == 204
    missing = await crm_client.get(f"{CONTACTS}/{contact_id}")
    assert missing.status_code == 404
    assert missing.json()["category"] == "OBJECT_NOT_FOUND"
    kept = await crm_client.get(f"{CONTACTS}/{contact_id}", params={"archived": "true"})
    assert kept.json()["archived"] is True
    again = await crm_client.post(UPSERT, json=by_email("bye@x.es"))
    assert again.json()["results"][0]["new"] is True
    assert again.json()["results"][0]["id"] != contact_id


async def test_single_contact_routes_accept_id_property(crm_client: httpx.AsyncClient) -> None:
    """GET, PATCH and DELETE by record id or by ?idProperty=email."""
    created = await crm_client.post(UPSERT, json=by_email("one@x.es", firstname="Ana"))
    contact_id = created.json()["results"][0]["id"]
    got = await crm_client.get(f"{CONTACTS}/one@x.es", params={"idProperty": "email"})
    assert got.status_code == 200
    assert got.json()["id"] == contact_id
    patched = await crm_client.patch(
        f"{CONTACTS}/one@x.es",
        params={"idProperty": "email"},
        json={"properties": {"lifecyclestage": "customer"}},
    )
    assert patched.status_code == 200
    assert patched.json()["properties"]["lifecyclestage"] == "customer"
    bad = await crm_client.patch(
        f"{CONTACTS}/{contact_id}", json={"properties": {"lifecyclestage": "won"}}
    )
    assert bad.status_code == 400
    assert "INVALID_OPTION" in bad.json()["message"]
    assert (await crm_client.delete(f"{CONTACTS}/{contact_id}")).status_code == 204
    assert (await crm_client.get(f"{CONTACTS}/{contact_id}")).status_code == 404


async def test_plain_create_conflicts_and_gdpr_delete_removes(
    crm_client: httpx.AsyncClient,
) -> None:
    """POST /contacts is not idempotent (409 on the same email); GDPR delete erases for good."""
    body = {"properties": {"email": "gdpr@x.es"}}
    created = await crm_client.post(CONTACTS, json=body)
    assert created.status_code == 201
    again = await crm_client.post(CONTACTS, json=body)
    assert again.status_code == 409
    assert again.json()["message"] == f"Contact already exists. Existing ID: {created.json()['id']}"
    erase = {"objectId": "gdpr@x.es", "idProperty": "email"}
    assert (await crm_client.post(f"{CONTACTS}/gdpr-delete", json=erase)).status_code == 204
    assert (await crm_client.post(f"{CONTACTS}/gdpr-delete", json=erase)).status_code == 404
    report = await stats(crm_client)
    assert report["contacts"] == 0
    assert report["archived"] == 0


async def test_requests_without_the_token_get_401(start_crm: StartCrm) -> None:
    """No or a wrong bearer token: HubSpot's 401 body, no rate-limit headers, no slot used."""
    crm, client = await start_crm(rate_limit=1)
    async with httpx.AsyncClient(base_url=crm.url) as anonymous:
        missing = await anonymous.post(UPSERT, json=by_email("a@x.es"))
        wrong = await anonymous.post(
            UPSERT, json=by_email("a@x.es"), headers={"Authorization": "Bearer nope"}
        )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json()["category"] == "INVALID_AUTHENTICATION"
        assert response.json()["message"].startswith("Authentication credentials not found.")
        assert "X-HubSpot-RateLimit-Remaining" not in response.headers
    assert (await client.post(UPSERT, json=by_email("a@x.es"))).status_code == 200


async def test_results_come_back_shuffled_but_complete(start_crm: StartCrm) -> None:
    """By default the order of results is not the order of inputs, as on HubSpot."""
    _, client = await start_crm(seed=3)
    emails = [f"s{i}@x.es" for i in range(20)]
    response = await client.post(UPSERT, json=by_email(*emails))
    got = [r["properties"]["email"] for r in response.json()["results"]]
    assert sorted(got) == sorted(emails)
    assert got != emails


async def test_listing_pages_through_every_contact(crm_client: httpx.AsyncClient) -> None:
    """GET /contacts pages with paging.next.after until every contact was seen once."""
    await crm_client.post(UPSERT, json=by_email(*[f"l{i}@x.es" for i in range(25)]))
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "10", **({"after": after} if after else {})}
        page = (await crm_client.get(CONTACTS, params=params)).json()
        seen.extend(r["id"] for r in page["results"])
        if "paging" not in page:
            break
        after = page["paging"]["next"]["after"]
    assert len(seen) == len(set(seen)) == 25


def test_a_default_portal_takes_what_cauces_default_mapping_sends() -> None:
    """`cauce sandbox crm` as the README starts it refused every lead with 400
    PROPERTY_DOESNT_EXIST: the default mapping sends `cauce_score` and `cauce_owner`,
    which the sandbox's portal lacked (found by a black-box audit of CRM sync)."""
    sent = set(DEFAULT_CRM_FIELDS.values())
    assert sent <= SandboxCrmConfig().known_properties
    assert {"cauce_score", "cauce_owner"} <= sent

"""PATCH /v1/leads/{id}, on both databases (found by an audit of PATCH, helper-107):

1. `utm` is merged member by member (RFC 7396), as `custom_fields` is: `{"utm":
   {"campaign": "x"}}` dropped the source and medium (and a paid campaign's points).
2. A `full_name` sent alone is split by the lead's own country's convention, as intake
   split it: a US lead's `John Michael Smith` became John / Michael Smith.
3. A field Cauce sets (`score`, `id`, `created_at`, ...) sent in a lead or a change is
   told `read_only`, not "Extra inputs are not permitted".
4. An `updated` line gives the before and after of the lead's sales state (status,
   source, owner, team, score), not only the names of the fields.
"""

from __future__ import annotations

import uuid

import httpx

from tests.leads.api_client import post_lead


def _email() -> str:
    return f"p.{uuid.uuid4().hex[:10]}@empresa.es"


async def test_utm_is_merged_member_by_member(api: httpx.AsyncClient) -> None:
    lead = await post_lead(
        api, {"email": _email(), "utm": {"source": "google", "medium": "cpc", "term": "crm"}}
    )
    url = f"/v1/leads/{lead['id']}"

    async def utm_after(body: object) -> object:
        patched = await api.patch(url, json={"utm": body})
        assert patched.status_code == 200, patched.text
        utm = patched.json()["utm"]  # the members not set are shown as null
        return None if utm is None else {k: v for k, v in utm.items() if v is not None}

    assert await utm_after({"campaign": "spring"}) == {
        "source": "google", "medium": "cpc", "term": "crm", "campaign": "spring"
    }  # fmt: skip
    assert await utm_after({"term": None}) == {
        "source": "google", "medium": "cpc", "campaign": "spring"
    }  # fmt: skip
    before = (await api.get(url)).json()["history_total"]
    assert await utm_after({}) == {"source": "google", "medium": "cpc", "campaign": "spring"}
    assert (await api.get(url)).json()["history_total"] == before  # no change, no line
    assert await utm_after(None) is None


async def test_a_full_name_alone_is_split_by_the_leads_country(api: httpx.AsyncClient) -> None:
    us = await post_lead(api, {"email": _email(), "country": "US"})
    patched = await api.patch(f"/v1/leads/{us['id']}", json={"full_name": "John Michael Smith"})
    assert (patched.json()["first_name"], patched.json()["last_name"]) == (
        "John Michael",
        "Smith",
    )
    es = await post_lead(api, {"email": _email(), "country": "ES"})
    patched = await api.patch(f"/v1/leads/{es['id']}", json={"full_name": "Juan Pérez García"})
    assert (patched.json()["first_name"], patched.json()["last_name"]) == ("Juan", "Pérez García")
    # A country sent with it wins, and one cleared with it splits by the default.
    sent = await api.patch(
        f"/v1/leads/{us['id']}", json={"full_name": "Ana María López", "country": None}
    )
    assert (sent.json()["first_name"], sent.json()["last_name"]) == ("Ana María", "López")


async def test_fields_cauce_sets_are_told_read_only(api: httpx.AsyncClient) -> None:
    lead = await post_lead(api, {"email": _email()})
    patched = await api.patch(
        f"/v1/leads/{lead['id']}", json={"score": 99, "created_at": "2020-01-01T00:00:00Z"}
    )
    assert patched.status_code == 422, patched.text
    errors = {e["pointer"]: (e["type"], e["detail"]) for e in patched.json()["errors"]}
    assert errors == {
        "/score": ("read_only", "is read-only: Cauce sets it (leave it out)"),
        "/created_at": ("read_only", "is read-only: Cauce sets it (leave it out)"),
    }
    posted = await api.post("/v1/leads", json={"email": _email(), "id": "x", "nombre": "y"})
    types = {e["pointer"]: e["type"] for e in posted.json()["errors"]}
    assert types == {"/id": "read_only", "/nombre": "extra_forbidden"}
    batch = await api.post("/v1/leads/batch", json={"items": [{"email": _email(), "team": "x"}]})
    [item] = batch.json()["items"]
    assert [(e["pointer"], e["type"]) for e in item["errors"]] == [("/items/0/team", "read_only")]
    # A batch's own body, or a review's, is no lead: an extra member there is just extra.
    envelope = await api.post("/v1/leads/batch", json={"items": [], "score": 1})
    assert {e["pointer"]: e["type"] for e in envelope.json()["errors"]}["/score"] == (
        "extra_forbidden"
    )


async def test_an_updated_line_gives_the_sales_state_before_and_after(
    api: httpx.AsyncClient,
) -> None:
    lead = await post_lead(api, {"email": _email(), "source": "api"})
    url = f"/v1/leads/{lead['id']}"
    score = (await api.get(url)).json()["score"]
    patched = await api.patch(url, json={"status": "won", "source": "web_form", "city": "Soria"})
    assert patched.status_code == 200, patched.text
    line = (await api.get(url)).json()["history"][0]
    assert set(line["changes"]["fields"]) == {"city", "source", "status"}
    values = line["changes"]["values"]
    assert values["status"] == {"from": "new", "to": "won"}
    assert values["source"] == {"from": "api", "to": "web_form"}
    assert values["score"]["from"] == score
    assert "city" not in values  # a person's data stays out of history


async def test_a_change_with_if_match_goes_ahead_only_on_that_version(
    api: httpx.AsyncClient,
) -> None:
    """GET gives the lead's version as its ETag; a PATCH or DELETE with `If-Match` of an
    older one is 412 `precondition_failed` and changes nothing (the audit: the last
    writer won without knowing; `If-Match` was ignored)."""
    lead = await post_lead(api, {"email": _email()})
    url = f"/v1/leads/{lead['id']}"
    read = await api.get(url)
    tag = read.headers["etag"]
    assert tag == f'"{read.json()["sync"]["version"]}"'
    first = await api.patch(url, json={"city": "Soria"}, headers={"If-Match": tag})
    assert first.status_code == 200, first.text
    assert first.headers["etag"] != tag
    stale = await api.patch(url, json={"city": "Teruel"}, headers={"If-Match": tag})
    assert stale.status_code == 412, stale.text
    assert stale.json()["code"] == "precondition_failed"
    assert (await api.get(url)).json()["city"] == "Soria"
    listed = f'"0", {first.headers["etag"]}'  # any of a list
    assert (await api.patch(url, json={"city": "Cuenca"}, headers={"If-Match": listed})).is_success
    weak = "W/" + (await api.get(url)).headers["etag"]  # If-Match compares strongly
    refused = await api.patch(url, json={"city": "Lugo"}, headers={"If-Match": weak})
    assert refused.status_code == 412
    assert (await api.patch(url, json={"city": "Ávila"}, headers={"If-Match": "*"})).is_success
    gone = await api.delete(url, headers={"If-Match": tag})
    assert gone.status_code == 412, gone.text
    current = (await api.get(url)).headers["etag"]
    assert (await api.delete(url, headers={"If-Match": current})).status_code == 204


async def test_clearing_the_full_name_alone_is_refused_saying_how(
    api: httpx.AsyncClient,
) -> None:
    """`full_name` is composed of the halves: `null` alone changed nothing, silently."""
    lead = await post_lead(api, {"email": _email(), "full_name": "Ana López"})
    for sent in (None, ""):
        refused = await api.patch(f"/v1/leads/{lead['id']}", json={"full_name": sent})
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert (error["pointer"], error["type"]) == ("/full_name", "not_clearable")
    cleared = await api.patch(
        f"/v1/leads/{lead['id']}", json={"first_name": None, "last_name": None}
    )
    assert cleared.json()["full_name"] is None
    # The three cleared together (a client sending back what it read, emptied) is fine.
    again = await api.patch(
        f"/v1/leads/{lead['id']}", json={"first_name": None, "last_name": None, "full_name": None}
    )
    assert again.status_code == 200, again.text

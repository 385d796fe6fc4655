"""The email or phone a PATCH replaces, on both databases (found by an audit of PATCH,
helper-107):

1. The replaced one stays a match key of the lead (`other_emails`, `other_phones`), and
   `GET /v1/leads/{id}` now shows it: it showed only the contacts arrivals had sent, so a
   key that merged later arrivals, blocked other leads' edits and was exported could not
   be seen, nor asked to be forgotten.
2. A replaced number with an extension is kept with it (`+34910824000;ext=5`), keyed as
   intake keys it: kept bare, the switchboard's number became the lead's key, and a
   colleague on the same switchboard could no longer change their own number (409).
"""

from __future__ import annotations

import uuid

import httpx

from tests.leads.api_client import post_lead

SWITCHBOARD = "+34 910 824 000"


def _email(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:8]}@empresa.es"


def _mobile() -> str:
    return f"+34 6{uuid.uuid4().int % 10**8:08d}"


async def test_a_replaced_email_is_shown_among_the_other_emails(api: httpx.AsyncClient) -> None:
    first, second, third = _email("ana"), _email("ana2"), _email("ana3")
    lead = (await post_lead(api, {"email": first, "first_name": "Ana"}))["id"]
    for new in (second, third):
        patched = await api.patch(f"/v1/leads/{lead}", json={"email": new})
        assert patched.status_code == 200, patched.text
    shown = (await api.get(f"/v1/leads/{lead}")).json()
    assert shown["email"] == third
    assert sorted(shown["other_emails"]) == sorted([first, second])
    # What is shown is what matches: an arrival with the second address is this lead.
    again = await post_lead(api, {"email": second, "first_name": "Ana"})
    assert (again["outcome"], again["id"]) == ("merged", lead)
    # And what is shown can be forgotten: then it matches no more.
    kept = await api.patch(f"/v1/leads/{lead}", json={"other_emails": [first]})
    assert kept.status_code == 200, kept.text
    assert (await api.get(f"/v1/leads/{lead}")).json()["other_emails"] == [first]
    stranger = await post_lead(api, {"email": second, "first_name": "Berta"})
    assert stranger["outcome"] == "created"


async def test_a_replaced_number_keeps_its_extension_and_frees_the_switchboard(
    api: httpx.AsyncClient,
) -> None:
    carmen = await post_lead(
        api, {"email": _email("carmen"), "phone": SWITCHBOARD, "phone_extension": "5"}
    )
    diego = await post_lead(
        api, {"email": _email("diego"), "phone": SWITCHBOARD, "phone_extension": "6"}
    )
    assert (carmen["outcome"], diego["outcome"]) == ("created", "created")
    moved = await api.patch(f"/v1/leads/{carmen['id']}", json={"phone": _mobile()})
    assert moved.status_code == 200, moved.text
    shown = (await api.get(f"/v1/leads/{carmen['id']}")).json()
    assert shown["other_phones"] == ["+34910824000;ext=5"]
    # Diego's own new number is no one's: it was refused, the bare switchboard being
    # Carmen's key.
    diego_moved = await api.patch(f"/v1/leads/{diego['id']}", json={"phone": _mobile()})
    assert diego_moved.status_code == 200, diego_moved.text
    assert (await api.get(f"/v1/leads/{diego['id']}")).json()["other_phones"] == [
        "+34910824000;ext=6"
    ]
    # The switchboard alone is nobody's; Carmen's old extension is still hers.
    reception = await post_lead(api, {"email": _email("recepcion"), "phone": SWITCHBOARD})
    assert reception["outcome"] == "created"
    back = await post_lead(api, {"phone": SWITCHBOARD, "phone_extension": "5"})
    assert (back["outcome"], back["id"]) == ("merged", carmen["id"])


async def test_an_arrival_on_another_extension_is_kept_with_it(api: httpx.AsyncClient) -> None:
    """A merged arrival's number with another extension joins the other phones with it,
    and the switchboard of the lead's own extension never does."""
    email = _email("elena")
    lead = await post_lead(api, {"email": email, "phone": SWITCHBOARD, "phone_extension": "7"})
    bare = await post_lead(api, {"email": email, "phone": SWITCHBOARD})
    other = await post_lead(api, {"email": email, "phone": SWITCHBOARD, "phone_extension": "8"})
    assert {bare["id"], other["id"]} == {lead["id"]}
    shown = (await api.get(f"/v1/leads/{lead['id']}")).json()
    assert shown["phone_extension"] == "7"
    assert shown["other_phones"] == ["+34910824000;ext=8"]


async def test_a_patch_to_an_extension_of_a_listed_switchboard_leaves_it_no_key(
    api: httpx.AsyncClient,
) -> None:
    """The bare switchboard an arrival brought is in the other phones; a PATCH giving the
    lead an extension on it takes it out (it was hidden and still a key: a colleague could
    not take the switchboard as their own number; found by review)."""
    email, mobile = _email("ana"), _mobile()
    ana = await post_lead(api, {"email": email, "phone": mobile, "first_name": "Ana"})
    await post_lead(api, {"email": email, "phone": SWITCHBOARD, "first_name": "Ana"})
    url = f"/v1/leads/{ana['id']}"
    assert (await api.get(url)).json()["other_phones"] == ["+34910824000"]
    moved = await api.patch(url, json={"phone": SWITCHBOARD, "phone_extension": "5"})
    assert moved.status_code == 200, moved.text
    assert (await api.get(url)).json()["other_phones"] == [mobile.replace(" ", "")]
    colleague = await post_lead(api, {"email": _email("bruno"), "phone": _mobile()})
    took = await api.patch(f"/v1/leads/{colleague['id']}", json={"phone": SWITCHBOARD})
    assert took.status_code == 200, took.text


async def test_a_batch_folds_an_extension_as_single_leads_do(api: httpx.AsyncClient) -> None:
    """An arrival's extension of another number stays with it in a batch too: the batch
    gave the lead that extension on its own number, keyed it so in memory, and a later
    item with the lead's own number was created apart (one by one it merged)."""
    number, other = _mobile(), _mobile()
    items = [
        {"email": _email("carla"), "phone": number, "first_name": "Carla"},
        {"phone": other, "phone_extension": "7", "first_name": "Carla"},
        {"email": _email("carla2"), "phone": number, "first_name": "Carla"},
    ]
    items[1]["email"] = items[0]["email"]
    batch = await api.post("/v1/leads/batch", json={"items": items})
    assert batch.status_code == 200, batch.text
    outcomes = [item["outcome"] for item in batch.json()["items"]]
    assert outcomes == ["created", "merged", "merged"]
    lead = (await api.get(f"/v1/leads/{batch.json()['items'][0]['id']}")).json()
    assert (lead["phone"], lead["phone_extension"]) == (number.replace(" ", ""), None)
    assert f"{other.replace(' ', '')};ext=7" in lead["other_phones"]

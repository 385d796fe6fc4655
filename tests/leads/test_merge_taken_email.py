"""An arrival that merges into a lead by its phone (or name) does not give the lead an
email another live lead already has as its own, on both databases (found by a mixed-load
audit, helper-122). Daniel's lead had only his phone; Ana's came with the family's
mailbox; then Daniel came with his phone and that mailbox, and the merge filled his
lead's email with it. Two live leads then had one email, which a CRM keeps on one
contact: HubSpot refused Daniel's (CONFLICT) for good, at every later merge again. The
address now joins his other emails (a match key, shown in the lead) instead.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.leads.api_client import get_lead, post_lead

MAILBOX = "familia.quispe@gmail.com"
PHONE = "+52 55 1234 5678"
FAMILY = {"last_name": "Quispe Mamani", "country": "MX", "city": "Puebla"}


def _daniel_then_ana() -> list[dict[str, Any]]:
    return [
        {"first_name": "Daniel", "phone": PHONE, **FAMILY},
        {"first_name": "Ana", "email": MAILBOX, **FAMILY},
        {"first_name": "Daniel", "phone": PHONE, "email": MAILBOX, **FAMILY},
    ]


async def _check(api: httpx.AsyncClient, daniel: str, ana: str, third: dict[str, Any]) -> None:
    assert (third["outcome"], third["id"]) == ("merged", daniel)
    assert third["duplicate"]["match"] == "phone"
    assert "email" not in third["duplicate"]["merged_fields"]
    lead = await get_lead(api, daniel)
    assert lead["email"] is None
    assert lead["other_emails"] == [MAILBOX]
    assert lead["history"][0]["changes"]["added"] == ["other_emails"]
    assert (await get_lead(api, ana))["email"] == MAILBOX
    # Only Ana's lead has the address as its own.
    found = (await api.get("/v1/leads", params={"q": MAILBOX})).json()["items"]
    assert sorted(item["email"] or "" for item in found) == ["", MAILBOX]


async def test_one_by_one(api: httpx.AsyncClient) -> None:
    first, second, third = _daniel_then_ana()
    daniel = await post_lead(api, first)
    ana = await post_lead(api, second)
    assert ana["outcome"] == "created"
    await _check(api, daniel["id"], ana["id"], await post_lead(api, third))


async def test_in_one_batch(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/leads/batch", json={"items": _daniel_then_ana()})
    assert response.status_code == 200, response.text
    first, second, third = response.json()["items"]
    assert (first["outcome"], second["outcome"]) == ("created", "created")
    await _check(api, first["id"], second["id"], third)


async def test_an_email_no_other_lead_has_still_fills(api: httpx.AsyncClient) -> None:
    daniel = await post_lead(api, {"first_name": "Daniel", "phone": PHONE, **FAMILY})
    again = await post_lead(
        api, {"first_name": "Daniel", "phone": PHONE, "email": "daniel.q@gmail.com", **FAMILY}
    )
    assert "email" in again["duplicate"]["merged_fields"]
    assert (await get_lead(api, daniel["id"]))["email"] == "daniel.q@gmail.com"

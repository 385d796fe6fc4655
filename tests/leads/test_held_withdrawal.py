"""A marketing "no" held for review reaches the lead it is held against when it came from
one of that lead's mailboxes (GDPR art. 7(3): a withdrawal cannot wait for a person's
review), on both databases. Before, the lead kept its "yes", and went on being synced
to the CRM as consenting, until someone reviewed the held copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from cauce.app import create_app
from tests.conftest import SettingsFactory
from tests.leads.api_client import client_with, get_lead, post_lead
from tests.leads.test_delivery import MemoryCrm

YES = {
    "marketing": True,
    "wording_version": "rgpd-2024-03",
    "source": "form-a",
    "given_at": "2026-03-01T10:00:00+00:00",
}
NO = {"marketing": False, "source": "unsubscribe-link"}


@pytest.fixture
async def leads_app(settings_factory: SettingsFactory, crm: MemoryCrm) -> AsyncIterator[FastAPI]:
    """Every duplicate is held for review (`on_duplicate = "review"`)."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"dedupe": {"on_duplicate": "review"}},
    )
    app = create_app(settings, crm=crm)
    async with LifespanManager(app):
        yield app


async def test_a_no_from_the_leads_mailbox_reaches_it_at_once(api: httpx.AsyncClient) -> None:
    ana = await post_lead(api, {"email": "ana.gil@bodegas.es", "first_name": "Ana", "consent": YES})
    before = await get_lead(api, ana["id"])
    held = await post_lead(api, {"email": "Ana.Gil@bodegas.es", "consent": NO})
    assert (held["outcome"], held["duplicate"]["lead_id"]) == ("held_for_review", ana["id"])
    after = await get_lead(api, ana["id"])
    assert after["consent"]["marketing"] is False
    assert after["consent"]["source"] == "unsubscribe-link"
    assert after["sync"]["status"] == "pending"
    assert after["score"] < before["score"]  # the consent's points went with it
    line = after["history"][0]
    assert line["action"] == "updated"
    assert line["changes"]["withdrawn_by"] == held["id"]
    assert line["changes"]["values"]["consent"]["from"]["marketing"] is True
    assert line["changes"]["values"]["consent"]["to"]["marketing"] is False
    # The held lead keeps its own copy, and still waits for its review.
    copy = await get_lead(api, held["id"])
    assert (copy["consent"]["marketing"], copy["sync"]["status"]) == (False, "held")


async def test_a_no_from_another_mailbox_waits_for_the_review(api: httpx.AsyncClient) -> None:
    phone = "+34 612 345 678"
    ana = await post_lead(api, {"email": "ana.gil@bodegas.es", "phone": phone, "consent": YES})
    held = await post_lead(api, {"email": "pedro@gmail.com", "phone": phone, "consent": NO})
    assert held["outcome"] == "held_for_review"
    without = await post_lead(api, {"phone": phone, "consent": NO})
    assert without["outcome"] == "held_for_review"
    after = await get_lead(api, ana["id"])
    assert after["consent"]["marketing"] is True
    assert [line["action"] for line in after["history"]] == ["created"]


async def test_a_no_dated_before_the_yes_does_not_undo_it(api: httpx.AsyncClient) -> None:
    ana = await post_lead(api, {"email": "ana.gil@bodegas.es", "consent": YES})
    old_no = {**NO, "given_at": "2026-01-15T09:00:00+00:00"}
    held = await post_lead(api, {"email": "ana.gil@bodegas.es", "consent": old_no})
    assert held["outcome"] == "held_for_review"
    assert (await get_lead(api, ana["id"]))["consent"]["marketing"] is True


async def test_a_batch_reaches_a_lead_created_in_it_and_one_stored(
    api: httpx.AsyncClient,
) -> None:
    """Item by item as if sent alone: the lead the first item created takes the third's
    "no"; a stored lead takes the second's; an item from another mailbox changes nothing."""
    stored = await post_lead(api, {"email": "luis@bodegas.es", "consent": YES})
    response = await api.post(
        "/v1/leads/batch",
        json={
            "items": [
                {"email": "marta@bodegas.es", "consent": YES},
                {"email": "luis@bodegas.es", "consent": NO},
                {"email": "marta@bodegas.es", "consent": NO},
                {"email": "otra@bodegas.es", "consent": NO},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    outcomes = [item["outcome"] for item in body["items"]]
    assert outcomes == ["created", "held_for_review", "held_for_review", "created"]
    marta = await get_lead(api, body["items"][0]["id"])
    assert marta["consent"]["marketing"] is False
    assert marta["history"][0]["changes"]["withdrawn_by"] == body["items"][2]["id"]
    luis = await get_lead(api, stored["id"])
    assert luis["consent"]["marketing"] is False
    assert luis["history"][0]["changes"]["withdrawn_by"] == body["items"][1]["id"]


FAMILY = "familia.paredes@gmail.com"
JORGE = {"email": FAMILY, "full_name": "Jorge Paredes Huamán", "consent": YES}
VALENTINA = {"email": FAMILY, "full_name": "Valentina Paredes Quispe"}
HER_PHONE = "+51 987 111 222"


@pytest.fixture
async def merging_api(
    settings_factory: SettingsFactory, crm: MemoryCrm
) -> AsyncIterator[httpx.AsyncClient]:
    """The default policy: an arrival matching a held lead merges into it (held still)."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"}, jobs={"embedded_worker": False}
    )
    app = create_app(settings, crm=crm)
    async with LifespanManager(app):
        api = await client_with(app, ["leads:read", "leads:write", "leads:admin"])
        async with api:
            yield api


async def _jorge_said_no(api: httpx.AsyncClient, jorge: str, held: str) -> None:
    after = await get_lead(api, jorge)
    assert after["consent"]["marketing"] is False
    assert after["sync"]["status"] == "pending"
    line = after["history"][0]
    assert (line["action"], line["changes"]["withdrawn_by"]) == ("updated", held)
    copy = await get_lead(api, held)
    assert (copy["consent"]["marketing"], copy["sync"]["status"]) == (False, "held")


async def test_a_no_merged_into_a_held_lead_reaches_the_lead_it_is_held_against(
    merging_api: httpx.AsyncClient,
) -> None:
    """The family's mailbox: Jorge's lead says yes; Valentina's, on the same mailbox, is
    held against his. A "no" from the mailbox under her name merges into her held lead,
    and reaches his at once, as one held against his does (before: only at the review).
    A "no" from another mailbox merged into her held lead does not."""
    api = merging_api
    jorge = (await post_lead(api, JORGE))["id"]
    held = await post_lead(api, {**VALENTINA, "phone": HER_PHONE})
    assert (held["outcome"], held["duplicate"]["lead_id"]) == ("held_for_review", jorge), held

    other = await post_lead(api, {"email": "vale@minera.pe", "phone": HER_PHONE, "consent": NO})
    assert (other["outcome"], other["id"]) == ("merged", held["id"]), other
    assert (await get_lead(api, jorge))["consent"]["marketing"] is True

    no = await post_lead(api, {**VALENTINA, "consent": NO})
    assert (no["outcome"], no["id"]) == ("merged", held["id"]), no
    await _jorge_said_no(api, jorge, held["id"])


async def test_a_batch_carries_a_no_merged_into_a_lead_it_held(
    merging_api: httpx.AsyncClient,
) -> None:
    """The held lead made by the batch's first item, the "no" merged into it by its
    second: it reaches the stored lead the first is held against."""
    api = merging_api
    jorge = (await post_lead(api, JORGE))["id"]
    response = await api.post(
        "/v1/leads/batch", json={"items": [VALENTINA, {**VALENTINA, "consent": NO}]}
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [item["outcome"] for item in items] == ["held_for_review", "merged"], items
    assert items[1]["id"] == items[0]["id"]
    await _jorge_said_no(api, jorge, items[0]["id"])

"""A marketing "yes" stays with the mailbox it was given with, on both databases.

Before, a lead whose email was replaced after its "yes" (a `PATCH`, or a merge with
`overwrite_fields` naming `email`) kept the "yes" for the new address: the new address was
listed as consenting (`consent_marketing=true`, the export), sent to the CRM as consenting
and, with `CAUCE_CRM__HUBSPOT_SUBSCRIPTION_ID`, subscribed to marketing email though its
owner never agreed. Now the lead keeps no consent (`intake_merge.consent_left_behind`);
the proof stays in its history and its arrivals' consents. A "no" stays, and a consent
sent with the new address is that address's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from cauce.app import create_app
from tests.conftest import SettingsFactory
from tests.leads.api_client import client_with, get_lead, post_lead
from tests.leads.test_delivery import MemoryCrm
from tests.leads.test_email_holder_handover import _drain, _last_sent

YES = {"marketing": True, "wording_version": "rgpd-2024-03", "source": "form-a"}
NO = {"marketing": False, "source": "unsubscribe-link"}
OLD = "lucia.herrera@bodegas-rioja.es"
NEW = "lucia.herrera@gmail.com"
PHONE = "+34 612 345 678"


async def _patch(api: httpx.AsyncClient, uid: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.patch(f"/v1/leads/{uid}", json=body)
    assert response.status_code == 200, response.text
    lead: dict[str, Any] = response.json()
    return lead


async def _consenting(api: httpx.AsyncClient) -> list[str]:
    """The emails of the leads listed as consenting."""
    found = await api.get("/v1/leads", params={"consent_marketing": "true"})
    assert found.status_code == 200, found.text
    return [item["email"] for item in found.json()["items"]]


async def test_a_patch_replacing_the_email_leaves_the_yes_behind(
    leads_app: FastAPI, api: httpx.AsyncClient, crm: MemoryCrm
) -> None:
    lead = await post_lead(api, {"email": OLD, "full_name": "Lucía Herrera", "consent": YES})
    await _drain(leads_app)
    assert _last_sent(crm, lead["id"]).consent is not None
    assert await _consenting(api) == [OLD]

    patched = await _patch(api, lead["id"], {"email": NEW})

    assert patched["consent"] is None
    shown = await get_lead(api, lead["id"])
    line = shown["history"][0]
    assert line["action"] == "updated"
    assert "consent" in line["changes"]["fields"]
    assert line["changes"]["values"]["consent"]["to"] is None
    assert line["changes"]["values"]["consent"]["from"]["marketing"] is True
    # The proof of the old address's yes stays with its arrival.
    assert [c["consent"]["marketing"] for c in shown["consents"]] == [True]
    assert await _consenting(api) == []
    await _drain(leads_app)
    sent = _last_sent(crm, lead["id"])
    assert sent.properties.get("email") == NEW
    assert sent.consent is None  # nothing for the CRM to subscribe the new address by


async def test_a_consent_sent_with_the_new_email_is_the_new_addresses(
    api: httpx.AsyncClient,
) -> None:
    lead = await post_lead(api, {"email": OLD, "consent": YES})
    again = {**YES, "source": "phone-call"}
    patched = await _patch(api, lead["id"], {"email": NEW, "consent": again})
    assert patched["consent"]["marketing"] is True
    assert patched["consent"]["source"] == "phone-call"
    # The same consent sent again with the address: it stands for the new one too.
    other = await post_lead(api, {"email": "ines@bodegas-rioja.es", "consent": YES})
    same = await _patch(api, other["id"], {"email": "ines@gmail.com", "consent": YES})
    assert same["consent"]["marketing"] is True


async def test_a_no_stays_and_a_first_email_keeps_the_yes(api: httpx.AsyncClient) -> None:
    refused = await post_lead(api, {"email": OLD, "consent": NO})
    patched = await _patch(api, refused["id"], {"email": NEW})
    assert patched["consent"]["marketing"] is False  # a withdrawal is never dropped
    # Given with no address (a phone call), a "yes" stays when the lead gets its first.
    by_phone = await post_lead(api, {"phone": PHONE, "full_name": "Pablo Ruiz", "consent": YES})
    patched = await _patch(api, by_phone["id"], {"email": "pablo.ruiz@gmail.com"})
    assert patched["consent"]["marketing"] is True
    # The same address in another case is the same mailbox.
    cased = await post_lead(api, {"email": "marta.gil@bodegas-rioja.es", "consent": YES})
    patched = await _patch(api, cased["id"], {"email": "Marta.Gil@Bodegas-Rioja.es"})
    assert patched["consent"]["marketing"] is True


async def test_clearing_the_email_leaves_the_yes_behind(api: httpx.AsyncClient) -> None:
    lead = await post_lead(api, {"email": OLD, "phone": PHONE, "consent": YES})
    patched = await _patch(api, lead["id"], {"email": None, "other_emails": []})
    assert patched["consent"] is None


@pytest.fixture
async def overwriting(settings_factory: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose merges replace a lead's email (`overwrite_fields`)."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        leads={"dedupe": {"overwrite_fields": ["email"]}},
    )
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app):
        api = await client_with(app, ["leads:read", "leads:write", "leads:admin"])
        async with api:
            yield api


async def test_a_merge_replacing_the_email_leaves_the_yes_behind(
    overwriting: httpx.AsyncClient,
) -> None:
    api = overwriting
    lead = await post_lead(api, {"email": OLD, "phone": PHONE, "consent": YES})
    merged = await post_lead(api, {"email": NEW, "phone": PHONE})
    assert (merged["outcome"], merged["id"]) == ("merged", lead["id"]), merged
    assert {"email", "consent"} <= set(merged["duplicate"]["merged_fields"])
    shown = await get_lead(api, lead["id"])
    assert (shown["email"], shown["consent"]) == (NEW, None)
    assert "consent" in shown["history"][0]["changes"]["overwritten"]
    assert await _consenting(api) == []


async def test_a_merge_bringing_the_new_addresses_yes_takes_it(
    overwriting: httpx.AsyncClient,
) -> None:
    """The new address's own consent is the lead's, even dated before the old one's."""
    api = overwriting
    lead = await post_lead(api, {"email": OLD, "phone": PHONE, "consent": YES})
    older = {**YES, "source": "form-b", "given_at": "2024-01-10T09:00:00Z"}
    merged = await post_lead(api, {"email": NEW, "phone": PHONE, "consent": older})
    assert merged["outcome"] == "merged", merged
    shown = await get_lead(api, lead["id"])
    assert shown["email"] == NEW
    assert (shown["consent"]["marketing"], shown["consent"]["source"]) == (True, "form-b")
    assert await _consenting(api) == [NEW]


async def test_a_merge_keeping_the_email_keeps_the_yes(overwriting: httpx.AsyncClient) -> None:
    api = overwriting
    lead = await post_lead(api, {"email": OLD, "phone": PHONE, "consent": YES})
    merged = await post_lead(api, {"email": OLD.upper(), "company": "Bodegas Rioja"})
    assert merged["outcome"] == "merged", merged
    assert (await get_lead(api, lead["id"]))["consent"]["marketing"] is True

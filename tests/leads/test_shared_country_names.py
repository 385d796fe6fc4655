"""A country box naming a country whose name regions of others share: `Granada` is
Grenada in Spanish, and a Spanish province and a Nicaraguan department; `Georgia` is a US
state. Before, `Granada` was always Grenada (GD): a Spanish lead was not routed to Spain's
team, and one with a national phone (`958 12 34 56`, Granada's own area code) was refused,
its number read in Grenada (`is too short for region US`). Now the lead's region or phone
says which, and the typed name is the region; with neither, the country stands.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cauce.leads.phones import normalise_phone
from cauce.leads.places import shared_country_name
from cauce.leads.schemas import LeadPatch
from tests.leads.api_client import get_lead, post_lead
from tests.leads.test_country_inference import _email, _lead


@pytest.mark.parametrize(
    ("sent", "country", "region"),
    [
        # No phone nor region: the country's name stands.
        ({"country": "Granada"}, "GD", None),
        ({"country": "Granada", "city": "Granada"}, "GD", None),
        # A Spanish number, national (Granada's area code 958, a mobile) or international.
        ({"country": "Granada", "phone": "958 12 34 56"}, "ES", "Granada"),
        ({"country": "GRANADA", "phone": "612 345 678"}, "ES", "GRANADA"),
        ({"country": "Granada", "phone": "+34 958 12 34 56"}, "ES", "Granada"),
        ({"country": " granada ", "phone": "0034 612 345 678"}, "ES", "granada"),
        # A region naming Spain: the region stays the lead's.
        ({"country": "Granada", "region": "Andalucía"}, "ES", "Andalucía"),
        (
            {"country": "Granada", "region": "Andalucía", "phone": "+505 2552 1234"},
            "ES",
            "Andalucía",
        ),
        # A region sent blank takes the name.
        ({"country": "Granada", "region": " ", "phone": "958 12 34 56"}, "ES", "Granada"),
        # Nicaragua's numbers (8 digits), national or with +505.
        ({"country": "Granada", "phone": "2552 1234"}, "NI", "Granada"),
        ({"country": "Granada", "phone": "+505 2552 1234"}, "NI", "Granada"),
        # Grenada's own numbers keep Grenada: national first, then with +1 473.
        ({"country": "Granada", "phone": "473 440 1234"}, "GD", None),
        ({"country": "Granada", "phone": "+1 473 440 1234"}, "GD", None),
        # Another country's number says nothing about which Granada: the name stands.
        ({"country": "Granada", "phone": "+52 55 1234 5678"}, "GD", None),
        # Georgia: a US number makes it the state, Georgia's own the country.
        ({"country": "Georgia", "phone": "+1 404 555 0123"}, "US", "Georgia"),
        ({"country": "Georgia", "phone": "+995 32 212 3456"}, "GE", None),
        ({"country": "Georgia"}, "GE", None),
        # Codes and other names are untouched.
        ({"country": "GD", "phone": "+34 958 12 34 56"}, "GD", None),
        ({"country": "España", "phone": "+505 2552 1234"}, "ES", None),
    ],
)
def test_the_region_or_the_phone_says_which_place_the_name_is(
    sent: dict[str, Any], country: str, region: str | None
) -> None:
    lead = _lead({"email": "ana@empresa.es", **sent})
    assert (lead.country, lead.region) == (country, region)


def test_a_number_of_neither_place_is_refused_in_the_named_country() -> None:
    """Not valid in Grenada, Spain nor Nicaragua: refused as before, now naming Grenada
    (the +1 of a national number read in Grenada named the US)."""
    with pytest.raises(ValueError, match="is too short for region GD"):
        _lead({"email": "ana@empresa.es", "country": "Granada", "phone": "12"})


def test_shared_country_name_folds_case_and_accents() -> None:
    assert shared_country_name("GRANADA") == {"ES", "NI"}
    assert shared_country_name("  georgia ") == {"US"}
    assert shared_country_name("España") == frozenset()
    assert shared_country_name("Grenada") == frozenset()


@pytest.mark.parametrize(
    ("phone", "region", "reason"),
    [
        ("809 555 12", "DO", "is too short for region DO"),
        ("12", "GD", "is too short for region GD"),
        ("+1 473 12", "ES", "is too short for region US"),  # typed with its code: +1's
        ("612 34", "ES", "is too short for region ES"),
    ],
)
def test_a_national_number_of_a_shared_code_is_refused_naming_its_region(
    phone: str, region: str, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        normalise_phone(phone, region)


def test_a_patch_follows_the_same_rule() -> None:
    patch = LeadPatch.model_validate({"country": "Granada", "phone": "958 12 34 56"})
    assert (patch.country, patch.phone) == ("ES", "+34958123456")
    # The name is a region typed into the country box: the lead's if it has none.
    assert (patch.region, patch.region_in_country) == (None, "Granada")


async def test_a_patch_keeps_the_leads_own_region(api: httpx.AsyncClient) -> None:
    body = {"country": "Granada", "phone": "958 12 34 56"}
    placed = await post_lead(api, {"email": _email(), "region": "Andalucía"})
    patched = await api.patch(f"/v1/leads/{placed['id']}", json=body)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["country"], patched.json()["region"]) == ("ES", "Andalucía")
    bare = await post_lead(api, {"email": _email()})
    body["phone"] = "958 65 43 21"  # another lead's number is refused (409)
    patched = await api.patch(f"/v1/leads/{bare['id']}", json=body)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["country"], patched.json()["region"]) == ("ES", "Granada")


async def test_through_the_api_and_a_batch(api: httpx.AsyncClient) -> None:
    created = await post_lead(api, {"email": _email(), "country": "Granada", "phone": "958123456"})
    lead = await get_lead(api, created["id"])
    assert (lead["country"], lead["region"], lead["phone"]) == ("ES", "Granada", "+34958123456")
    items = [
        {"email": _email(), "country": "Granada", "phone": "958 12 34 56"},
        {"email": _email(), "country": "Granada"},
    ]
    response = await api.post("/v1/leads/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["items"]
    countries = [(await get_lead(api, r["id"]))["country"] for r in results]
    assert countries == ["ES", "GD"]


async def test_a_patch_reads_the_name_by_the_leads_own_region_and_phone(
    api: httpx.AsyncClient,
) -> None:
    """A PATCH sending `Granada` alone is read by the lead's stored region or phone, as
    intake reads it (before: `GD` for a lead in Andalucía with a Spanish number; found by
    review, helper-138)."""
    by_region = await post_lead(api, {"email": _email(), "region": "Andalucía"})
    by_phone = await post_lead(api, {"email": _email(), "phone": "+34 958 11 22 33"})
    neither = await post_lead(api, {"email": _email()})
    found = []
    for lead in (by_region, by_phone, neither):
        patched = await api.patch(f"/v1/leads/{lead['id']}", json={"country": "Granada"})
        assert patched.status_code == 200, patched.text
        found.append((patched.json()["country"], patched.json()["region"]))
    assert found == [("ES", "Andalucía"), ("ES", "Granada"), ("GD", None)]
    # What the PATCH sends wins over what is stored: a Nicaraguan number, Nicaragua.
    patched = await api.patch(
        f"/v1/leads/{by_phone['id']}", json={"country": "Granada", "phone": "+505 2552 1234"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["country"] == "NI"

"""The country a lead without one takes: from its phone, when the number was typed with
an international prefix (the default region's own code included), and from its region,
when the region names one country only; and a region typed into the country box kept
as the region. Found by an audit (default region ES): `+34 612...` and `0034 699...`
gave no country (no market points, routed to the default team instead of Spain's),
`{"region": "Andalucía"}` gave none, and `{"country": "Andalucía"}` lost the region.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import phonenumbers
import pytest
from fastapi import FastAPI

from cauce.core.jobs.factory import JobWorker
from cauce.leads.phones import _NATIONAL_FIRST, international, number_country, typed_country
from cauce.leads.places import COUNTRY_CODES, country_of_region, normalise_country
from cauce.leads.schemas import IntakeOptions, LeadIn
from cauce.leads.schemas_batch import validate_batch
from tests.conftest import SettingsFactory
from tests.leads.api_client import get_lead, leads_api, post_lead
from tests.leads.import_client import import_csv


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@empresa.es"


def _lead(data: dict[str, Any], region: str = "ES") -> LeadIn:
    options = IntakeOptions(default_phone_region=region).context()
    return LeadIn.model_validate(data, context=options)


# --- The phone: an international prefix names the country, a national number does not --


@pytest.mark.parametrize(
    ("phone", "region", "country"),
    [
        # The default region's own numbers, typed with their prefix (before: None).
        ("+34 612 345 678", "ES", "ES"),
        ("+34612345678", "ES", "ES"),
        ("0034 699 123 456", "ES", "ES"),
        ("00 34 699 123 456", "ES", "ES"),
        ("(+34) 612 345 678", "ES", "ES"),
        ("+34 (0) 612 345 678", "ES", "ES"),
        ("\uff0b34 612 345 678", "ES", "ES"),  # a full-width plus
        ("+34 91 123 45 67 ext. 12", "ES", "ES"),
        ("+52 55 1234 5678", "MX", "MX"),
        ("0052 55 1234 5678", "MX", "MX"),
        # Another country's, as before.
        ("+52 55 1234 5678", "ES", "MX"),
        ("+52 1 55 1234 5678", "ES", "MX"),
        ("0057 320 138 2641", "ES", "CO"),
        ("+1 809 555 0123", "ES", "DO"),
        # The international prefix of the region the number is read in (the US's 011).
        ("011 52 55 1234 5678", "US", "MX"),
        # National numbers say nothing: the region they are read in was assumed.
        ("612 345 678", "ES", None),
        ("612345678", "ES", None),
        ("91 123 45 67", "ES", None),
        ("55 1234 5678", "MX", None),
        ("044 55 1234 5678", "MX", None),
        ("09 6588 3337", "CL", None),
        ("(305) 555-0123", "US", None),
        # The region's own code without + or 00 is read so only because the region is
        # assumed: it says nothing either.
        ("34 612 345 678", "ES", None),
        ("1 305 555 0123", "US", None),
        # A code of no country (the international freephone's region is "001").
        ("+800 1234 5678", "ES", None),
    ],
)
def test_a_phone_typed_with_an_international_prefix_names_its_country(
    phone: str, region: str, country: str | None
) -> None:
    assert typed_country(phone, region) == country
    assert _lead({"phone": phone}, region).country == country


@pytest.mark.parametrize(
    ("phone", "region", "typed"),
    [
        ("+34 612 345 678", "ES", True),
        (" 0034 699 123 456", "ES", True),
        ("011 34 612 345 678", "US", True),
        ("612 345 678", "ES", False),
        ("34612345678", "ES", False),
        ("not a phone", "ES", False),
        ("", "ES", False),
        ("+" + "1" * 80, "ES", False),
    ],
)
def test_international_says_whether_the_number_carries_its_country_code(
    phone: str, region: str, typed: bool
) -> None:
    assert international(phone, region) is typed


def test_a_country_sent_always_wins_over_the_phone() -> None:
    assert _lead({"phone": "+34 612 345 678", "country": "MX"}).country == "MX"
    assert _lead({"phone": "+52 55 1234 5678", "country": "PE"}).country == "PE"
    assert _lead({"phone": "+52 55 1234 5678", "country": "Perú"}, "MX").country == "PE"


def test_a_none_phone_or_a_lead_without_phone_gives_no_country() -> None:
    assert _lead({"email": "ana@empresa.es", "phone": "N/A"}).country is None
    assert _lead({"email": "ana@empresa.es"}).country is None


def test_the_filled_country_does_not_split_the_full_name() -> None:
    """Names are split by the country sent; the one a phone or a region gives is a
    guess (as for a foreign phone before)."""
    sent = {"full_name": "María José García López", "phone": "+1 305 555 0123"}
    lead = _lead(sent)
    assert (lead.country, lead.first_name, lead.last_name) == ("US", "María José", "García López")


# --- The region: one that names one country only fills it --------------------------------


@pytest.mark.parametrize(
    ("region", "country"),
    [
        ("Andalucía", "ES"),
        ("ANDALUCIA", "ES"),
        ("Catalunya", "ES"),
        ("Comunidad de Madrid", "ES"),
        ("Madrid", "ES"),
        ("Islas Canarias", "ES"),
        ("Illes Balears", "ES"),
        ("Castilla-La Mancha", "ES"),
        ("Jalisco", "MX"),
        ("Nuevo León", "MX"),
        ("CDMX", "MX"),
        ("Ciudad de México", "MX"),
        ("Lima", "PE"),
        ("Buenos Aires", "AR"),
        # Names more than one country's places share say nothing.
        ("La Rioja", None),  # Spain's and an Argentine province
        ("Valencia", None),  # Spain's and a Venezuelan city
        ("Córdoba", None),  # Spain, Argentina, Colombia
        ("Guadalajara", None),  # Spain's province and Mexico's city
        ("Granada", None),  # Spain, Nicaragua, Colombia
        ("Durango", None),  # Mexico's state and a Basque town
        ("Santa Cruz", None),
        # A country's name is not a region (Georgia is a US state too).
        ("Georgia", None),
        ("España", None),
        ("ES", None),
        ("Texas", None),
        ("", None),
    ],
)
def test_a_region_that_names_one_country_fills_a_missing_country(
    region: str, country: str | None
) -> None:
    assert country_of_region(region) == country
    lead = _lead({"email": "ana@empresa.es", "region": region})
    assert lead.country == country
    if region:
        assert lead.region == region  # kept as sent


def test_a_country_sent_wins_over_the_region() -> None:
    lead = _lead({"email": "ana@empresa.es", "region": "Andalucía", "country": "MX"})
    assert (lead.country, lead.region) == ("MX", "Andalucía")


@pytest.mark.parametrize(
    ("region", "phone", "country"),
    [
        # A region and a phone that disagree: the region, a place the lead gives, wins
        # over the number's country (an expat's number; as a region in the country box).
        ("Andalucía", "+52 55 1234 5678", "ES"),
        ("Jalisco", "+34 612 345 678", "MX"),
        ("Jalisco", "0034 612 345 678", "MX"),
        # They agree.
        ("Catalunya", "+34 612 345 678", "ES"),
        # A region that names no country alone leaves it to the phone.
        ("Valencia", "+58 412 123 4567", "VE"),
        ("Valencia", "+34 612 345 678", "ES"),
        ("Córdoba", "+54 9 351 412 3456", "AR"),
        # A national number says nothing: the region decides.
        ("Jalisco", "612 345 678", "MX"),
        ("Valencia", "612 345 678", None),
    ],
)
def test_the_region_wins_over_the_phones_prefix(
    region: str, phone: str, country: str | None
) -> None:
    assert _lead({"region": region, "phone": phone}).country == country


# --- A region typed into the country box is kept as the region ---------------------------


@pytest.mark.parametrize(
    ("sent", "country", "region"),
    [
        ({"country": "Andalucía"}, "ES", "Andalucía"),
        ({"country": "  andalucía "}, "ES", "andalucía"),  # as sent, cleaned
        ({"country": "Catalunya", "region": ""}, "ES", "Catalunya"),  # blank: not sent
        ({"country": "Catalunya", "region": None}, "ES", "Catalunya"),
        ({"country": "Catalunya", "region": "N/A"}, "ES", "Catalunya"),  # says none
        ({"country": "CDMX"}, "MX", "CDMX"),
        ({"country": "Nuevo León"}, "MX", "Nuevo León"),
        ({"country": "Lima"}, "PE", "Lima"),
        # A region sent stays.
        ({"country": "Andalucía", "region": "Sevilla"}, "ES", "Sevilla"),
        # A country's name or code is no region.
        ({"country": "España"}, "ES", None),
        ({"country": "ES"}, "ES", None),
        ({"country": "Spain"}, "ES", None),
        ({"country": "México"}, "MX", None),
    ],
)
def test_a_region_in_the_country_box_is_kept_as_the_region(
    sent: dict[str, Any], country: str, region: str | None
) -> None:
    assert normalise_country(str(sent["country"])) == country
    lead = _lead({"email": "ana@empresa.es", **sent})
    assert (lead.country, lead.region) == (country, region)


# --- Batch items and CSV rows are validated as LeadIn: the same rules ----------------------


def test_batch_items_follow_the_same_rules() -> None:
    items = [
        {"email": _email(), "phone": "+34 612 345 678"},
        {"email": _email(), "region": "Andalucía"},
        {"email": _email(), "country": "Andalucía"},
        {"email": _email(), "phone": "612 345 678"},
    ]
    outcome = validate_batch(items, IntakeOptions())
    assert not outcome.invalid
    found = [(lead.country, lead.region) for _, lead in outcome.valid]
    assert found == [("ES", None), ("ES", "Andalucía"), ("ES", "Andalucía"), (None, None)]


# --- Through the API -----------------------------------------------------------------------


ROUTED: dict[str, Any] = {
    "routing_rules": [
        {"team": "spain", "countries": ["ES"]},
        {"team": "mexico", "countries": ["MX"]},
    ],
    "teams": {
        "spain": [{"name": "Marta"}],
        "mexico": [{"name": "Rosa"}],
        "rest": [{"name": "Carmen"}],
    },
    "default_team": "rest",
}


@pytest.fixture
async def routed(settings_factory: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with leads_api(settings_factory, **ROUTED) as (_, client):
        yield client


@pytest.mark.parametrize(
    ("sent", "country", "owner"),
    [
        ({"phone": "+34 612 345 678"}, "ES", "Marta"),
        ({"phone": "0034 699 123 456"}, "ES", "Marta"),
        ({"phone": "+52 55 1234 5678"}, "MX", "Rosa"),
        ({"region": "Andalucía"}, "ES", "Marta"),
        ({"region": "Jalisco", "phone": "+34 612 345 678"}, "MX", "Rosa"),
        ({"country": "Andalucía"}, "ES", "Marta"),
        ({"phone": "612 345 678"}, None, "Carmen"),
        ({"phone": "+34 612 345 678", "country": "FR"}, "FR", "Carmen"),
    ],
)
async def test_the_filled_country_scores_and_routes_the_lead(
    routed: httpx.AsyncClient, sent: dict[str, Any], country: str | None, owner: str
) -> None:
    """Before: a `+34` lead had no country, so no market points, and went to the
    default team instead of Spain's."""
    created = await post_lead(routed, {"email": _email(), **sent})
    assert created["owner"] == owner
    in_market = country in ("ES", "MX")
    assert ("target_market" in {r["code"] for r in created["score_reasons"]}) is in_market
    lead = await get_lead(routed, created["id"])
    assert lead["country"] == country
    assert lead["team"] == {"Marta": "spain", "Rosa": "mexico", "Carmen": "rest"}[owner]


async def test_a_region_in_the_country_box_is_kept_through_the_api(
    api: httpx.AsyncClient,
) -> None:
    created = await post_lead(api, {"email": _email(), "country": "Andalucía"})
    lead = await get_lead(api, created["id"])
    assert (lead["country"], lead["region"]) == ("ES", "Andalucía")


async def test_a_batch_follows_the_same_rules(api: httpx.AsyncClient) -> None:
    items = [
        {"email": _email(), "phone": "+34 612 345 678"},
        {"email": _email(), "region": "Nuevo León"},
        {"email": _email(), "country": "Catalunya"},
    ]
    response = await api.post("/v1/leads/batch", json={"items": items})
    assert response.status_code == 200, response.text
    ids = [item["id"] for item in response.json()["items"]]
    found = [await get_lead(api, uid) for uid in ids]
    assert [(lead["country"], lead["region"]) for lead in found] == [
        ("ES", None),
        ("MX", "Nuevo León"),
        ("ES", "Catalunya"),
    ]


async def test_a_csv_import_follows_the_same_rules(
    leads_app: FastAPI, api: httpx.AsyncClient, worker: JobWorker
) -> None:
    data = (
        "Correo;Teléfono;Provincia;País\n"
        "uno@empresa.es;0034 612 345 678;;\n"
        "dos@empresa.es;;Andalucía;\n"
        "tres@empresa.es;;;Galicia\n"
        "cuatro@empresa.es;612 345 679;;\n"
    ).encode()
    status = await import_csv(api, worker, data)
    assert (status["rows_read"], status["rows_created"], status["rows_rejected"]) == (4, 4, 0)
    listed = await api.get("/v1/leads", params={"limit": 10})
    by_email = {item["email"]: item for item in listed.json()["items"]}
    assert {email: (lead["country"], lead["region"]) for email, lead in by_email.items()} == {
        "uno@empresa.es": ("ES", None),
        "dos@empresa.es": ("ES", "Andalucía"),
        "tres@empresa.es": ("ES", "Galicia"),
        "cuatro@empresa.es": (None, None),
    }


# --- A PATCH follows the same rules --------------------------------------------------------


async def _patch(api: httpx.AsyncClient, uid: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.patch(f"/v1/leads/{uid}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def _history_fields(api: httpx.AsyncClient, uid: str) -> set[str]:
    return set((await get_lead(api, uid))["history"][0]["changes"]["fields"])


async def test_a_patch_of_a_phone_with_the_default_regions_prefix_fills_the_country(
    api: httpx.AsyncClient,
) -> None:
    uid = (await post_lead(api, {"email": _email()}))["id"]
    national = await _patch(api, uid, {"phone": "612 345 678"})
    assert national["country"] is None  # a national number says nothing
    typed = await _patch(api, uid, {"phone": "+34 699 123 456"})
    assert typed["country"] == "ES"
    assert {"phone", "country"} <= await _history_fields(api, uid)
    kept = await _patch(api, uid, {"phone": "+52 55 1234 5678"})
    assert kept["country"] == "ES"  # stored: a change of number does not move it
    other = (await post_lead(api, {"email": _email()}))["id"]
    cleared = await _patch(api, other, {"phone": "0034 699 123 457", "country": None})
    assert cleared["country"] is None  # cleared in the same patch: as sent


async def test_a_patch_of_a_region_fills_the_country(api: httpx.AsyncClient) -> None:
    uid = (await post_lead(api, {"email": _email()}))["id"]
    ambiguous = await _patch(api, uid, {"region": "Valencia"})
    assert ambiguous["country"] is None
    named = await _patch(api, uid, {"region": "Andalucía"})
    assert (named["country"], named["region"]) == ("ES", "Andalucía")
    assert {"region", "country"} <= await _history_fields(api, uid)
    moved = await _patch(api, uid, {"region": "Jalisco"})
    assert moved["country"] == "ES"  # a stored country is never changed by it
    other = (await post_lead(api, {"email": _email()}))["id"]
    sent = await _patch(api, other, {"region": "Jalisco", "country": None})
    assert sent["country"] is None


async def test_a_patch_prefers_the_region_to_the_phones_prefix(api: httpx.AsyncClient) -> None:
    uid = (await post_lead(api, {"email": _email()}))["id"]
    both = await _patch(api, uid, {"region": "Jalisco", "phone": "+34 612 345 678"})
    assert both["country"] == "MX"
    # A region that names no country alone leaves it to the phone.
    other = (await post_lead(api, {"email": _email(), "region": "Valencia"}))["id"]
    assert (await get_lead(api, other))["country"] is None
    typed = await _patch(api, other, {"phone": "+58 412 123 4567"})
    assert typed["country"] == "VE"


async def test_a_patch_of_a_region_in_the_country_box_keeps_it_as_the_region(
    api: httpx.AsyncClient,
) -> None:
    uid = (await post_lead(api, {"email": _email()}))["id"]
    patched = await _patch(api, uid, {"country": "Andalucía"})
    assert (patched["country"], patched["region"]) == ("ES", "Andalucía")
    assert {"region", "country"} <= await _history_fields(api, uid)
    # A stored region stays; a region sent (null too) is as sent.
    stored = (await post_lead(api, {"email": _email(), "region": "Sevilla"}))["id"]
    kept = await _patch(api, stored, {"country": "Catalunya"})
    assert (kept["country"], kept["region"]) == ("ES", "Sevilla")
    other = (await post_lead(api, {"email": _email()}))["id"]
    cleared = await _patch(api, other, {"country": "Catalunya", "region": None})
    assert (cleared["country"], cleared["region"]) == ("ES", None)


def test_no_international_prefix_starts_with_a_digit_read_as_national_at_once() -> None:
    """`international` reads a number typed starting with 2-7 or 9 as national without
    parsing it: no region's international prefix starts with one of those."""
    for region in phonenumbers.SUPPORTED_REGIONS:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        prefix = metadata.international_prefix if metadata is not None else None
        if prefix is None:
            continue
        for digit in _NATIONAL_FIRST:
            assert not re.match(prefix, digit + "0" * 6), (region, prefix, digit)


def test_number_country_reads_a_stored_number() -> None:
    assert number_country("+34612345678") == "ES"
    assert number_country("+34911234567;ext=12") == "ES"
    assert number_country("+525512345678") == "MX"
    assert number_country("+80012345678") is None


def test_number_country_reads_a_code_of_one_region_without_parsing_as_parsing_does() -> None:
    """`number_country`'s shortcut (a country code of one region names it) gives what a
    parse of the number gives, for every region's example numbers; shared codes (+1, +7,
    +44) are parsed, and codes of no country are none."""
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            parsed = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
            expected = parsed if parsed in COUNTRY_CODES else None
            assert number_country(e164) == expected, e164
            assert number_country(f"{e164};ext=12") == expected, e164
            checked += 1
    assert checked > 400
    assert number_country("+80012345678") is None  # international freephone: no country
    assert number_country("+12125550123") == "US"
    assert number_country("+18095550123") == "DO"

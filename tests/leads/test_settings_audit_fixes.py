"""Lead settings that did nothing or too little: `leads.max_batch` now limits a batch,
`leads.default_region` must be a region phone numbers can be read in, and routing
compares places without accents."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from cauce.core.config import Settings
from cauce.core.config_leads import LeadsSettings, RoutingRule
from cauce.leads.routing import choose_team
from tests.conftest import SettingsFactory
from tests.leads.api_client import leads_api


def _batch(count: int) -> dict[str, Any]:
    return {"items": [{"email": f"lote{i}@empresa.es"} for i in range(count)]}


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


async def test_max_batch_sets_how_many_leads_a_batch_takes(
    settings_factory: SettingsFactory,
) -> None:
    """Below the default (3): 3 items are taken, 4 are refused on `/items`, nothing kept.
    Above it (1,200): a batch of 1,001 is taken."""
    async with leads_api(settings_factory, max_batch=3) as (_, api):
        taken = await api.post("/v1/leads/batch", json=_batch(3))
        assert taken.status_code == 200, taken.text
        assert taken.json()["accepted"] == 3
        refused = await api.post("/v1/leads/batch", json=_batch(4))
        body = _problem(refused, 422, "validation_failed")
        assert [(e["pointer"], e["type"]) for e in body["errors"]] == [("/items", "too_long")]
        assert "at most 3 items" in body["errors"][0]["detail"]
        listed = (await api.get("/v1/leads", params={"limit": 100})).json()
        assert len(listed["items"]) == 3
    async with leads_api(settings_factory, max_batch=1200) as (_, api):
        big = await api.post("/v1/leads/batch", json=_batch(1001))
        assert big.status_code == 200, big.text
        assert big.json()["accepted"] == 1001


async def test_the_default_batch_limit_is_1000(settings_factory: SettingsFactory) -> None:
    """Without the setting, 1,001 items are refused as before."""
    async with leads_api(settings_factory) as (_, api):
        refused = await api.post("/v1/leads/batch", json=_batch(1001))
        body = _problem(refused, 422, "validation_failed")
        assert "at most 1000 items" in body["errors"][0]["detail"]


@pytest.mark.parametrize("most", [3, 1000, 2500])
async def test_the_openapi_document_says_the_configured_batch_limit(
    settings_factory: SettingsFactory, most: int
) -> None:
    """`maxItems` of the batch's `items` is the setting, not the default."""
    async with leads_api(settings_factory, max_batch=most) as (_, api):
        document = (await api.get("/openapi.json")).json()
    body = document["paths"]["/v1/leads/batch"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["properties"]["items"]["maxItems"] == most


@pytest.mark.parametrize("region", ["XX", "ZZ", "EU", "1A"])
def test_an_unknown_default_region_stops_start_up(region: str) -> None:
    """A region phonenumbers does not know would refuse every national number with a
    misleading reason ("an unknown country code"); the settings refuse it instead."""
    with pytest.raises(ValidationError, match="not a region phone numbers can be read in"):
        LeadsSettings(default_region=region)


def test_the_default_region_is_upper_cased() -> None:
    """`mx` is Mexico."""
    assert LeadsSettings(default_region="mx").default_region == "MX"


async def test_the_default_region_reads_national_numbers(
    settings_factory: SettingsFactory,
) -> None:
    """Set through the settings (not only through validation options): with MX, a
    Mexican national number is read as Mexican; a lead with `country` uses its own."""
    async with leads_api(settings_factory, default_region="mx") as (_, api):
        mexican = await api.post("/v1/leads", json={"phone": "55 1234 5678"})
        assert mexican.status_code == 201, mexican.text
        lead = (await api.get(f"/v1/leads/{mexican.json()['id']}")).json()
        assert lead["phone"] == "+525512345678"
        spanish = await api.post("/v1/leads", json={"phone": "912 345 678", "country": "ES"})
        lead = (await api.get(f"/v1/leads/{spanish.json()['id']}")).json()
        assert lead["phone"] == "+34912345678"


ROUTING: dict[str, Any] = {
    "teams": {"sur": [{"name": "Lola"}], "resto": [{"name": "Pepe"}]},
    "routing_rules": [{"regions": ["Andalucía", "Castilla-La Mancha"], "team": "sur"}],
    "default_team": "resto",
}


@pytest.mark.parametrize(
    ("region", "owner"),
    [
        ("Andalucía", "Lola"),
        ("Andalucia", "Lola"),
        ("ANDALUCÍA", "Lola"),
        ("andalucia", "Lola"),
        ("Castilla La Mancha", "Lola"),
        ("castilla-la mancha", "Lola"),
        ("Extremadura", "Pepe"),
        ("Andalucía Oriental", "Pepe"),
    ],
)
async def test_routing_compares_regions_without_accents_or_punctuation(
    settings_factory: SettingsFactory, region: str, owner: str
) -> None:
    """A rule for "Andalucía" takes a form's "Andalucia"; other regions, and a region
    that only contains the rule's, go to the default team."""
    async with leads_api(settings_factory, **ROUTING) as (_, api):
        created = await api.post("/v1/leads", json={"email": "ana@empresa.es", "region": region})
        assert created.status_code == 201, created.text
        assert created.json()["owner"] == owner


@pytest.mark.parametrize(
    ("configured", "takes", "leaves"),
    [
        ("Москва", ["москва", "москва".upper()], ["Санкт-Петербург", "東京", "?", "-", ""]),
        ("Łódź", ["łódź", "ŁÓDŹ", "Łodz"], ["Wrocław", "Lodz?"]),
        ("?", ["?"], ["-", "!", "Madrid"]),
        ("Comunitat Valenciana", ["comunitat  valenciana", "Comunitat-Valenciana"], ["Valencia"]),
    ],
)
def test_routing_keys_keep_other_scripts_and_punctuation_apart(
    configured: str, takes: list[str], leaves: list[str]
) -> None:
    """Letters of any script stay letters: a rule for Москва does not take every region
    written in Cyrillic, Japanese or punctuation (which a Latin-only fold turned into
    one empty text)."""
    rules = (RoutingRule(regions=(configured,), team="t"),)
    for region in takes:
        assert choose_team(rules, {"region": region}, 0, None) is not None, region
    for region in leaves:
        assert choose_team(rules, {"region": region}, 0, None) is None, region


def test_an_unknown_region_in_the_settings_names_its_setting() -> None:
    """The validator's message names `default_region` in the whole settings."""
    with pytest.raises(ValidationError, match="default_region"):
        Settings.model_validate({"leads": {"default_region": "XX"}})


# --- a second audit: team members and scoring rule names ------------------------------


@pytest.mark.parametrize(
    ("member", "said"),
    [
        ({"name": "M" * 101}, "at most 100 characters"),  # an owner the API would refuse
        ({"name": "   "}, "is blank"),  # an owner of spaces is no owner
    ],
)
def test_a_member_name_must_make_an_owner(member: dict[str, Any], said: str) -> None:
    with pytest.raises(ValidationError, match=said):
        LeadsSettings.model_validate({"teams": {"t": [member]}, "default_team": "t"})
    kept = LeadsSettings.model_validate(
        {"teams": {"t": [{"name": "  Marta   Ruiz "}]}, "default_team": "t"}
    )
    assert kept.teams["t"][0].name == "Marta Ruiz"


def test_scoring_rule_names_are_each_their_own() -> None:
    """Before: two rules named `r` gave a lead two reasons with the code `r`."""
    rule = {"field": "email", "points": 5, "reason": "has an email"}
    with pytest.raises(ValidationError, match="names an earlier scoring rule too"):
        LeadsSettings.model_validate(
            {"scoring_rules": [{**rule, "name": "r"}, {**rule, "name": "r", "field": "phone"}]}
        )
    with pytest.raises(ValidationError, match="is blank"):
        LeadsSettings.model_validate({"scoring_rules": [{**rule, "name": "  "}]})
    with pytest.raises(ValidationError, match="is blank"):
        LeadsSettings.model_validate({"scoring_rules": [{**rule, "name": "r", "reason": " "}]})

"""Routing audit (helper-136): the owners routing gives are written as the API writes an
owner, and a member listed twice in another case or form is refused."""

from __future__ import annotations

import unicodedata

import pytest
from pydantic import ValidationError

from cauce.core.config_leads import LeadsSettings, TeamMember
from cauce.leads.routing import owner_at, rotation
from tests.conftest import SettingsFactory
from tests.leads.api_client import get_lead, leads_api, post_lead

# "Iñaki Etxeberria" as an editor saving NFD writes it: an `n` and a combining tilde.
IÑAKI_NFD = unicodedata.normalize("NFD", "Iñaki Etxeberria")
IÑAKI = unicodedata.normalize("NFC", IÑAKI_NFD)


async def test_a_member_typed_in_nfd_owns_leads_the_owner_filter_finds(
    settings_factory: SettingsFactory,
) -> None:
    """A member whose name the settings hold in NFD (or with a zero-width space) gives
    leads the owner the API stores for that name sent with a lead (NFC, invisible
    characters out), so `GET /v1/leads?owner=` finds them, at intake and when a PATCH
    with `"owner": null` routes the lead again; the NFD name was stored as typed and the
    filter (read as NFC) found none of its leads."""
    teams = {"t": [{"name": IÑAKI_NFD}, {"name": "Marta\u200b Ruiz"}]}
    async with leads_api(settings_factory, teams=teams, default_team="t") as (_, api):
        first = await post_lead(api, {"email": "ana@empresa-uno.es"})
        second = await post_lead(api, {"email": "luis@empresa-dos.es"})
        assert (first["owner"], second["owner"]) == (IÑAKI, "Marta Ruiz")
        assert (await get_lead(api, first["id"]))["owner"] == IÑAKI
        sent = await post_lead(api, {"email": "eva@empresa-tres.es", "owner": IÑAKI_NFD})
        assert sent["owner"] == IÑAKI  # the same name sent with a lead: one owner
        found = await api.get("/v1/leads", params={"owner": IÑAKI})
        assert found.status_code == 200, found.text
        assert {lead["id"] for lead in found.json()["items"]} == {first["id"], sent["id"]}
        again = await api.patch(f"/v1/leads/{second['id']}", json={"owner": None})
        assert again.status_code == 200, again.text
        assert again.json()["owner"] == IÑAKI  # the rotation's third turn


def test_the_rotation_names_members_as_owners_are_written() -> None:
    """A member's name is the owner the API would store for it (NFC, invisible characters
    out), in the rotation's smooth order and shares as the capacities give."""
    members = (
        TeamMember(name=IÑAKI_NFD, capacity=2),
        TeamMember(name="Marta\u200b Ruiz"),
    )
    assert rotation(members) == (IÑAKI, "Marta Ruiz", IÑAKI)
    assert [owner_at(members, p) for p in range(4)] == [IÑAKI, "Marta Ruiz", IÑAKI, IÑAKI]


@pytest.mark.parametrize(
    ("first", "second"),
    [("Marta Ruiz", "marta ruiz"), (IÑAKI, IÑAKI_NFD), ("Ana", "An\u200ba")],
)
def test_one_person_listed_twice_in_another_form_is_refused(first: str, second: str) -> None:
    """Two entries one person (case, NFC and NFD, a zero-width space) gave that person two
    shares of the team's leads; the settings refuse them as any member named twice."""
    teams = {"t": [{"name": first}, {"name": second}]}
    with pytest.raises(ValidationError, match="more than once"):
        LeadsSettings.model_validate({"teams": teams, "default_team": "t"})


@pytest.mark.parametrize(
    "settings",
    [
        {"default_team": ""},
        {"default_team": "  "},
        {"teams": {"": [{"name": "Ana"}]}},
    ],
)
def test_a_blank_team_is_refused(settings: dict[str, object]) -> None:
    """`default_team = ""` silently meant no default team (helper-136)."""
    with pytest.raises(ValidationError, match="is blank: name the team"):
        LeadsSettings.model_validate(settings)


async def test_the_teams_rotations_are_built_at_start_up(settings_factory: SettingsFactory) -> None:
    """A long cycle (~0.3 s for 95,050 turns) is built when the app starts, not on the
    team's first lead, which held the event loop (and every request) meanwhile."""
    teams = {
        "largo": [{"name": f"Comercial {i}", "capacity": 901 + i} for i in range(100)],
        "corto": [{"name": "Ana"}, {"name": "Luis", "capacity": 2}],
    }
    rotation.cache_clear()
    async with leads_api(settings_factory, teams=teams, default_team="corto") as (app, _):
        built = rotation.cache_info()
        assert built.currsize == 2
        for members in app.state.resources.settings.leads.teams.values():
            rotation(members)
        assert rotation.cache_info().hits == built.hits + 2  # nothing built again

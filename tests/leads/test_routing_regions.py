"""Routing by region: in Spain a rule's communities and provinces take a lead's by any of
the names people type (`Madrid` for the Comunidad de Madrid, `Sevilla` for a province
of Andalucía); elsewhere regions compare as before, ignoring case, accents and punctuation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cauce.core import config_leads
from cauce.core.config_leads import RoutingRule
from cauce.leads import regions_es
from cauce.leads.regions_es import place_key
from cauce.leads.routing import choose_team
from tests.conftest import SettingsFactory
from tests.leads.api_client import leads_api

SPAIN = regions_es.spanish_places(place_key)

# The audit's configuration: provinces and other names of these fell to the default team.
NORTH = RoutingRule(
    team="spain_north",
    regions=("Comunidad de Madrid", "Galicia", "A Coruña", "País Vasco", "Castilla y León"),
)
SOUTH = RoutingRule(team="spain_south", regions=("Andalucía", "Región de Murcia"))
AUDIT_RULES = (NORTH, SOUTH)


def _lead(region: str, country: str | None) -> dict[str, Any]:
    return {"region": region} if country is None else {"region": region, "country": country}


def team_of(rules: Any, region: str, country: str | None = "ES") -> str:
    """The team `rules` give a lead of `region` in `country` (None: no country)."""
    decision = choose_team(rules, _lead(region, country), 50, "default")
    assert decision is not None
    return decision.team


def matches(rule: RoutingRule, region: str, country: str | None = "ES") -> bool:
    """Whether `rule` takes a lead of `region` in `country`."""
    return team_of((rule,), region, country) == rule.team


# --- the audit's examples -------------------------------------------------------------


@pytest.mark.parametrize("country", ["ES", "es", None])
@pytest.mark.parametrize(
    ("region", "team"),
    [
        ("Madrid", "spain_north"),
        ("MADRID", "spain_north"),
        ("Madrid, Comunidad de", "spain_north"),
        ("La Coruña", "spain_north"),
        ("Coruña, A", "spain_north"),
        ("Euskadi", "spain_north"),
        ("Castilla-León", "spain_north"),
        ("Castilla León", "spain_north"),
        ("Sevilla", "spain_south"),
        ("Lugo", "spain_north"),
        ("Orense", "spain_north"),
        ("Ourense", "spain_north"),
        ("Galiza", "spain_north"),
        ("Bizkaia", "spain_north"),
        ("Vizcaya", "spain_north"),
        ("Gipuzkoa", "spain_north"),
        ("Guipúzcoa", "spain_north"),
        ("Araba/Álava", "spain_north"),
        ("Álava", "spain_north"),
        ("Valladolid", "spain_north"),
        ("Ávila", "spain_north"),
        ("Murcia", "spain_south"),
        ("Almería", "spain_south"),
        ("Málaga", "spain_south"),
        ("Cádiz", "spain_south"),
        ("Huelva", "spain_south"),
        ("Jaén", "spain_south"),
        ("Andalucia", "spain_south"),
        ("Cataluña", "default"),
        ("Barcelona", "default"),
        ("Toledo", "default"),
        ("Andalucía Oriental", "default"),
    ],
)
def test_the_audits_regions_reach_their_teams(region: str, team: str, country: str | None) -> None:
    """Provinces and other names of the rules' communities reach their team, for a Spanish
    lead and for one without a country (the rules have none): they fell to the default."""
    assert team_of(AUDIT_RULES, region, country) == team


def test_a_rule_for_spain_takes_the_provinces_of_its_communities() -> None:
    """A rule with `countries = ["ES"]` reads its regions the same way."""
    rules = (
        RoutingRule(team="norte", countries=("ES",), regions=NORTH.regions),
        RoutingRule(team="sur", countries=("ES",), regions=SOUTH.regions),
    )
    assert [team_of(rules, r) for r in ("Sevilla", "Madrid", "Vizcaya", "Granada")] == [
        "sur",
        "norte",
        "norte",
        "sur",
    ]
    # A lead without a country does not meet a rule for Spain, as before.
    assert team_of(rules, "Sevilla", None) == "default"


# --- communities, provinces and the names people type ------------------------------------


@pytest.mark.parametrize(
    ("configured", "takes", "leaves"),
    [
        # A rule naming a province takes that province only, by any of its names.
        ("A Coruña", ["La Coruña", "Coruña", "A CORUÑA"], ["Lugo", "Galicia", "Pontevedra"]),
        ("Valencia", ["València", "Valencia/València"], ["Alicante", "Comunitat Valenciana"]),
        ("Girona", ["Gerona"], ["Barcelona", "Catalunya"]),
        ("Lleida", ["Lérida"], ["Tarragona"]),
        ("Las Palmas", ["Palmas, Las", "Lanzarote", "Gran Canaria"], ["Tenerife", "La Palma"]),
        ("Mallorca", ["MALLORCA"], ["Menorca", "Illes Balears"]),
        # A community takes its provinces (and their islands).
        (
            "Comunitat Valenciana",
            ["Comunidad Valenciana", "Alacant", "Alicante", "Castelló", "Castellón", "Valencia"],
            ["Murcia", "Cataluña", "Teruel"],
        ),
        ("Catalunya", ["Cataluña", "Catalonia", "Barcelona", "Lérida", "Gerona", "Tarragona"], []),
        ("Canarias", ["Islas Canarias", "Las Palmas", "Santa Cruz de Tenerife", "Tenerife"], []),
        (
            "Illes Balears",
            ["Islas Baleares", "Baleares", "Balears, Illes", "Mallorca", "Ibiza"],
            [],
        ),
        ("Castilla-La Mancha", ["Castilla La Mancha", "Guadalajara", "Cuenca", "Ciudad Real"], []),
        ("Navarra", ["Nafarroa", "Comunidad Foral de Navarra", "NA"], ["Euskadi"]),
        ("Principado de Asturias", ["Asturias", "Asturies"], ["Cantabria"]),
        ("La Rioja", ["Rioja, La"], ["Navarra"]),
        ("Ceuta", ["Ciudad Autónoma de Ceuta"], ["Melilla"]),
        # A community of one province and its province are one place, either way round.
        ("Murcia", ["Región de Murcia", "Murcia, Región de"], ["Cartagena"]),
        ("Madrid", ["Comunidad de Madrid", "Madrid, Comunidad de"], ["Toledo"]),
        ("País Vasco", ["Euskadi", "PV", "Bizkaia", "ES-BI"], ["Navarra", "Cantabria"]),
        # Names outside the table compare as before.
        ("Tierra de Campos", ["tierra de campos"], ["Palencia", "Castilla y León"]),
    ],
)
def test_a_rule_takes_its_places_by_their_names(
    configured: str, takes: list[str], leaves: list[str]
) -> None:
    """For a Spanish lead: a community takes its provinces, a province only itself, each by
    the Spanish, co-official and official (INE) names and codes people type."""
    rule = RoutingRule(team="t", regions=(configured,))
    for region in takes:
        assert matches(rule, region), region
    for region in leaves:
        assert not matches(rule, region), region


# --- namesakes outside Spain --------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "region", "country"),
    [
        ("Castilla-La Mancha", "Guadalajara", "MX"),
        ("Andalucía", "Córdoba", "AR"),
        ("Andalucía", "Granada", "NI"),
        ("Comunitat Valenciana", "Valencia", "VE"),
        ("Castilla y León", "León", "MX"),
        ("Castilla y León", "Salamanca", "MX"),
        ("Cataluña", "Barcelona", "VE"),
        ("País Vasco", "PV", "US"),
        # A lead without a country that names a place Latin America shares is not read as
        # Spain's: the Guadalajara of Jalisco is the more likely one.
        ("Castilla-La Mancha", "Guadalajara", None),
        ("Andalucía", "Córdoba", None),
        ("Andalucía", "Granada", None),
        ("Comunitat Valenciana", "Valencia", None),
        ("Castilla y León", "León", None),
        ("Navarra", "NA", None),
        # Found by helper-136: Cuenca of Ecuador met a rule for Castilla-La Mancha.
        ("Castilla-La Mancha", "Cuenca", None),
        ("Castilla y León", "Salamanca", None),
        ("Castilla y León", "Zamora", None),
        ("Castilla-La Mancha", "Cuenca", "EC"),
    ],
)
def test_latin_american_namesakes_are_not_spanish_places(
    configured: str, region: str, country: str | None
) -> None:
    """A Mexican lead from Guadalajara does not meet a rule for Castilla-La Mancha, nor an
    Argentine one from Córdoba a rule for Andalucía: the table is Spain's."""
    assert not matches(RoutingRule(team="t", regions=(configured,)), region, country)
    # The same rule and region, for a Spanish lead, do meet.
    assert matches(RoutingRule(team="t", regions=(configured,)), region, "ES")


def test_a_bare_code_is_spains_only_in_a_rule_for_spain() -> None:
    """`CA`, `GA`, `MD` in a rule without countries are states (California, Georgia,
    Maryland), not Cádiz, Galicia or Madrid: a Spanish lead from those stays out of it
    (review, helper-120); in a rule for Spain they are the provinces and communities."""
    states = RoutingRule(team="us", regions=("CA", "NY", "MD", "GA", "CT"))
    for region in ("Cádiz", "Madrid", "A Coruña", "Barcelona", "Lugo"):
        assert not matches(states, region, "ES"), region
    assert matches(states, "CA", "US")  # the code itself, by its name, as before
    spain = RoutingRule(team="sur", countries=("ES",), regions=("CA", "GA"))
    assert matches(spain, "Cádiz", "ES")
    assert matches(spain, "Lugo", "ES")
    # A code with its country's prefix says which country it is.
    assert matches(RoutingRule(team="sur", regions=("ES-CA",)), "Cádiz", "ES")


def test_a_city_is_not_its_community() -> None:
    """Mérida (a Mexican state capital, and Extremadura's) is a city, which the table does
    not hold: it meets a rule naming it, never one naming a community."""
    assert not matches(RoutingRule(team="t", regions=("Extremadura",)), "Mérida", "MX")
    assert not matches(RoutingRule(team="t", regions=("Extremadura",)), "Mérida", "ES")
    assert matches(RoutingRule(team="t", regions=("Merida",)), "Mérida", "MX")


@pytest.mark.parametrize(
    ("configured", "region", "country"),
    [
        ("Guadalajara", "GUADALAJARA", "MX"),
        ("La Rioja", "La Rioja", "AR"),
        ("Córdoba", "Cordoba", "AR"),
        ("Jalisco", "jalisco", "MX"),
        ("Valencia", "Valencia", None),
    ],
)
def test_regions_outside_spain_compare_as_before(
    configured: str, region: str, country: str | None
) -> None:
    """Outside Spain a rule's region takes the lead's when they differ only by case,
    accents or punctuation."""
    assert matches(RoutingRule(team="t", regions=(configured,)), region, country)


_NAMES = st.sampled_from(
    ["Madrid", "Sevilla", "Andalucía", "Guadalajara", "Jalisco", "Valencia", "A Coruña"]
)


@given(
    configured=st.lists(_NAMES | st.text(min_size=1, max_size=12), min_size=1, max_size=3),
    region=_NAMES | st.text(min_size=1, max_size=12),
    country=st.sampled_from(["MX", "AR", "VE", "CO", "US", "PT", "FR"]),
)
def test_outside_spain_a_region_matches_by_its_folded_name(
    configured: list[str], region: str, country: str
) -> None:
    """For a lead of any other country, a rule's regions take the lead's region exactly
    when one of them folds to the same text."""
    options = tuple(text for text in (c.strip() for c in configured) if text)
    if not options:
        return
    rule = RoutingRule(team="t", regions=options)
    expected = place_key(region) in {place_key(o) for o in rule.regions}
    assert matches(rule, region, country) is expected


# --- the table --------------------------------------------------------------------------


def test_the_table_holds_spains_communities_and_provinces() -> None:
    """17 autonomous communities and Ceuta and Melilla; 50 provinces and the two cities."""
    communities = regions_es.COMMUNITIES
    assert len(communities) == 19
    provinces = [p for c in communities for p in c.provinces]
    assert len(provinces) == 52
    assert len({p.code for p in provinces}) == 52
    cities = [c for c in communities if c.code in ("ES-CE", "ES-ML")]
    assert [len(c.provinces) for c in cities] == [1, 1]


@pytest.mark.parametrize(
    ("names", "code"),
    [
        (["Euskadi", "País Vasco", "Pais Vasco"], "ES-PV"),
        (["Catalunya", "Cataluña"], "ES-CT"),
        (["Comunitat Valenciana", "Comunidad Valenciana"], "ES-VC"),
        (["Illes Balears", "Islas Baleares"], "ES-PM"),
        (["Galicia", "Galiza"], "ES-GA"),
        (["Navarra", "Nafarroa"], "ES-NA"),
        (["A Coruña", "La Coruña"], "ES-C"),
        (["Ourense", "Orense"], "ES-OR"),
        (["Girona", "Gerona"], "ES-GI"),
        (["Lleida", "Lérida"], "ES-L"),
        (["Bizkaia", "Vizcaya"], "ES-BI"),
        (["Gipuzkoa", "Guipúzcoa"], "ES-SS"),
        (["Araba", "Álava"], "ES-VI"),
        (["Alacant", "Alicante"], "ES-A"),
        (["Castelló", "Castellón"], "ES-CS"),
        (["València", "Valencia"], "ES-V"),
        (["Madrid", "Comunidad de Madrid"], "ES-M"),
        (["Castilla-León", "Castilla y León"], "ES-CL"),
        (["Castilla La Mancha", "Castilla-La Mancha"], "ES-CM"),
        (["Región de Murcia", "Murcia"], "ES-MU"),
        (["Principado de Asturias", "Asturias"], "ES-O"),
        (["Las Palmas"], "ES-GC"),
        (["Santa Cruz de Tenerife"], "ES-TF"),
    ],
)
def test_the_names_people_type_name_the_place(names: list[str], code: str) -> None:
    """Spanish, co-official and common names each name their place (a community of one
    province is that province)."""
    for name in names:
        assert SPAIN.place_of(place_key(name)) == code, name


# --- the settings' fold -----------------------------------------------------------------


@given(st.text(max_size=20))
def test_the_settings_fold_regions_as_routing_does(text: str) -> None:
    """The settings (core, which may not import leads) fold a rule's regions as routing's
    `place_key` does, so an earlier rule's regions taken as a superset are one."""
    assert config_leads.region_key(text) == place_key(text)


# --- rules the settings refuse as never firing -----------------------------------------

_PLACES = ["Andalucía", "ANDALUCIA", "Sevilla", "Madrid", "Comunidad de Madrid", "Guadalajara"]
_VALUES = [True, False, 45, 45.0, "45", "true", "Retail", "retail"]


@st.composite
def _rules(draw: st.DrawFn) -> RoutingRule:
    low = draw(st.none() | st.integers(0, 100))
    high = draw(st.none() | st.integers(low or 0, 100))
    return RoutingRule(
        team="t",
        countries=tuple(draw(st.lists(st.sampled_from(["ES", "MX"]), max_size=2))),
        regions=tuple(draw(st.lists(st.sampled_from(_PLACES), max_size=2))),
        sources=tuple(draw(st.lists(st.sampled_from(["api", "csv"]), max_size=2))),
        min_score=low,
        max_score=high,
        custom=draw(st.dictionaries(st.sampled_from(["vip", "n"]), st.sampled_from(_VALUES))),
    )


_LEADS = st.fixed_dictionaries(
    {
        "country": st.sampled_from([None, "ES", "MX"]),
        "region": st.sampled_from([None, *_PLACES, "Jalisco", "Málaga"]),
        "source": st.sampled_from(["api", "csv", "web_form"]),
        "custom_fields": st.dictionaries(
            st.sampled_from(["vip", "n"]), st.sampled_from([*_VALUES, "45.0", "TRUE", None])
        ),
    }
)


# Values the settings take as alike (of one kind, equal): each with those it may become.
_ALIKE: dict[Any, list[Any]] = {45: [45, 45.0], "Retail": ["retail"]}  # 45.0 is 45 here


@st.composite
def _narrower(draw: st.DrawFn, rule: RoutingRule) -> RoutingRule:
    """A rule each of whose conditions `rule`'s is at least as broad as."""

    def some(options: tuple[str, ...], spare: list[str]) -> tuple[str, ...]:
        pool = list(options) or spare
        return tuple(draw(st.lists(st.sampled_from(pool), min_size=bool(options), max_size=2)))

    low, high = rule.score_band
    low = draw(st.integers(low, high))
    custom = {k: draw(st.sampled_from(_ALIKE.get(v, [v]))) for k, v in rule.custom.items()}
    return RoutingRule(
        team="later",
        countries=some(rule.countries, ["ES", "MX"]),
        regions=some(tuple(r.upper() for r in rule.regions), _PLACES),
        sources=some(rule.sources, ["api", "csv"]),
        min_score=low,
        max_score=draw(st.integers(low, high)),
        custom={**draw(st.dictionaries(st.just("extra"), st.sampled_from(_VALUES))), **custom},
    )


@given(data=st.data(), leads=st.lists(_LEADS, max_size=8), score=st.integers(0, 100))
def test_a_rule_the_settings_refuse_never_fires(
    data: st.DataObject, leads: list[dict[str, Any]], score: int
) -> None:
    """When the settings find that an earlier rule takes every lead of a later one (and
    refuse the later), every lead the later matches the earlier matches too, Spain's places
    included; and a rule narrowed condition by condition is found so."""
    earlier = data.draw(_rules())
    later = data.draw(_rules() | _narrower(earlier))
    if later.team == "later":
        assert earlier.takes_every_lead_of(later)
    if not earlier.takes_every_lead_of(later):
        return
    for lead in leads:
        if choose_team((later,), lead, score, None) is not None:
            assert choose_team((earlier,), lead, score, None) is not None, lead


# --- through the API ----------------------------------------------------------------------


async def test_a_lead_keeps_its_region_as_sent(settings_factory: SettingsFactory) -> None:
    """Through the API a province routes to its community's team, and the lead keeps the
    region it was sent with (only the comparison reads the table)."""
    routing = {
        "routing_rules": [rule.model_dump(exclude_defaults=True) for rule in AUDIT_RULES],
        "teams": {
            "spain_north": [{"name": "Nora"}],
            "spain_south": [{"name": "Sara"}],
            "default": [{"name": "Dani"}],
        },
        "default_team": "default",
    }
    async with leads_api(settings_factory, **routing) as (_, api):
        for index, (region, owner) in enumerate(
            [("Sevilla", "Sara"), ("La Coruña", "Nora"), ("Euskadi", "Nora"), ("Jalisco", "Dani")]
        ):
            created = await api.post(
                "/v1/leads", json={"email": f"l{index}@empresa{index}.es", "region": region}
            )
            assert created.status_code == 201, created.text
            lead = (await api.get(f"/v1/leads/{created.json()['id']}")).json()
            assert (lead["region"], lead["owner"]) == (region, owner)

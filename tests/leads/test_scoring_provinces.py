"""Scoring rules on `region` know Spain's places as routing's `regions` do: a rule for
`Andalucía` scores a Spanish lead from `Sevilla`, one for `Sevilla` scores Sevilla only,
and a lead of another country from a namesake (Córdoba, Argentina) compares by name."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cauce.core.config_leads import RoutingRule
from cauce.core.config_scoring import ScoringRule
from cauce.leads import regions_es, scoring
from cauce.leads.regions_es import place_key
from cauce.leads.routing import choose_team
from cauce.leads.scoring import PointsModel, facts_of
from tests.conftest import SettingsFactory
from tests.leads.api_client import leads_api, post_lead


def _rule(*regions: str, test: Literal["in", "equals"] = "in") -> ScoringRule:
    value: Any = regions if test == "in" else regions[0]
    return ScoringRule(
        name="zone", field="region", test=test, value=value, points=10, reason="in our zone"
    )


def scores(rule: ScoringRule, region: str | None, country: str | None = "ES") -> bool:
    """Whether `rule` fires for a lead of `region` in `country` (None: no country)."""
    lead = {"region": region} if country is None else {"region": region, "country": country}
    return bool(PointsModel([rule]).score(facts_of(lead)).reasons)


def routes(regions: tuple[str, ...], region: str, country: str | None) -> bool:
    """Whether a routing rule with these `regions` (and no `countries`) takes the lead."""
    lead = {"region": region} if country is None else {"region": region, "country": country}
    return choose_team((RoutingRule(team="t", regions=regions),), lead, 50, None) is not None


# --- communities take their provinces ------------------------------------------------------


@pytest.mark.parametrize("test", ["in", "equals"])
@pytest.mark.parametrize("country", ["ES", "es", None])
@pytest.mark.parametrize(
    "region",
    ["Sevilla", "Seville", "SEVILLA", "Málaga", "Malaga", "Almería", "Jaén", "ES-SE", "Andalucia"],
)
def test_a_community_rule_scores_its_provinces(
    region: str, country: str | None, test: Literal["in", "equals"]
) -> None:
    """`in ["Andalucía"]` and `equals "Andalucía"` score a Spanish lead from Sevilla or
    Málaga, by any of their names, as a routing rule for Andalucía takes it (the audit's
    case: it scored nothing)."""
    assert scores(_rule("Andalucía", test=test), region, country)


@pytest.mark.parametrize(
    ("configured", "region"),
    [
        ("País Vasco", "Bizkaia"),
        ("Euskadi", "Vizcaya"),
        ("Cataluña", "Lleida"),
        ("Catalunya", "Lérida"),
        ("Galicia", "La Coruña"),
        ("Galicia", "Coruña, A"),
        ("Comunitat Valenciana", "Alacant"),
        ("Castilla y León", "León"),
        ("Castilla-La Mancha", "Guadalajara"),
        ("Castilla-La Mancha", "Cuenca"),
        ("Canarias", "Tenerife"),
        ("Islas Baleares", "Ibiza"),
        ("ES-AN", "Córdoba"),
        ("Andalucía", "Granada"),
    ],
)
def test_communities_take_their_provinces_by_the_names_people_type(
    configured: str, region: str
) -> None:
    """Co-official, older and INE names, islands and ISO codes of a community's provinces
    score for a rule naming it, names Latin America shares included for a lead of Spain."""
    assert scores(_rule(configured), region, "ES")
    assert scores(_rule(configured, test="equals"), region, "ES")


@pytest.mark.parametrize(
    ("configured", "region"),
    [
        ("Comunidad de Madrid", "Madrid"),
        ("Madrid", "Comunidad de Madrid"),
        ("Madrid", "Madrid, Comunidad de"),
        ("Región de Murcia", "Murcia"),
        ("Murcia", "Región de Murcia"),
        ("Principado de Asturias", "Asturias"),
        ("Navarra", "Comunidad Foral de Navarra"),
    ],
)
def test_a_community_of_one_province_is_that_province(configured: str, region: str) -> None:
    """`Comunidad de Madrid` and `Madrid` score each other's leads, as they route."""
    assert scores(_rule(configured, test="equals"), region, "ES")


# --- a province is not its community -------------------------------------------------------


@pytest.mark.parametrize("region", ["Málaga", "Córdoba", "Andalucía", "Huelva", "Madrid"])
def test_a_province_rule_does_not_score_the_rest_of_its_community(region: str) -> None:
    """A rule for `Sevilla` scores Sevilla only: not Málaga, nor a lead naming only
    Andalucía (which may be any of its provinces)."""
    assert not scores(_rule("Sevilla", test="equals"), region, "ES")
    assert not scores(_rule("Sevilla"), region, "ES")


def test_a_province_rule_scores_its_own_names_and_islands() -> None:
    """`Sevilla` scores `Seville` and `ES-SE`; `Santa Cruz de Tenerife` scores La Palma
    but not Gran Canaria (Las Palmas)."""
    assert scores(_rule("Sevilla"), "Seville", "ES")
    assert scores(_rule("Sevilla"), "ES-SE", "ES")
    assert scores(_rule("Santa Cruz de Tenerife"), "La Palma", "ES")
    assert not scores(_rule("Santa Cruz de Tenerife"), "Gran Canaria", "ES")
    assert not scores(_rule("Tenerife"), "La Palma", "ES")


# --- other countries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "region", "country"),
    [
        ("Andalucía", "Córdoba", "AR"),
        ("Andalucía", "Granada", "NI"),
        ("Castilla-La Mancha", "Guadalajara", "MX"),
        ("Castilla-La Mancha", "Cuenca", "EC"),
        ("Comunitat Valenciana", "Valencia", "VE"),
        ("Castilla y León", "León", "MX"),
        ("Cataluña", "Barcelona", "VE"),
        ("Andalucía", "Sevilla", "CO"),
        ("País Vasco", "PV", "US"),
        # Without a country, a name Latin America shares, or a two-letter code, is not
        # read as Spain's.
        ("Andalucía", "Córdoba", None),
        ("Andalucía", "Granada", None),
        ("Castilla-La Mancha", "Guadalajara", None),
        ("Castilla-La Mancha", "Cuenca", None),
        ("Comunitat Valenciana", "Valencia", None),
        ("Navarra", "NA", None),
        ("Andalucía", "SE", None),
    ],
)
def test_a_namesake_outside_spain_does_not_score_for_a_spanish_rule(
    configured: str, region: str, country: str | None
) -> None:
    """An Argentine lead from Córdoba does not score for Andalucía, nor a Nicaraguan one
    from Granada: the table is Spain's (and the same region does score for a Spanish
    lead)."""
    assert not scores(_rule(configured), region, country)
    assert not scores(_rule(configured, test="equals"), region, country)
    assert scores(_rule(configured), region, "ES")


@pytest.mark.parametrize(
    ("configured", "region", "country"),
    [
        ("Córdoba", "Cordoba", "AR"),
        ("Granada", "GRANADA", "NI"),
        ("Guadalajara", "Guadalajara", "MX"),
        ("Jalisco", "jalisco", "MX"),
        ("Sevilla", "Sevilla", "CO"),
        ("Valencia", "Valencia", None),
    ],
)
def test_outside_spain_a_region_still_scores_by_its_name(
    configured: str, region: str, country: str | None
) -> None:
    """A rule naming a place scores a lead of any country naming it, case and accents
    aside, punctuation too (`place_key`), as routing compares names."""
    assert scores(_rule(configured), region, country)


@pytest.mark.parametrize(
    ("configured", "region", "country"),
    [
        ("Castilla-La Mancha", "Castilla La Mancha", "MX"),
        ("São Paulo", "Sao-Paulo", "BR"),
        ("São Paulo", "SAO PAULO", None),
        ("Rio Grande do Sul", "Río Grande-do-Sul", "BR"),
    ],
)
def test_a_region_name_compares_with_punctuation_aside(
    configured: str, region: str, country: str | None
) -> None:
    """Names compare as routing's `regions` compare them, punctuation aside too: a rule for
    `São Paulo` scored no lead from `Sao-Paulo` that a routing rule for it took."""
    assert scores(_rule(configured), region, country)
    assert routes((configured,), region, country)
    assert not scores(_rule(configured), "Paulo", country)


def test_the_fingerprint_says_how_the_rules_are_read() -> None:
    """The same rules score differently once a region rule takes Spain's provinces: the
    fingerprint a training report names changes with the reading (`RULES_READING`), so
    one taken before does not claim the scores of this code."""
    rules = [_rule("Andalucía")]
    now = scoring.rules_fingerprint(rules)
    assert now == PointsModel(rules).fingerprint
    try:
        scoring.RULES_READING -= 1
        assert scoring.rules_fingerprint(rules) != now
    finally:
        scoring.RULES_READING += 1
    assert scoring.rules_fingerprint(rules) == now


def test_a_bare_code_stays_a_name() -> None:
    """A scoring rule names no country, so `CA` or `GA` is a name (California, Georgia),
    as in a routing rule without `countries`: it does not score Cádiz or Lugo; `ES-CA`
    does."""
    states = _rule("CA", "GA", "MD")
    for region in ("Cádiz", "Lugo", "Madrid"):
        assert not scores(states, region, "ES"), region
    assert scores(states, "CA", "US")
    assert scores(_rule("ES-CA"), "Cádiz", "ES")


def test_only_region_rules_read_the_places() -> None:
    """A rule on `city` (or any other field) for `Andalucía` still compares by name: a
    lead whose city is Sevilla does not score."""
    rule = ScoringRule(
        name="c", field="city", test="in", value=("Andalucía",), points=5, reason="city"
    )
    lead = {"city": "Sevilla", "region": "Sevilla", "country": "ES"}
    assert not PointsModel([rule]).score(facts_of(lead)).reasons


def test_a_lead_without_a_region_scores_nothing() -> None:
    """No region, no points (nor an empty one)."""
    assert not scores(_rule("Andalucía"), None, "ES")
    assert not scores(_rule("Andalucía"), "", "ES")


# --- scoring and routing agree -------------------------------------------------------------

_PLACES = sorted(
    {name for c in regions_es.COMMUNITIES for name in c.names}
    | {name for c in regions_es.COMMUNITIES for p in c.provinces for name in p.names}
    | {name for c in regions_es.COMMUNITIES for p in c.provinces for i in p.islands for name in i}
    | {"Jalisco", "Mendoza", "Antioquia", "Lima", "California", "São Paulo", "Sao-Paulo"}
    | {"Castilla La Mancha", "castilla-la-mancha", "Rio Grande do Sul", "Río Grande-do-Sul"}
)
_RULES = st.lists(st.sampled_from(_PLACES), min_size=1, max_size=3).map(tuple)


@given(
    configured=_RULES,
    region=st.sampled_from(_PLACES),
    country=st.sampled_from(["ES", "es", None, "MX", "AR", "NI", "US", "CO"]),
)
def test_scoring_and_routing_agree_on_a_region(
    configured: tuple[str, ...], region: str, country: str | None
) -> None:
    """A scoring rule `in` these regions scores a lead exactly when a routing rule with
    them as `regions` (and no `countries`) takes it: in Spain by its places, elsewhere by
    name, case, accents and punctuation aside (`Castilla La Mancha` for
    `Castilla-La Mancha`, `Sao-Paulo` for `São Paulo`: helper-143's review)."""
    rule = _rule(*configured)
    assert scores(rule, region, country) is routes(configured, region, country)
    if country is not None and country.upper() != "ES":
        by_name = place_key(region) in {place_key(c) for c in configured}
        assert scores(rule, region, country) is by_name


# --- reasons and cost -----------------------------------------------------------------------


def test_the_reason_is_the_rules() -> None:
    """The reason a province scores with is the rule's own (its name, points and words)."""
    rule = _rule("Andalucía")
    score = PointsModel([rule]).score(facts_of({"region": "Sevilla", "country": "ES"}))
    assert [reason.as_dict() for reason in score.reasons] == [
        {"rule": "zone", "points": 10, "reason": "in our zone"}
    ]
    assert score.value == 10


def test_a_region_rule_remembers_a_bounded_number_of_answers() -> None:
    """Intake scores every lead: a region rule remembers its answer by region and country,
    at most `_REGIONS_SEEN` of them, and never a long region."""
    model = PointsModel([_rule("Andalucía")])
    wanted = model._checks[0][1]
    for index in range(scoring._REGIONS_SEEN + 10):
        model.score(facts_of({"region": f"Región {index}", "country": "ES"}))
    assert 0 < len(wanted.seen) <= scoring._REGIONS_SEEN
    wanted.seen.clear()
    long_region = "Sevilla " * 20
    assert not model.score(facts_of({"region": long_region, "country": "ES"})).reasons
    assert not wanted.seen
    for _ in range(2):
        assert model.score(facts_of({"region": "Sevilla", "country": "ES"})).value == 10
        assert not model.score(facts_of({"region": "Córdoba", "country": "AR"})).reasons
    assert wanted.seen == {("Sevilla", "ES"): True, ("Córdoba", "AR"): False}


# --- through the API ------------------------------------------------------------------------


async def test_api_scores_a_province_as_routing_routes_it(
    settings_factory: SettingsFactory,
) -> None:
    """Leads posted with a province get the points of the rule naming its community (and
    of one naming the province), and reach the team a routing rule for the community
    names; an Argentine lead from Córdoba gets neither."""
    leads = {
        "scoring_rules": [
            _rule("Andalucía").model_dump(),
            {**_rule("Sevilla", test="equals").model_dump(), "name": "sevilla", "points": 20},
        ],
        "routing_rules": [{"team": "sur", "regions": ["Andalucía"]}],
        "teams": {"sur": [{"name": "Sara"}], "rest": [{"name": "Rita"}]},
        "default_team": "rest",
    }
    cases = [
        ("Sevilla", "ES", 30, {"zone", "sevilla"}, "sur"),
        ("Málaga", "ES", 10, {"zone"}, "sur"),
        ("Andalucia", "ES", 10, {"zone"}, "sur"),
        ("Córdoba", "ES", 10, {"zone"}, "sur"),
        ("Córdoba", "AR", 0, set(), "rest"),
        ("Granada", "NI", 0, set(), "rest"),
        ("Madrid", "ES", 0, set(), "rest"),
    ]
    async with leads_api(settings_factory, **leads) as (_, api):
        for index, (region, country, score, codes, team) in enumerate(cases):
            body = await post_lead(
                api,
                {"email": f"p{index}@empresa{index}.com", "region": region, "country": country},
            )
            assert body["score"] == score, (region, country, body)
            detail = (await api.get(f"/v1/leads/{body['id']}")).json()
            assert {reason["code"] for reason in detail["score_reasons"]} == codes, region
            assert (detail["team"], detail["region"]) == (team, region), (region, country)

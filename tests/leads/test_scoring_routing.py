"""The points model and routing: transparent scores, first-match rules, fair rotation."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cauce.core.config_leads import RoutingRule, TeamMember
from cauce.core.config_scoring import ScoringRule
from cauce.leads.routing import choose_team, owner_at, rotation
from cauce.leads.scoring import PointsModel, facts_of


def _lead(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "email": None,
        "phone": None,
        "company": None,
        "job_title": None,
        "country": None,
        "source": "api",
        "email_free": False,
        "email_disposable": False,
        "consent": None,
        "utm": {},
        "custom_fields": {},
    }
    base.update(fields)
    return base


def test_company_lead_outscores_free_mail_lead_with_reasons() -> None:
    """A company email in Spain from a web form scores above a free-mail one, and says why."""
    model = PointsModel()
    company = model.score(
        facts_of(
            _lead(
                email="ana@acme.es",
                company="Acme",
                country="ES",
                source="web_form",
                consent={"marketing": True},
            )
        )
    )
    free = model.score(facts_of(_lead(email="ana@gmail.com", email_free=True, country="ES")))
    assert company.value > free.value
    rules = {reason.rule for reason in company.reasons}
    assert {"company_email", "web_form", "target_market", "marketing_consent"} <= rules
    assert "free_mail" in {reason.rule for reason in free.reasons}
    assert company.value == sum(reason.points for reason in company.reasons)


def test_disposable_email_is_clamped_at_zero() -> None:
    """Negative totals clamp to 0; the reasons still show the penalty."""
    score = PointsModel().score(facts_of(_lead(email="x@mailinator.com", email_disposable=True)))
    assert score.value == 0
    assert any(reason.points < 0 for reason in score.reasons)


@pytest.mark.parametrize(
    ("country", "in_market"),
    [
        *(("ES", True), ("MX", True), ("VE", True), ("PA", True), ("PR", True), ("BR", True)),
        *(("US", False), ("FR", False), (None, False)),
    ],
)
def test_the_market_rule_takes_spain_and_all_latin_america(
    country: str | None, in_market: bool
) -> None:
    """The built-in market rule is Spain and Latin America, as documented; Venezuela,
    Panama, Puerto Rico or Brazil scored as if they were elsewhere."""
    score = PointsModel().score(facts_of(_lead(email="a@empresa.es", country=country)))
    assert ("target_market" in {reason.rule for reason in score.reasons}) is in_market


def test_configured_rules_replace_the_defaults() -> None:
    """Custom rules test custom fields and numbers; only they apply."""
    rules = [
        ScoringRule(
            name="enterprise",
            field="custom.plan",
            test="equals",
            value="Enterprise",
            points=60,
            reason="asked for the enterprise plan",
        ),
        ScoringRule(
            name="returning", field="arrivals", test="gte", value=3, points=30, reason="3 visits"
        ),
    ]
    model = PointsModel(rules)
    score = model.score(facts_of(_lead(custom_fields={"plan": "enterprise"}), arrivals=3))
    assert score.value == 90
    assert model.score(facts_of(_lead(email="a@b.es"))).value == 0


def test_first_matching_rule_wins_and_default_applies() -> None:
    """Routing picks the first rule whose every condition holds, else the default team."""
    rules = [
        RoutingRule(team="mexico", countries=("MX",)),
        RoutingRule(team="hot", min_score=70),
        RoutingRule(team="madrid", countries=("ES",), regions=("Madrid",)),
    ]
    assert choose_team(rules, {"country": "MX"}, 90, None).team == "mexico"  # type: ignore[union-attr]
    assert choose_team(rules, {"country": "ES"}, 75, None).team == "hot"  # type: ignore[union-attr]
    decision = choose_team(rules, {"country": "es", "region": "madrid"}, 10, "inbound")
    assert decision is not None
    assert (decision.team, decision.rule_index) == ("madrid", 2)
    fallback = choose_team(rules, {"country": "AR"}, 10, "inbound")
    assert fallback is not None
    assert (fallback.team, fallback.rule_index) == ("inbound", None)
    assert choose_team(rules, {"country": "AR"}, 10, None) is None


def test_rotation_spreads_weights_smoothly() -> None:
    """Weights 3 and 1 give A A B A (spread), not A A A B."""
    members = (TeamMember(name="A", capacity=3), TeamMember(name="B", capacity=1))
    assert rotation(members) == ("A", "A", "B", "A")
    assert [owner_at(members, i) for i in range(5)] == ["A", "A", "B", "A", "A"]


def test_team_without_capacity_has_no_owner() -> None:
    """A team whose members all have capacity 0 assigns nobody."""
    assert owner_at((TeamMember(name="A", capacity=0),), 3) is None


@given(
    st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=6),
    st.integers(min_value=0, max_value=10_000),
)
def test_rotation_gives_each_member_their_capacity(capacities: list[int], start: int) -> None:
    """Over as many leads as the capacities add up to, from any turn, each member owns
    exactly as many as their capacity."""
    members = tuple(TeamMember(name=f"m{i}", capacity=c) for i, c in enumerate(capacities))
    turns = [owner_at(members, start + i) for i in range(sum(capacities))]
    assert Counter(turns) == Counter({f"m{i}": c for i, c in enumerate(capacities) if c > 0})


def test_the_cycle_is_in_its_lowest_terms() -> None:
    """Capacities with a common factor turn as their lowest terms do: 100 members of
    capacity 1,000 are a cycle of 100 turns, not of 100,000 (~1 s to build on a team's
    first lead in each process)."""
    even = tuple(TeamMember(name=f"m{i}", capacity=1000) for i in range(100))
    assert rotation(even) == tuple(f"m{i}" for i in range(100))
    scaled = (TeamMember(name="A", capacity=600), TeamMember(name="B", capacity=200))
    assert rotation(scaled) == ("A", "A", "B", "A")


def _smooth_round_robin(capacities: list[int], steps: int | None = None) -> tuple[str, ...]:
    """The rotation (its first `steps` turns) as nginx's smooth weighted round-robin
    defines it, step by step."""
    weights = [(f"m{i}", c) for i, c in enumerate(capacities) if c > 0]
    common = math.gcd(*(c for _, c in weights))
    weights = [(name, c // common) for name, c in weights] if common > 1 else weights
    total = sum(c for _, c in weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total if steps is None else steps):
        current = [value + c for value, (_, c) in zip(current, weights, strict=True)]
        best = max(range(len(weights)), key=lambda i: current[i])  # the first of equals
        current[best] -= total
        order.append(weights[best][0])
    return tuple(order)


@given(st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=12))
def test_the_rotation_is_smooth_weighted_round_robin(capacities: list[int]) -> None:
    """numpy takes the rotation's steps (a long cycle: 100 members of 901 to 1,000 took
    1.5 s on a team's first lead in each process); the turns are the definition's, ties
    going to the member listed first."""
    members = tuple(TeamMember(name=f"m{i}", capacity=c) for i, c in enumerate(capacities))
    rotation.cache_clear()
    assert rotation(members) == _smooth_round_robin(capacities)


def test_a_long_cycle_of_capacities_sharing_no_factor() -> None:
    capacities = [901 + i for i in range(100)]
    members = tuple(TeamMember(name=f"m{i}", capacity=c) for i, c in enumerate(capacities))
    cycle = rotation(members)
    assert len(cycle) == sum(capacities) == 95_050
    assert Counter(cycle) == Counter({f"m{i}": c for i, c in enumerate(capacities)})
    assert cycle[:1000] == _smooth_round_robin(capacities, 1000)


@pytest.mark.parametrize("value", ["", None, [], {}])
def test_present_rule_ignores_empty_values(value: Any) -> None:
    """An empty field does not earn `present` points."""
    assert PointsModel().score(facts_of(_lead(company=value))).value == 0

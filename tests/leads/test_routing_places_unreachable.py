"""A routing rule for a Spanish province after one for its community can never fire when
it is for Spain's leads alone: the community's rule takes every one of them (a rule naming
Andalucía takes a lead from Sevilla). The settings compare regions by name only (core may
not read leads' table of places), so the leads context refuses it at start-up, as the
settings refuse a rule an earlier one takes by name (before: accepted, and the province's
team silently got nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cauce.core.config_leads import RoutingRule
from cauce.leads.routing import choose_team, unreachable_by_place
from tests.settings_cli import serve_refusal

TEAMS = '[leads.teams]\nsur = [{ name = "Ana" }]\nsevilla = [{ name = "Luis" }]\n'
SEVILLA_ES: dict[str, Any] = {"countries": ["ES"], "regions": ["Sevilla"]}


def _rules(*rules: dict[str, Any]) -> tuple[RoutingRule, ...]:
    return tuple(RoutingRule.model_validate(rule) for rule in rules)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"regions": ["Andalucía"]}, SEVILLA_ES),
        (
            {"countries": ["ES"], "regions": ["Andalucia"]},
            {"countries": ["es"], "regions": ["SEVILLA", "Cádiz"]},
        ),
        ({"regions": ["Castilla y León"]}, {"countries": ["ES"], "regions": ["León"]}),
        ({"regions": ["Canarias"]}, {"countries": ["ES"], "regions": ["Tenerife"]}),
        (
            {"regions": ["Andalucía"], "min_score": 0},
            {"countries": ["ES"], "regions": ["Sevilla"], "min_score": 60},
        ),
    ],
)
def test_a_province_after_its_community_for_spain_alone_is_unreachable(
    earlier: dict[str, Any], later: dict[str, Any]
) -> None:
    rules = _rules({"team": "sur", **earlier}, {"team": "sevilla", **later})
    ((index, problem),) = unreachable_by_place(rules)
    assert index == 1
    assert problem.startswith("can never match: routing rule 0")
    assert "team sevilla never gets a lead from it" in problem
    # What the check says is what routing does: every such lead goes to the first team.
    region = later["regions"][0]
    decision = choose_team(rules, {"country": "ES", "region": region}, 70, None)
    assert decision is not None
    assert decision.rule_index == 0


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        # Without `countries`, a lead from Sevilla in another country reaches the later rule.
        ({"regions": ["Andalucía"]}, {"regions": ["Sevilla"]}),
        # A Mexican lead from Guadalajara is not in Castilla-La Mancha.
        (
            {"regions": ["Castilla-La Mancha"]},
            {"countries": ["ES", "MX"], "regions": ["Guadalajara"]},
        ),
        # The earlier rule asks for more (a score band, a source, a country).
        ({"regions": ["Andalucía"], "min_score": 60}, SEVILLA_ES),
        ({"regions": ["Andalucía"], "sources": ["csv"]}, SEVILLA_ES),
        ({"countries": ["MX"], "regions": ["Andalucía"]}, SEVILLA_ES),
        # Another community, and a province before its community (the usual order).
        ({"regions": ["Cataluña"]}, SEVILLA_ES),
        (SEVILLA_ES, {"regions": ["Andalucía"]}),
        # One of the later rule's regions is outside the earlier's.
        ({"regions": ["Andalucía"]}, {"countries": ["ES"], "regions": ["Sevilla", "Madrid"]}),
    ],
)
def test_rules_a_lead_can_still_reach_are_kept(
    earlier: dict[str, Any], later: dict[str, Any]
) -> None:
    rules = _rules({"team": "sur", **earlier}, {"team": "sevilla", **later})
    assert unreachable_by_place(rules) == []


def test_cauce_serve_refuses_it_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "cauce.toml").write_text(
        '[leads]\n[[leads.routing_rules]]\nteam = "sur"\nregions = ["Andalucía"]\n'
        '[[leads.routing_rules]]\nteam = "sevilla"\ncountries = ["ES"]\nregions = ["Sevilla"]\n'
        + TEAMS,
        encoding="utf-8",
    )
    line = serve_refusal(tmp_path)
    assert "cauce.toml: leads.routing_rules[1]: can never match: routing rule 0" in line
    assert "Andalucía" in line


def test_a_bare_code_for_spain_after_the_same_letters_elsewhere_is_accepted() -> None:
    """`CA` in a rule for Spain alone is Cádiz; in an earlier rule without countries it is
    the letters (California): a Spanish lead from Cádiz reaches the later rule, so the
    settings take it (before: refused as "can never match", helper-136)."""
    rules = _rules(
        {"team": "us", "regions": ["CA", "NY"]},
        {"team": "cadiz", "countries": ["ES"], "regions": ["CA"]},
    )
    decision = choose_team(rules, {"country": "ES", "region": "Cádiz"}, 0, None)
    assert decision is not None
    assert decision.team == "cadiz"
    assert not rules[0].takes_every_lead_of(rules[1])
    # Both for Spain alone, the earlier does take every lead of the later.
    spanish = _rules(
        {"team": "sur", "countries": ["ES"], "regions": ["CA", "SE"]},
        {"team": "cadiz", "countries": ["ES"], "regions": ["CA"]},
    )
    assert spanish[0].takes_every_lead_of(spanish[1])

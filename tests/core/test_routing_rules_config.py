"""Routing rules that can never fire stop start-up: a rule whose every condition an earlier
rule's implies (that rule takes each of its leads first), naming both rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cauce.core.errors import ConfigError
from tests.settings_cli import serve_refusal

TEAMS = '[leads.teams]\na = [{ name = "Ana" }]\nb = [{ name = "Bea" }]\n'


def rules(*bodies: str) -> str:
    """A `cauce.toml` with these routing rules (`team = ...` and conditions, one per line)."""
    tables = "".join(f"[[leads.routing_rules]]\n{body}\n" for body in bodies)
    return f"{tables}{TEAMS}"


def refused(load: Any, text: str) -> str:
    """The one-line message loading `text` stops with."""
    with pytest.raises(ConfigError) as info:
        load(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_audits_rule_that_never_fires_is_refused(toml: Any) -> None:
    """`{a, ES}` then `{b, ES, min_score 70}`: every lead of the second goes to team a first,
    so team b would never get one. The line names both rules, by index and team."""
    message = refused(
        toml,
        rules('team = "a"\ncountries = ["ES"]', 'team = "b"\ncountries = ["ES"]\nmin_score = 70'),
    )
    assert message.startswith("invalid configuration: cauce.toml: leads.routing_rules[1]: ")
    assert "can never match: routing rule 0 before it (team a) takes every lead it would" in message
    assert "team b" in message
    assert "(got" not in message


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        # Identical conditions.
        ('countries = ["ES"]', 'countries = ["ES"]'),
        # No country condition is broader than any.
        ('sources = ["web_form"]', 'countries = ["MX"]\nsources = ["web_form"]'),
        # A superset of countries (codes in any case).
        ('countries = ["ES", "MX"]', 'countries = ["mx"]'),
        # A superset of regions, compared as routing compares them.
        ('regions = ["Andalucía", "Región de Murcia"]', 'regions = ["ANDALUCIA"]\nmin_score = 10'),
        ('countries = ["ES"]', 'countries = ["ES"]\nregions = ["Galicia"]'),
        # A superset of sources.
        ('sources = ["web_form", "api"]', 'sources = ["API"]\nmin_score = 50'),
        # A score band containing the later's (no bound: the whole range).
        ("min_score = 50", "min_score = 60\nmax_score = 80"),
        ("max_score = 40", "max_score = 30"),
        ('countries = ["ES"]\nmin_score = 0\nmax_score = 60', 'countries = ["ES"]\nmax_score = 60'),
        ('countries = ["ES"]\nmin_score = 0\nmax_score = 100', 'countries = ["ES"]'),
        # Custom conditions a subset of the later's, values compared by type.
        ("custom = { vip = true }", 'custom = { vip = true, sector = "retail" }'),
        ("custom = { empleados = 45 }", "custom = { empleados = 45.0 }"),
        ('custom = { sector = "Retail" }', 'custom = { sector = "retail" }'),
    ],
)
def test_a_rule_an_earlier_rule_implies_is_refused(toml: Any, earlier: str, later: str) -> None:
    """A later rule is refused when each of an earlier rule's conditions is at least as
    broad as its own: absent, or a superset, or a band containing its band."""
    message = refused(toml, rules(f'team = "a"\n{earlier}', f'team = "b"\n{later}'))
    assert (
        "cauce.toml: leads.routing_rules[1]: can never match: routing rule 0 before it" in message
    )


def test_a_rule_for_the_same_team_is_refused_too(toml: Any) -> None:
    """A rule that never fires is a mistake even when it names the earlier rule's team."""
    message = refused(
        toml,
        rules('team = "a"\ncountries = ["ES"]', 'team = "a"\ncountries = ["ES"]\nmax_score = 9'),
    )
    assert (
        "cauce.toml: leads.routing_rules[1]: can never match: routing rule 0 before it (team a)"
        in message
    )


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        # Overlapping bands: the first takes the overlap, the second the rest.
        ('countries = ["ES"]\nmin_score = 60', 'countries = ["ES"]\nmax_score = 70'),
        # The narrower rule first.
        ('countries = ["ES"]\nmin_score = 70', 'countries = ["ES"]'),
        ("min_score = 50", "min_score = 40"),
        # The earlier rule has a condition the later lacks.
        ("custom = { vip = true }", 'countries = ["ES"]'),
        ('regions = ["Galicia"]', 'countries = ["ES"]'),
        # Lists that are not supersets.
        ('countries = ["ES"]', 'countries = ["ES", "MX"]'),
        ('regions = ["Andalucía"]', 'regions = ["Andalucía", "Murcia"]'),
        ('sources = ["api"]', 'sources = ["api", "csv"]'),
        # Custom values that differ, or that match different leads ("45.0" meets 45, not "45").
        ("custom = { vip = true }", "custom = { vip = false }"),
        ('custom = { empleados = "45" }', "custom = { empleados = 45 }"),
    ],
)
def test_rules_that_can_fire_are_accepted(toml: Any, earlier: str, later: str) -> None:
    """Overlapping rules are fine (the first wins): a later rule only some of whose leads an
    earlier rule takes still gets the others."""
    settings = toml(rules(f'team = "a"\n{earlier}', f'team = "b"\n{later}'))
    assert [rule.team for rule in settings.leads.routing_rules] == ["a", "b"]


@pytest.mark.parametrize(
    "band", ["min_score = 0\nmax_score = 100", "min_score = 0", "max_score = 100"]
)
def test_a_band_of_the_whole_range_is_no_condition(toml: Any, band: str) -> None:
    """A band of 0-100 holds every score: a rule with only that takes every lead, so a rule
    after it is refused as after a rule without conditions; as the last rule it is fine."""
    message = refused(toml, rules(f'team = "a"\n{band}', 'team = "b"\ncountries = ["MX"]'))
    assert (
        "cauce.toml: leads.routing_rules[1]: can never match: routing rule 0 before it has no "
        "condition and takes every lead" in message
    )
    assert "team a" in message
    assert "team b" in message
    settings = toml(rules('team = "b"\ncountries = ["MX"]', f'team = "a"\n{band}'))
    assert len(settings.leads.routing_rules) == 2


def test_every_rule_that_never_fires_is_named(toml: Any) -> None:
    """Each rule that never fires is one problem on the line, against the first rule that
    takes its leads."""
    message = refused(
        toml,
        rules(
            'team = "a"\ncountries = ["ES", "MX"]',
            'team = "b"\ncountries = ["MX"]',
            'team = "b"\nsources = ["csv"]',
            'team = "b"\ncountries = ["ES"]\nsources = ["csv"]',
        ),
    )
    assert (
        "cauce.toml: leads.routing_rules[1]: can never match: routing rule 0 before it" in message
    )
    assert "leads.routing_rules[2]" not in message
    assert (
        "cauce.toml: leads.routing_rules[3]: can never match: routing rule 0 before it" in message
    )


def test_serve_refuses_a_rule_that_never_fires_in_one_line(tmp_path: Path) -> None:
    """`cauce serve` with the audit's rules exits 2 with one line naming both rules."""
    (tmp_path / "cauce.toml").write_text(
        rules('team = "a"\ncountries = ["ES"]', 'team = "b"\ncountries = ["ES"]\nmin_score = 70'),
        encoding="utf-8",
    )
    line = serve_refusal(tmp_path)
    assert (
        "cauce.toml: leads.routing_rules[1]: can never match: routing rule 0 before it (team a)"
        in line
    )

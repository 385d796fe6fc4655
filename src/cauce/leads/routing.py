"""Lead routing: rules choose a team, weighted round-robin chooses the owner inside it.

Rules are checked in order and the first whose every condition holds names the team
(`default_team` otherwise). Countries, regions and sources compare without case, accents
or punctuation. In Spain a rule's regions also take a lead's by the table of
`cauce.leads.regions_es`: a community takes its provinces under any of their names
(`Andalucía` takes `Sevilla`, `Comunidad de Madrid` takes `Madrid`). The settings refuse
rules and teams that could never work (a country name where leads hold ISO codes,
`min_score` above `max_score`, a rule an earlier one takes every lead of, a team without
capacity...), so a lead routed to a team always gets an owner from it.

Inside a team each member takes leads in proportion to their capacity, spread evenly
(smooth weighted round-robin, as nginx balances upstreams: weights 3/1 give A A B A, not
A A A B). The position of each team's rotation is a row in the database, advanced in the
lead's own transaction, so every API process shares one rotation and a rolled-back
request does not skip anyone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cauce.core.config_leads import RoutingRule, TeamMember
from cauce.leads.regions_es import SPAIN as _SPAIN
from cauce.leads.regions_es import place_key
from cauce.leads.scoring import same_value


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The team chosen and the rule that chose it (None: the default team)."""

    team: str
    rule_index: int | None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A rule's conditions as a lead is checked against them: folded once, when the rule
    is first used, instead of for every lead."""

    countries: frozenset[str]
    regions: frozenset[str]
    # The Spanish places the rule's regions take (their provinces and islands too).
    spanish: frozenset[str]
    sources: frozenset[str]
    min_score: int | None
    max_score: int | None
    custom: Mapping[str, Any]

    @classmethod
    def of(cls, rule: RoutingRule) -> _Prepared:
        countries = frozenset(place_key(c) for c in rule.countries)
        regions = frozenset(place_key(r) for r in rule.regions)
        return cls(
            countries=countries,
            regions=regions,
            # A bare code (`CA`, `GA`) only in a rule for Spain alone: `rule_places`.
            spanish=_SPAIN.rule_places(regions, spain_only=countries == {"es"}),
            sources=frozenset(place_key(s) for s in rule.sources),
            min_score=rule.min_score,
            max_score=rule.max_score,
            custom=rule.custom,
        )

    def takes_region(self, region: str, country: str | None) -> bool:
        key = place_key(region)
        # The table is Spain's (`SpanishPlaces.takes`): a Mexican lead from Guadalajara is
        # not in Castilla-La Mancha; scoring's rules on `region` read it the same way.
        return key in self.regions or _SPAIN.takes(self.spanish, key, country)

    def matches(self, lead: Mapping[str, Any], score: int) -> bool:
        country = lead.get("country")
        country = str(country) if country else None
        if self.countries and (country is None or place_key(country) not in self.countries):
            return False
        if self.regions:
            region = lead.get("region")
            if region is None or not self.takes_region(str(region), country):
                return False
        if self.sources:
            source = lead.get("source")
            if source is None or place_key(str(source)) not in self.sources:
                return False
        if self.min_score is not None and score < self.min_score:
            return False
        if self.max_score is not None and score > self.max_score:
            return False
        if not self.custom:
            return True
        custom = lead.get("custom_fields") or {}
        # Type-aware: `vip = true` matches a JSON true and the text "true"; `empleados = 45`
        # matches 45, 45.0 and "45" (str() made them "True" and "45.0", which never matched).
        return all(same_value(custom.get(key), value) for key, value in self.custom.items())


# Each rule prepared, by identity (settings are frozen; the entry keeps its rule alive,
# so an id is not reused while it is here). Routing runs per lead at intake.
_PREPARED: dict[int, tuple[RoutingRule, _Prepared]] = {}


def _prepared(rule: RoutingRule) -> _Prepared:
    """`rule` folded for matching, once per rule object."""
    entry = _PREPARED.get(id(rule))
    if entry is None or entry[0] is not rule:
        if len(_PREPARED) >= 4096:  # settings built over and over (tests): start again
            _PREPARED.clear()
        entry = _PREPARED[id(rule)] = (rule, _Prepared.of(rule))
    return entry[1]


def _takes_by_place(earlier: RoutingRule, later: RoutingRule) -> str | None:
    """Which of `earlier`'s regions take every lead `later` matches through Spain's places
    (`Andalucía` every lead of a rule for `Sevilla`), or None: only when `later` is for
    Spain alone (a lead of another country compares by name) and `earlier` is at least as
    broad in every other condition (`RoutingRule.takes_every_lead_of`)."""
    if not earlier.regions or not later.regions:
        return None  # no regions, or none to cover: the settings compare those
    mine, theirs = _prepared(earlier), _prepared(later)
    if theirs.countries != {"es"} or (mine.countries and "es" not in mine.countries):
        return None
    rest = {"regions": (), "countries": ()}
    if not earlier.model_copy(update=rest).takes_every_lead_of(later.model_copy(update=rest)):
        return None
    for region in later.regions:
        key = place_key(region)
        if key in mine.regions:
            continue  # the same name
        places = _SPAIN.covered_by(key)
        if not places or not places <= mine.spanish:
            return None  # not a Spanish place, or one outside `earlier`'s
    covering = [r for r in earlier.regions if _SPAIN.covered_by(place_key(r)) & theirs.spanish]
    return ", ".join(covering or earlier.regions)


def unreachable_by_place(rules: Sequence[RoutingRule]) -> list[tuple[int, str]]:
    """Routing rules that can never fire because an earlier rule's region contains theirs
    in Spain (`Sevilla` after `Andalucía`, the later for Spanish leads alone): the rule's
    index and why, each. The settings' own check compares regions by name only (core
    cannot read the table of places); this one runs at start-up (`wiring.check_settings`,
    which names the setting where it was written, as the settings' check does)."""
    problems: list[tuple[int, str]] = []
    for index, rule in enumerate(rules):
        for first, before in enumerate(rules[:index]):
            if before.takes_every_lead_of(rule):
                break  # refused by the settings already
            region = _takes_by_place(before, rule)
            if region is None:
                continue
            problems.append(
                (
                    index,
                    f"can never match: routing rule {first} before it (team {before.team}) "
                    f"takes every lead it would ({region} contains {', '.join(rule.regions)} "
                    f"in Spain, and this rule is for Spain alone), so team {rule.team} never "
                    f"gets a lead from it; remove it, move it before rule {first} or narrow "
                    f"rule {first}",
                )
            )
            break
    return problems


def choose_team(
    rules: Sequence[RoutingRule],
    lead: Mapping[str, Any],
    score: int,
    default_team: str | None,
) -> RouteDecision | None:
    """The first rule whose conditions hold, else the default team, else None."""
    for index, rule in enumerate(rules):
        if _prepared(rule).matches(lead, score):
            return RouteDecision(rule.team, index)
    return RouteDecision(default_team, None) if default_team else None


@lru_cache(maxsize=64)
def rotation(members: tuple[TeamMember, ...]) -> tuple[str, ...]:
    """One full cycle of smooth weighted round-robin over the members' capacities, in
    their lowest terms: capacities 1,000 and 500 give the cycle of 2 and 1, whose turns
    repeat as theirs would (each member's share over any whole number of cycles is its
    capacity's). Building the unreduced cycle took ~1 s, on a team's first lead in each
    process, for 100 members of capacity 1,000 (helper-136). Capacities that share no
    factor still make a long cycle (100 members of 901 to 1,000: 95,050 turns), each turn
    a step over every member: numpy takes those steps, 1.5 s -> 0.3 s there, the same
    turns (`argmax` takes the first of equals, as `max` does)."""
    import numpy as np  # only a team's first lead in a process needs it

    weights = [(m.name, m.capacity) for m in members if m.capacity > 0]
    common = math.gcd(*(weight for _, weight in weights))
    weights = [(name, weight // common) for name, weight in weights] if common > 1 else weights
    total = sum(weight for _, weight in weights)
    step = np.array([weight for _, weight in weights], dtype=np.int64)
    current = np.zeros(len(weights), dtype=np.int64)
    turns = np.empty(total, dtype=np.int64)
    argmax = np.argmax
    for turn in range(total):
        current += step
        best = argmax(current)
        current[best] -= total
        turns[turn] = best
    return tuple(weights[i][0] for i in turns.tolist())


def owner_at(members: tuple[TeamMember, ...], position: int) -> str | None:
    """The member whose turn `position` is (None for a team with no capacity)."""
    cycle = rotation(members)
    return cycle[position % len(cycle)] if cycle else None

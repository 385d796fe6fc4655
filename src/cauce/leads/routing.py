"""Lead routing: rules choose a team, weighted round-robin chooses the owner inside it.

Rules are checked in order and the first whose every condition holds names the team
(`default_team` otherwise). Countries, regions and sources compare without case, accents
or punctuation. The settings refuse rules and teams that could never work (a
country name where leads hold ISO codes, `min_score` above `max_score`, a team without
capacity...), so a lead routed to a team always gets an owner from it.

Inside a team each member takes leads in proportion to their capacity, spread evenly
(smooth weighted round-robin, as nginx balances upstreams: weights 3/1 give A A B A, not
A A A B). The position of each team's rotation is a row in the database, advanced in the
lead's own transaction, so every API process shares one rotation and a rolled-back
request does not skip anyone.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cauce.core.config_leads import RoutingRule, TeamMember
from cauce.leads.scoring import same_value


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The team chosen and the rule that chose it (None: the default team)."""

    team: str
    rule_index: int | None


_NOT_LETTERS = re.compile(r"[\W_]+")


@lru_cache(maxsize=4096)
def place_key(text: str) -> str:
    """`text` as routing compares it: case, accents and punctuation aside, in any
    script (`Andalucía` and `ANDALUCIA`, `Castilla-La Mancha` and `Castilla La Mancha`
    agree; `Москва` keeps its letters). Text of punctuation only stays itself."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(word for word in _NOT_LETTERS.split(plain) if word) or text.casefold()


def _matches(rule: RoutingRule, lead: Mapping[str, Any], score: int) -> bool:
    def among(value: Any, options: Sequence[str]) -> bool:
        return not options or (
            value is not None and place_key(str(value)) in {place_key(o) for o in options}
        )

    if not among(lead.get("country"), rule.countries):
        return False
    if not among(lead.get("region"), rule.regions):
        return False
    if not among(lead.get("source"), rule.sources):
        return False
    if rule.min_score is not None and score < rule.min_score:
        return False
    if rule.max_score is not None and score > rule.max_score:
        return False
    custom = lead.get("custom_fields") or {}
    # Type-aware: `vip = true` matches a JSON true and the text "true"; `empleados = 45`
    # matches 45, 45.0 and "45" (str() made them "True" and "45.0", which never matched).
    return all(same_value(custom.get(key), value) for key, value in rule.custom.items())


def choose_team(
    rules: Sequence[RoutingRule],
    lead: Mapping[str, Any],
    score: int,
    default_team: str | None,
) -> RouteDecision | None:
    """The first rule whose conditions hold, else the default team, else None."""
    for index, rule in enumerate(rules):
        if _matches(rule, lead, score):
            return RouteDecision(rule.team, index)
    return RouteDecision(default_team, None) if default_team else None


@lru_cache(maxsize=64)
def rotation(members: tuple[TeamMember, ...]) -> tuple[str, ...]:
    """One full cycle of smooth weighted round-robin over the members' capacities."""
    weights = [(m.name, m.capacity) for m in members if m.capacity > 0]
    total = sum(weight for _, weight in weights)
    current = [0] * len(weights)
    order: list[str] = []
    for _ in range(total):
        for i, (_, weight) in enumerate(weights):
            current[i] += weight
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        order.append(weights[best][0])
    return tuple(order)


def owner_at(members: tuple[TeamMember, ...], position: int) -> str | None:
    """The member whose turn `position` is (None for a team with no capacity)."""
    cycle = rotation(members)
    return cycle[position % len(cycle)] if cycle else None

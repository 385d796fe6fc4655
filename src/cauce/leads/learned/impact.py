"""What activating a model changes for routing, measured on the leads it was trained on.

Routing rules may test the score (`min_score`, `max_score`), and those bands were chosen
for one scale: a learned model's score is a chance of winning x 100, not a sum of rule
points, so the same lead can cross a band and change team. Counting that on the leads
with outcomes tells the operator before new leads find out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from cauce.core.config import Settings
from cauce.leads.learned.training import RoutingImpact
from cauce.leads.routing import choose_team
from cauce.leads.scoring import Score

NO_TEAM = "(no team)"


class _Scorer(Protocol):
    def score(self, facts: Mapping[str, Any]) -> Score: ...


def routing_impact(
    facts: Iterable[Mapping[str, Any]], before: _Scorer, after: _Scorer, settings: Settings
) -> RoutingImpact:
    """Teams these leads get under `before`'s scores and under `after`'s, compared.

    Only the team: the owner inside a team follows a rotation, not the score.
    """
    leads = settings.leads

    def team(lead: Mapping[str, Any], score: int) -> str:
        decision = choose_team(leads.routing_rules, lead, score, leads.default_team)
        return decision.team if decision is not None else NO_TEAM

    uses_score = any(
        rule.min_score is not None or rule.max_score is not None for rule in leads.routing_rules
    )
    total = 0
    moves: Counter[tuple[str, str]] = Counter()
    for lead in facts:
        total += 1
        if not uses_score:
            continue
        old = team(lead, before.score(lead).value)
        new = team(lead, after.score(lead).value)
        if old != new:
            moves[(old, new)] += 1
    ranked = sorted(moves.items(), key=lambda item: (-item[1], item[0]))
    return RoutingImpact(
        uses_score=uses_score, total=total, moves=tuple((a, b, n) for (a, b), n in ranked)
    )

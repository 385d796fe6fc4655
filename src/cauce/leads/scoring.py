"""Lead scoring: a transparent points model, every score with its reasons.

Each rule looks at one field of the lead and adds (or removes) points when its test
holds; the score is the sum clamped to 0..100. The rules are configuration
(`CAUCE_LEADS__SCORING_RULES` or `cauce.toml`); without any, the built-in model below
applies. A learned model (`cauce leads train`) may replace it once it beats it on held-out
outcomes; it answers with the same `Score` shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cauce.core.config import ScoringRule

MIN_SCORE = 0
MAX_SCORE = 100

LATAM_AND_SPAIN = ["ES", "MX", "AR", "CO", "CL", "PE", "EC", "UY", "PY", "BO", "CR", "GT", "DO"]

DEFAULT_RULES: tuple[ScoringRule, ...] = (
    ScoringRule(name="has_email", field="email", points=10, reason="has an email address"),
    ScoringRule(name="has_phone", field="phone", points=10, reason="has a phone number"),
    ScoringRule(name="has_company", field="company", points=10, reason="names a company"),
    ScoringRule(name="has_job_title", field="job_title", points=5, reason="gives a job title"),
    ScoringRule(
        name="company_email",
        field="email_company",
        test="true",
        points=15,
        reason="uses a company email, not free mail",
    ),
    ScoringRule(
        name="free_mail", field="email_free", test="true", points=-5, reason="uses free mail"
    ),
    ScoringRule(
        name="disposable_email",
        field="email_disposable",
        test="true",
        points=-40,
        reason="uses a disposable email domain",
    ),
    ScoringRule(
        name="web_form",
        field="source",
        test="equals",
        value="web_form",
        points=10,
        reason="filled in a web form",
    ),
    ScoringRule(
        name="target_market",
        field="country",
        test="in",
        value=LATAM_AND_SPAIN,
        points=10,
        reason="in a market we sell to",
    ),
    ScoringRule(
        name="marketing_consent",
        field="consent_marketing",
        test="true",
        points=10,
        reason="agreed to marketing",
    ),
    ScoringRule(
        name="returning",
        field="arrivals",
        test="gte",
        value=2,
        points=15,
        reason="came back more than once",
    ),
    ScoringRule(
        name="paid_campaign",
        field="utm.medium",
        test="in",
        value=["cpc", "ppc", "paid", "paid_social"],
        points=5,
        reason="came from a paid campaign",
    ),
)

# Where `cauce leads train` keeps model versions, under the data directory. Here, not in
# learned/, so that finding no active model never imports scikit-learn.
MODEL_STORE_PATH = Path("models") / "lead-scoring"


@dataclass(frozen=True, slots=True)
class Reason:
    """One rule that fired: its name, its points and why, in words."""

    rule: str
    points: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON shape stored with the lead and returned by the API."""
        return {"rule": self.rule, "points": self.points, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Score:
    """A score in 0..100, the model that produced it, and its reasons."""

    value: int
    model: str
    reasons: tuple[Reason, ...] = field(default_factory=tuple)


def _lookup(facts: Mapping[str, Any], path: str) -> Any:
    head, _, rest = path.partition(".")
    value = facts.get(head)
    if rest:
        if head == "custom":
            value = facts.get("custom_fields")
        return value.get(rest) if isinstance(value, Mapping) else None
    return value


def _holds(rule: ScoringRule, value: Any) -> bool:
    if rule.test == "present":
        return value not in (None, "", [], {})
    if rule.test == "true":
        return value is True
    if rule.test == "equals":
        return value is not None and str(value).casefold() == str(rule.value).casefold()
    if rule.test == "in":
        options = rule.value if isinstance(rule.value, list) else [rule.value]
        wanted = {str(option).casefold() for option in options}
        return value is not None and str(value).casefold() in wanted
    # gte
    try:
        return value is not None and float(value) >= float(rule.value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def facts_of(lead: Mapping[str, Any], *, arrivals: int = 1) -> dict[str, Any]:
    """The facts rules can test, derived from a lead's normalised fields."""
    facts = dict(lead)
    consent = lead.get("consent") or {}
    facts["consent_marketing"] = bool(consent.get("marketing")) if consent else False
    facts["email_company"] = bool(
        lead.get("email") and not lead.get("email_free") and not lead.get("email_disposable")
    )
    facts["arrivals"] = arrivals
    return facts


class PointsModel:
    """The configurable points model."""

    name = "points"

    def __init__(self, rules: Sequence[ScoringRule] | None = None) -> None:
        self.rules = tuple(rules) if rules is not None else DEFAULT_RULES

    def score(self, facts: Mapping[str, Any]) -> Score:
        """Sum the points of every rule that holds, clamped to 0..100, with reasons."""
        reasons = tuple(
            Reason(rule.name, rule.points, rule.reason)
            for rule in self.rules
            if _holds(rule, _lookup(facts, rule.field))
        )
        total = sum(reason.points for reason in reasons)
        return Score(max(MIN_SCORE, min(MAX_SCORE, total)), self.name, reasons)

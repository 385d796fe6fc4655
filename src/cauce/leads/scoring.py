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
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import structlog

from cauce.core.config_scoring import ScoringRule

log = structlog.get_logger("cauce.leads")

MIN_SCORE = 0
MAX_SCORE = 100

# Spain and Latin America: the built-in market rule's countries.
LATAM_AND_SPAIN = [
    *("ES", "MX", "AR", "CO", "CL", "PE", "EC", "UY", "PY", "BO", "CR", "GT", "DO"),
    *("VE", "PA", "HN", "SV", "NI", "CU", "PR", "BR"),
]

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
        value=tuple(LATAM_AND_SPAIN),
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
        value=("cpc", "ppc", "paid", "paid_social"),
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


def _number(value: Any) -> Decimal | None:
    """A number, or text holding one (`"45"`, `" 4.5e1 "`); None for anything else,
    booleans included (True is not 1 here)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    # A float through its shortest text: 0.1 is then the 0.1 a person writes.
    text = value.strip() if isinstance(value, str) else repr(value)
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().casefold())
    return None


def same_value(value: Any, wanted: Any) -> bool:
    """Whether a lead's value equals a configured one, the same way wherever rules compare
    (scoring `equals`/`in`, routing `custom`):

    - a boolean on either side: both booleans, text `true`/`false` (any case) counting;
    - else a number on either side: equal numbers, text holding a number counting
      (`45`, `45.0` and `"45"` are equal);
    - else text, ignoring case and surrounding spaces.

    A lead without the value (None) matches nothing. Comparing `str(value)` instead made
    a JSON `true` the text `True`, and `45` the text `45.0` once a setting made it a float.
    """
    if value is None or wanted is None:
        return False
    if isinstance(value, bool) or isinstance(wanted, bool):
        flag = _flag(value)
        return flag is not None and flag == _flag(wanted)
    if isinstance(value, int | float) or isinstance(wanted, int | float):
        number = _number(value)
        return number is not None and number == _number(wanted)
    return str(value).strip().casefold() == str(wanted).strip().casefold()


@dataclass(frozen=True, slots=True)
class _Wanted:
    """An `equals`/`in` rule's values, prepared once: when all are text, a lead's text is
    one set lookup (what `same_value` answers for two texts) instead of a comparison per
    value, the built-in market rule having thirteen."""

    options: tuple[Any, ...]
    texts: frozenset[str] | None

    @classmethod
    def of(cls, rule: ScoringRule) -> _Wanted:
        options = rule.value if isinstance(rule.value, tuple) else (rule.value,)
        all_text = all(isinstance(option, str) for option in options)
        texts = frozenset(str(o).strip().casefold() for o in options) if all_text else None
        return cls(options, texts)

    def matches(self, value: Any) -> bool:
        if self.texts is not None and isinstance(value, str):
            return value.strip().casefold() in self.texts
        return any(same_value(value, option) for option in self.options)


def _holds(rule: ScoringRule, wanted: _Wanted, value: Any) -> bool:
    # The settings refuse a test or value that could never hold (`ScoringRule`).
    if rule.test == "present":
        return value not in (None, "", [], {})
    if rule.test == "true":
        return value is True
    if rule.test in ("equals", "in"):
        return wanted.matches(value)
    # gte: a number (or text holding one) at least the rule's
    number, floor = _number(value), _number(rule.value)
    return number is not None and floor is not None and number >= floor


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
        self._checks = tuple((rule, _Wanted.of(rule)) for rule in self.rules)
        if not self.rules:
            # Allowed (a team may route by country alone), but every lead then scores 0
            # and `min_score` routing never tells leads apart: say so once, at start-up.
            log.warning(
                "leads.scoring.no_rules",
                detail="leads.scoring_rules is empty: every lead scores 0 with the points "
                "model; leave it unset for the built-in rules",
            )

    def score(self, facts: Mapping[str, Any]) -> Score:
        """Sum the points of every rule that holds, clamped to 0..100, with reasons."""
        reasons = tuple(
            Reason(rule.name, rule.points, rule.reason)
            for rule, wanted in self._checks
            if _holds(rule, wanted, _lookup(facts, rule.field))
        )
        total = sum(reason.points for reason in reasons)
        return Score(max(MIN_SCORE, min(MAX_SCORE, total)), self.name, reasons)

"""Lead scoring: a transparent points model, every score with its reasons.

Each rule looks at one field of the lead and adds (or removes) points when its test
holds; the score is the sum clamped to 0..100. The rules are configuration
(`CAUCE_LEADS__SCORING_RULES` or `cauce.toml`); without any, the built-in model below
applies. A learned model (`cauce leads train`) may replace it once it beats it on held-out
outcomes; it answers with the same `Score` shape.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog

from cauce.core.config_lead_facts import text_key
from cauce.core.config_scoring import ScoringRule
from cauce.leads.regions_es import SPAIN, place_key

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
# The store's file naming the active version (`v3`); without it the points model scores.
ACTIVE_POINTER = "active"
_POINTER = re.compile(r"v([1-9][0-9]*)")
POINTS_MODEL = "points"
UNKNOWN_MODEL = "unknown"


def read_active_version(store_root: Path) -> int | None:
    """The version the model store at `store_root` names active (None: no pointer, the
    points model), read without loading it, nor scikit-learn. `ValueError` when the
    pointer names no version (start-up refuses it); `OSError` when it cannot be read."""
    try:
        raw = (store_root / ACTIVE_POINTER).read_bytes()
    except FileNotFoundError:
        return None
    text = raw.decode("utf-8", errors="replace").strip()
    match = _POINTER.fullmatch(text)
    if match is None:
        raise ValueError(
            f"the active model pointer {store_root / ACTIVE_POINTER} does not name a version "
            f"(v<N>): {text[:40]!r}"
        )
    return int(match.group(1))


def active_model_name(data_dir: Path) -> str:
    """The model the store in `data_dir` names active, as `score_model` shows it
    (`points`, `learned-v3`): the one a process started now would score with. Raises as
    `read_active_version` does."""
    version = read_active_version(data_dir / MODEL_STORE_PATH)
    # `learned-v<N>`: `learned.model.versioned_name`, which this module cannot import
    # without scikit-learn.
    return POINTS_MODEL if version is None else f"learned-v{version}"


@runtime_checkable
class LoadedScorer(Protocol):
    """A scorer that says which model it is and when this process loaded it."""

    @property
    def name(self) -> str:
        """`points` or `learned-v<N>`, as a lead's `score_model` says."""
        ...

    @property
    def loaded_at(self) -> datetime:
        """When this process built or loaded it (UTC)."""
        ...


def scorer_model(scorer: object) -> tuple[str, datetime | None]:
    """The model a scorer is (`points`, `learned-v3`) and when it was loaded; a scorer
    that does not say (a test's stand-in) is `unknown`."""
    if isinstance(scorer, LoadedScorer):
        return scorer.name, scorer.loaded_at
    return UNKNOWN_MODEL, None


# How this code reads the rules, in the fingerprint: one more each time the same rules
# come to score some lead differently (2: a `region` rule takes Spain's provinces and
# compares names punctuation aside, as routing does).
RULES_READING = 2


def rules_fingerprint(rules: Sequence[ScoringRule]) -> str:
    """A short SHA-256 of the points rules (their order included) and of how this code
    reads them (`RULES_READING`): two processes, or a training report and a process, with
    the same fingerprint score with the same rules the same way."""
    shape: list[Any] = [RULES_READING, *(rule.model_dump(mode="json") for rule in rules)]
    text = json.dumps(shape, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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


# Numbers as Spanish and Latin American leads write them in CSV cells and web forms.
# Dots, commas and spaces group thousands (`1.000.000` in Spain and most of South America,
# `1,000,000` in Mexico, Central America and an English-locale spreadsheet, `1 000 000`);
# a dot or a comma not followed by three-digit groups is the decimal mark (`1,5`, `1.5`).
# One separator before exactly three digits (`1.500`, `1,500`) could be either: it is read
# as thousands, whichever the separator, since both ways write a thousand and a half so
# and a count or an amount is not written with three decimals. `0,500` (no thousand
# starts with 0) and `1234.567` (a group has three digits) are decimals.
_LONGEST_NUMBER = 64  # characters: longer text is never read as a number (nor remembered)
_SPACES = " \u00a0\u202f\u2009"  # a space, no-break, narrow no-break (spreadsheets), thin
_CURRENCY = (
    r"US\$|R\$|S/\.?|[€$£¥]|euros?|"
    r"EUR|USD|GBP|MXN|ARS|COP|CLP|PEN|BRL|UYU|PYG|BOB|CRC|GTQ|DOP|VES|PAB|HNL|NIO|CUP"
)
_AMOUNT = re.compile(
    rf"(?P<sign>[-+\u2212])?\s*(?:(?:{_CURRENCY})\s*)?(?P<sign2>[-+\u2212])?\s*"
    rf"(?P<body>\d[\d.,{_SPACES}]*|[.,]\d+)\s*(?:{_CURRENCY}|%)?",
    re.IGNORECASE,
)
_WHOLE = re.compile(r"\d+")
_GROUPED = re.compile(
    rf"([1-9]\d{{0,2}})((?:([.,{_SPACES}])\d{{3}})(?:\3\d{{3}})*)(?:([.,])(\d+))?"
)
_DECIMAL = re.compile(r"(\d*)[.,](\d*)")  # `5.` and `.5` too, as Decimal reads them
_SCIENTIFIC = re.compile(r"[-+\u2212]?(?:\d+(?:[.,]\d*)?|[.,]\d+)[eE][-+]?\d{1,4}")
# What `gte` reads besides a number: a lower bound. An open band (`1000+`, `más de 1000`)
# is at least its number; a range (`250-500`, `250 a 500`, `entre 250 y 500`) at least its
# lower end, so a rule fires only when every number of the band passes it.
_OPEN_BAND = re.compile(
    r"(?:>=?|≥|más de|mas de|more than|over|al menos|at least|desde|from)\s*(?P<after>.+)"
    r"|(?P<before>.+?)\s*(?:\+|o más|o mas|ó más|y más|y mas|or more)",
    re.IGNORECASE,
)
_RANGE = re.compile(
    r"(?:(?:de|desde|entre|from|between)\s+)?(?P<low>.+?)\s*"
    r"(?:[-\u2010-\u2015]|\s(?:a|al|hasta|y|to|and)\s)\s*(?P<high>.+)",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)
def read_number(text: str) -> Decimal | None:
    """The number a text holds, as a person writes it (see above): `1.000` and `1,000` are
    1000, `1,5` is 1.5, `1.234,56` and `1,234.56` are 1234.56, `1 000`, `1.500 €`,
    `US$1,500`, `15%` and `2.5e2` are what they show; None for any other text. Texts
    repeat across leads (a size band): each one is read once."""
    if len(text) > _LONGEST_NUMBER:
        return None
    text = text.strip()
    if _SCIENTIFIC.fullmatch(text):
        return _finite(text.replace(",", ".").replace("\u2212", "-"))
    amount = _AMOUNT.fullmatch(text)
    if amount is None or (amount["sign"] and amount["sign2"]):
        return None
    sign = "-" if (amount["sign"] or amount["sign2"]) in ("-", "\u2212") else ""
    body = amount["body"].rstrip(_SPACES)
    if _WHOLE.fullmatch(body):
        return _finite(sign + body)
    if grouped := _GROUPED.fullmatch(body):
        first, groups, separator, mark, decimals = grouped.groups()
        if mark == separator:  # `1.000.5`: no grouping, no decimal
            return None
        whole = first + groups.replace(separator, "")
        return _finite(f"{sign}{whole}.{decimals}" if mark else sign + whole)
    if decimal := _DECIMAL.fullmatch(body):
        whole, decimals = decimal.groups()
        return _finite(f"{sign}{whole or 0}.{decimals or 0}")
    return None


@lru_cache(maxsize=4096)
def read_lower_bound(text: str) -> Decimal | None:
    """What `gte` compares: the number a text holds (`read_number`), or the lower bound of
    the band it writes: `1000+`, `más de 1000`, `> 1000` are 1000; `250-500`, `250 a
    500`, `entre 250 y 500` are 250 (the lower end, whichever is written first). None for
    anything else, an upper bound included (`menos de 500`, `hasta 500`)."""
    if len(text) > _LONGEST_NUMBER:
        return None
    text = text.strip()
    if (number := read_number(text)) is not None:
        return number
    band = _OPEN_BAND.fullmatch(text)
    if band and (number := read_number(band["after"] or band["before"])) is not None:
        return number
    if span := _RANGE.fullmatch(text):
        low, high = read_number(span["low"]), read_number(span["high"])
        return min(low, high) if low is not None and high is not None else None
    return None


def _finite(text: str) -> Decimal | None:
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _number(value: Any, *, bound: bool = False) -> Decimal | None:
    """A number, or text holding one (`read_number`; `read_lower_bound` with `bound`);
    None for anything else, booleans included (True is not 1 here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > _LONGEST_NUMBER:
            return None  # read_* would say so too, but the cache would keep the text
        return read_lower_bound(value) if bound else read_number(value)
    if isinstance(value, int | float):
        # A float through its shortest text: 0.1 is then the 0.1 a person writes.
        return _finite(repr(value))
    return None


# The yes and no a CSV cell or a web form says, read in any case: the words the CSV import
# reads for consent (`csv_cells`). A JSON number is a number, not a yes (1 is not true).
TRUE_WORDS = frozenset({"si", "sí", "s", "yes", "y", "true", "verdadero", "1", "x", "ok", "acepta"})
FALSE_WORDS = frozenset({"no", "n", "false", "falso", "0", "no acepta"})
_FLAG_WORDS = {**dict.fromkeys(TRUE_WORDS, True), **dict.fromkeys(FALSE_WORDS, False)}


def _flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _FLAG_WORDS.get(value.strip().casefold())
    return None


def same_value(value: Any, wanted: Any) -> bool:
    """Whether a lead's value equals a configured one, the same way wherever rules compare
    (scoring `equals`/`in`, routing `custom`):

    - a boolean on either side: both booleans, the yes and no words of a CSV cell
      (`TRUE_WORDS`, `FALSE_WORDS`: `true`, `sí`, `yes`, `1`, `x`...; any case) counting,
      a JSON number not;
    - else a number on either side: equal numbers, text holding a number counting
      (`45`, `45.0` and `"45"` are equal, `"1.000"` and `1000` too: `read_number`);
    - else text, ignoring case, accents and surrounding spaces (`text_key`).

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
    return text_key(str(value)) == text_key(str(wanted))


# A region rule remembers this many (region, country) answers, none of a longer region.
_REGIONS_SEEN = 4096
_LONGEST_REGION = 100


@dataclass(frozen=True, slots=True)
class _Wanted:
    """A rule's value, prepared once. For `equals`/`in`, when all are text, a lead's text is
    one set lookup (what `same_value` answers for two texts) instead of a comparison per
    value, the built-in market rule having thirteen; for `gte`, the number (`floor`). On
    `region`, the Spanish places its values take (`spanish`), as routing's `regions`."""

    options: tuple[Any, ...]
    texts: frozenset[str] | None
    floor: Decimal | None = None
    # On `region`: the values as routing folds them (`place_key`, punctuation aside too)
    # and the Spanish places they take; None for a rule on another field.
    places: frozenset[str] | None = None
    spanish: frozenset[str] = frozenset()
    # Region rules: the answer by (region, country), which repeat across leads.
    seen: dict[tuple[str, str | None], bool] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def of(cls, rule: ScoringRule) -> _Wanted:
        options = rule.value if isinstance(rule.value, tuple) else (rule.value,)
        all_text = all(isinstance(option, str) for option in options)
        texts = frozenset(text_key(str(o)) for o in options) if all_text else None
        places: frozenset[str] | None = None
        spanish: frozenset[str] = frozenset()
        if rule.field == "region" and rule.test in ("equals", "in") and texts is not None:
            # What a routing rule with these `regions` and no `countries` takes: the
            # names as it folds them, and in Spain the places they cover (a scoring rule
            # names no country: a bare `CA` or `GA` stays a name).
            places = frozenset(place_key(str(option)) for option in options)
            spanish = SPAIN.rule_places(places, spain_only=False)
        floor = _number(rule.value) if rule.test == "gte" else None
        return cls(options, texts, floor, places, spanish)

    def matches(self, value: Any, facts: Mapping[str, Any]) -> bool:
        if self.places is not None and isinstance(value, str):
            country = facts.get("country")
            return self._region(value, str(country) if country else None)
        if self.texts is not None and isinstance(value, str):
            return text_key(value) in self.texts
        return any(same_value(value, option) for option in self.options)

    def _region(self, region: str, country: str | None) -> bool:
        """The rule's region by name as routing compares names (`place_key`: case,
        accents and punctuation aside), or a Spanish place it names taking the lead's
        (`Sevilla` for `Andalucía`) as routing's `regions` read them
        (`SpanishPlaces.takes`: a lead of Spain, or one without a country naming a
        place Latin America does not share). Remembered: intake scores every lead."""
        found = self.seen.get((region, country))
        if found is None:
            if len(region) > _LONGEST_REGION:
                return self._region_of(region, country)  # not remembered
            if len(self.seen) >= _REGIONS_SEEN:
                self.seen.clear()
            found = self.seen[region, country] = self._region_of(region, country)
        return found

    def _region_of(self, region: str, country: str | None) -> bool:
        key = place_key(region)
        assert self.places is not None  # a region rule's (`matches`)
        return key in self.places or SPAIN.takes(self.spanish, key, country)


def _holds(rule: ScoringRule, wanted: _Wanted, value: Any, facts: Mapping[str, Any]) -> bool:
    # The settings refuse a test or value that could never hold (`ScoringRule`).
    if rule.test == "present":
        return value not in (None, "", [], {})
    if rule.test == "true":
        # What `same_value(value, True)` says: routing's `custom = { vip = true }` and
        # this rule agree on which leads are VIP (a CSV cell's `sí` or `TRUE` included).
        return _flag(value) is True
    if rule.test in ("equals", "in"):
        return wanted.matches(value, facts)
    # gte: a number (or text holding one, or the lower bound of a band such as `250-500`
    # or `1000+`: `read_lower_bound`) at least the rule's
    number, floor = _number(value, bound=True), wanted.floor
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

    name = POINTS_MODEL

    def __init__(self, rules: Sequence[ScoringRule] | None = None) -> None:
        self.rules = tuple(rules) if rules is not None else DEFAULT_RULES
        self.builtin = rules is None
        self._checks = tuple((rule, _Wanted.of(rule)) for rule in self.rules)
        self.loaded_at = datetime.now(UTC)
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
            if _holds(rule, wanted, _lookup(facts, rule.field), facts)
        )
        total = sum(reason.points for reason in reasons)
        return Score(max(MIN_SCORE, min(MAX_SCORE, total)), self.name, reasons)

    @property
    def fingerprint(self) -> str:
        """Its rules' `rules_fingerprint`."""
        return rules_fingerprint(self.rules)

"""The `leads` section of the settings (`CAUCE_LEADS__...`): de-duplication, scoring rules,
routing rules and teams.

`cauce.core.config` nests it in the root `Settings`; it has a module of its own only to
keep that one a readable size. It is still core, so it may not import the leads context.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal, get_args

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError


# The same base as every section in `cauce.core.config`, restated because that module
# imports this one (importing it back would be circular).
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Leads scoring and routing ---------------------------------------------------------
# Rules that could never fire, and teams that could never give a lead an owner, are
# refused at start-up like any other invalid value. Checking them needs a few facts about
# leads that live in the leads context, which core may not import (the layers contract):
# they are restated here, and tests/leads/test_scoring_routing_config.py keeps each in
# step with its source.

# ISO 3166-1 alpha-2, what a lead's `country` holds (`leads.places.COUNTRY_CODES`).
COUNTRY_CODES: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO
    BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ
    DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP
    GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG
    KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML
    MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE
    PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL
    SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM
    US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()  # noqa: SIM905
)

# What a lead's `source` holds (`leads.schemas.LeadSource`).
LEAD_SOURCES = ("web_form", "api", "csv", "crm", "event", "referral", "chat", "other")

# The names custom fields can have (`leads.field_types.CustomKey`).
CUSTOM_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")

ScoringTest = Literal["present", "equals", "in", "true", "gte"]

_TEXT: frozenset[ScoringTest] = frozenset({"present", "equals", "in"})
# Facts every lead has (a flag is true or false, `source` always set): `present` would
# always hold, and it is the default test, so a rule without `test` fires for every lead.
_FLAG: frozenset[ScoringTest] = frozenset({"true", "equals"})
_ALWAYS_SET: frozenset[ScoringTest] = frozenset({"equals", "in"})
_COUNT: frozenset[ScoringTest] = frozenset({"equals", "in", "gte"})
_OBJECT: frozenset[ScoringTest] = frozenset({"present"})
_ANY: frozenset[ScoringTest] = frozenset(get_args(ScoringTest))

# Booleans every lead has (`consent.marketing` only when it sent a consent).
_FLAG_FIELDS = ("email_free", "email_disposable", "email_company", "consent_marketing")

# The facts a scoring rule's `field` names (`leads.scoring.facts_of` over the fields
# `leads.intake_writer.lead_facts` reads), each with the tests that can hold on it.
SCORING_FIELDS: dict[str, frozenset[ScoringTest]] = {
    **dict.fromkeys(
        (
            "email",
            "phone",
            "phone_extension",
            "first_name",
            "last_name",
            "company",
            "job_title",
            "country",
            "region",
            "city",
            "language",
            "external_id",
        ),
        _TEXT,
    ),
    "source": _ALWAYS_SET,
    **dict.fromkeys(_FLAG_FIELDS, _FLAG),
    "arrivals": _COUNT,
    **dict.fromkeys(("utm", "consent", "custom_fields"), _OBJECT),
    **dict.fromkeys(("utm.source", "utm.medium", "utm.campaign", "utm.term", "utm.content"), _TEXT),
    "consent.marketing": frozenset({"present", "true", "equals"}),
    **dict.fromkeys(("consent.given_at", "consent.wording_version", "consent.source"), _TEXT),
}
# `custom.<key>` (or `custom_fields.<key>`): a custom field, text, number or boolean.
CUSTOM_FIELD_PREFIXES = ("custom.", "custom_fields.")


def scoring_tests_on(field: str) -> frozenset[ScoringTest] | None:
    """The tests that can hold on a scoring rule's `field`; None if leads have no such fact."""
    for prefix in CUSTOM_FIELD_PREFIXES:
        if field.startswith(prefix):
            return _ANY if CUSTOM_KEY.fullmatch(field.removeprefix(prefix)) else None
    return SCORING_FIELDS.get(field)


def _scoring_field_list() -> str:
    plain = [name for name in SCORING_FIELDS if "." not in name]
    nested: dict[str, list[str]] = {}
    for name in SCORING_FIELDS:
        if "." in name:
            head, _, key = name.partition(".")
            nested.setdefault(head, []).append(key)
    parts = [*plain, *(f"{head}.<{'|'.join(keys)}>" for head, keys in nested.items())]
    return ", ".join([*parts, "custom.<key>"])


def _setting_error(loc: tuple[str | int, ...], message: str, got: object) -> InitErrorDetails:
    # Raised inside a model validator, a ValidationError keeps its location (prefixed with
    # the parent's), so the message names the setting at fault, not the whole section.
    return InitErrorDetails(
        type=PydanticCustomError("invalid_setting", message), loc=loc, input=got
    )


def _refuse(*errors: InitErrorDetails) -> ValidationError:
    return ValidationError.from_exception_data("Settings", list(errors))


def _country_code(value: str) -> str:
    code = value.strip().upper()
    if code not in COUNTRY_CODES:
        raise ValueError(
            "not an ISO 3166-1 alpha-2 country code, which is what leads store "
            "(write ES, MX, GB...: names and 3-letter codes never match)"
        )
    return code


def _lead_source(value: str) -> str:
    source = value.strip().lower()
    if source not in LEAD_SOURCES:
        raise ValueError(f"not a lead source; leads come from {', '.join(LEAD_SOURCES)}")
    return source


def _custom_key(key: str) -> str:
    if not CUSTOM_KEY.fullmatch(key):
        raise ValueError(
            "not a custom field name (a lower-case letter, then letters, digits or _): "
            "leads never have it"
        )
    return key


def _match_text(value: str) -> str:
    # Leads store text NFC-normalised and trimmed; a value written otherwise (an editor
    # saving NFD) would never compare equal.
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        raise ValueError("is empty: leads never store an empty value")
    return text


MatchText = Annotated[str, AfterValidator(_match_text)]
# A value a lead's field is compared with: text, a boolean or a finite number.
MatchValue = MatchText | bool | int | Annotated[float, Field(allow_inf_nan=False)]


class ScoringRule(_Section):
    """Points given when a lead's field satisfies a test (a transparent scoring model)."""

    name: str = Field(min_length=1, max_length=64)
    field: str = Field(min_length=1, max_length=64, description="e.g. email, source, custom.plan")
    test: ScoringTest = "present"
    value: MatchValue | tuple[MatchValue, ...] | None = None
    points: int = Field(ge=-100, le=100)
    reason: str = Field(min_length=1, max_length=200)

    @field_validator("field")
    @classmethod
    def _known_field(cls, field: str) -> str:
        if scoring_tests_on(field) is None:
            raise ValueError(
                f"leads have no such field; scoring rules test {_scoring_field_list()}"
            )
        return field

    @model_validator(mode="after")
    def _can_hold(self) -> ScoringRule:
        # The value first: a rule with a value and no test (`present`, the default) most
        # likely lacks `test = "equals"`, whatever its field.
        if problem := self._value_problem():
            raise _refuse(_setting_error(("value",), problem, self.value))
        tests = scoring_tests_on(self.field) or _ANY
        if self.test not in tests:
            # `present` is refused only where every lead has the fact: it always holds.
            holds = "always holds" if self.test == "present" else "can never hold"
            usable = ", ".join(sorted(tests))
            raise _refuse(
                _setting_error(
                    ("test",), f"{holds} on {self.field}: use a test among {usable}", self.test
                )
            )
        return self

    def _value_problem(self) -> str | None:
        value, test = self.value, self.test
        if test in ("present", "true"):
            if value is not None:
                return (
                    f"test {test!r} takes no value (`present` is the default test): to compare "
                    'with a value, set test = "equals" (or "in" with a list)'
                )
            return None
        if value is None:
            wanted = {"in": "a list of values", "gte": "a number"}.get(test, "a value")
            return f"test {test!r} needs {wanted} to compare with"
        if test == "gte":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return "test 'gte' needs a number (value = 250, without quotes)"
            return None
        if test == "equals" and isinstance(value, tuple):
            return "test 'equals' takes one value; for a list use test = \"in\""
        if test == "in" and not isinstance(value, tuple):
            return 'test \'in\' takes a list of values, e.g. value = ["ES", "MX"], not a single one'
        options = value if isinstance(value, tuple) else (value,)
        if not options:
            return "test 'in' needs at least one value"
        for option in options:
            if problem := self._option_problem(option):
                return problem
        return None

    def _option_problem(self, option: object) -> str | None:
        if self.field in (*_FLAG_FIELDS, "consent.marketing") and not isinstance(option, bool):
            return f"{self.field} is true or false: compare it with true or false (no quotes)"
        if self.field == "country" and not (
            isinstance(option, str) and option.upper() in COUNTRY_CODES
        ):
            return (
                f"{option!r} is not an ISO 3166-1 alpha-2 country code, which is what leads "
                "store (write ES, MX, GB...: names and 3-letter codes never match)"
            )
        if self.field == "source" and not (
            isinstance(option, str) and option.lower() in LEAD_SOURCES
        ):
            return f"{option!r} is not a lead source; leads come from {', '.join(LEAD_SOURCES)}"
        return None


CountrySetting = Annotated[str, AfterValidator(_country_code)]
SourceSetting = Annotated[str, AfterValidator(_lead_source)]
CustomKeySetting = Annotated[str, AfterValidator(_custom_key)]
RuleScore = Annotated[int, Field(ge=0, le=100)]


class RoutingRule(_Section):
    """Leads matching every given condition go to `team` (first matching rule wins)."""

    team: str = Field(min_length=1, max_length=100)
    countries: tuple[CountrySetting, ...] = Field(
        default=(), description="ISO 3166-1 alpha-2 codes (any case)"
    )
    regions: tuple[MatchText, ...] = ()
    sources: tuple[SourceSetting, ...] = ()
    min_score: RuleScore | None = None
    max_score: RuleScore | None = None
    custom: dict[CustomKeySetting, MatchValue] = Field(
        default_factory=dict,
        description="Custom field -> value: booleans as booleans, numbers by value, "
        "text ignoring case (`leads.scoring.same_value`)",
    )

    @model_validator(mode="after")
    def _can_match(self) -> RoutingRule:
        low, high = self.min_score, self.max_score
        if low is not None and high is not None and low > high:
            raise _refuse(
                _setting_error(
                    ("min_score",), f"is above max_score ({high}): the rule could never match", low
                )
            )
        return self

    @property
    def takes_every_lead(self) -> bool:
        """True when the rule has no condition: no rule after it can match."""
        return not (
            self.countries
            or self.regions
            or self.sources
            or self.custom
            or self.min_score is not None
            or self.max_score is not None
        )


class TeamMember(_Section):
    """A salesperson and how many leads they take per round (weighted round-robin)."""

    name: str = Field(min_length=1, max_length=200)
    capacity: int = Field(default=1, ge=0, le=1000)


class DedupeSettings(_Section):
    """How leads are matched and merged; meant as a nested section of the app settings.

    Scores are match probabilities in [0, 1]. A pair scoring at least `merge_threshold`
    is a duplicate; between `review_threshold` and `merge_threshold` it is a possible
    duplicate held for a person to decide.
    """

    merge_threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    review_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    on_duplicate: Literal["merge", "review"] = Field(
        default="merge",
        description="merge: fold a duplicate into the existing lead; review: hold it.",
    )
    overwrite_fields: tuple[str, ...] = Field(
        default=(),
        description="Fields whose non-empty incoming value replaces the existing one.",
    )
    accumulate_fields: tuple[str, ...] = Field(
        default=("sources",),
        description="List fields whose values are unioned on merge (every source kept).",
    )
    nicknames: bool = Field(default=True, description="Treat Pepe as José, Paco as Francisco...")
    max_block_size: int = Field(
        default=200,
        ge=1,
        description="Fuzzy blocking keys shared by more records are skipped: too common to "
        "discriminate. Exact keys (email, phone, tax id) are never skipped.",
    )
    max_candidates: int = Field(
        default=50,
        ge=1,
        description="Stored records compared with each arrival at most: when more share a "
        "blocking key with it, those sharing the rarest keys (exact keys first).",
    )
    window: int = Field(
        default=3, ge=0, description="Sorted-neighbourhood records taken on each side."
    )

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> DedupeSettings:
        if self.review_threshold > self.merge_threshold:
            raise ValueError("review_threshold must not exceed merge_threshold")
        # A key's members are read up to max_block_size + 1: more candidates than that
        # could not be the ones a lead compared alone would meet.
        if self.max_candidates > self.max_block_size:
            raise ValueError("max_candidates must not exceed max_block_size")
        return self


class LeadsSettings(_Section):
    """The leads context: normalisation, de-duplication, scoring and routing."""

    default_region: str = Field(
        default="ES",
        min_length=2,
        max_length=2,
        description="Region national phone numbers are read in when a lead has no country",
    )
    dedupe: DedupeSettings = DedupeSettings()
    scoring_rules: tuple[ScoringRule, ...] | None = Field(
        default=None, description="None: the built-in points model"
    )
    routing_rules: tuple[RoutingRule, ...] = ()
    teams: dict[str, tuple[TeamMember, ...]] = Field(default_factory=dict)
    default_team: str | None = Field(
        default=None, max_length=100, description="Team of the leads no routing rule matches"
    )
    max_batch: int = Field(
        default=1000, ge=1, le=10_000, description="POST /v1/leads/batch: most leads a call"
    )
    max_batch_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="POST /v1/leads/batch: 413 beyond this (a batch is up to `max_batch` "
        "leads, far more than `http.max_body_bytes`, the limit of every other JSON body)",
    )
    intake_group_max: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="POST /v1/leads: most concurrent leads committed in one transaction "
        "(group commit, ADR 0009); 1 turns grouping off",
    )
    intake_queue_max: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="POST /v1/leads with group commit: most leads waiting for their group "
        "in one process; more are refused with 503 and Retry-After (the process is behind)",
    )
    max_import_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        # A region phonenumbers does not know would read every national number as
        # having "an unknown country code": refuse it at start-up instead.
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"{value!r} is not a region phone numbers can be read in: an ISO 3166-1 "
                "alpha-2 code such as ES, MX, AR or CO"
            )
        return region

    @model_validator(mode="after")
    def _check(self) -> LeadsSettings:
        # Each team routing sends leads to, and what sends them (for the message).
        routed: dict[str, str] = {}
        for index, rule in enumerate(self.routing_rules):
            routed.setdefault(rule.team, f"routing rule {index}")
        if self.default_team:
            routed.setdefault(self.default_team, "default_team")
        if missing := sorted(set(routed) - set(self.teams)):
            raise ValueError(f"routing names teams not in leads.teams: {', '.join(missing)}")
        errors = []
        for team, by in routed.items():
            # A lead routed there would get the team and no owner, silently, forever.
            if not any(member.capacity > 0 for member in self.teams[team]):
                errors.append(
                    _setting_error(
                        ("teams", team),
                        f"no member with a capacity above 0, yet {by} sends leads to it: "
                        "they would get no owner",
                        None,
                    )
                )
        for team, members in self.teams.items():
            names = [member.name for member in members]
            if twice := sorted({name for name in names if names.count(name) > 1}):
                errors.append(
                    _setting_error(
                        ("teams", team),
                        f"names {', '.join(twice)} more than once: list each member once, "
                        "with their capacity",
                        None,
                    )
                )
        takes_all = None
        for index, rule in enumerate(self.routing_rules):
            if takes_all is not None:
                errors.append(
                    _setting_error(
                        ("routing_rules", index),
                        f"can never match: routing rule {takes_all} before it has no "
                        "condition and takes every lead",
                        None,
                    )
                )
            elif rule.takes_every_lead:
                takes_all = index
        if errors:
            raise _refuse(*errors)
        return self

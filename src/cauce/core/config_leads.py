"""The `leads` section of the settings (`CAUCE_LEADS__...`): routing rules, teams and
de-duplication, with the scoring rules of `cauce.core.config_scoring`.

`cauce.core.config` nests it in the root `Settings`; it has a module of its own only to
keep that one a readable size. It is still core, so it may not import the leads context:
what its checks need to know about leads is in `cauce.core.config_lead_facts`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Annotated, Literal

import phonenumbers
from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import InitErrorDetails

from cauce.core.config_lead_facts import (
    COUNTRY_CODES,
    CUSTOM_KEY,
    LEAD_SOURCES,
    LEAD_TEXT_FIELDS,
    MatchText,
    MatchValue,
    Section,
    refuse,
    setting_error,
    text_key,
)
from cauce.core.config_scoring import ScoringRule, WholeNumber


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


CountrySetting = Annotated[str, AfterValidator(_country_code)]
SourceSetting = Annotated[str, AfterValidator(_lead_source)]
CustomKeySetting = Annotated[str, AfterValidator(_custom_key)]
RuleScore = Annotated[WholeNumber, Field(ge=0, le=100)]


class RoutingRule(Section):
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
        "text ignoring case and accents (`leads.scoring.same_value`)",
    )

    @model_validator(mode="after")
    def _can_match(self) -> RoutingRule:
        low, high = self.min_score, self.max_score
        if low is not None and high is not None and low > high:
            raise refuse(
                setting_error(
                    ("min_score",), f"is above max_score ({high}): the rule could never match", low
                )
            )
        return self

    @property
    def score_band(self) -> tuple[int, int]:
        """The scores the rule takes: 0-100 (every score) without bounds."""
        low = 0 if self.min_score is None else self.min_score
        return low, 100 if self.max_score is None else self.max_score

    @property
    def takes_every_lead(self) -> bool:
        """True when the rule has no condition (a band of 0-100 is none): no rule after it
        can match."""
        return not (self.countries or self.regions or self.sources or self.custom) and (
            self.score_band == (0, 100)
        )

    def takes_every_lead_of(self, later: RoutingRule) -> bool:
        """True when every lead `later` matches, this rule matches too: each of its
        conditions is at least as broad (absent, a superset, a band containing the other's,
        custom conditions among the other's). Checked before it, `later` never fires."""
        (low, high), (later_low, later_high) = self.score_band, later.score_band
        # A bare code in a rule for Spain alone is a Spanish place (`CA`: Cádiz, and the
        # leads naming it so); elsewhere the letters only (California's `CA`): the same
        # code in an earlier rule for other countries takes none of those (helper-136).
        codes_differ = (
            _spain_alone(later)
            and not _spain_alone(self)
            and any(_BARE_CODE.fullmatch(region.strip()) for region in later.regions)
        )
        return (
            _broader(self.countries, later.countries, str)
            and not codes_differ
            and _broader(self.regions, later.regions, region_key)
            and _broader(self.sources, later.sources, str)
            and low <= later_low
            and high >= later_high
            and all(
                key in later.custom and _same(value, later.custom[key])
                for key, value in self.custom.items()
            )
        )


_NOT_LETTERS = re.compile(r"[\W_]+")
_BARE_CODE = re.compile(r"[A-Za-z]{2}")


def _spain_alone(rule: RoutingRule) -> bool:
    return {country.upper() for country in rule.countries} == {"ES"}


def region_key(text: str) -> str:
    """A region as routing compares it (`leads.regions_es.place_key`, which core may not
    import; a test keeps the two in step): case, accents and punctuation aside."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(word for word in _NOT_LETTERS.split(plain) if word) or text.casefold()


def _broader(earlier: tuple[str, ...], later: tuple[str, ...], key: Callable[[str], str]) -> bool:
    # No list: no condition, the broadest; a list is never broader than none.
    return not earlier or (bool(later) and {key(v) for v in later} <= {key(v) for v in earlier})


def _same(a: MatchValue, b: MatchValue) -> bool:
    """Whether two configured values match the same leads for certain (both booleans, both
    numbers, or both text: `leads.scoring.same_value`). Values of different kinds may
    match different leads (`"45.0"` meets 45, not "45"): not the same."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) or isinstance(b, int | float):
        return isinstance(a, int | float) and isinstance(b, int | float) and a == b
    return text_key(a) == text_key(b)


def _owner_name(value: str) -> str:
    # The lead's `owner` the member becomes: as the API stores an owner (NFC, invisible
    # and control characters out, spaces collapsed, 100 characters at most); one of
    # spaces alone would be no owner at all. A `cauce.toml` saved in NFD (`Iñaki` as `n`
    # and a combining tilde) gave leads an owner `GET /v1/leads?owner=Iñaki` never found.
    text = unicodedata.normalize("NFC", value)
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Cc") or c.isspace())
    name = " ".join(text.split())
    if not name:
        raise ValueError("is blank: a member's name becomes the lead's owner")
    return name


def _team_name(value: str) -> str:
    # A blank team was no team: `default_team = ""` silently sent nobody anywhere.
    if not value.strip():
        raise ValueError("is blank: name the team (unset default_team for none)")
    return value


TeamName = Annotated[str, AfterValidator(_team_name)]


class TeamMember(Section):
    """A salesperson and how many leads they take per round (weighted round-robin)."""

    name: Annotated[str, AfterValidator(_owner_name)] = Field(min_length=1, max_length=100)
    capacity: int = Field(default=1, ge=0, le=1000)


class DedupeSettings(Section):
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


class LeadsSettings(Section):
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
    teams: dict[TeamName, tuple[TeamMember, ...]] = Field(default_factory=dict)
    default_team: TeamName | None = Field(
        default=None, max_length=100, description="Team of the leads no routing rule matches"
    )
    max_batch: int = Field(  # default: `leads.field_types.MAX_BATCH_ITEMS`
        default=1000, ge=1, le=10_000, description="POST /v1/leads/batch: most leads a call"
    )
    max_batch_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="POST /v1/leads/batch: 413 beyond this (a batch is up to `max_batch` "
        "leads, far more than `http.max_body_bytes`, the limit of every other JSON body)",
    )
    batch_transaction_size: int = Field(
        default=250,
        ge=1,
        le=10_000,
        description="POST /v1/leads/batch, while single leads come (one in the last 10 s): "
        "a batch of more valid leads commits them in transactions of this many, so single "
        "leads take their turn between them (SQLite has one writer; PostgreSQL's intake "
        "locks its leads' keys). With an Idempotency-Key, a retry after a failure goes on "
        "where the batch stopped (ADR 0013)",
    )
    intake_group_max: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="POST /v1/leads: most concurrent leads committed in one transaction "
        "(group commit, ADR 0009); 1 turns grouping off",
    )
    candidate_cache_size: int = Field(
        default=262_144,
        ge=0,
        le=10_000_000,
        description="Stored leads whose prepared match fields one process keeps for "
        "de-duplication (least recently used out; ~1.8 KiB of memory each, ~460 MiB full at "
        "the default), filled at start-up from the newest leads. Below the leads stored, "
        "intake reads and prepares again the candidates that fell out: at 120,000 stored, "
        "batches ran at half the rate with 32,768. 0 keeps none",
    )
    intake_queue_max: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="POST /v1/leads with group commit: most leads waiting for their group "
        "in one process; more are refused with 503 and Retry-After (the process is behind)",
    )
    max_import_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_queued_imports: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="CSV imports not finished (queued, running, stopped but replayable), "
        "with the uploads being received, across the installation; each keeps its file "
        "in the data directory. More uploads are refused with 503 `import_queue_full` "
        "and Retry-After, before their body is read",
    )
    max_queued_imports_per_key: int = Field(
        default=5,
        ge=1,
        le=10_000,
        description="CSV imports not finished, with the uploads being received, of one API "
        "key: so one key cannot take every place of `max_queued_imports` from the others. "
        "More uploads of that key are refused with 429 `key_imports_full` and Retry-After, "
        "before their body is read",
    )
    import_concurrency: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="CSV imports run at once by one process's worker: an import job "
        "finding this many running gives its worker slot back and tries again a few "
        "seconds later, so the other queues (CRM delivery...) keep moving",
    )

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
        unknown = []
        for index, rule in enumerate(self.routing_rules):
            routed.setdefault(rule.team, f"routing rule {index}")
            if rule.team not in self.teams:
                unknown.append(setting_error(("routing_rules", index, "team"), "", rule.team))
        if self.default_team:
            routed.setdefault(self.default_team, "default_team")
            if self.default_team not in self.teams:
                unknown.append(setting_error(("default_team",), "", self.default_team))
        if unknown:
            known = ", ".join(sorted(self.teams)) or "none"
            raise refuse(
                *(
                    setting_error(
                        e["loc"], f"names a team not in leads.teams (teams: {known})", e["input"]
                    )
                    for e in unknown
                )
            )
        errors = []
        for team, by in routed.items():
            # A lead routed there would get the team and no owner, silently, forever.
            if not any(member.capacity > 0 for member in self.teams[team]):
                errors.append(
                    setting_error(
                        ("teams", team),
                        f"no member with a capacity above 0, yet {by} sends leads to it: "
                        "they would get no owner",
                        None,
                    )
                )
        for team, members in self.teams.items():
            # One person however the case is typed (`Marta`, `marta`): one share.
            names = [member.name.casefold() for member in members]
            if twice := sorted({m.name for m in members if names.count(m.name.casefold()) > 1}):
                errors.append(
                    setting_error(
                        ("teams", team),
                        f"names {', '.join(twice)} more than once: list each member once, "
                        "with their capacity",
                        None,
                    )
                )
        rule_names = [rule.name for rule in self.scoring_rules or ()]
        for index, name in enumerate(rule_names):
            if name in rule_names[:index]:
                # The name is the reason's `code` clients read: two would be one reason.
                errors.append(
                    setting_error(
                        ("scoring_rules", index, "name"),
                        f"'{name}' names an earlier scoring rule too: each rule's name is "
                        "its reasons' code, and must be its own",
                        name,
                    )
                )
        errors.extend(_unreachable_rules(self.routing_rules))
        errors.extend(_merge_setting_errors(self.dedupe))
        if errors:
            raise refuse(*errors)
        return self


def _unreachable_rules(rules: tuple[RoutingRule, ...]) -> list[InitErrorDetails]:
    """Routing rules that can never fire: an earlier rule takes every lead they would (the
    first match wins), so their team never gets one from them. Only one earlier rule's
    conditions are weighed, not several together."""
    errors: list[InitErrorDetails] = []
    for index, rule in enumerate(rules):
        earlier = next(
            (i for i, before in enumerate(rules[:index]) if before.takes_every_lead_of(rule)),
            None,
        )
        if earlier is None:
            continue
        first = rules[earlier]
        why = (
            f"has no condition and takes every lead (to team {first.team})"
            if first.takes_every_lead
            else f"(team {first.team}) takes every lead it would (each of that rule's "
            "conditions is absent or at least as broad)"
        )
        errors.append(
            setting_error(
                ("routing_rules", index),
                f"can never match: routing rule {earlier} before it {why}, so team "
                f"{rule.team} never gets a lead from it; remove it, move it before rule "
                f"{earlier} or narrow rule {earlier}",
                None,
            )
        )
    return errors


# The lead fields a merge fills (`leads.intake_merge.MERGEABLE`; a test keeps the two in
# step: the settings cannot import the leads context).
MERGED_FIELDS = (*LEAD_TEXT_FIELDS, "custom_fields", "consent")


# What `overwrite_fields` may name: a field a merge fills and could overwrite. Not
# `custom_fields` whole (a merge goes into it key by key: `custom_fields.<key>`), nor
# `consent` (the later one always wins, kept whole).
OVERWRITTEN_FIELDS = tuple(n for n in MERGED_FIELDS if n not in ("custom_fields", "consent"))


def _merge_setting_errors(dedupe: DedupeSettings) -> list[InitErrorDetails]:
    """`overwrite_fields` patterns that name no field of a lead (a typo overwrote nothing,
    silently), and `accumulate_fields` other than `sources`: a lead's fields hold one value
    each, and a list accumulated into one could not be stored."""
    errors: list[InitErrorDetails] = []
    for index, pattern in enumerate(dedupe.overwrite_fields):
        if pattern.startswith("custom_fields.") or any(
            fnmatchcase(name, pattern) for name in OVERWRITTEN_FIELDS
        ):
            continue
        errors.append(
            setting_error(
                ("dedupe", "overwrite_fields", index),
                f"names no field a merge overwrites; fields: {', '.join(OVERWRITTEN_FIELDS)}, "
                "or custom_fields.<key> (shell patterns such as custom_fields.* too; the "
                "later consent always wins)",
                pattern,
            )
        )
    for index, name in enumerate(dedupe.accumulate_fields):
        if name != "sources":
            errors.append(
                setting_error(
                    ("dedupe", "accumulate_fields", index),
                    "only sources can be accumulated: a lead keeps every arrival's source, "
                    "and its other fields hold one value each",
                    name,
                )
            )
    return errors

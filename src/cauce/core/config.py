"""Settings: one pydantic-settings root with nested sections.

Sources, highest priority first: keyword arguments (tests), environment variables
(`CAUCE_` prefix, `__` between nesting levels, e.g. `CAUCE_DB__POOL_SIZE=20`), a `.env`
file is deliberately NOT read (secrets belong to the environment), then `cauce.toml`
(path in `CAUCE_CONFIG`, default `./cauce.toml`, optional). This module is the only one
that reads `os.environ`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cauce.core.errors import ConfigError
from cauce.core.resilience.policy import UpstreamPolicy

ENV_PREFIX = "CAUCE_"
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the known-unsafe default
DEFAULT_CONFIG_FILE = "cauce.toml"

Environment = Literal["development", "test", "production"]


def _cron_off(cron: object) -> object:
    if isinstance(cron, str) and cron.strip().lower() in ("", "off", "none", "null"):
        return None
    return cron


def _cron_valid(cron: str | None) -> str | None:
    if cron is not None and not croniter.is_valid(cron):
        raise ValueError(f"not a cron expression: {cron!r}")
    return cron


# A schedule: a cron expression (5 fields, or 6 with seconds last), or None (never), also
# written `off`, `none`, `null` or empty (an environment variable cannot be null).
CronOrOff = Annotated[str | None, BeforeValidator(_cron_off), AfterValidator(_cron_valid)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DbSettings(_Section):
    """Database engine options (the URL itself is `CAUCE_DATABASE_URL`)."""

    pool_size: int = Field(default=10, ge=1, le=500)
    max_overflow: int = Field(default=10, ge=0, le=500)
    pool_timeout_seconds: float = Field(default=10.0, gt=0)
    busy_timeout_ms: int = Field(
        default=30_000, ge=0, description="SQLite: how long a writer waits for the lock"
    )
    echo: bool = False
    auto_migrate: bool | None = Field(
        default=None,
        description=(
            "Apply pending migrations when serving. Default: yes on SQLite, no on PostgreSQL "
            "(run `cauce db upgrade` as a deploy step)."
        ),
    )


class HttpSettings(_Section):
    """The HTTP server and request limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="413 beyond this")
    graceful_shutdown_seconds: float = Field(default=30.0, ge=0)
    access_log: bool = True
    workers: int = Field(
        default=1, ge=1, le=64, description="`cauce serve` processes (PostgreSQL only)"
    )
    idempotency_purge_cron: CronOrOff = Field(
        default="23 * * * *",
        description="When expired Idempotency-Key answers (kept 24 h) are deleted, as a "
        "cron expression (5 fields, or 6 with seconds last); `off` (or empty): never",
    )


class AuthSettings(_Section):
    """API-key verification."""

    cache_ttl_seconds: float = Field(
        default=5.0, ge=0, le=60, description="A revoked key stops working within this time"
    )
    last_used_resolution_seconds: float = Field(default=60.0, ge=0)


class LogSettings(_Section):
    """Structured logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: JSON unless on a terminal in development"
    )


class OtelSettings(_Section):
    """OpenTelemetry tracing: exported over OTLP/HTTP when an endpoint is set."""

    endpoint: str | None = Field(default=None, description="e.g. http://127.0.0.1:4318")
    service_name: str = "cauce"
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class JobsSettings(_Section):
    """The job engine's workers (embedded on SQLite, `cauce worker` on PostgreSQL)."""

    concurrency: int = Field(default=10, ge=1, le=1000, description="Jobs run at once per worker")
    queues: tuple[str, ...] = Field(default=(), description="Queues to serve; empty: all")
    embedded_worker: bool = Field(
        default=True, description="On SQLite, run the worker inside `cauce serve`"
    )
    poll_seconds: float = Field(default=0.5, gt=0, le=60)
    heartbeat_seconds: float = Field(default=5.0, gt=0, le=300)
    stalled_after_seconds: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        description="A worker silent this long is dead: its jobs run again",
    )
    sweep_seconds: float = Field(default=5.0, gt=0, le=600)
    graceful_shutdown_seconds: float = Field(
        default=30.0, ge=0, description="In-flight jobs may finish this long on SIGTERM"
    )
    retention_succeeded_days: float = Field(
        default=7.0,
        gt=0,
        le=36500,
        description="Succeeded jobs (and their attempts) are deleted this long after they finished",
    )
    retention_failed_days: float = Field(
        default=30.0,
        gt=0,
        le=36500,
        description="Failed and cancelled jobs (the dead letters, with their attempts' "
        "errors) are deleted this long after they finished",
    )
    purge_cron: CronOrOff = Field(
        default="47 * * * *",
        description="When `core.jobs_purge` deletes finished jobs past their retention, as "
        "a cron expression (5 fields, or 6 with seconds last); `off` (or empty): never",
    )
    purge_chunk_size: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="Jobs a purge deletes per transaction at most (short locks)",
    )

    @model_validator(mode="after")
    def _heartbeat_below_stall(self) -> JobsSettings:
        if self.heartbeat_seconds >= self.stalled_after_seconds:
            raise ValueError("heartbeat_seconds must be below stalled_after_seconds")
        return self


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

    default_region: str = Field(default="ES", min_length=2, max_length=2)
    dedupe: DedupeSettings = DedupeSettings()
    scoring_rules: tuple[ScoringRule, ...] | None = Field(
        default=None, description="None: the built-in points model"
    )
    routing_rules: tuple[RoutingRule, ...] = ()
    teams: dict[str, tuple[TeamMember, ...]] = Field(default_factory=dict)
    default_team: str | None = Field(
        default=None, max_length=100, description="Team of the leads no routing rule matches"
    )
    max_batch: int = Field(default=1000, ge=1, le=10_000)
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


DEFAULT_CRM_FIELDS = {
    "email": "email",
    "first_name": "firstname",
    "last_name": "lastname",
    "phone": "phone",
    "company": "company",
    "job_title": "jobtitle",
    "city": "city",
    "region": "state",
    "country": "country",
    "score": "cauce_score",
    "owner": "cauce_owner",
    "uid": "cauce_id",
}


class CrmSettings(_Section):
    """Where accepted leads are delivered (`none`: kept in Cauce only)."""

    provider: Literal["none", "hubspot", "pipedrive", "webhook"] = "none"
    base_url: str | None = Field(default=None, description="Default: the vendor's API URL")
    token: SecretStr | None = None
    account: str = Field(
        default="default", min_length=1, max_length=64, description="Lock key per CRM account"
    )
    field_mapping: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_CRM_FIELDS),
        description="Cauce field -> CRM property",
    )
    cauce_id_property: str = Field(
        default="cauce_id", description="Unique CRM property keying leads without email"
    )
    batch_size: int = Field(default=100, ge=1, le=100)
    delivery_lanes: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Batch requests one delivery job keeps in flight (the CRM's latency "
        "would otherwise bound the rate; the upstream's rate limiter still paces them)",
    )
    delivery_budget_seconds: float = Field(
        default=20.0, gt=0, description="A delivery job hands over to a fresh job after this"
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HubSpot app secret (inbound webhook signatures)"
    )
    allow_hosts: tuple[str, ...] = Field(
        default=(), description="Hosts or CIDRs let through the SSRF guard (a local sandbox)"
    )
    timezone: str = Field(
        default="UTC", description="The CRM account's IANA time zone (HubSpot's daily reset)"
    )


class MlflowSettings(_Section):
    """Experiment tracking for `cauce leads train` (off unless a tracking URI is set)."""

    tracking_uri: str | None = None
    experiment: str = "cauce-lead-scoring"


class Settings(BaseSettings):
    """The root of Cauce's configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    env: Environment = "development"
    data_dir: Path = Path(".cauce")
    database_url: str | None = Field(
        default=None,
        description=(
            "Default: SQLite at $CAUCE_DATA_DIR/cauce.db; postgresql+psycopg://... to scale out"
        ),
    )
    redis_url: str | None = None
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)

    db: DbSettings = DbSettings()
    http: HttpSettings = HttpSettings()
    auth: AuthSettings = AuthSettings()
    log: LogSettings = LogSettings()
    otel: OtelSettings = OtelSettings()
    jobs: JobsSettings = JobsSettings()
    leads: LeadsSettings = LeadsSettings()
    mlflow: MlflowSettings = MlflowSettings()
    crm: CrmSettings = CrmSettings()
    upstreams: dict[str, UpstreamPolicy] = Field(
        default_factory=dict,
        description="Resilience policy per upstream: CAUCE_UPSTREAMS__<NAME>__RETRY__MAX_ATTEMPTS",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        url = self.database_url
        if url is not None and not url.startswith(("sqlite+aiosqlite://", "postgresql+psycopg://")):
            raise ValueError(
                "database_url must start with sqlite+aiosqlite:// or postgresql+psycopg://"
            )
        if self.env != "development":
            secret = self.secret_key.get_secret_value()
            if secret == DEV_SECRET_KEY:
                raise ValueError(
                    f"secret_key is the built-in development value; outside development set "
                    f"{ENV_PREFIX}SECRET_KEY to a random string (e.g. `openssl rand -hex 32`)"
                )
            if len(secret) < 32:
                raise ValueError("secret_key must be at least 32 characters outside development")
        return self

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cauce.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        """True on the embedded engine."""
        return self.effective_database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_FILE))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_path))


def _variable_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the environment variable and what is wrong."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        name = _variable_name(loc) if loc else "configuration"
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown setting"
        got = err.get("input")
        shown = (
            ""
            if isinstance(got, dict) or got is None or "secret" in name.lower()
            else f" (got {got!r})"
        )
        lines.append(f"{name}: {msg}{shown}" if loc else msg)
    return "; ".join(lines)


# Variables with the prefix that are not settings: the config file path and the test
# suite's own service URLs.
_NOT_SETTINGS = (f"{ENV_PREFIX}CONFIG", f"{ENV_PREFIX}TEST_")


def _unknown_variables() -> list[str]:
    """Top-level CAUCE_* variables that name no setting (pydantic ignores those silently)."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = []
    for name in os.environ:
        if not name.startswith(ENV_PREFIX) or name.startswith(_NOT_SETTINGS):
            continue
        if name.split("__", 1)[0] not in known:
            unknown.append(name)
    return sorted(unknown)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment and `cauce.toml`, or raise `ConfigError`."""
    if unknown := _unknown_variables():
        raise ConfigError(
            "invalid configuration: " + "; ".join(f"{n}: unknown setting" for n in unknown)
        )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {format_validation_error(exc)}") from None

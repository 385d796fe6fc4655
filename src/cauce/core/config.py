"""Settings: one pydantic-settings root with nested sections.

Sources, highest priority first: keyword arguments (tests), environment variables
(`CAUCE_` prefix, `__` between nesting levels, e.g. `CAUCE_DB__POOL_SIZE=20`), a `.env`
file is deliberately NOT read (secrets belong to the environment), then `cauce.toml`
(path in `CAUCE_CONFIG`, default `./cauce.toml`, optional). This module is the only one
that reads `os.environ`.

The `leads` section (de-duplication, scoring, routing, teams) is in
`cauce.core.config_leads`.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from cauce.core.config_lead_facts import CUSTOM_KEY, LEAD_TEXT_FIELDS

# Re-exported (`as`): the type of `Settings.leads` stays importable from here.
from cauce.core.config_leads import LeadsSettings as LeadsSettings
from cauce.core.errors import ConfigError
from cauce.core.resilience.policy import UpstreamPolicy

ENV_PREFIX = "CAUCE_"
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the known-unsafe default
DEFAULT_CONFIG_FILE = "cauce.toml"

Environment = Literal["development", "test", "production"]
# What an access line keeps of the client's address (`http.access_log_client`).
AccessLogClient = Literal["full", "network", "off"]


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
    analyze_cron: CronOrOff = Field(
        default="41 * * * *",
        description="When `core.db_analyze` refreshes the query planner's statistics "
        "(ANALYZE), as a cron expression; `off`: never. On PostgreSQL, of the tables changed "
        "since their last analyze (autovacuum waits for 10 % of a table's rows, and the "
        "statistics hold column values: an erased person's stayed there)",
    )


class HttpSettings(_Section):
    """The HTTP server and request limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="413 beyond this")
    graceful_shutdown_seconds: float = Field(default=30.0, ge=0)
    access_log: bool = True
    access_log_client: AccessLogClient = Field(
        default="network",
        description="What an access line keeps of the client's address, personal data: "
        "`network` its network (IPv4 /24, IPv6 /48, e.g. 203.0.113.0/24), `full` the "
        "address, `off` nothing",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="`cauce serve` processes (PostgreSQL only)"
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or networks of the reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed (the client's address in the "
        "access log and traces); empty: none, the peer is the client",
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

# What `CAUCE_CRM__FIELD_MAPPING` may name: a lead's fields that hold one value each, as
# `leads.delivery.contact_properties` reads them (restated here: core may not import the
# leads context; tests/leads/test_crm_consent_mapping.py keeps the two in step).
CRM_LEAD_FIELDS = (
    "uid",
    *LEAD_TEXT_FIELDS,
    "source",
    "status",
    "owner",
    "team",
    "score",
    "score_model",
    "email_free",
    "email_disposable",
    # The emails and phones merges kept beside the lead's own, space-separated text.
    "other_emails",
    "other_phones",
    "created_at",
    "updated_at",
)
# A consent's members, each its own key (the stored record's member it reads).
# `consent_given_on` is the day of `given_at` (in UTC), for a CRM's date-only property.
CRM_CONSENT_FIELDS = {
    "consent_marketing": "marketing",
    "consent_given_at": "given_at",
    "consent_given_on": "given_at",
    "consent_wording_version": "wording_version",
    "consent_source": "source",
}
# The stored consent's members, also named `consent.<member>` (`consent_<member>`).
CONSENT_MEMBERS = ("marketing", "given_at", "wording_version", "source")
UTM_MEMBERS = ("source", "medium", "campaign", "term", "content")
# Every key but `custom.<key>`: `consent.<member>` is `consent_<member>` (the scoring
# rules' and the CSV mapping's words), and `utm.<member>` a campaign parameter.
CRM_MAPPING_KEYS = (
    *CRM_LEAD_FIELDS,
    *CRM_CONSENT_FIELDS,
    *(f"consent.{m}" for m in CONSENT_MEMBERS),
    *(f"utm.{m}" for m in UTM_MEMBERS),
)
# A custom field: `custom.<key>` (or `custom_fields.<key>`).
CRM_CUSTOM_PREFIXES = ("custom.", "custom_fields.")
# Fields holding an object, which a CRM property cannot take whole: what to map instead.
_WHOLE_OBJECTS = {
    "consent": "map its members: " + ", ".join(CRM_CONSENT_FIELDS),
    "utm": "map its members: " + ", ".join(f"utm.{m}" for m in UTM_MEMBERS),
    "custom_fields": "map each custom field as custom.<key>",
    "custom": "map each custom field as custom.<key>",
}


def _crm_mapping_problem(key: str) -> str | None:
    """Why `key` cannot be a key of `CAUCE_CRM__FIELD_MAPPING`; None if it can."""
    if key in CRM_MAPPING_KEYS:
        return None
    for prefix in CRM_CUSTOM_PREFIXES:
        if key.startswith(prefix):
            if CUSTOM_KEY.fullmatch(key.removeprefix(prefix)):
                return None
            return (
                f"{key!r} is not a custom field name (a lower-case letter, then letters, "
                "digits or _)"
            )
    if key in _WHOLE_OBJECTS:
        return f"{key!r} is a whole object (a CRM property cannot take it): {_WHOLE_OBJECTS[key]}"
    return f"{key!r} names no lead field"


def _crm_mapping_keys() -> str:
    nested = [
        f"consent.<{'|'.join(CONSENT_MEMBERS)}>",
        f"utm.<{'|'.join(UTM_MEMBERS)}>",
        "custom.<key>",
    ]
    return ", ".join([*CRM_LEAD_FIELDS, *CRM_CONSENT_FIELDS, *nested])


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
        description="Cauce field -> CRM property (docs/configuration.md lists the fields)",
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
    webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s?#]+$",
        description="The URL HubSpot posts webhooks to, as set in the HubSpot app "
        "(https://host/v1/webhooks/hubspot): the signature covers it. Default: the URL of "
        "the request as Cauce receives it, which differs behind a proxy that terminates TLS",
    )
    webhook_inbox_retention_days: float = Field(
        default=7.0,
        ge=2,
        le=36500,
        description="Processed webhook events are deleted this long after they were "
        "processed; at least 2 days, as a redelivered event is known by its kept row "
        "(HubSpot retries a failed delivery up to 10 times over about 24 hours)",
    )
    webhook_inbox_purge_cron: CronOrOff = Field(
        default="29 * * * *",
        description="When `crm.inbox_purge` deletes processed webhook events past their "
        "retention (never unprocessed ones), as a cron expression (5 fields, or 6 with "
        "seconds last); `off` (or empty): never",
    )
    allow_hosts: tuple[str, ...] = Field(
        default=(), description="Hosts or CIDRs let through the SSRF guard (a local sandbox)"
    )
    timezone: str = Field(
        default="UTC", description="The CRM account's IANA time zone (HubSpot's daily reset)"
    )
    hubspot_subscription_id: int | None = Field(
        default=None,
        gt=0,
        le=2**63 - 1,
        description="The HubSpot email subscription type whose status follows each lead's "
        "marketing consent, as Cauce stores it (communication preferences v4); no consent "
        "field needs mapping; unset: statuses are not touched",
    )

    @field_validator("field_mapping")
    @classmethod
    def _known_fields(cls, mapping: dict[str, str]) -> dict[str, str]:
        # A key naming no lead field sent nothing, silently, for every lead; one naming
        # an object (`consent`) sent its Python text: refused, in one line.
        problems = [p for key in mapping if (p := _crm_mapping_problem(key)) is not None]
        problems.extend(
            f"{key!r} maps to no CRM property (an empty name)"
            for key, name in mapping.items()
            if not name.strip()
        )
        if problems:
            raise ValueError(f"{'; '.join(problems)}. Its keys: {_crm_mapping_keys()}")
        return mapping

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        # Checked here: a zone unknown to the tz database stopped `serve` later, with a
        # traceback, when the CRM adapter was built.
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                "not an IANA time zone (e.g. Europe/Madrid, America/Mexico_City)"
            ) from exc
        return value

    @field_validator("hubspot_subscription_id")
    @classmethod
    def _subscription_needs_hubspot(cls, value: int | None, info: ValidationInfo) -> int | None:
        # The status follows the lead's own consent, carried on each contact whether or
        # not a consent field is mapped; only HubSpot has the subscription type it names.
        # A field's error: named where it was set (the file's key or the variable).
        provider = info.data.get("provider")
        if value is not None and provider is not None and provider != "hubspot":
            raise ValueError(
                f"is a HubSpot subscription type, but {_named('crm', 'provider')} is "
                f"{provider!r} (set it to 'hubspot', or leave the id out)"
            )
        return value


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

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_named(cls, value: object) -> object:
        # `CAUCE_DATA_DIR=` (set, but empty) became Path(""), the working directory: the
        # database, keys and models landed wherever the command happened to run.
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                "is empty: name a directory (e.g. /var/lib/cauce), or unset it for the "
                "default ./.cauce"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        url = self.database_url
        if url is not None and not url.startswith(("sqlite+aiosqlite://", "postgresql+psycopg://")):
            raise ValueError(
                f"{_named('database_url')} must start with sqlite+aiosqlite:// or "
                "postgresql+psycopg://"
            )
        if url is not None and url.startswith("sqlite") and _sqlite_file(url) is None:
            raise ValueError(
                f"{_named('database_url')} names no database file: an in-memory SQLite "
                "database is gone when the process ends (an API key created with it could "
                "never be used); give a path (sqlite+aiosqlite:////var/lib/cauce/cauce.db), "
                f"or leave it unset for {ENV_PREFIX}DATA_DIR/cauce.db"
            )
        if self.env != "development":
            secret = self.secret_key.get_secret_value()
            if secret == DEV_SECRET_KEY:
                raise ValueError(
                    f"secret_key is the built-in development value; outside development set "
                    f"{_named('secret_key')} to a random string (e.g. `openssl rand -hex 32`)"
                )
            if len(secret) < 32:
                raise ValueError(
                    f"{_named('secret_key')} must be at least 32 characters outside "
                    "development (e.g. `openssl rand -hex 32`)"
                )
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


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(loc: tuple[int | str, ...]) -> str:
    """`loc` as the settings file spells it: `leads.routing_rules[1].team`."""
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            key += f".{name}" if key else name
    return key


def _holds(values: object, loc: tuple[int | str, ...]) -> bool:
    """True if `values` (the settings file's, or the keyword arguments) give the value at
    `loc`, a value holding it, or the table it is missing from (a scoring rule without
    the `value` its test needs)."""
    node = values
    for depth, part in enumerate(loc):
        if isinstance(node, dict):
            if part not in node:
                return 0 < depth == len(loc) - 1  # a table given, without this key
            node = node[part]
        elif isinstance(node, list):
            if not isinstance(part, int) or not 0 <= part < len(node):
                return False
            node = node[part]
        else:
            return True  # past a value given (a string where a table was wanted): it is wrong
    return True


def _in_environment(loc: tuple[int | str, ...]) -> str | None:
    """The variable that gives the value at `loc` (`CAUCE_HTTP__PORT`), one holding it
    (`CAUCE_LEADS__ROUTING_RULES='[...]'`: named with the key inside it,
    `CAUCE_LEADS__ROUTING_RULES: [1].team`), or one inside it (a section's error); or None."""
    values = {name.upper(): value for name, value in os.environ.items()}
    names = {name for name in values if name.startswith(ENV_PREFIX)}
    for n in range(1, len(loc) + 1):
        name = _variable_name(loc[:n])
        if name in names:
            # A section or list given whole as JSON (`CAUCE_CRM='{"provider": ...}'`)
            # gives the value only if its JSON holds it: the rest may be the file's.
            if n == len(loc):
                return name
            return f"{name}: {_toml_key(loc[n:])}" if _json_holds(values[name], loc[n:]) else None
    inside = _variable_name(loc) + "__"
    return _variable_name(loc) if any(name.startswith(inside) for name in names) else None


def _json_holds(text: str, rest: tuple[int | str, ...]) -> bool:
    """True if a variable's JSON `text` gives the value at `rest` (`_holds`); a value
    that is not JSON is the variable's own (pydantic names what is wrong with it)."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return True
    return _holds(parsed, rest)


def _file_values() -> dict[str, Any]:
    """The settings file's values, or none (no file, or one `load_settings` refuses)."""
    try:
        with Path(config_file()).open("rb") as file:
            return tomllib.load(file)
    except (OSError, ValueError):  # tomllib.TOMLDecodeError, UnicodeDecodeError
        return {}


def setting_name(loc: tuple[int | str, ...], overrides: dict[str, Any] | None = None) -> str:
    """Where the value at `loc` (`("http", "port")`) was given, in the words of that
    source: the settings file and its key (`cauce.toml: http.port`) when the value is the
    file's (keyword arguments, `overrides`, and variables win over it), else the
    environment variable (`CAUCE_HTTP__PORT`). The parts pydantic adds that are no
    setting's (a union's branch, a map key's `[key]`) are left out."""
    loc = tuple(part for part in loc if not _union_branch(part))
    variable = _in_environment(loc)
    if variable is not None:
        return variable
    given = _holds(overrides or {}, loc)
    if not given and _holds(_file_values(), loc):
        return f"{config_file()}: {_toml_key(loc)}"
    return _variable_name(loc)


# The keyword arguments `load_settings` is building the settings with, for the checks
# that name a setting in their message (`_named`): they win over the file's values.
_building_with: ContextVar[dict[str, Any] | None] = ContextVar("_building_with", default=None)


def _named(*loc: int | str) -> str:
    """`setting_name` for a check inside the settings (a validator's message)."""
    return setting_name(loc, _building_with.get())


# The names pydantic gives the branches of a union in an error's location (`bool`,
# `function-after[_match_text(), str]`, `tuple[...]`): not settings.
_SCALAR_BRANCHES = frozenset({"str", "bool", "int", "float", "none", "bytes"})


def _union_branch(part: int | str) -> bool:
    return isinstance(part, str) and (part in _SCALAR_BRANCHES or "[" in part)


def _one_per_setting(errors: list[Any]) -> list[tuple[tuple[int | str, ...], Any]]:
    """The errors with their locations; a value that fails every branch of a union (one
    error a branch) is one error at the setting, the first branch's (the text one says
    most: "is empty")."""
    located: list[tuple[tuple[int | str, ...], Any]] = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        located.append((loc[:-1] if loc and _union_branch(loc[-1]) else loc, err))
    counts: dict[tuple[int | str, ...], int] = {}
    for loc, _ in located:
        counts[loc] = counts.get(loc, 0) + 1
    kept: list[tuple[tuple[int | str, ...], Any]] = []
    seen: set[tuple[int | str, ...]] = set()
    for (loc, err), raw in zip(located, errors, strict=True):
        original = tuple(raw.get("loc", ()))
        if loc == original or counts[loc] == 1:
            kept.append((original, err))
        elif loc not in seen:
            seen.add(loc)
            kept.append((loc, err))
    return kept


def format_validation_error(exc: ValidationError, overrides: dict[str, Any] | None = None) -> str:
    """One line per problem, naming where the value was given (the environment variable,
    or the settings file and its key) and what is wrong. `overrides`: the keyword
    arguments the settings were built with, which the file's values yield to."""
    lines = []
    for loc, err in _one_per_setting(list(exc.errors(include_url=False))):
        name = setting_name(loc, overrides) if loc else "configuration"
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


# Kubernetes gives a pod variables named after every Service of its namespace (a Service
# `cauce-api`: CAUCE_API_SERVICE_HOST, CAUCE_API_PORT=tcp://..., CAUCE_API_PORT_8000_TCP,
# ..._TCP_ADDR): not settings, and not to stop Cauce from starting. A bare `..._PORT` is
# one only with Kubernetes' `tcp://host:port` value, so a mistyped CAUCE_HTTP_PORT=8000
# is still refused.
_SERVICE_LINK = re.compile(
    r"[A-Z0-9_]+?_(?:SERVICE_HOST|SERVICE_PORT(?:_[A-Z0-9_]+)?"
    r"|PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:PROTO|PORT|ADDR))?)"
)
_SERVICE_URL = re.compile(r"(?:tcp|udp|sctp)://\S+:\d+")


def _service_link(name: str, value: str) -> bool:
    if "__" in name:
        return False
    if _SERVICE_LINK.fullmatch(name):
        return True
    return name.endswith("_PORT") and _SERVICE_URL.fullmatch(value) is not None


def _unknown_variables() -> list[str]:
    """Top-level CAUCE_* variables that name no setting (pydantic ignores those silently),
    Kubernetes' Service variables aside."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    unknown = []
    for name, value in os.environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(_NOT_SETTINGS):
            continue
        if name not in known and _service_link(name, value):
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
    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit and not Path(explicit).is_file():
        # Only the default `./cauce.toml` is optional: a file named on purpose and missing
        # would otherwise start Cauce on its defaults, routing and scoring rules lost.
        what = "is a directory" if Path(explicit).is_dir() else "does not exist"
        raise ConfigError(f"invalid configuration: {ENV_PREFIX}CONFIG: {explicit} {what}")
    building = _building_with.set(overrides)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = format_validation_error(exc, overrides)
        raise ConfigError(f"invalid configuration: {problems}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid configuration: {config_file()}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"invalid configuration: {config_file()}: not UTF-8 text (save it as UTF-8)"
        ) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {_unparsable(exc)}") from None
    finally:
        _building_with.reset(building)


def _sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names, or None for an in-memory database (no path,
    `:memory:`, or a `mode=memory` URI)."""
    path = url.split("://", 1)[1].removeprefix("/").split("?", 1)[0]
    if path in ("", ":memory:") or "mode=memory" in url:
        return None
    return path


def config_file() -> str:
    """The settings file `load_settings` reads: `CAUCE_CONFIG`, or `cauce.toml` in the
    working directory (optional: it may not exist)."""
    return os.environ.get(f"{ENV_PREFIX}CONFIG", DEFAULT_CONFIG_FILE)


def _unparsable(exc: SettingsError) -> str:
    """Which variable pydantic-settings could not parse (it names only the setting): a
    structured setting's value must be JSON (`CAUCE_LEADS__ROUTING_RULES='[...]'`)."""
    match = re.search(r'field "([^"]+)"', str(exc))
    field = ENV_PREFIX + (match.group(1).upper() if match else "")
    suspects = []
    for name, value in sorted(os.environ.items()):
        if name != field and not name.startswith(field + "__"):
            continue
        try:
            json.loads(value)
        except ValueError as error:
            if value.strip()[:1] in ("[", "{"):
                return f"{name}: not valid JSON ({error})"
            suspects.append(name)
    if suspects:
        return f"{', '.join(suspects)}: a structured setting takes a JSON value (e.g. '[...]')"
    return f"{field}: {exc}"

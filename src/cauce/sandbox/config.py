"""Configuration of the sandbox CRM: the account's limits, its schema and the faults to inject.

Everything a test, the demo or a benchmark may want to vary is here, with the defaults of a
HubSpot private app on a paid plan (190 requests per rolling 10 s, 100 inputs per batch).
:class:`FaultSettings` is kept apart and mutable because faults can be changed while the
server runs (``POST /_sandbox/faults``); the rest is fixed at start.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_WEBHOOK_SECRET", "FaultSettings", "SandboxCrmConfig"]

DEFAULT_TOKEN = "sandbox-token"  # noqa: S105 - a stand-in's well-known credential
DEFAULT_WEBHOOK_SECRET = "sandbox-app-secret"  # noqa: S105 - same
# HubSpot's standard contact properties that Cauce may write, plus the read-only ones the
# store maintains itself. Writing any other property is a 400, as on a real portal.
STANDARD_PROPERTIES: frozenset[str] = frozenset(
    {
        "email",
        "firstname",
        "lastname",
        "phone",
        "mobilephone",
        "company",
        "website",
        "jobtitle",
        "address",
        "city",
        "state",
        "zip",
        "country",
        "lifecyclestage",
        "hs_lead_status",
        "hs_language",
        "message",
        "industry",
        "numemployees",
        "annualrevenue",
        "hubspot_owner_id",
    }
)
READ_ONLY_PROPERTIES: frozenset[str] = frozenset({"hs_object_id", "createdate", "lastmodifieddate"})
LIFECYCLE_STAGES: tuple[str, ...] = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)


@dataclass(kw_only=True)
class FaultSettings:
    """Faults injected into HubSpot API requests; all rates are probabilities in [0, 1].

    Decisions are drawn from one seeded random source in request order, so a run with the
    same seed and the same request sequence fails the same requests.
    """

    error_rate: float = 0.0
    """Answer 500/502/503/504 *before* applying anything (the request still uses its slot)."""
    error_after_write_rate: float = 0.0
    """Apply the write, then answer 500 or 504: the client cannot tell it was applied."""
    reset_rate: float = 0.0
    """Close the connection without any response (before applying anything)."""
    latency_ms: float = 0.0
    """Mean added latency; each request waits uniformly between 0.5x and 1.5x of it."""
    outage_after: float | None = None
    """Seconds after start (or after the last reconfiguration) when an outage begins."""
    outage_for: float = 0.0
    """Length of the outage in seconds: every API request is answered 503 meanwhile."""

    def validate(self) -> None:
        """Raise ``ValueError`` if a rate or duration is out of range."""
        for name in ("error_rate", "error_after_write_rate", "reset_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.error_rate + self.error_after_write_rate + self.reset_rate > 1.0:
            raise ValueError("error_rate + error_after_write_rate + reset_rate must be <= 1")
        if self.latency_ms < 0 or self.outage_for < 0:
            raise ValueError("latency_ms and outage_for must be >= 0")
        if self.outage_after is not None and self.outage_after < 0:
            raise ValueError("outage_after must be >= 0")

    def updated(self, changes: dict[str, Any]) -> FaultSettings:
        """Return a copy with ``changes`` applied (unknown names raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def as_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(kw_only=True)
class SandboxCrmConfig:
    """Everything the sandbox CRM needs to start.

    ``clock`` (monotonic seconds) drives the rate windows, the short "day" and outages, so
    tests can move time by hand; ``wall_clock`` (epoch seconds) stamps records and events.
    """

    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port; the running handle reports the real URL."""
    token: str = DEFAULT_TOKEN
    """The private-app access token every API request must carry as ``Bearer``."""
    portal_id: int = 62515
    app_id: int = 54321

    rate_limit: int = 190
    """Requests allowed per rolling window (HubSpot private apps: 100 or 190 per 10 s)."""
    rate_window_seconds: float = 10.0
    daily_limit: int = 1_000_000
    """Requests per "day"; 0 disables the daily cap."""
    day_seconds: float = 86_400.0
    """Length of a "day": short values let tests reach the reset quickly."""
    send_retry_after: bool = False
    """HubSpot documents no ``Retry-After`` on its 429s; turn on to test a client that reads one."""
    count_rejected: bool = False
    """Whether a request answered 429 itself uses a slot in the rolling window."""

    max_batch_inputs: int = 100
    unique_properties: tuple[str, ...] = ("cauce_id",)
    """Custom properties created with unique values (``email`` is always unique)."""
    extra_properties: tuple[str, ...] = ("cauce_score", "cauce_owner")
    """Further custom properties the portal has (without unique values): by default the
    ones Cauce's default field mapping sends, as a portal set up for Cauce has them."""
    strict_properties: bool = True
    """Refuse properties the portal does not have, as HubSpot does."""
    shuffle_results: bool = True
    """Return batch results in an order unrelated to the inputs, as HubSpot may."""
    tracked_keys: tuple[str, ...] = ("email", "cauce_id")
    """Properties whose repeated values the inspection endpoint reports as duplicates."""
    subscription_types: dict[int, str] = field(
        default_factory=lambda: {7_345_001: "Marketing Information", 7_345_002: "One to One"}
    )
    """The portal's email subscription types (communication preferences), id -> name."""
    gdpr: bool = True
    """Data privacy settings on: subscribing a contact needs a legal basis."""

    faults: FaultSettings = field(default_factory=FaultSettings)
    seed: int | None = None

    webhook_url: str | None = None
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    webhook_properties: tuple[str, ...] = ("lifecyclestage",)
    """Properties with a ``contact.propertyChange`` subscription."""
    webhook_batch_size: int = 100
    webhook_flush_seconds: float = 0.05
    webhook_max_attempts: int = 5
    webhook_retry_base_seconds: float = 0.2
    webhook_timeout_seconds: float = 5.0
    webhook_duplicate_rate: float = 0.0
    """Send an event a second time in a later batch, as HubSpot sometimes does."""

    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time

    def validate(self) -> None:
        """Raise ``ValueError`` on inconsistent settings."""
        if self.rate_limit < 1 or self.rate_window_seconds <= 0:
            raise ValueError("rate_limit must be >= 1 and rate_window_seconds > 0")
        if self.daily_limit < 0 or self.day_seconds <= 0:
            raise ValueError("daily_limit must be >= 0 and day_seconds > 0")
        if self.max_batch_inputs < 1 or self.webhook_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        if self.webhook_max_attempts < 1:
            raise ValueError("webhook_max_attempts must be >= 1")
        if not 0.0 <= self.webhook_duplicate_rate <= 1.0:
            raise ValueError("webhook_duplicate_rate must be within [0, 1]")
        if any(i < 1 for i in self.subscription_types):
            raise ValueError("subscription type ids must be positive")
        if "email" in self.unique_properties:
            raise ValueError("email is always unique; list only custom properties")
        self.faults.validate()

    @property
    def known_properties(self) -> frozenset[str]:
        """Every property a client may write."""
        return STANDARD_PROPERTIES | set(self.unique_properties) | set(self.extra_properties)

"""Declarative resilience policies (pydantic v2), one :class:`UpstreamPolicy` per upstream.

Settings embed these, so an operator can tune a single knob from the environment,
e.g. ``CAUCE_UPSTREAMS__HUBSPOT__BREAKER__FAILURE_RATE_THRESHOLD=25``. Unknown keys are
refused (``extra="forbid"``): a typo must fail at start-up, not silently keep a default.
Durations are seconds (floats). Defaults are conservative for a SaaS HTTP API: bounded
time, bounded concurrency, three attempts, retries capped at 20 % of traffic.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cauce.core.resilience.retry import JitterKind

__all__ = [
    "BreakerPolicy",
    "BulkheadPolicy",
    "FaultPolicy",
    "RateLimitPolicy",
    "RetryBudgetPolicy",
    "RetryPolicy",
    "TimeoutPolicy",
    "UpstreamPolicy",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class BreakerPolicy(BaseModel):
    """Circuit breaker parameters, named after Resilience4j's."""

    model_config = _STRICT

    enabled: bool = True
    sliding_window_type: Literal["count", "time"] = "count"
    sliding_window_size: int = Field(
        default=100, ge=1, le=100_000, description="Calls (count window) or seconds (time)."
    )
    minimum_number_of_calls: int = Field(
        default=20,
        ge=1,
        description="Outcomes needed before rates are evaluated (capped at the size of a "
        "count window, as Resilience4j does).",
    )
    failure_rate_threshold: float = Field(default=50.0, gt=0, le=100, description="Percent.")
    slow_call_duration_threshold: float = Field(default=10.0, gt=0, description="Seconds.")
    slow_call_rate_threshold: float = Field(default=100.0, gt=0, le=100, description="Percent.")
    wait_duration_in_open_state: float = Field(default=30.0, gt=0, description="Seconds.")
    permitted_number_of_calls_in_half_open_state: int = Field(default=3, ge=1, le=1000)
    max_wait_duration_in_half_open_state: float = Field(
        default=60.0,
        ge=0,
        description="Seconds before a half-open breaker whose probes have not all reported "
        "re-opens; 0 waits forever.",
    )


class RetryBudgetPolicy(BaseModel):
    """Cap on retries as a share of recent calls (Finagle/Envoy retry budget)."""

    model_config = _STRICT

    enabled: bool = True
    ratio: float = Field(default=0.2, ge=0, le=10, description="Retries per call in the window.")
    min_retries_per_second: float = Field(default=1.0, ge=0, description="Floor.")
    window_seconds: int = Field(default=10, ge=1, le=3600)


class RetryPolicy(BaseModel):
    """In-call retries: attempts, backoff and budget."""

    model_config = _STRICT

    max_attempts: int = Field(default=3, ge=1, le=20, description="Including the first.")
    backoff_base: float = Field(default=0.2, gt=0, description="Seconds.")
    backoff_cap: float = Field(default=10.0, gt=0, description="Seconds.")
    jitter: JitterKind = "full"
    budget: RetryBudgetPolicy = Field(default_factory=RetryBudgetPolicy)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> Self:
        if self.backoff_cap < self.backoff_base:
            raise ValueError("backoff_cap must be >= backoff_base")
        return self


class BulkheadPolicy(BaseModel):
    """Concurrency cap with a bounded queue."""

    model_config = _STRICT

    enabled: bool = True
    max_concurrent: int = Field(default=32, ge=1, le=100_000)
    max_waiting: int = Field(default=128, ge=0, le=1_000_000)
    max_wait: float = Field(default=5.0, ge=0, description="Seconds in the queue.")


class RateLimitPolicy(BaseModel):
    """Local rate limit (GCRA). Off by default: the right rate depends on the vendor."""

    model_config = _STRICT

    enabled: bool = False
    rate: float = Field(default=10.0, gt=0, description="Requests per second.")
    burst: int = Field(default=10, ge=1)
    max_wait: float = Field(default=5.0, ge=0, description="Seconds a call may wait.")


class TimeoutPolicy(BaseModel):
    """Total deadline for the call and timeout for each attempt (None: unbounded)."""

    model_config = _STRICT

    total: float | None = Field(default=30.0, gt=0, description="Seconds, all attempts.")
    attempt: float | None = Field(default=10.0, gt=0, description="Seconds, one attempt.")


class FaultPolicy(BaseModel):
    """Rates (0-1) of each fault; all zero (the default) injects nothing.

    The outcome faults (reset, timeout, throttle, error) exclude each other, so their
    rates must sum to at most 1; latency is drawn independently and comes first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_statuses: tuple[int, ...] = Field(default=(500, 502, 503, 504), min_length=1)
    throttle_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_seconds: float = Field(default=1.0, ge=0, description="Sent with each 429.")
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Hang this long then fail; None: until cancelled."
    )
    reset_rate: float = Field(default=0.0, ge=0, le=1)
    reset_when: Literal["before_send", "after_send"] = "before_send"
    latency_rate: float = Field(default=0.0, ge=0, le=1)
    latency_distribution: Literal["fixed", "uniform", "exponential"] = "fixed"
    latency_seconds: float = Field(
        default=0.1, ge=0, description="Fixed value, uniform lower bound, or exponential mean."
    )
    latency_max_seconds: float = Field(
        default=1.0, ge=0, description="Uniform upper bound, or exponential cap."
    )

    @field_validator("error_statuses")
    @classmethod
    def _error_statuses(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for status in value:
            if not (400 <= status <= 599) or status == 429:
                raise ValueError("error_statuses must be 4xx/5xx other than 429 (use throttle)")
        return value

    @model_validator(mode="after")
    def _rates(self) -> Self:
        if self.reset_rate + self.timeout_rate + self.throttle_rate + self.error_rate > 1.0:
            raise ValueError("reset, timeout, throttle and error rates must sum to <= 1")
        if self.latency_max_seconds < self.latency_seconds:
            raise ValueError("latency_max_seconds must be >= latency_seconds")
        return self

    @property
    def active(self) -> bool:
        """True when any fault can be injected."""
        rates = (
            self.latency_rate,
            self.reset_rate,
            self.timeout_rate,
            self.throttle_rate,
            self.error_rate,
        )
        return any(rate > 0.0 for rate in rates)


class UpstreamPolicy(BaseModel):
    """Everything the pipeline of one upstream needs."""

    model_config = _STRICT

    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    bulkhead: BulkheadPolicy = Field(default_factory=BulkheadPolicy)
    rate_limit: RateLimitPolicy = Field(default_factory=RateLimitPolicy)
    timeouts: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    chaos: FaultPolicy = Field(
        default_factory=FaultPolicy,
        description="Opt-in fault injection under the guards (e.g. CHAOS__ERROR_RATE=0.3)",
    )

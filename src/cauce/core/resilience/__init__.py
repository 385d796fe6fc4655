"""Guard policies every outbound call goes through: deadline, retry, breaker, bulkhead, rate limit.

Build one :class:`ResiliencePipeline` per upstream from an :class:`UpstreamPolicy`
(``build_pipeline`` or a :class:`ResilienceRegistry`), then run each call with
``await pipeline.execute(fn, idempotent=..., idempotency_key=...)``. The order of the
guards and the reasons for it are documented in :mod:`cauce.core.resilience.pipeline`.

Time and randomness are injected (:class:`Clock`, :class:`RandomSource`) so policies are
testable with :class:`FakeClock`; decisions are reported to an :class:`EventSink`
(Prometheus, OpenTelemetry and structlog sinks in :mod:`cauce.core.resilience.sinks`).
Rate limits are per process by default and shared through Redis when the registry gets
a client or ``CAUCE_REDIS_URL``; the Redis limiter lives in
:mod:`cauce.core.resilience.ratelimit_redis`, imported from there (not re-exported here,
so that importing this package does not import redis-py).
"""

from cauce.core.resilience.breaker import CircuitBreaker, CircuitState, default_is_failure
from cauce.core.resilience.budget import RetryBudget
from cauce.core.resilience.bulkhead import Bulkhead
from cauce.core.resilience.clock import Clock, FakeClock, RandomSource, RealClock, TimeoutScope
from cauce.core.resilience.errors import (
    AttemptTimeout,
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceeded,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    RetryableError,
    UpstreamThrottledError,
)
from cauce.core.resilience.events import (
    AttemptOutcome,
    BulkheadRejection,
    EventSink,
    FanoutEvents,
    GiveUpReason,
    NullEvents,
    RecordingEvents,
)
from cauce.core.resilience.factory import (
    RateLimiterFactory,
    ResilienceRegistry,
    build_breaker,
    build_pipeline,
)
from cauce.core.resilience.pipeline import ResiliencePipeline
from cauce.core.resilience.policy import (
    BreakerPolicy,
    BulkheadPolicy,
    RateLimitPolicy,
    RetryBudgetPolicy,
    RetryPolicy,
    TimeoutPolicy,
    UpstreamPolicy,
)
from cauce.core.resilience.ratelimit import LocalRateLimiter, RateLimiter
from cauce.core.resilience.retry import (
    JitterKind,
    RetryStrategy,
    decorrelated_jitter,
    default_is_retryable,
    full_jitter,
)
from cauce.core.resilience.sinks import OpenTelemetryEvents, PrometheusEvents, StructlogEvents
from cauce.core.resilience.windows import CountWindow, SlidingWindow, TimeWindow

__all__ = [
    "AttemptOutcome",
    "AttemptTimeout",
    "BreakerPolicy",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadPolicy",
    "BulkheadRejection",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "CountWindow",
    "DeadlineExceeded",
    "EventSink",
    "FakeClock",
    "FanoutEvents",
    "GiveUpReason",
    "JitterKind",
    "LocalRateLimiter",
    "NullEvents",
    "OpenTelemetryEvents",
    "PrometheusEvents",
    "RandomSource",
    "RateLimitPolicy",
    "RateLimitedError",
    "RateLimiter",
    "RateLimiterFactory",
    "RealClock",
    "RecordingEvents",
    "RejectedError",
    "ResilienceError",
    "ResiliencePipeline",
    "ResilienceRegistry",
    "RetryBudget",
    "RetryBudgetPolicy",
    "RetryPolicy",
    "RetryStrategy",
    "RetryableError",
    "SlidingWindow",
    "StructlogEvents",
    "TimeWindow",
    "TimeoutPolicy",
    "TimeoutScope",
    "UpstreamPolicy",
    "UpstreamThrottledError",
    "build_breaker",
    "build_pipeline",
    "decorrelated_jitter",
    "default_is_failure",
    "default_is_retryable",
    "full_jitter",
]

"""Build pipelines from policies: the only place that wires guards together.

The composition root (``create_app`` / the worker) owns one :class:`ResilienceRegistry`
and hands each upstream's pipeline to its HTTP client; nothing here runs at import time.
Given ``redis`` (a ``redis.asyncio`` client or ``CAUCE_REDIS_URL``), the registry's rate
limiters are shared by every process through Redis; otherwise each process has its own.
Circuit breakers, bulkheads and retry budgets stay local either way (issue 4: only
quotas are shared).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from cauce.core.resilience.breaker import CircuitBreaker, default_is_failure
from cauce.core.resilience.budget import RetryBudget
from cauce.core.resilience.bulkhead import Bulkhead
from cauce.core.resilience.clock import Clock, RandomSource, RealClock
from cauce.core.resilience.events import EventSink, NullEvents
from cauce.core.resilience.pipeline import ResiliencePipeline
from cauce.core.resilience.policy import BreakerPolicy, UpstreamPolicy
from cauce.core.resilience.ratelimit import LocalRateLimiter, RateLimiter
from cauce.core.resilience.retry import RetryStrategy, default_is_retryable
from cauce.core.resilience.windows import CountWindow, SlidingWindow, TimeWindow

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from cauce.core.resilience.ratelimit_redis import RedisRateLimiters

__all__ = ["RateLimiterFactory", "ResilienceRegistry", "build_breaker", "build_pipeline"]

Predicate = Callable[[BaseException], bool]


class RateLimiterFactory(Protocol):
    """Builds the rate limiter of one upstream (e.g. ``ratelimit_redis.RedisRateLimiters``)."""

    def __call__(self, name: str, *, rate: float, burst: int, clock: Clock) -> RateLimiter:
        """Return the limiter for upstream ``name`` at ``rate`` per second with ``burst``."""
        ...


def build_breaker(
    name: str,
    policy: BreakerPolicy,
    *,
    clock: Clock,
    events: EventSink,
    is_failure: Predicate = default_is_failure,
) -> CircuitBreaker:
    """Build a circuit breaker from its policy."""
    window: SlidingWindow
    minimum = policy.minimum_number_of_calls
    if policy.sliding_window_type == "count":
        window = CountWindow(policy.sliding_window_size)
        # Resilience4j: a count window can never hold more calls than its size.
        minimum = min(minimum, policy.sliding_window_size)
    else:
        window = TimeWindow(policy.sliding_window_size)
    return CircuitBreaker(
        name,
        window=window,
        clock=clock,
        events=events,
        minimum_number_of_calls=minimum,
        failure_rate_threshold=policy.failure_rate_threshold,
        slow_call_duration_threshold=policy.slow_call_duration_threshold,
        slow_call_rate_threshold=policy.slow_call_rate_threshold,
        wait_duration_in_open_state=policy.wait_duration_in_open_state,
        permitted_number_of_calls_in_half_open_state=(
            policy.permitted_number_of_calls_in_half_open_state
        ),
        max_wait_duration_in_half_open_state=policy.max_wait_duration_in_half_open_state,
        is_failure=is_failure,
    )


def build_pipeline(
    name: str,
    policy: UpstreamPolicy,
    *,
    clock: Clock | None = None,
    rng: RandomSource | None = None,
    events: EventSink | None = None,
    is_retryable: Predicate = default_is_retryable,
    is_failure: Predicate = default_is_failure,
    rate_limiter: RateLimiter | None = None,
) -> ResiliencePipeline:
    """Build the pipeline of upstream ``name`` from its policy.

    ``rate_limiter`` replaces the local GCRA limiter (e.g. with a Redis-shared one); it
    is used only if the policy enables rate limiting.
    """
    clock = clock if clock is not None else RealClock()
    # Jitter only spreads retries; it needs no cryptographic randomness.
    rng = rng if rng is not None else random.Random()  # noqa: S311
    events = events if events is not None else NullEvents()

    retry_policy = policy.retry
    retry = RetryStrategy(
        rng=rng,
        max_attempts=retry_policy.max_attempts,
        base=retry_policy.backoff_base,
        cap=retry_policy.backoff_cap,
        jitter=retry_policy.jitter,
        is_retryable=is_retryable,
    )
    budget_policy = retry_policy.budget
    budget = (
        RetryBudget(
            ratio=budget_policy.ratio,
            min_retries_per_second=budget_policy.min_retries_per_second,
            window_seconds=budget_policy.window_seconds,
        )
        if budget_policy.enabled
        else None
    )
    breaker = (
        build_breaker(name, policy.breaker, clock=clock, events=events, is_failure=is_failure)
        if policy.breaker.enabled
        else None
    )
    limit = policy.rate_limit
    limiter: RateLimiter | None = None
    if limit.enabled:
        limiter = (
            rate_limiter
            if rate_limiter is not None
            else LocalRateLimiter(name, rate=limit.rate, burst=limit.burst, clock=clock)
        )
    bulk = policy.bulkhead
    bulkhead = (
        Bulkhead(
            name, max_concurrent=bulk.max_concurrent, max_waiting=bulk.max_waiting, clock=clock
        )
        if bulk.enabled
        else None
    )
    return ResiliencePipeline(
        name,
        clock=clock,
        retry=retry,
        events=events,
        budget=budget,
        breaker=breaker,
        rate_limiter=limiter,
        rate_limit_max_wait=limit.max_wait,
        bulkhead=bulkhead,
        bulkhead_max_wait=bulk.max_wait,
        total_timeout=policy.timeouts.total,
        attempt_timeout=policy.timeouts.attempt,
    )


class ResilienceRegistry:
    """One pipeline per upstream key, built on first use and kept for the process.

    Upstreams without an explicit policy get ``default`` (if given); asking for an
    unknown upstream otherwise raises ``KeyError`` so a misspelt name fails loudly.
    ``is_retryable`` / ``is_failure`` classify errors for every pipeline (``core.http``
    passes its status-code classification here).

    Rate limiters are local unless ``redis`` is given: a ``redis.asyncio`` client (the
    caller closes it) or a URL (the registry connects and :meth:`aclose` disconnects).
    Then every process of every machine shares each upstream's quota and 429 pauses;
    if Redis fails, each limiter falls back to a local one (see ``ratelimit_redis``).
    ``rate_limiters`` replaces that choice with any :class:`RateLimiterFactory`.
    """

    def __init__(
        self,
        policies: Mapping[str, UpstreamPolicy],
        *,
        clock: Clock | None = None,
        rng: RandomSource | None = None,
        events: EventSink | None = None,
        default: UpstreamPolicy | None = None,
        is_retryable: Predicate = default_is_retryable,
        is_failure: Predicate = default_is_failure,
        redis: Redis | str | None = None,
        rate_limiters: RateLimiterFactory | None = None,
    ) -> None:
        self._policies = dict(policies)
        self._is_retryable = is_retryable
        self._is_failure = is_failure
        self._clock = clock if clock is not None else RealClock()
        self._rng = rng if rng is not None else random.Random()  # noqa: S311
        self._events = events if events is not None else NullEvents()
        self._default = default
        self._pipelines: dict[str, ResiliencePipeline] = {}
        self._owned: RedisRateLimiters | None = None
        if rate_limiters is None and redis is not None:
            # Imported here: redis-py takes about a second to import on a busy machine,
            # and processes without CAUCE_REDIS_URL should not pay for it.
            from cauce.core.resilience.ratelimit_redis import (
                RateLimitBackendListener,
                RedisRateLimiters,
                connect_redis,
            )

            # A sink that also listens for Redis fallbacks gets them; else they are logged.
            listener = self._events if isinstance(self._events, RateLimitBackendListener) else None
            if isinstance(redis, str):
                self._owned = RedisRateLimiters(
                    connect_redis(redis), listener=listener, close_client=True
                )
            else:
                self._owned = RedisRateLimiters(redis, listener=listener)
            rate_limiters = self._owned
        self._rate_limiters = rate_limiters

    @property
    def shared_rate_limits(self) -> bool:
        """True if rate limiters come from a factory (Redis) rather than per process."""
        return self._rate_limiters is not None

    def policy(self, upstream: str) -> UpstreamPolicy:
        """The policy of ``upstream`` (the default one when it has none of its own)."""
        policy = self._policies.get(upstream, self._default)
        return policy if policy is not None else UpstreamPolicy()

    def get(self, upstream: str) -> ResiliencePipeline:
        """Return the pipeline of ``upstream``, building it on first use."""
        pipeline = self._pipelines.get(upstream)
        if pipeline is None:
            policy = self._policies.get(upstream, self._default)
            if policy is None:
                raise KeyError(f"no resilience policy for upstream {upstream!r}")
            limit = policy.rate_limit
            limiter: RateLimiter | None = None
            if limit.enabled and self._rate_limiters is not None:
                limiter = self._rate_limiters(
                    upstream, rate=limit.rate, burst=limit.burst, clock=self._clock
                )
            pipeline = build_pipeline(
                upstream,
                policy,
                clock=self._clock,
                rng=self._rng,
                events=self._events,
                is_retryable=self._is_retryable,
                is_failure=self._is_failure,
                rate_limiter=limiter,
            )
            self._pipelines[upstream] = pipeline
        return pipeline

    def __iter__(self) -> Iterator[ResiliencePipeline]:
        """Iterate over the pipelines built so far."""
        return iter(list(self._pipelines.values()))

    async def aclose(self) -> None:
        """Release what the registry built: Redis limiters' pending work and its client."""
        if self._owned is not None:
            await self._owned.aclose()

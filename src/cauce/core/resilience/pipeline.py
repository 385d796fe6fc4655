"""The resilience pipeline: one per upstream, composing every guard in a fixed order.

``await pipeline.execute(fn)`` runs ``fn`` (an ``async`` callable with no arguments)
through, from the outside in::

    total deadline                      bounds everything the caller waits for
    └─ retry (+ retry budget)           decides whether another attempt is worth it
       └─ per attempt:
          circuit breaker               fail fast while the upstream is known to be down
          └─ rate limiter               wait for a send slot (bounded by the deadline)
             └─ bulkhead                wait for a concurrency slot (bounded, FIFO)
                └─ attempt timeout      bound the one upstream call
                   └─ fn()

Why this order:

- **Deadline outermost**: the caller's promise covers attempts *and* backoff and queue
  waits. Backoff that would end past it is not slept; the last error is raised at once.
- **Retry outside the breaker**: every attempt is one sample of the upstream's health,
  and an opening circuit stops the remaining retries instead of feeding them to a dead
  upstream (Polly's and Resilience4j's recommended order). The budget caps retries
  across calls, because per-call attempt limits alone multiply load during an outage.
- **Breaker before rate limiter and bulkhead**: a call that is going to be rejected
  should not first consume a rate token or sit in the bulkhead queue.
- **Rate limiter before bulkhead**: waiting for a rate slot while *holding* a
  concurrency slot would idle that slot; so take the concurrency slot last.
- **Attempt timeout innermost**: it measures the upstream, not our own queues, so a
  timed-out attempt is honestly a slow upstream (the breaker records it as a failure)
  and queue waits do not eat into the attempt's time.

The deadline and the attempt timeout share one timer per attempt (at the earlier of
the two); waits in the limiter, bulkhead and backoff are capped by the remaining
deadline arithmetically, so the whole stack arms a single timer per attempt.

Local rejections (open circuit, full bulkhead, rate limit) and :class:`DeadlineExceeded`
are not retried; ``asyncio.CancelledError`` is never caught. Non-idempotent calls get a
single attempt unless the caller passes an idempotency key. An
:class:`UpstreamThrottledError` (HTTP 429) drains the rate limiter (when the upstream
has one) for its ``retry_after``, pausing every caller of the upstream, not just this one.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

from cauce.core.resilience.breaker import CircuitBreaker
from cauce.core.resilience.budget import RetryBudget
from cauce.core.resilience.bulkhead import Bulkhead
from cauce.core.resilience.clock import Clock
from cauce.core.resilience.errors import (
    AttemptTimeout,
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceeded,
    RateLimitedError,
    UpstreamThrottledError,
)
from cauce.core.resilience.events import AttemptOutcome, EventSink, GiveUpReason, NullEvents
from cauce.core.resilience.ratelimit import RateLimiter
from cauce.core.resilience.retry import RetryStrategy

__all__ = ["ResiliencePipeline"]

T = TypeVar("T")

_INF = math.inf
# Seconds to pause everyone after a 429 that carried no Retry-After.
_DEFAULT_THROTTLE_PAUSE = 1.0


class ResiliencePipeline:
    """Every guard for one upstream (see the module docstring for order and reasons)."""

    __slots__ = (
        "_attempt_timeout",
        "_breaker",
        "_budget",
        "_bulkhead",
        "_bulkhead_wait",
        "_clock",
        "_events",
        "_limiter",
        "_rate_wait",
        "_retry",
        "_total_timeout",
        "name",
    )

    def __init__(
        self,
        name: str,
        *,
        clock: Clock,
        retry: RetryStrategy,
        events: EventSink | None = None,
        budget: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
        rate_limiter: RateLimiter | None = None,
        rate_limit_max_wait: float | None = None,
        bulkhead: Bulkhead | None = None,
        bulkhead_max_wait: float = 0.0,
        total_timeout: float | None = None,
        attempt_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._retry = retry
        self._events: EventSink = events if events is not None else NullEvents()
        self._budget = budget
        self._breaker = breaker
        self._limiter = rate_limiter
        self._rate_wait = _INF if rate_limit_max_wait is None else rate_limit_max_wait
        self._bulkhead = bulkhead
        self._bulkhead_wait = bulkhead_max_wait
        self._total_timeout = _INF if total_timeout is None else total_timeout
        self._attempt_timeout = _INF if attempt_timeout is None else attempt_timeout

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The circuit breaker, if this pipeline has one."""
        return self._breaker

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The bulkhead, if this pipeline has one."""
        return self._bulkhead

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The rate limiter, if this pipeline has one."""
        return self._limiter

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget, if this pipeline has one."""
        return self._budget

    async def execute(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool = True,
        idempotency_key: str | None = None,
        fallback: Callable[[Exception], Awaitable[T]] | None = None,
    ) -> T:
        """Run ``fn`` under every guard and return its result.

        ``idempotent=False`` without an ``idempotency_key`` allows one attempt only: a
        retried non-idempotent write could be applied twice. ``fallback``, if given,
        turns any final ``Exception`` (not a cancellation) into a result.
        """
        retries_allowed = idempotent or idempotency_key is not None
        if fallback is None:
            return await self._run(fn, retries_allowed)
        try:
            return await self._run(fn, retries_allowed)
        except Exception as exc:  # noqa: BLE001 - a fallback replaces any failure, by contract
            self._events.on_fallback(self.name, exc)
            return await fallback(exc)

    async def _run(self, fn: Callable[[], Awaitable[T]], retries_allowed: bool) -> T:
        clock = self._clock
        retry = self._retry
        start = clock.now()
        deadline = start + self._total_timeout
        max_attempts = retry.max_attempts if retries_allowed else 1
        budget = self._budget
        if budget is not None:
            budget.record_request(start)
        attempt = 0
        delay = 0.0
        while True:
            attempt += 1
            try:
                return await self._attempt(fn, attempt, deadline)
            except Exception as exc:
                if isinstance(exc, UpstreamThrottledError) and self._limiter is not None:
                    await self._drain(exc)
                delay = self._plan_retry(exc, attempt, max_attempts, deadline, delay)
                if delay < 0:
                    raise
            # Sleep outside the except block so the error's frame is not kept alive.
            await clock.sleep(delay)

    def _plan_retry(
        self,
        exc: Exception,
        attempt: int,
        max_attempts: int,
        deadline: float,
        previous: float,
    ) -> float:
        """Return the delay before the next attempt, or -1.0 to give up (events emitted)."""
        events = self._events
        retry = self._retry
        if isinstance(exc, DeadlineExceeded):
            events.on_give_up(self.name, attempt, "deadline", exc)
            return -1.0
        if not retry.is_retryable(exc):
            events.on_give_up(self.name, attempt, "not_retryable", exc)
            return -1.0
        if attempt >= max_attempts:
            reason: GiveUpReason = (
                "max_attempts" if max_attempts == retry.max_attempts else "not_idempotent"
            )
            events.on_give_up(self.name, attempt, reason, exc)
            return -1.0
        delay = retry.delay_for(exc, attempt - 1, previous)
        now = self._clock.now()
        if now + delay >= deadline:
            # Sleeping would only end in DeadlineExceeded: surface the real error now,
            # with its retry_after, so the job layer can schedule a later retry.
            events.on_give_up(self.name, attempt, "deadline", exc)
            return -1.0
        budget = self._budget
        if budget is not None and not budget.try_acquire_retry(now):
            events.on_budget_exhausted(self.name, attempt, exc)
            return -1.0
        events.on_retry(self.name, attempt, delay, exc)
        return delay

    async def _drain(self, exc: UpstreamThrottledError) -> None:
        assert self._limiter is not None
        pause = exc.retry_after if exc.retry_after is not None else _DEFAULT_THROTTLE_PAUSE
        self._events.on_ratelimit_drain(self.name, pause)
        await self._limiter.drain(pause)

    async def _attempt(self, fn: Callable[[], Awaitable[T]], attempt: int, deadline: float) -> T:
        clock = self._clock
        events = self._events
        name = self.name
        now = clock.now()
        if now >= deadline:
            raise DeadlineExceeded(f"deadline for {name!r} passed before attempt {attempt}")
        breaker = self._breaker
        epoch = 0
        if breaker is not None:
            try:
                epoch = breaker.acquire()
            except CircuitOpenError:
                events.on_breaker_rejected(name, breaker.state)
                raise
        bulkhead = self._bulkhead
        try:
            limiter = self._limiter
            if limiter is not None:
                waited = await limiter.acquire(min(self._rate_wait, deadline - now))
                if waited > 0.0:
                    events.on_ratelimit_wait(name, waited)
            if bulkhead is not None and not bulkhead.try_acquire():
                await bulkhead.acquire(min(self._bulkhead_wait, deadline - clock.now()))
        except BaseException as exc:
            if breaker is not None:
                breaker.release(epoch)
            if isinstance(exc, RateLimitedError):
                events.on_ratelimit_rejected(name, exc.retry_after or 0.0)
            elif isinstance(exc, BulkheadFullError):
                events.on_bulkhead_rejected(name, exc.reason)
            raise

        events.on_attempt(name, attempt)
        started = clock.now()
        try:
            when = started + self._attempt_timeout
            if deadline < when:
                when = deadline
            if when == _INF:
                result = await fn()
            else:
                scope = clock.timeout_at(when)
                try:
                    async with scope:
                        result = await fn()
                except TimeoutError as exc:
                    if not scope.expired():
                        raise  # fn's own TimeoutError, not our timer
                    if when == deadline:
                        raise DeadlineExceeded(f"deadline for {name!r} passed") from exc
                    raise AttemptTimeout(f"attempt {attempt} to {name!r} timed out") from exc
        except BaseException as exc:
            duration = clock.now() - started
            if bulkhead is not None:
                bulkhead.release()
            if breaker is not None:
                breaker.on_error(epoch, duration, exc)
            events.on_failure(name, attempt, duration, exc, _outcome(exc))
            raise
        duration = clock.now() - started
        if bulkhead is not None:
            bulkhead.release()
        if breaker is not None:
            breaker.on_success(epoch, duration)
        events.on_success(name, attempt, duration)
        return result


def _outcome(exc: BaseException) -> AttemptOutcome:
    if isinstance(exc, AttemptTimeout):
        return "timeout"
    if isinstance(exc, DeadlineExceeded):
        return "deadline"
    if not isinstance(exc, Exception):
        return "cancelled"
    if isinstance(exc, UpstreamThrottledError):
        return "throttled"
    return "error"

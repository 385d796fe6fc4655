"""The event sink every guard reports its decisions to.

One method per kind of decision instead of one ``emit(Event(...))``: the hot path
(``on_attempt`` + ``on_success``) then allocates nothing, and a sink that does not care
about an event costs one no-op method call. Sinks subclass :class:`NullEvents` and
override what they need; :class:`FanoutEvents` feeds several.

Implementations must be cheap and must not raise: they run inside the guarded call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from cauce.core.resilience.breaker import CircuitState

__all__ = [
    "AttemptOutcome",
    "BulkheadRejection",
    "EventSink",
    "FanoutEvents",
    "GiveUpReason",
    "NullEvents",
    "RecordingEvents",
]

#: How one attempt that reached the upstream call ended, when it did not succeed.
#: ``throttled``: the upstream asked to slow down (HTTP 429, an ``UpstreamThrottledError``),
#: kept apart from ``error`` so that a quota shows as what it is on the dashboards.
AttemptOutcome = Literal["error", "throttled", "timeout", "deadline", "cancelled"]
#: Why the retry policy stopped and let the last error propagate.
GiveUpReason = Literal["not_retryable", "not_idempotent", "max_attempts", "deadline"]
#: Why the bulkhead refused a call.
BulkheadRejection = Literal["full", "timeout"]


class EventSink(Protocol):
    """Receives every decision of a pipeline. ``upstream`` is the pipeline's key."""

    def on_attempt(self, upstream: str, attempt: int) -> None:
        """An attempt (1-based) passed every guard and is calling the upstream."""

    def on_success(self, upstream: str, attempt: int, duration: float) -> None:
        """The attempt returned; ``duration`` covers the upstream call only."""

    def on_failure(
        self,
        upstream: str,
        attempt: int,
        duration: float,
        error: BaseException,
        outcome: AttemptOutcome,
    ) -> None:
        """The attempt raised (``outcome`` says how); the error is never a payload to log."""

    def on_retry(self, upstream: str, attempt: int, delay: float, error: BaseException) -> None:
        """Attempt ``attempt`` failed and another will start after ``delay`` seconds."""

    def on_give_up(
        self, upstream: str, attempts: int, reason: GiveUpReason, error: BaseException
    ) -> None:
        """The retry policy stopped after ``attempts`` attempts; ``error`` propagates."""

    def on_budget_exhausted(self, upstream: str, attempts: int, error: BaseException) -> None:
        """A retry was due but the retry budget had none left; ``error`` propagates."""

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """The circuit breaker changed state."""

    def on_breaker_rejected(self, upstream: str, state: CircuitState) -> None:
        """The circuit breaker refused an attempt."""

    def on_bulkhead_rejected(self, upstream: str, reason: BulkheadRejection) -> None:
        """The bulkhead refused an attempt."""

    def on_ratelimit_wait(self, upstream: str, seconds: float) -> None:
        """An attempt waited ``seconds`` (> 0) for the rate limiter."""

    def on_ratelimit_rejected(self, upstream: str, retry_after: float) -> None:
        """The rate limiter refused an attempt that would have waited ``retry_after``."""

    def on_ratelimit_drain(self, upstream: str, seconds: float) -> None:
        """The upstream throttled us: every caller pauses for ``seconds``."""

    def on_fallback(self, upstream: str, error: BaseException) -> None:
        """The call failed with ``error`` and its fallback is producing the result."""


class NullEvents:
    """A sink that ignores everything; the base class of the concrete sinks."""

    __slots__ = ()

    def on_attempt(self, upstream: str, attempt: int) -> None:
        """Ignore."""

    def on_success(self, upstream: str, attempt: int, duration: float) -> None:
        """Ignore."""

    def on_failure(
        self,
        upstream: str,
        attempt: int,
        duration: float,
        error: BaseException,
        outcome: AttemptOutcome,
    ) -> None:
        """Ignore."""

    def on_retry(self, upstream: str, attempt: int, delay: float, error: BaseException) -> None:
        """Ignore."""

    def on_give_up(
        self, upstream: str, attempts: int, reason: GiveUpReason, error: BaseException
    ) -> None:
        """Ignore."""

    def on_budget_exhausted(self, upstream: str, attempts: int, error: BaseException) -> None:
        """Ignore."""

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """Ignore."""

    def on_breaker_rejected(self, upstream: str, state: CircuitState) -> None:
        """Ignore."""

    def on_bulkhead_rejected(self, upstream: str, reason: BulkheadRejection) -> None:
        """Ignore."""

    def on_ratelimit_wait(self, upstream: str, seconds: float) -> None:
        """Ignore."""

    def on_ratelimit_rejected(self, upstream: str, retry_after: float) -> None:
        """Ignore."""

    def on_ratelimit_drain(self, upstream: str, seconds: float) -> None:
        """Ignore."""

    def on_fallback(self, upstream: str, error: BaseException) -> None:
        """Ignore."""


class FanoutEvents:
    """Forwards every event to each sink in order."""

    __slots__ = ("_sinks",)

    def __init__(self, sinks: Iterable[EventSink]) -> None:
        self._sinks = tuple(sinks)

    def on_attempt(self, upstream: str, attempt: int) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_attempt(upstream, attempt)

    def on_success(self, upstream: str, attempt: int, duration: float) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_success(upstream, attempt, duration)

    def on_failure(
        self,
        upstream: str,
        attempt: int,
        duration: float,
        error: BaseException,
        outcome: AttemptOutcome,
    ) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_failure(upstream, attempt, duration, error, outcome)

    def on_retry(self, upstream: str, attempt: int, delay: float, error: BaseException) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_retry(upstream, attempt, delay, error)

    def on_give_up(
        self, upstream: str, attempts: int, reason: GiveUpReason, error: BaseException
    ) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_give_up(upstream, attempts, reason, error)

    def on_budget_exhausted(self, upstream: str, attempts: int, error: BaseException) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_budget_exhausted(upstream, attempts, error)

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_breaker_transition(upstream, from_state, to_state)

    def on_breaker_rejected(self, upstream: str, state: CircuitState) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_breaker_rejected(upstream, state)

    def on_bulkhead_rejected(self, upstream: str, reason: BulkheadRejection) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_bulkhead_rejected(upstream, reason)

    def on_ratelimit_wait(self, upstream: str, seconds: float) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_ratelimit_wait(upstream, seconds)

    def on_ratelimit_rejected(self, upstream: str, retry_after: float) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_ratelimit_rejected(upstream, retry_after)

    def on_ratelimit_drain(self, upstream: str, seconds: float) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_ratelimit_drain(upstream, seconds)

    def on_fallback(self, upstream: str, error: BaseException) -> None:
        """Forward."""
        for sink in self._sinks:
            sink.on_fallback(upstream, error)


class RecordingEvents(NullEvents):
    """Keeps every event as ``(name, upstream, *details)`` in :attr:`events`; for tests."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def names(self) -> list[str]:
        """Return the event names in order."""
        return [str(event[0]) for event in self.events]

    def of(self, name: str) -> list[tuple[object, ...]]:
        """Return the events called ``name`` (e.g. ``"retry"``)."""
        return [event for event in self.events if event[0] == name]

    def on_attempt(self, upstream: str, attempt: int) -> None:
        """Record."""
        self.events.append(("attempt", upstream, attempt))

    def on_success(self, upstream: str, attempt: int, duration: float) -> None:
        """Record."""
        self.events.append(("success", upstream, attempt, duration))

    def on_failure(
        self,
        upstream: str,
        attempt: int,
        duration: float,
        error: BaseException,
        outcome: AttemptOutcome,
    ) -> None:
        """Record."""
        self.events.append(("failure", upstream, attempt, duration, error, outcome))

    def on_retry(self, upstream: str, attempt: int, delay: float, error: BaseException) -> None:
        """Record."""
        self.events.append(("retry", upstream, attempt, delay, error))

    def on_give_up(
        self, upstream: str, attempts: int, reason: GiveUpReason, error: BaseException
    ) -> None:
        """Record."""
        self.events.append(("give_up", upstream, attempts, reason, error))

    def on_budget_exhausted(self, upstream: str, attempts: int, error: BaseException) -> None:
        """Record."""
        self.events.append(("budget_exhausted", upstream, attempts, error))

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """Record."""
        self.events.append(("breaker_transition", upstream, from_state, to_state))

    def on_breaker_rejected(self, upstream: str, state: CircuitState) -> None:
        """Record."""
        self.events.append(("breaker_rejected", upstream, state))

    def on_bulkhead_rejected(self, upstream: str, reason: BulkheadRejection) -> None:
        """Record."""
        self.events.append(("bulkhead_rejected", upstream, reason))

    def on_ratelimit_wait(self, upstream: str, seconds: float) -> None:
        """Record."""
        self.events.append(("ratelimit_wait", upstream, seconds))

    def on_ratelimit_rejected(self, upstream: str, retry_after: float) -> None:
        """Record."""
        self.events.append(("ratelimit_rejected", upstream, retry_after))

    def on_ratelimit_drain(self, upstream: str, seconds: float) -> None:
        """Record."""
        self.events.append(("ratelimit_drain", upstream, seconds))

    def on_fallback(self, upstream: str, error: BaseException) -> None:
        """Record."""
        self.events.append(("fallback", upstream, error))

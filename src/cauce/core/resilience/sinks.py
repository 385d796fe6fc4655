"""Event sinks for the three observability channels: Prometheus, OpenTelemetry, structlog.

Each is cheap on the success path: Prometheus children are bound once per upstream,
the OpenTelemetry sink ignores attempts and successes (the HTTP client's own spans
cover them), and the structlog sink does not log successes at all. None of them ever
records an error's message or a payload: only the error's type, because a vendor's
error text can echo personal data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cauce.core.resilience.breaker import CircuitState
from cauce.core.resilience.events import (
    AttemptOutcome,
    BulkheadRejection,
    GiveUpReason,
    NullEvents,
)

if TYPE_CHECKING:
    from opentelemetry.util.types import Attributes

__all__ = ["OpenTelemetryEvents", "PrometheusEvents", "StructlogEvents"]

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _error_type(error: BaseException) -> str:
    return type(error).__name__


class _UpstreamMetrics:
    """Metric children of one upstream, bound once (``labels()`` is slow)."""

    __slots__ = ("by_outcome", "duration", "rejections", "requests", "retries", "state", "wait")

    def __init__(self, sink: PrometheusEvents, upstream: str) -> None:
        self.requests = sink.requests
        self.by_outcome: dict[str, Counter] = {}
        self.duration = sink.duration.labels(upstream=upstream)
        self.state = sink.circuit_state.labels(upstream=upstream)
        self.retries = sink.retries.labels(upstream=upstream)
        self.wait = sink.ratelimit_wait.labels(upstream=upstream)
        self.rejections = sink.bulkhead_rejections.labels(upstream=upstream)

    def outcome(self, upstream: str, outcome: str) -> Counter:
        counter = self.by_outcome.get(outcome)
        if counter is None:
            counter = self.by_outcome[outcome] = self.requests.labels(
                upstream=upstream, outcome=outcome
            )
        return counter


class PrometheusEvents(NullEvents):
    """Exports pipeline decisions as Prometheus metrics on the registry it is given.

    ``cauce_upstream_requests_total{upstream,outcome}`` counts attempts by outcome:
    ``success``, ``error``, ``throttled`` (a 429), ``timeout``, ``deadline``,
    ``cancelled`` for attempts that called the upstream, and ``circuit_open``,
    ``bulkhead_full``, ``rate_limited`` for attempts a guard refused. The duration
    histogram covers attempts that called the upstream; the rate-limit histogram only
    attempts that had to wait.
    """

    __slots__ = (
        "_by_upstream",
        "bulkhead_rejections",
        "circuit_state",
        "duration",
        "ratelimit_wait",
        "requests",
        "retries",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "cauce_upstream_requests_total",
            "Attempts to call an upstream, by outcome.",
            ("upstream", "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "cauce_upstream_request_duration_seconds",
            "Duration of attempts that called the upstream.",
            ("upstream",),
            registry=registry,
            buckets=_DURATION_BUCKETS,
        )
        self.circuit_state = Gauge(
            "cauce_circuit_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ("upstream",),
            registry=registry,
        )
        self.retries = Counter(
            "cauce_retries_total", "Retries scheduled.", ("upstream",), registry=registry
        )
        self.ratelimit_wait = Histogram(
            "cauce_ratelimit_wait_seconds",
            "Time attempts waited for the local rate limiter (only those that waited).",
            ("upstream",),
            registry=registry,
            buckets=_WAIT_BUCKETS,
        )
        self.bulkhead_rejections = Counter(
            "cauce_bulkhead_rejections_total",
            "Attempts the bulkhead refused.",
            ("upstream",),
            registry=registry,
        )
        self._by_upstream: dict[str, _UpstreamMetrics] = {}

    def _metrics(self, upstream: str) -> _UpstreamMetrics:
        metrics = self._by_upstream.get(upstream)
        if metrics is None:
            metrics = self._by_upstream[upstream] = _UpstreamMetrics(self, upstream)
        return metrics

    def on_attempt(self, upstream: str, attempt: int) -> None:
        """Bind the upstream's children early so its gauge reads 0 (closed) from the start."""
        if upstream not in self._by_upstream:
            self._metrics(upstream)

    def on_success(self, upstream: str, attempt: int, duration: float) -> None:
        """Count a success and observe its duration."""
        metrics = self._metrics(upstream)
        metrics.outcome(upstream, "success").inc()
        metrics.duration.observe(duration)

    def on_failure(
        self,
        upstream: str,
        attempt: int,
        duration: float,
        error: BaseException,
        outcome: AttemptOutcome,
    ) -> None:
        """Count a failed attempt by outcome and observe its duration."""
        metrics = self._metrics(upstream)
        metrics.outcome(upstream, outcome).inc()
        metrics.duration.observe(duration)

    def on_retry(self, upstream: str, attempt: int, delay: float, error: BaseException) -> None:
        """Count a scheduled retry."""
        self._metrics(upstream).retries.inc()

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """Set the circuit state gauge."""
        self._metrics(upstream).state.set(int(to_state))

    def on_breaker_rejected(self, upstream: str, state: CircuitState) -> None:
        """Count an attempt the breaker refused."""
        self._metrics(upstream).outcome(upstream, "circuit_open").inc()

    def on_bulkhead_rejected(self, upstream: str, reason: BulkheadRejection) -> None:
        """Count an attempt the bulkhead refused."""
        metrics = self._metrics(upstream)
        metrics.rejections.inc()
        metrics.outcome(upstream, "bulkhead_full").inc()

    def on_ratelimit_wait(self, upstream: str, seconds: float) -> None:
        """Observe a rate-limit wait."""
        self._metrics(upstream).wait.observe(seconds)

    def on_ratelimit_rejected(self, upstream: str, retry_after: float) -> None:
        """Count an attempt the rate limiter refused."""
        self._metrics(upstream).outcome(upstream, "rate_limited").inc()


class OpenTelemetryEvents(NullEvents):
    """Adds the pipeline's decisions as events on the current span, if it is recording."""

    __slots__ = ()

    @staticmethod
    def _add(name: str, attributes: Attributes) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes)

    def on_failure(
        self,
        upstream: str,
        attempt: int,
        duration: float,
        error: BaseException,
        outcome: AttemptOutcome,
    ) -> None:
        """Add ``upstream.attempt.failed``."""
        self._add(
            "upstream.attempt.failed",
            {
                "upstream": upstream,
                "attempt": attempt,
                "duration_s": duration,
                "outcome": outcome,
                "error.type": _error_type(error),
            },
        )

    def on_retry(self, upstream: str, attempt: int, delay: float, error: BaseException) -> None:
        """Add ``upstream.retry``."""
        self._add(
            "upstream.retry",
            {"upstream": upstream, "attempt": attempt, "delay_s": delay},
        )

    def on_give_up(
        self, upstream: str, attempts: int, reason: GiveUpReason, error: BaseException
    ) -> None:
        """Add ``upstream.give_up``."""
        self._add(
            "upstream.give_up",
            {
                "upstream": upstream,
                "attempts": attempts,
                "reason": reason,
                "error.type": _error_type(error),
            },
        )

    def on_budget_exhausted(self, upstream: str, attempts: int, error: BaseException) -> None:
        """Add ``upstream.retry_budget.exhausted``."""
        self._add("upstream.retry_budget.exhausted", {"upstream": upstream, "attempts": attempts})

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """Add ``upstream.circuit.transition``."""
        self._add(
            "upstream.circuit.transition",
            {"upstream": upstream, "from": from_state.name, "to": to_state.name},
        )

    def on_breaker_rejected(self, upstream: str, state: CircuitState) -> None:
        """Add ``upstream.circuit.rejected``."""
        self._add("upstream.circuit.rejected", {"upstream": upstream, "state": state.name})

    def on_bulkhead_rejected(self, upstream: str, reason: BulkheadRejection) -> None:
        """Add ``upstream.bulkhead.rejected``."""
        self._add("upstream.bulkhead.rejected", {"upstream": upstream, "reason": reason})

    def on_ratelimit_wait(self, upstream: str, seconds: float) -> None:
        """Add ``upstream.ratelimit.wait``."""
        self._add("upstream.ratelimit.wait", {"upstream": upstream, "wait_s": seconds})

    def on_ratelimit_rejected(self, upstream: str, retry_after: float) -> None:
        """Add ``upstream.ratelimit.rejected``."""
        self._add(
            "upstream.ratelimit.rejected", {"upstream": upstream, "retry_after_s": retry_after}
        )

    def on_ratelimit_drain(self, upstream: str, seconds: float) -> None:
        """Add ``upstream.ratelimit.drain``."""
        self._add("upstream.ratelimit.drain", {"upstream": upstream, "pause_s": seconds})

    def on_fallback(self, upstream: str, error: BaseException) -> None:
        """Add ``upstream.fallback``."""
        self._add("upstream.fallback", {"upstream": upstream, "error.type": _error_type(error)})


class StructlogEvents(NullEvents):
    """Logs the pipeline's decisions to ``cauce.resilience`` with dotted event names.

    Successes are never logged (metrics count them); per-attempt failures, rejections
    and rate-limit waits go to debug because they can come by the thousand; retries
    and drains to info; give-ups, exhausted budgets and circuits opening to warning.
    """

    __slots__ = ("_log",)

    def __init__(self) -> None:
        self._log = structlog.get_logger("cauce.resilience")

    def on_failure(
        self,
        upstream: str,
        attempt: int,
        duration: float,
        error: BaseException,
        outcome: AttemptOutcome,
    ) -> None:
        """Log ``upstream.attempt.failed`` (debug)."""
        self._log.debug(
            "upstream.attempt.failed",
            upstream=upstream,
            attempt=attempt,
            duration_s=round(duration, 6),
            outcome=outcome,
            error_type=_error_type(error),
        )

    def on_retry(self, upstream: str, attempt: int, delay: float, error: BaseException) -> None:
        """Log ``upstream.retry`` (info)."""
        self._log.info(
            "upstream.retry",
            upstream=upstream,
            attempt=attempt,
            delay_s=round(delay, 6),
            error_type=_error_type(error),
        )

    def on_give_up(
        self, upstream: str, attempts: int, reason: GiveUpReason, error: BaseException
    ) -> None:
        """Log ``upstream.give_up`` (warning)."""
        self._log.warning(
            "upstream.give_up",
            upstream=upstream,
            attempts=attempts,
            reason=reason,
            error_type=_error_type(error),
        )

    def on_budget_exhausted(self, upstream: str, attempts: int, error: BaseException) -> None:
        """Log ``upstream.retry_budget.exhausted`` (warning)."""
        self._log.warning(
            "upstream.retry_budget.exhausted",
            upstream=upstream,
            attempts=attempts,
            error_type=_error_type(error),
        )

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """Log ``upstream.circuit.transition`` (warning when it opens, else info)."""
        log = self._log.warning if to_state is CircuitState.OPEN else self._log.info
        log(
            "upstream.circuit.transition",
            upstream=upstream,
            from_state=from_state.name.lower(),
            to_state=to_state.name.lower(),
        )

    def on_breaker_rejected(self, upstream: str, state: CircuitState) -> None:
        """Log ``upstream.circuit.rejected`` (debug)."""
        self._log.debug("upstream.circuit.rejected", upstream=upstream, state=state.name.lower())

    def on_bulkhead_rejected(self, upstream: str, reason: BulkheadRejection) -> None:
        """Log ``upstream.bulkhead.rejected`` (debug)."""
        self._log.debug("upstream.bulkhead.rejected", upstream=upstream, reason=reason)

    def on_ratelimit_wait(self, upstream: str, seconds: float) -> None:
        """Log ``upstream.ratelimit.wait`` (debug)."""
        self._log.debug("upstream.ratelimit.wait", upstream=upstream, wait_s=round(seconds, 6))

    def on_ratelimit_rejected(self, upstream: str, retry_after: float) -> None:
        """Log ``upstream.ratelimit.rejected`` (debug)."""
        self._log.debug(
            "upstream.ratelimit.rejected", upstream=upstream, retry_after_s=round(retry_after, 6)
        )

    def on_ratelimit_drain(self, upstream: str, seconds: float) -> None:
        """Log ``upstream.ratelimit.drain`` (info)."""
        self._log.info("upstream.ratelimit.drain", upstream=upstream, pause_s=round(seconds, 6))

    def on_fallback(self, upstream: str, error: BaseException) -> None:
        """Log ``upstream.fallback`` (info)."""
        self._log.info("upstream.fallback", upstream=upstream, error_type=_error_type(error))

"""``CollectorEvents``: the same metrics as ``PrometheusEvents``, counted without locks.

``prometheus_client``'s ``Counter.inc`` and ``Histogram.observe`` take a lock and run
checks on every call; under load ``PrometheusEvents`` measured about 14 us of CPU per
guarded call here, most of what the guards cost. This sink keeps plain numbers per
upstream (one event loop increments them) and builds the metric families only when
Prometheus scrapes. Same names, labels, buckets and semantics as ``PrometheusEvents``,
so it could replace it in ``cauce.core.resilience.sinks`` unchanged for its users.

The composition roots use it (`cauce.core.http.setup`); ``PrometheusEvents`` stays for
code that wants the client library's own metric objects. ``benchmarks/http_client.py
--collector-sink`` measures the difference (docs/benchmarks.md).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cauce.core.resilience.breaker import CircuitState
from cauce.core.resilience.events import AttemptOutcome, BulkheadRejection, NullEvents

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le semantics).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        return out


class _Upstream:
    __slots__ = ("duration", "outcomes", "rejections", "retries", "state", "wait")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.duration = _Histogram(DURATION_BUCKETS)
        self.wait = _Histogram(WAIT_BUCKETS)
        self.retries = 0
        self.rejections = 0
        self.state = 0


class CollectorEvents(NullEvents, Collector):
    """``PrometheusEvents`` semantics, exported by a collector at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._by_upstream: dict[str, _Upstream] = {}
        registry.register(self)

    def _get(self, upstream: str) -> _Upstream:
        metrics = self._by_upstream.get(upstream)
        if metrics is None:
            metrics = self._by_upstream[upstream] = _Upstream()
        return metrics

    def on_attempt(self, upstream: str, attempt: int) -> None:
        """Make the upstream's series exist from its first attempt."""
        if upstream not in self._by_upstream:
            self._by_upstream[upstream] = _Upstream()

    def on_success(self, upstream: str, attempt: int, duration: float) -> None:
        """Count a success and observe its duration."""
        metrics = self._by_upstream[upstream]
        outcomes = metrics.outcomes
        outcomes["success"] = outcomes.get("success", 0) + 1
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
        metrics = self._get(upstream)
        metrics.outcomes[outcome] = metrics.outcomes.get(outcome, 0) + 1
        metrics.duration.observe(duration)

    def on_retry(self, upstream: str, attempt: int, delay: float, error: BaseException) -> None:
        """Count a scheduled retry."""
        self._get(upstream).retries += 1

    def on_breaker_transition(
        self, upstream: str, from_state: CircuitState, to_state: CircuitState
    ) -> None:
        """Set the circuit state gauge."""
        self._get(upstream).state = int(to_state)

    def on_breaker_rejected(self, upstream: str, state: CircuitState) -> None:
        """Count an attempt the breaker refused."""
        outcomes = self._get(upstream).outcomes
        outcomes["circuit_open"] = outcomes.get("circuit_open", 0) + 1

    def on_bulkhead_rejected(self, upstream: str, reason: BulkheadRejection) -> None:
        """Count an attempt the bulkhead refused."""
        metrics = self._get(upstream)
        metrics.rejections += 1
        metrics.outcomes["bulkhead_full"] = metrics.outcomes.get("bulkhead_full", 0) + 1

    def on_ratelimit_wait(self, upstream: str, seconds: float) -> None:
        """Observe a rate-limit wait."""
        self._get(upstream).wait.observe(seconds)

    def on_ratelimit_rejected(self, upstream: str, retry_after: float) -> None:
        """Count an attempt the rate limiter refused."""
        outcomes = self._get(upstream).outcomes
        outcomes["rate_limited"] = outcomes.get("rate_limited", 0) + 1

    def collect(self) -> Iterator[Metric]:
        """Build the families from the numbers (scrape time only)."""
        requests = CounterMetricFamily(
            "cauce_upstream_requests",
            "Attempts to call an upstream, by outcome.",
            labels=("upstream", "outcome"),
        )
        duration = HistogramMetricFamily(
            "cauce_upstream_request_duration_seconds",
            "Duration of attempts that called the upstream.",
            labels=("upstream",),
        )
        state = GaugeMetricFamily(
            "cauce_circuit_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            labels=("upstream",),
        )
        retries = CounterMetricFamily("cauce_retries", "Retries scheduled.", labels=("upstream",))
        wait = HistogramMetricFamily(
            "cauce_ratelimit_wait_seconds",
            "Time attempts waited for the local rate limiter (only those that waited).",
            labels=("upstream",),
        )
        rejections = CounterMetricFamily(
            "cauce_bulkhead_rejections", "Attempts the bulkhead refused.", labels=("upstream",)
        )
        for upstream, metrics in list(self._by_upstream.items()):
            for outcome, count in list(metrics.outcomes.items()):
                requests.add_metric((upstream, outcome), count)
            duration.add_metric(
                (upstream,), metrics.duration.buckets(), sum_value=metrics.duration.total
            )
            wait.add_metric((upstream,), metrics.wait.buckets(), sum_value=metrics.wait.total)
            state.add_metric((upstream,), metrics.state)
            retries.add_metric((upstream,), metrics.retries)
            rejections.add_metric((upstream,), metrics.rejections)
        yield from (requests, duration, state, retries, wait, rejections)

"""The one metric the HTTP layer adds to the pipeline's (``cauce.core.resilience.sinks``).

``PrometheusEvents`` already counts attempts by outcome
(``cauce_upstream_requests_total{upstream,outcome}``) and times them
(``cauce_upstream_request_duration_seconds``). What it cannot see is the status an
upstream answered with: its ``error`` outcome lumps a 401 with a 503 and a reset
connection. ``cauce_upstream_responses_total{upstream,status_class}`` fills that gap
with five values (``1xx``..``5xx``), so cardinality stays bounded.

It is counted in plain integers and exported by a custom collector at scrape time: a
``prometheus_client.Counter`` takes a lock and two checks per increment, which on the
hot path costs more than the rest of this module. One event loop thread increments,
so the integers need no lock; a scrape from another thread may read a count one
request stale, which a monotonic counter tolerates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["HttpClientMetrics"]

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class HttpClientMetrics(Collector):
    """Registers itself on ``registry`` (once per registry) and counts responses."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: dict[str, list[int]] = {}
        registry.register(self)

    def recorder(self, upstream: str) -> Callable[[int], None]:
        """Return a cheap ``record(status)`` for ``upstream``."""
        counts = self._counts.setdefault(upstream, [0, 0, 0, 0, 0])

        def record(status: int) -> None:
            index = status // 100 - 1
            if 0 <= index < 5:
                counts[index] += 1

        return record

    def collect(self) -> Iterator[Metric]:
        """Export the counts (called by the registry at scrape time)."""
        family = CounterMetricFamily(
            "cauce_upstream_responses",
            "Responses received from upstreams, by status class.",
            labels=("upstream", "status_class"),
        )
        for upstream, counts in list(self._counts.items()):
            for status_class, value in zip(_CLASSES, counts, strict=True):
                family.add_metric((upstream, status_class), value)
        yield family

    def describe(self) -> Iterator[Metric]:
        """Describe the family without samples, so the registry can check names."""
        yield CounterMetricFamily(
            "cauce_upstream_responses",
            "Responses received from upstreams, by status class.",
            labels=("upstream", "status_class"),
        )

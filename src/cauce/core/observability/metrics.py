"""Prometheus metrics, registered on a per-app registry (never the global one)."""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import cauce

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Connections a pool holds: in use, idle, and its configured size."""

    checked_out: int
    idle: int
    size: int


class PoolCollector(Collector):
    """Reads the database pool at scrape time."""

    def __init__(self, read: Callable[[], PoolStats]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        stats = self._read()
        family = GaugeMetricFamily(
            "cauce_db_pool_connections", "Database pool connections by state", labels=["state"]
        )
        family.add_metric(["in_use"], stats.checked_out)
        family.add_metric(["idle"], stats.idle)
        yield family
        yield GaugeMetricFamily("cauce_db_pool_size", "Configured pool size", value=stats.size)


class HttpMetrics:
    """Request count and latency by route template and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "cauce_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "cauce_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "cauce_http_requests_in_flight", "Requests being served", registry=registry
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


def build_registry() -> CollectorRegistry:
    """A fresh registry with the build info gauge."""
    registry = CollectorRegistry(auto_describe=True)
    info = Gauge(
        "cauce_build_info",
        "Cauce version and Python runtime",
        ["version", "python"],
        registry=registry,
    )
    info.labels(cauce.__version__, platform.python_version()).set(1)
    return registry

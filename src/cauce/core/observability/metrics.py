"""Prometheus metrics, registered on a per-app registry (never the global one).

Several processes serving one port (`cauce serve --workers N`) each count their own
requests, and a scrape reaches one of them. So `cauce serve` then gives them a shared
directory (`cauce.SHARED_METRICS_ENV`, set before they start): prometheus_client keeps
every counter, histogram and gauge value in a file per process there, and `exposition`
sums them (gauges by their `multiprocess_mode`). Metrics read by a custom collector at
scrape time (pool connections, outbound calls) stay those of the process scraped.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
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
            "cauce_http_requests_in_flight",
            "Requests being served",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


def build_registry() -> CollectorRegistry:
    """A fresh registry with the build info gauge.

    It also turns off prometheus_client's `<name>_created` samples (a process-wide switch,
    read at each scrape): one more series per counter, histogram and summary child, which
    doubled the counters' series for a timestamp no rule or panel reads. The processes
    that share a metrics directory never had them, so every scrape now looks the same.
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=True)
    info = Gauge(
        "cauce_build_info",
        "Cauce version and Python runtime",
        ["version", "python"],
        registry=registry,
        multiprocess_mode="livemax",
    )
    info.labels(cauce.__version__, platform.python_version()).set(1)
    return registry


# prometheus_client's own variable, read when it is imported; `cauce/__init__.py` sets it
# from Cauce's (`cauce.SHARED_METRICS_ENV`) or drops it before that. Read once, here,
# just after prometheus_client: the mode of this process's values and of its scrapes.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SHARED_DIR: Final = os.environ.get(MULTIPROCESS_ENV) or None


def shared_metrics_dir() -> str | None:
    """The directory processes serving one port share their metrics in, if any."""
    return _SHARED_DIR


def process_gone(pid: int, path: str) -> None:
    """Process `pid`, which shared its metrics in `path`, has stopped or been killed: its
    live gauges (requests in flight, build info) leave the sums; its counters stay."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class _AllProcesses(Collector):
    """Every process's metrics from the shared directory, then the scraped process's
    own custom collectors (the registry's metrics the directory does not hold)."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        self._registry, self._path = registry, path

    def collect(self) -> Iterator[Metric]:
        # prometheus_client's multiprocess module has no annotations.
        reader = MultiProcessCollector(None, path=self._path)  # type: ignore[no-untyped-call]
        shared: list[Metric] = list(reader.collect())  # type: ignore[no-untyped-call]
        names = {metric.name for metric in shared}
        yield from shared
        for metric in self._registry.collect():
            if metric.name not in names:
                yield metric


def exposition(registry: CollectorRegistry) -> bytes:
    """The text a scrape answers: `registry`'s metrics, or, when processes share a
    metrics directory, all of theirs summed (see the module docstring)."""
    path = shared_metrics_dir()
    if path is None:
        return generate_latest(registry)
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_AllProcesses(registry, path))
    return generate_latest(combined)


def process_stopped() -> None:
    """A serving process is stopping: `process_gone` for itself. Nothing when processes
    share no metrics directory. (One killed is marked by `cauce serve`'s supervisor.)"""
    if _SHARED_DIR is not None:
        process_gone(os.getpid(), _SHARED_DIR)

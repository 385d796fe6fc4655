"""Processes serving one port share their metrics (`cauce serve --workers N`): a scrape
of any of them sums every process's counters, histograms and gauges, and adds its own
custom collectors once. The mode is chosen when a process imports Cauce, so each process
here is a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cauce import SHARED_METRICS_ENV
from cauce.core.observability.metrics import exposition, shared_metrics_dir

_PROCESS = textwrap.dedent(
    """
    import sys
    from cauce.core.observability.metrics import (
        HttpMetrics, PoolCollector, PoolStats, build_registry, exposition, process_stopped,
    )
    requests, in_flight, stop, scrape = (int(arg) for arg in sys.argv[1:])
    registry = build_registry()
    registry.register(PoolCollector(lambda: PoolStats(checked_out=2, idle=3, size=5)))
    metrics = HttpMetrics(registry)
    for _ in range(requests):
        metrics.observe("POST", "/v1/leads", 201, 0.003)
    for _ in range(in_flight):
        metrics.in_flight.inc()
    if stop:
        process_stopped()
    if scrape:
        sys.stdout.write(exposition(registry).decode())
    """
)


def _process(shared: Path, *args: int) -> str:
    env = {SHARED_METRICS_ENV: str(shared), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-c", _PROCESS, *(str(arg) for arg in args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def test_a_scrape_sums_the_processes_and_adds_its_own_collectors_once(tmp_path: Path) -> None:
    """Counters and histograms add up over every process; requests in flight count the
    processes still serving (one stopped: its own leave the sum); the build info is one
    series, not one a process; the scraped process's pool shows once."""
    _process(tmp_path, 7, 1, 0, 0)  # still serving, one request in flight
    _process(tmp_path, 5, 4, 1, 0)  # stopped
    text = _process(tmp_path, 0, 0, 0, 1)  # the one scraped

    assert _samples(text, "cauce_http_requests_total") == [
        ({"method": "POST", "route": "/v1/leads", "status": "201"}, 12.0)
    ]
    count = _samples(text, "cauce_http_request_duration_seconds_count")
    assert count == [({"method": "POST", "route": "/v1/leads"}, 12.0)]
    assert _samples(text, "cauce_http_requests_in_flight") == [({}, 1.0)]
    info = _samples(text, "cauce_build_info")
    assert len(info) == 1
    assert info[0][1] == 1.0
    assert "pid" not in info[0][0]
    pool = _samples(text, "cauce_db_pool_connections")
    assert sorted(value for _, value in pool) == [2.0, 3.0]
    assert text.count("# TYPE cauce_db_pool_size gauge") == 1


def test_without_a_shared_directory_a_scrape_is_the_registry() -> None:
    """One process (or a test's app): the registry's own text, as generate_latest has it."""
    assert shared_metrics_dir() is None
    registry = CollectorRegistry()
    Counter("cauce_probe", "A probe", registry=registry).inc(3)
    assert exposition(registry) == generate_latest(registry)


def test_an_inherited_prometheus_variable_is_ignored(tmp_path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR from a shell (here a directory that does not exist) puts
    no Cauce process in the shared mode: its metrics are its own, and it starts."""
    probe = (
        "from cauce.core.observability.metrics import HttpMetrics, build_registry, "
        "exposition, shared_metrics_dir\n"
        "registry = build_registry()\n"
        "HttpMetrics(registry).observe('GET', '/x', 200, 0.1)\n"
        "assert shared_metrics_dir() is None\n"
        "print(exposition(registry).decode())\n"
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert _samples(done.stdout, "cauce_http_requests_total") == [
        ({"method": "GET", "route": "/x", "status": "200"}, 1.0)
    ]
    assert not (tmp_path / "missing").exists()

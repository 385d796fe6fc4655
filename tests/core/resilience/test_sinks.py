"""Event sinks: Prometheus metrics, OpenTelemetry span events, structlog lines, fan-out."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, CollectorRegistry
from structlog.testing import capture_logs

from cauce.core.resilience import (
    BreakerPolicy,
    BulkheadPolicy,
    CircuitOpenError,
    CircuitState,
    EventSink,
    FakeClock,
    FanoutEvents,
    NullEvents,
    OpenTelemetryEvents,
    PrometheusEvents,
    RateLimitPolicy,
    RecordingEvents,
    ResiliencePipeline,
    RetryableError,
    RetryPolicy,
    StructlogEvents,
    UpstreamPolicy,
    build_pipeline,
)

from .helpers import AlwaysFails, Flaky

SECRET = "maria.lopez@example.es"


def pipeline_with(
    sink: EventSink, clock: FakeClock, rng: random.Random, **sections: object
) -> ResiliencePipeline:
    """A ``hubspot`` pipeline reporting to ``sink``, with quick fixed 1 s retries."""
    sections.setdefault(
        "retry",
        RetryPolicy(max_attempts=2, backoff_base=1.0, backoff_cap=1.0, jitter="decorrelated"),
    )
    policy = UpstreamPolicy.model_validate(sections)
    return build_pipeline("hubspot", policy, clock=clock, rng=rng, events=sink)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """Read one sample."""
    return registry.get_sample_value(name, labels)


async def test_prometheus_counts_outcomes_durations_and_retries(
    clock: FakeClock, rng: random.Random
) -> None:
    """Attempts by outcome, durations and retries are recorded on the registry given."""
    registry = CollectorRegistry()
    pipeline = pipeline_with(PrometheusEvents(registry), clock, rng)
    await pipeline.execute(Flaky(RetryableError("503")))
    labels = {"upstream": "hubspot"}
    assert sample(registry, "cauce_upstream_requests_total", outcome="success", **labels) == 1
    assert sample(registry, "cauce_upstream_requests_total", outcome="error", **labels) == 1
    assert sample(registry, "cauce_upstream_request_duration_seconds_count", **labels) == 2
    assert sample(registry, "cauce_retries_total", **labels) == 1
    assert sample(registry, "cauce_circuit_state", **labels) == 0
    assert REGISTRY.get_sample_value("cauce_retries_total", labels) is None


async def test_prometheus_tracks_circuit_state(clock: FakeClock, rng: random.Random) -> None:
    """The circuit gauge reads 1 when open, 2 when half-open, 0 when closed again."""
    registry = CollectorRegistry()
    pipeline = pipeline_with(
        PrometheusEvents(registry),
        clock,
        rng,
        retry=RetryPolicy(max_attempts=1),
        breaker=BreakerPolicy(
            sliding_window_size=1,
            minimum_number_of_calls=1,
            wait_duration_in_open_state=5.0,
            permitted_number_of_calls_in_half_open_state=1,
        ),
    )
    state = {"upstream": "hubspot"}
    with pytest.raises(ValueError):
        await pipeline.execute(AlwaysFails(lambda: ValueError("boom")))
    assert sample(registry, "cauce_circuit_state", **state) == 1
    with pytest.raises(CircuitOpenError):
        await pipeline.execute(Flaky())
    assert sample(registry, "cauce_upstream_requests_total", outcome="circuit_open", **state) == 1
    clock.advance(5.0)
    breaker = pipeline.breaker
    assert breaker is not None
    token = breaker.acquire()
    assert sample(registry, "cauce_circuit_state", **state) == 2
    breaker.on_success(token, 0.01)
    assert sample(registry, "cauce_circuit_state", **state) == 0


async def test_prometheus_counts_bulkhead_rejections_and_rate_waits(
    clock: FakeClock, rng: random.Random
) -> None:
    """Bulkhead rejections and rate-limit waits land in their own metrics."""
    registry = CollectorRegistry()
    sink = PrometheusEvents(registry)
    sink.on_bulkhead_rejected("hubspot", "full")
    pipeline = pipeline_with(
        sink, clock, rng, rate_limit=RateLimitPolicy(enabled=True, rate=2.0, burst=1)
    )
    await pipeline.execute(Flaky())
    await pipeline.execute(Flaky())
    labels = {"upstream": "hubspot"}
    assert sample(registry, "cauce_bulkhead_rejections_total", **labels) == 1
    assert sample(registry, "cauce_ratelimit_wait_seconds_count", **labels) == 1
    assert sample(registry, "cauce_ratelimit_wait_seconds_sum", **labels) == pytest.approx(0.5)


def test_two_registries_do_not_collide() -> None:
    """Each sink registers on its own registry, so several apps can live in one process."""
    PrometheusEvents(CollectorRegistry())
    PrometheusEvents(CollectorRegistry())


async def test_opentelemetry_adds_events_to_the_recording_span(
    clock: FakeClock, rng: random.Random
) -> None:
    """Retries and failures show up as events on the current span, without error text."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    pipeline = pipeline_with(OpenTelemetryEvents(), clock, rng)
    with tracer.start_as_current_span("sync-lead"):
        await pipeline.execute(Flaky(RetryableError(SECRET)))
    (span,) = exporter.get_finished_spans()
    names = [event.name for event in span.events]
    assert names == ["upstream.attempt.failed", "upstream.retry"]
    retry_attributes = dict(span.events[1].attributes or {})
    assert retry_attributes == {"upstream": "hubspot", "attempt": 1, "delay_s": 1.0}
    assert SECRET not in repr([dict(event.attributes or {}) for event in span.events])


async def test_opentelemetry_without_a_span_is_a_no_op(
    clock: FakeClock, rng: random.Random
) -> None:
    """With no recording span the sink does nothing and does not fail the call."""
    pipeline = pipeline_with(OpenTelemetryEvents(), clock, rng)
    assert await pipeline.execute(Flaky(RetryableError("503"))) == "ok"


async def test_structlog_logs_decisions_with_dotted_names_and_no_payload(
    clock: FakeClock, rng: random.Random
) -> None:
    """Retries and give-ups are logged as upstream.* events; messages and successes are not."""
    pipeline = pipeline_with(StructlogEvents(), clock, rng)
    with capture_logs() as logs:
        assert await pipeline.execute(Flaky(RetryableError(SECRET))) == "ok"
        with pytest.raises(RetryableError):
            await pipeline.execute(AlwaysFails(lambda: RetryableError(SECRET)))
    events = [(log["event"], log["log_level"]) for log in logs]
    assert ("upstream.retry", "info") in events
    assert ("upstream.give_up", "warning") in events
    assert all(name.startswith("upstream.") for name, _ in events)
    assert not any("success" in name for name, _ in events)
    give_up = next(log for log in logs if log["event"] == "upstream.give_up")
    assert give_up["reason"] == "max_attempts"
    assert give_up["error_type"] == "RetryableError"
    assert SECRET not in repr(logs)


def test_structlog_warns_when_a_circuit_opens() -> None:
    """A circuit opening is a warning; closing again is info."""
    sink = StructlogEvents()
    with capture_logs() as logs:
        sink.on_breaker_transition("hubspot", CircuitState.CLOSED, CircuitState.OPEN)
        sink.on_breaker_transition("hubspot", CircuitState.HALF_OPEN, CircuitState.CLOSED)
    assert [(log["log_level"], log["to_state"]) for log in logs] == [
        ("warning", "open"),
        ("info", "closed"),
    ]


async def test_fanout_feeds_every_sink(clock: FakeClock, rng: random.Random) -> None:
    """Every sink behind a fan-out receives the same events in the same order."""
    first, second = RecordingEvents(), RecordingEvents()
    pipeline = pipeline_with(
        FanoutEvents([first, second]),
        clock,
        rng,
        bulkhead=BulkheadPolicy(max_concurrent=1, max_waiting=0),
    )
    await pipeline.execute(Flaky(RetryableError("503")))
    assert first.names() == ["attempt", "failure", "retry", "attempt", "success"]
    assert second.events == first.events


def test_fanout_forwards_every_kind_of_event() -> None:
    """Each of the sink's methods is forwarded, not just the hot-path ones."""
    recorder = RecordingEvents()
    fanout = FanoutEvents([NullEvents(), recorder])
    error = RetryableError("503")
    fanout.on_attempt("x", 1)
    fanout.on_success("x", 1, 0.1)
    fanout.on_failure("x", 1, 0.1, error, "error")
    fanout.on_retry("x", 1, 0.5, error)
    fanout.on_give_up("x", 3, "max_attempts", error)
    fanout.on_budget_exhausted("x", 2, error)
    fanout.on_breaker_transition("x", CircuitState.CLOSED, CircuitState.OPEN)
    fanout.on_breaker_rejected("x", CircuitState.OPEN)
    fanout.on_bulkhead_rejected("x", "full")
    fanout.on_ratelimit_wait("x", 0.2)
    fanout.on_ratelimit_rejected("x", 3.0)
    fanout.on_ratelimit_drain("x", 2.0)
    fanout.on_fallback("x", error)
    assert recorder.names() == [
        "attempt",
        "success",
        "failure",
        "retry",
        "give_up",
        "budget_exhausted",
        "breaker_transition",
        "breaker_rejected",
        "bulkhead_rejected",
        "ratelimit_wait",
        "ratelimit_rejected",
        "ratelimit_drain",
        "fallback",
    ]

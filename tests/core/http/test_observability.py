"""Client spans, W3C traceparent propagation and Prometheus metrics of the HTTP layer."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from cauce.core.http import Request
from cauce.core.resilience import PrometheusEvents
from tests.core.http.conftest import ClientsFactory
from tests.core.http.upstream import Reply, ScriptedServer


def _tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_traceparent_reaches_the_server_and_names_the_client_span(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """The server's traceparent continues the caller's trace, with the client span as parent."""
    provider, exporter = _tracing()
    client = make_clients(tracer_provider=provider).get("crm")
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("job") as parent:
        await client.send(Request.get(upstream.url("/c?token=secret")))
    header = upstream.requests("/c")[0].headers["traceparent"]
    version, trace_id, span_id, flags = header.split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == parent.get_span_context().trace_id
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(spans) == 1
    span = spans[0]
    assert span.context is not None
    assert int(span_id, 16) == span.context.span_id
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["cauce.upstream"] == "crm"
    assert "secret" not in str(span.attributes["url.full"])


async def test_each_attempt_has_its_own_span_and_traceparent(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """A retried call makes two client spans; the failed one is an error, the second a resend."""
    provider, exporter = _tracing()
    upstream.script("/c", Reply(503), Reply(200))
    client = make_clients(tracer_provider=provider).get("crm")
    await client.send(Request.get(upstream.url("/c")))
    parents = [seen.headers["traceparent"].split("-")[2] for seen in upstream.requests("/c")]
    spans = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(set(parents)) == 2
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.UNSET]
    assert spans[1].attributes is not None
    assert spans[1].attributes["http.request.resend_count"] == 1


async def test_no_traceparent_without_tracing(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """With tracing off nothing is injected."""
    await make_clients().get("crm").send(Request.get(upstream.url("/c")))
    assert "traceparent" not in upstream.requests("/c")[0].headers


async def test_metrics_count_attempts_durations_and_status_classes(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """A 503 then a 200: one error and one success attempt, two durations, one 5xx and one 2xx."""
    registry = CollectorRegistry()
    upstream.script("/c", Reply(503), Reply(200))
    clients = make_clients(events=PrometheusEvents(registry), metrics_registry=registry)
    await clients.get("crm").send(Request.get(upstream.url("/c")))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"upstream": "crm", **labels})

    assert value("cauce_upstream_requests_total", outcome="error") == 1
    assert value("cauce_upstream_requests_total", outcome="success") == 1
    assert value("cauce_upstream_request_duration_seconds_count") == 2
    assert value("cauce_retries_total") == 1
    assert value("cauce_upstream_responses_total", status_class="5xx") == 1
    assert value("cauce_upstream_responses_total", status_class="2xx") == 1
    assert value("cauce_upstream_responses_total", status_class="4xx") == 0

"""OpenTelemetry tracing: on when `CAUCE_OTEL__ENDPOINT` is set (or a test passes an exporter).

The provider is built per app and handed to each instrumentation explicitly, never set as
the process-wide global at import time, so tests can build many apps side by side.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote

from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from sqlalchemy.ext.asyncio import AsyncEngine

import cauce
from cauce.core.config import Settings


def build_tracer_provider(
    settings: Settings, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """A provider exporting over OTLP/HTTP, to `exporter` if given, or None when tracing is off."""
    if exporter is None and not settings.otel.endpoint:
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otel.service_name, "service.version": cauce.__version__}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.otel.sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = str(settings.otel.endpoint).rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> Any:
    """Trace every statement `engine` runs (one span per query)."""
    tracer = provider.get_tracer("cauce.db", cauce.__version__)
    usage = NoOpMeterProvider().get_meter("cauce.db").create_up_down_counter("db.connections")
    return EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]


# What a server span keeps of a request's query string: its parameters' names. Their
# values are searches (`GET /v1/leads?q=ana@example.com`, the GDPR look-up itself), which
# must not reach a tracing backend any more than the logs (`redact.py`).
_URL_ATTRIBUTES = ("http.url", "url.full")
_QUERY_ATTRIBUTES = ("url.query",)


# A parameter name kept as it is: one Cauce's routes could take. Anything else (a bare
# `?ana@example.es`) is itself a value.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def _names_only(raw: bytes) -> str:
    """The query's parameter names with their values replaced, from the raw query string
    (the instrumentation's copy is unquoted: `%26` in a value became a separator)."""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    return "&".join(
        f"{name if _NAME.fullmatch(name) else 'REDACTED'}=REDACTED" for name, _ in pairs
    )


def redact_server_span(span: Any, scope: dict[str, Any]) -> None:
    """`server_request_hook` of the ASGI instrumentation: the request's query values out of
    the span's URL attributes (the instrumentation puts them in, unquoted)."""
    raw = scope.get("query_string") or b""
    if not raw or not span.is_recording():
        return
    redacted = _names_only(raw)
    attributes = getattr(span, "attributes", None) or {}
    unquoted = "?" + unquote(raw.decode("latin-1"))
    for name in _URL_ATTRIBUTES:
        url = attributes.get(name)
        if isinstance(url, str):
            # The instrumentation appended "?" and the unquoted query to the URL.
            base = url.removesuffix(unquoted) if url.endswith(unquoted) else url.split("?")[0]
            span.set_attribute(name, f"{base}?{redacted}" if redacted else base)
    for name in _QUERY_ATTRIBUTES:
        if isinstance(attributes.get(name), str):
            span.set_attribute(name, redacted)

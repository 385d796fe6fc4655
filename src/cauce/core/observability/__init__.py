"""Observability: structlog logging, OpenTelemetry tracing, Prometheus metrics."""

"""A span's W3C `traceparent` as text kept beside a record, and back as a link.

A record handled later by work that batches many records (a delivery job sending the
pending leads of many requests) keeps the traceparent of the span that last changed it;
the later work's span links to it (`links_to`), so each record's trace goes on.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, TraceFlags

# OpenTelemetry keeps 128 links a span by default; the rest would be dropped silently.
MAX_LINKS = 128


def traceparent_of(context: SpanContext) -> str | None:
    """`00-<trace id>-<span id>-<flags>` of a span context; None for an invalid one (no
    span, or tracing off)."""
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The current span's traceparent (`traceparent_of`), or None outside a span."""
    return traceparent_of(trace.get_current_span().get_span_context())


def span_context_of(traceparent: str | None) -> SpanContext | None:
    """The span context a stored traceparent names; None if it is absent or malformed."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return context if context.is_valid else None


def links_to(traceparents: Iterable[str | None]) -> list[Link]:
    """Links to the distinct spans among `traceparents`, the first `MAX_LINKS` of them."""
    seen: set[tuple[int, int]] = set()
    links: list[Link] = []
    for parent in traceparents:
        context = span_context_of(parent)
        if context is None or (context.trace_id, context.span_id) in seen:
            continue
        seen.add((context.trace_id, context.span_id))
        links.append(Link(context))
        if len(links) == MAX_LINKS:
            break
    return links


__all__ = ["MAX_LINKS", "current_traceparent", "links_to", "span_context_of", "traceparent_of"]

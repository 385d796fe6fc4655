"""OpenTelemetry tracing: on when `CAUCE_OTEL__ENDPOINT` is set (or a test passes an exporter).

The provider is built per app and handed to each instrumentation explicitly, never set as
the process-wide global at import time, so tests can build many apps side by side.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from pathlib import PurePath
from typing import Any
from urllib.parse import parse_qsl

from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import compile_path

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
    traced = EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database:
        shown = database_name(database)
        if shown != database:
            # Listeners run in the order they were added: this one after EngineTracer's.
            listener = _rename_database(database, shown)
            event.listen(engine.sync_engine, "before_cursor_execute", listener)
    return traced


def database_name(database: str) -> str:
    """What spans call a SQLite database: its file's name without directories or suffix
    (`/var/lib/cauce/cauce.db` is `cauce`), as PostgreSQL's spans carry its name."""
    return PurePath(database).stem or database


# Attributes that quote the SQL itself: a path there (an ATTACH) is the query's own text.
_STATEMENT_ATTRIBUTES = frozenset({"db.statement", "db.query.text"})


def _rename_database(database: str, shown: str) -> Callable[..., None]:
    """A `before_cursor_execute` listener. The SQLAlchemy instrumentation names a SQLite
    database by its URL's path (`SELECT /var/lib/cauce/cauce.db`, the same again in
    `db.name` and `db.operation`): the machine's data directory in every query span. This
    puts `shown` in its place, in the span EngineTracer has just started."""

    def rename(
        conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool
    ) -> None:
        # Where EngineTracer keeps the span it started (its `_after_cur_exec` ends it).
        span = getattr(context, "_otel_span", None)
        if span is None or not span.is_recording():
            return
        name = getattr(span, "name", None)
        if isinstance(name, str) and database in name:
            span.update_name(name.replace(database, shown))
        for key, value in (getattr(span, "attributes", None) or {}).items():
            if key not in _STATEMENT_ATTRIBUTES and isinstance(value, str) and database in value:
                span.set_attribute(key, value.replace(database, shown))

    return rename


# What a server span keeps of a request's target. The query's values are searches
# (`GET /v1/leads?q=ana@example.com`, the GDPR look-up itself), and a path no route matched
# is whatever a client or a scanner typed (`/wp-admin/ana@example.com/600111222`): neither
# may reach a tracing backend any more than the logs (`redact.py`). A matched route keeps
# its path when its parameters are ids, the template's `{name}` for any other value.
_URL_ATTRIBUTES = ("http.url", "url.full")
_PATH_ATTRIBUTES = ("http.target", "url.path")
_QUERY_ATTRIBUTES = ("url.query",)
_ROUTE_ATTRIBUTE = "http.route"
# The client's address, old conventions and stable: an IP address is personal data, and a
# trace backend is often another company's. A span keeps the client's network (IPv4 /24,
# IPv6 /48: enough to tell a region or a provider, or one misbehaving network from
# another), not the host, as the access log does by default (`http.access_log_client`).
_CLIENT_ADDRESS_ATTRIBUTES = (
    "net.peer.ip",
    "net.sock.peer.addr",
    "client.address",
    "client.socket.address",
    "network.peer.address",
)
REDACTED = "REDACTED"
# The path of a request no route matched: the `route` label the metrics give it.
UNMATCHED = "<unmatched>"

# A parameter name kept as it is: one Cauce's routes could take. Anything else (a bare
# `?ana@example.es`) is itself a value.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
# A path parameter kept as it is: a lead's UUID, or a row id (jobs, imports) of up to
# 8 digits, since the logs' redaction reads 9 digits or more as a phone number.
_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9]{1,8}"
)


def _names_only(raw: bytes) -> str:
    """The query's parameter names with their values replaced, from the raw query string
    (the instrumentation's copy is unquoted: `%26` in a value became a separator)."""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    return "&".join(
        f"{name if _NAME.fullmatch(name) else REDACTED}={REDACTED}" for name, _ in pairs
    )


@functools.lru_cache(maxsize=512)
def _compiled(route: str) -> tuple[re.Pattern[str], str]:
    """A route template's regex and format (`/v1/leads/{lead_id}`), as Starlette makes them."""
    regex, path_format, _ = compile_path(route)
    return regex, path_format


def _route_path(route: str, scope: dict[str, Any]) -> str:
    """The request's path with every parameter of its route that is not an id replaced by
    `{name}`; the template itself when the path does not match it (a mount's prefix)."""
    path: str = scope.get("path") or ""
    root: str = scope.get("root_path") or ""
    prefix = root if root and path.startswith(root) else ""
    regex, path_format = _compiled(route)
    match = regex.match(path[len(prefix) :])
    if match is None:
        return prefix + path_format
    kept = {
        name: value if _ID.fullmatch(value) else "{" + name + "}"
        for name, value in match.groupdict().items()
    }
    return prefix + path_format.format(**kept)


@functools.lru_cache(maxsize=1024)
def client_network(address: str) -> str:
    """The network an IP address belongs to (`203.0.113.0`, `2001:db8:abcd::`); REDACTED
    for anything that is not an IP address (a host name a proxy passed on)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return REDACTED
    if isinstance(ip, ipaddress.IPv6Address):
        # The IPv4 address inside an IPv4-mapped or a 6to4 one (whose /48 is all of it).
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def _origin(url: str) -> str:
    """`scheme://host[:port]` of a URL (what precedes its path); no parsing that could
    raise on a malformed Host header."""
    start = url.find("://")
    if start < 0:
        return ""
    end = url.find("/", start + 3)
    return url if end < 0 else url[:end]


def redact_server_span(span: Any, scope: dict[str, Any]) -> None:
    """`server_request_hook` of the ASGI instrumentation: the request's query values, the
    path of one no route matched (see `_URL_ATTRIBUTES`) and the client's host (its network
    stays, `_CLIENT_ADDRESS_ATTRIBUTES`) out of the server span.

    The FastAPI instrumentation has matched the route before the hook runs: `http.route`
    is set when one matched (FULL or PARTIAL), absent for every 404 from routing."""
    if not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    # First: the instrumentation swallows a hook's exception, leaving the rest as it was.
    for name in _CLIENT_ADDRESS_ATTRIBUTES:
        address = attributes.get(name)
        if isinstance(address, str):
            span.set_attribute(name, client_network(address))
    raw = scope.get("query_string") or b""
    route = attributes.get(_ROUTE_ATTRIBUTE)
    if isinstance(route, str) and route:
        path = _route_path(route, scope)
        query = _names_only(raw) if raw else ""
    else:
        # Not even the query's names: no route of Cauce's takes them.
        path = UNMATCHED
        query = REDACTED if raw else ""
    raw_path: str = scope.get("path") or ""
    for name in _PATH_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str):
            # Old conventions' `http.target` may carry the query too.
            span.set_attribute(name, f"{path}?{query}" if "?" in value and query else path)
    for name in _URL_ATTRIBUTES:
        url = attributes.get(name)
        if isinstance(url, str):
            slash = "" if path.startswith("/") else "/"
            base = f"{_origin(url)}{slash}{path}"
            span.set_attribute(name, f"{base}?{query}" if query else base)
    for name in _QUERY_ATTRIBUTES:
        if isinstance(attributes.get(name), str):
            span.set_attribute(name, query)
    span_name = getattr(span, "name", None)
    if isinstance(span_name, str) and len(raw_path) > 1 and raw_path in span_name:
        span.update_name(span_name.replace(raw_path, path))

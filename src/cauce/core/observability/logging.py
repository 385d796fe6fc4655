"""structlog, configured once; the standard library's logging flows through it."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import trace

from cauce.core.config import Settings
from cauce.core.observability.redact import redact_event


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Put the current span's `trace_id` and `span_id` on every line written inside one."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


class LogThrottle:
    """At most one line per key every `interval` seconds (by `clock`), for failures that
    repeat on every request or poll while a dependency is down. The calls in between are
    counted, and the next line says how many were left out. One per owner (an app, a
    worker), without locks: one event loop calls it, and `admit` never awaits."""

    __slots__ = ("_last", "_suppressed", "clock", "interval")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, key: str) -> int | None:
        """None to stay quiet (counted); otherwise log now, saying how many of `key`
        were left out since its last line."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def use_json(settings: Settings, stream: TextIO) -> bool:
    """JSON in production or when nobody is watching a terminal; readable text otherwise."""
    fmt = settings.log.format
    if fmt != "auto":
        return fmt == "json"
    return settings.env == "production" or not (hasattr(stream, "isatty") and stream.isatty())


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Configure structlog and route the standard library's loggers through it."""
    stream = stream or sys.stderr
    level = getattr(logging, settings.log.level.upper())
    json_output = use_json(settings, stream)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        structlog.processors.StackInfoRenderer(),
    ]
    # Tracebacks become text before redaction, in both formats, so they are masked too.
    shared.append(structlog.processors.format_exc_info)
    renderer: Any
    if json_output:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    shared.append(redact_event)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log is replaced by Cauce's (route template, request id, timing).
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("sqlalchemy.engine").setLevel(
        logging.INFO if settings.db.echo else logging.WARNING
    )
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    # Alembic narrates every connection it inspects; Cauce logs `db.migrating` instead.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # procrastinate narrates every job at INFO (two lines per job); Cauce records each
    # attempt in job_attempts and logs the failures itself.
    logging.getLogger("procrastinate").setLevel(max(level, logging.WARNING))

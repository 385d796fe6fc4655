"""Redaction of personal data and secrets from log events (DESIGN.md §4.8)."""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Nine or more digits, optionally with +, spaces, hyphens or parentheses between them:
# phone numbers in any common format. Dots are excluded so IP addresses survive.
PHONE_RE = re.compile(r"(?<![\w.:/-])\+?\(?\d(?:[\s()-]?\d){8,}(?![\w.:/])")
API_KEY_RE = re.compile(r"cauce_[a-z0-9]{12}_[A-Za-z0-9_-]{6,}")
BEARER_RE = re.compile(r"(?i)\bbearer\s+[^\s,;]+")
SECRET_FIELD_RE = re.compile(
    r"(?i)(pass(word)?|secret|token|api[_-]?key|authorization|cookie|credential|signature)"
)
# Fields written by Cauce itself that never carry personal data; skipping them keeps
# timestamps, ids and durations readable.
SAFE_FIELDS = frozenset(
    {
        "timestamp", "level", "logger", "logger_name", "trace_id", "span_id", "request_id",
        "correlation_id", "status", "duration_ms", "method", "route", "code", "version",
        "pid", "port", "host", "job_id", "task", "queue", "attempt",
    }
)  # fmt: skip


def redact_text(text: str) -> str:
    """`text` with API keys, bearer tokens, emails and phone numbers masked."""
    if "cauce_" in text:
        text = API_KEY_RE.sub("[api-key]", text)
    if "earer" in text:
        text = BEARER_RE.sub("Bearer [redacted]", text)
    if "@" in text:
        text = EMAIL_RE.sub("[email]", text)
    return PHONE_RE.sub("[phone]", text)


def _redact_value(key: str, value: Any, depth: int) -> Any:
    if SECRET_FIELD_RE.search(key):
        return "[redacted]"
    if isinstance(value, str):
        return redact_text(value)
    if depth < 2 and isinstance(value, Mapping):
        return {k: _redact_value(str(k), v, depth + 1) for k, v in value.items()}
    if depth < 2 and isinstance(value, list | tuple):
        return [_redact_value(key, v, depth + 1) for v in value]
    return value


def redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask personal data and secrets in every field."""
    for key, value in event_dict.items():
        if key in SAFE_FIELDS:
            continue
        event_dict[key] = _redact_value(key, value, 0)
    return event_dict

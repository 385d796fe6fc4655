"""How long the upstream asked us to wait: ``Retry-After`` and vendors' rate-limit headers.

Sources, first match wins:

1. ``Retry-After`` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date;
2. ``RateLimit`` (IETF draft ``ratelimit-headers``, ``...;r=0;t=30`` or ``reset=30``)
   and ``RateLimit-Reset`` (seconds);
3. ``X-RateLimit-Reset-After`` (seconds, Discord style) and ``X-RateLimit-Reset``
   (Pipedrive, GitHub...: seconds, or a Unix time when the value is that large);
4. ``X-HubSpot-RateLimit-Interval-Milliseconds`` when ``X-HubSpot-RateLimit-Remaining``
   is 0: HubSpot's window is rolling and sends no reset time, so a whole interval is the
   safe wait.

The result is clamped to ``[0, MAX_RETRY_AFTER]`` so a hostile or broken upstream cannot
pause an upstream's callers (the 429 drain) for longer than a day. Unparseable values
are ignored, never an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = ["MAX_RETRY_AFTER", "parse_retry_after", "retry_after_from_headers"]

MAX_RETRY_AFTER: Final = 86_400.0
# Above this a "reset" value is a Unix time, not a delay (about 2001-09-09 UTC).
_EPOCH_THRESHOLD: Final = 1_000_000_000.0
_DRAFT_RESET = re.compile(r"(?:^|[;,\s])(?:t|reset)\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def _clamp(seconds: float) -> float | None:
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _number(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_retry_after(value: str, now: float) -> float | None:
    """Parse a ``Retry-After`` value into seconds from ``now`` (a Unix time).

    Delay-seconds must be a non-negative integer per the RFC; a decimal is accepted
    too, because some upstreams send one.
    """
    text = value.strip()
    if not text:
        return None
    seconds = _number(text)
    if seconds is not None:
        return _clamp(seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime and "-0000" forms carry no zone: HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return _clamp(when.timestamp() - now)


def _reset(value: str, now: float) -> float | None:
    seconds = _number(value)
    if seconds is None:
        return None
    if seconds >= _EPOCH_THRESHOLD:
        seconds -= now
    return _clamp(seconds)


def retry_after_from_headers(
    headers: Mapping[str, str], *, wall_clock: Callable[[], float]
) -> float | None:
    """Return the wait the upstream asked for in ``headers`` (case-insensitive), or None.

    ``wall_clock`` returns the Unix time (``time.time``), needed for HTTP-dates and
    Unix-time resets; tests inject a fixed one.
    """
    value = headers.get("retry-after")
    if value is not None:
        seconds = parse_retry_after(value, wall_clock())
        if seconds is not None:
            return seconds
    value = headers.get("ratelimit")
    if value is not None:
        match = _DRAFT_RESET.search(value)
        if match is not None:
            return _clamp(float(match.group(1)))
    for name in ("ratelimit-reset", "x-ratelimit-reset-after"):
        value = headers.get(name)
        if value is not None and (seconds := _number(value)) is not None:
            return _clamp(seconds)
    value = headers.get("x-ratelimit-reset")
    if value is not None and (seconds := _reset(value, wall_clock())) is not None:
        return seconds
    if headers.get("x-hubspot-ratelimit-remaining", "").strip() == "0":
        interval = _number(headers.get("x-hubspot-ratelimit-interval-milliseconds", ""))
        if interval is not None:
            return _clamp(interval / 1000.0)
    return None

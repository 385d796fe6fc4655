"""What every CRM adapter shares: time, daily resets, and turning guard errors into port errors.

The port (`leads.ports`) speaks three whole-request failures: `CrmThrottled` (wait until a
time, without using a delivery attempt), `CrmUnavailable` (try later) and `CrmRejected`
(no retry helps). `core.http` and the resilience guards raise their own, finer errors;
:func:`port_error` maps them once, here, so adapters only add what is vendor-specific
(reading a 429 body, a 4xx message).

Messages never carry response bodies: they can echo personal data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import orjson

from cauce.core.http import (
    ClientClosedError,
    HttpClient,
    UpstreamClientError,
    UpstreamProtocolError,
    UpstreamTlsError,
)
from cauce.core.resilience import (
    CircuitOpenError,
    RateLimitedError,
    ResilienceError,
    ResiliencePipeline,
    RetryableError,
    UpstreamThrottledError,
)
from cauce.core.security.ssrf import UnsafeUrlError
from cauce.leads.ports import (
    CrmContact,
    CrmRejected,
    CrmThrottled,
    CrmUnavailable,
    UpsertOutcome,
)

__all__ = [
    "DailyReset",
    "PortError",
    "RatePause",
    "WallClock",
    "body_key",
    "next_midnight",
    "period_reset",
    "port_error",
    "settle_partial",
    "utc_now",
]

#: Wall-clock time, timezone-aware (tests inject a fixed one).
WallClock = Callable[[], datetime]
#: Given "now", when the vendor's daily quota is granted again.
DailyReset = Callable[[datetime], datetime]
PortError = CrmThrottled | CrmUnavailable | CrmRejected


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


def next_midnight(zone: str | tzinfo = "UTC") -> DailyReset:
    """A :data:`DailyReset` at the next local midnight of ``zone`` (an IANA name or tzinfo).

    HubSpot resets daily limits at midnight in the account's time zone and Pipedrive at
    the start of its (UTC) day. Where a DST change skips 00:00 the instant used is the one
    a wall clock would show as 00:00 before the change, which is still in the future.
    """
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone

    def reset(now: datetime) -> datetime:
        local = now.astimezone(tz)
        midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
        return midnight.astimezone(UTC)

    return reset


def period_reset(period: timedelta, origin: datetime) -> DailyReset:
    """A :data:`DailyReset` for a "day" of ``period`` counted from ``origin``.

    For the demo and reliability tests against a sandbox with a short day
    (``SandboxCrmConfig.day_seconds``): pass the sandbox's start as ``origin``.
    """
    if period <= timedelta(0):
        raise ValueError("period must be positive")

    def reset(now: datetime) -> datetime:
        elapsed = (now - origin) // period
        return origin + (elapsed + 1) * period

    return reset


def body_key(payload: object) -> str:
    """A stable idempotency key for a request body (same body, same key)."""
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"cauce-{digest}"


def _after(now: datetime, seconds: float | None) -> datetime | None:
    return None if seconds is None else now + timedelta(seconds=max(0.0, seconds))


def port_error(crm: str, exc: Exception, now: datetime) -> PortError | None:
    """The port error a guard or transport error means, or None if the adapter must decide.

    - the local rate limiter would wait too long: throttled until its slot;
    - an open circuit, a full bulkhead, a 5xx, a timeout, a connection failure, our own
      shutdown: unavailable (with the circuit's or the upstream's ``retry_after``);
    - 401/403, a refused URL, a TLS or protocol failure: rejected (a person must act).

    Vendor 429s (:class:`~cauce.core.http.UpstreamRateLimitedError`) and other 4xx answers
    return None: their bodies say more than the status.
    """
    if isinstance(exc, RateLimitedError):
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        return CrmThrottled(
            now + timedelta(seconds=wait), "local", f"{crm}: local rate limit reached"
        )
    if isinstance(exc, CircuitOpenError):
        return CrmUnavailable(f"{crm}: circuit open", _after(now, exc.retry_after))
    if isinstance(exc, UpstreamClientError):
        if exc.status in (401, 403):
            return CrmRejected(f"{crm} refused the credentials (HTTP {exc.status})")
        return None
    if isinstance(exc, UpstreamThrottledError):
        return None
    if isinstance(exc, RetryableError):
        return CrmUnavailable(f"{crm}: {exc}", _after(now, exc.retry_after))
    if isinstance(exc, ResilienceError | ClientClosedError):
        return CrmUnavailable(f"{crm}: {exc}", _after(now, exc.retry_after))
    if isinstance(exc, UnsafeUrlError | UpstreamTlsError | UpstreamProtocolError):
        return CrmRejected(f"{crm}: {exc}")
    return None


def settle_partial(
    contacts: Sequence[CrmContact], outcomes: Sequence[UpsertOutcome | None], exc: PortError
) -> list[UpsertOutcome]:
    """Keep the work done before a whole-request failure; raise if nothing was done.

    A batch that needs several requests (key groups, bisection, one call per contact)
    may fail half way. If some contacts already have outcomes, they are returned, and the
    others get a retryable outcome, so their writes are not redone blindly; the next call
    meets the throttle or outage at once and raises it. A rejection is always raised.
    """
    if isinstance(exc, CrmRejected) or all(outcome is None for outcome in outcomes):
        raise exc
    reason = f"not sent: {exc}"
    return [
        outcome if outcome is not None else UpsertOutcome(c.lead_id, error=reason, retryable=True)
        for c, outcome in zip(contacts, outcomes, strict=True)
    ]


class RatePause:
    """A vendor's "send nothing before T": kept per adapter and fed to the rate limiter.

    While paused, :meth:`check` raises `CrmThrottled` without a request being sent. The
    upstream's rate limiter (when the client exposes its pipeline and the policy enables
    one) is drained for the same time, so every caller of the upstream waits, in every
    process when the limiter is shared through Redis.
    """

    def __init__(self, crm: str, client: HttpClient, clock: WallClock) -> None:
        self._crm = crm
        self._client = client
        self._clock = clock
        self._until: datetime | None = None
        self._policy = ""

    @property
    def until(self) -> datetime | None:
        """When the current pause ends (None: not paused)."""
        if self._until is not None and self._clock() >= self._until:
            return None
        return self._until

    def check(self) -> None:
        """Raise `CrmThrottled` if paused."""
        until = self.until
        if until is not None:
            raise CrmThrottled(until, self._policy, f"{self._crm} paused until {until:%c}")

    async def pause(self, until: datetime, policy: str) -> CrmThrottled:
        """Pause until ``until`` (a longer pause in force stays); return the error to raise."""
        now = self._clock()
        current = self.until
        if current is None or until >= current:
            self._until, self._policy = until, policy
        pipeline = getattr(self._client, "pipeline", None)
        limiter = pipeline.rate_limiter if isinstance(pipeline, ResiliencePipeline) else None
        if limiter is not None:
            await limiter.drain(max(0.0, (until - now).total_seconds()))
        return CrmThrottled(until, policy, f"{self._crm} {policy or 'rate'} limit until {until:%c}")

"""Fault injection: a transport that makes a healthy upstream misbehave on purpose.

:class:`FaultInjectingTransport` wraps any :class:`~cauce.core.http.types.Transport`
and, per exchange, by configured rates (a :class:`FaultPolicy`):

- adds **latency** drawn from a fixed, uniform or exponential distribution;
- answers a **5xx** (one of ``error_statuses``) without calling the upstream;
- answers **429** with ``Retry-After``;
- **times out**: hangs until the caller's timer cancels it (or for ``timeout_seconds``,
  then raises :class:`~cauce.core.http.errors.UpstreamTimeoutError`);
- **resets the connection**: raises
  :class:`~cauce.core.http.errors.UpstreamConnectionError` before sending, or *after*
  the upstream processed the request (``reset_when="after_send"``), the case that
  makes non-idempotent retries dangerous.

It sits under the guards, so they see injected faults exactly as real ones. Time and
randomness are injected (a :class:`~cauce.core.resilience.Clock` and a
:class:`~cauce.core.resilience.RandomSource`), so tests are deterministic.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

from cauce.core.http.errors import UpstreamConnectionError, UpstreamTimeoutError
from cauce.core.http.types import Headers, Request, Response, Transport
from cauce.core.resilience.clock import Clock, RandomSource
from cauce.core.resilience.policy import FaultPolicy

__all__ = ["FaultInjectingTransport", "FaultKind", "FaultPolicy", "sample_latency"]

FaultKind = Literal["latency", "error", "throttle", "timeout", "reset"]
_INJECTED_BODY = b'{"error":"injected by cauce fault injection"}'


def sample_latency(policy: FaultPolicy, u: float) -> float:
    """Map a uniform draw ``u`` in [0, 1) to a delay from the policy's distribution."""
    low, high = policy.latency_seconds, policy.latency_max_seconds
    if policy.latency_distribution == "fixed":
        return low
    if policy.latency_distribution == "uniform":
        return low + u * (high - low)
    # Inverse transform sampling of an exponential with mean ``low``, capped.
    return min(high, -low * math.log1p(-u))


class FaultInjectingTransport:
    """Wraps ``inner`` and injects the faults of ``policy`` (see the module docstring).

    :attr:`injected` counts each kind injected and :attr:`passed` the exchanges that
    reached ``inner``; benchmarks and tests report them.
    """

    def __init__(
        self, inner: Transport, policy: FaultPolicy, *, rng: RandomSource, clock: Clock
    ) -> None:
        self.inner = inner
        self.policy = policy
        self._rng = rng
        self._clock = clock
        self.injected: Counter[FaultKind] = Counter()
        self.passed = 0
        p = policy
        # Cumulative thresholds for the one draw that picks the outcome.
        self._reset = p.reset_rate
        self._timeout = self._reset + p.timeout_rate
        self._throttle = self._timeout + p.throttle_rate
        self._error = self._throttle + p.error_rate

    async def send(self, request: Request) -> Response:
        """Maybe delay, maybe fail, else pass ``request`` to the inner transport."""
        policy = self.policy
        rng = self._rng
        if policy.latency_rate > 0.0 and rng.random() < policy.latency_rate:
            self.injected["latency"] += 1
            await self._clock.sleep(sample_latency(policy, rng.random()))
        if self._error <= 0.0:
            return await self._pass(request)
        u = rng.random()
        if u < self._reset:
            self.injected["reset"] += 1
            if policy.reset_when == "after_send":
                await self._pass(request)
            raise UpstreamConnectionError("injected connection reset")
        if u < self._timeout:
            self.injected["timeout"] += 1
            return await self._hang()
        if u < self._throttle:
            self.injected["throttle"] += 1
            retry_after = policy.retry_after_seconds
            value = str(int(retry_after)) if retry_after.is_integer() else f"{retry_after:.3f}"
            return _injected(request, 429, {"retry-after": value, "x-cauce-fault": "throttle"})
        if u < self._error:
            self.injected["error"] += 1
            statuses = policy.error_statuses
            status = statuses[min(int(rng.random() * len(statuses)), len(statuses) - 1)]
            return _injected(request, status, {"x-cauce-fault": "error"})
        return await self._pass(request)

    async def _pass(self, request: Request) -> Response:
        self.passed += 1
        return await self.inner.send(request)

    async def _hang(self) -> Response:
        seconds = self.policy.timeout_seconds
        # With no limit, sleep "forever" in steps, so the caller's timer (real or fake)
        # is what ends it, as with an upstream that accepted and never answered.
        while seconds is None:
            await self._clock.sleep(3600.0)
        await self._clock.sleep(seconds)
        raise UpstreamTimeoutError("injected timeout")

    async def close(self) -> None:
        """Close the inner transport."""
        await self.inner.close()


def _injected(request: Request, status: int, headers: dict[str, str]) -> Response:
    headers["content-type"] = "application/json"
    return Response(status, Headers(headers), _INJECTED_BODY, request.url)

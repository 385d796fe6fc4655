"""The circuit breaker in front of a real upstream: it opens, fails fast, and probes N at once."""

from __future__ import annotations

import asyncio

import pytest

from cauce.core.http import Request, UpstreamServerError
from cauce.core.resilience import (
    BreakerPolicy,
    BulkheadPolicy,
    CircuitOpenError,
    CircuitState,
    FakeClock,
    RetryPolicy,
)
from tests.core.http.conftest import ClientsFactory, fast_policy
from tests.core.http.upstream import Reply, ScriptedServer

PROBES = 3


def _policy() -> object:
    return fast_policy(
        breaker=BreakerPolicy(
            sliding_window_size=4,
            minimum_number_of_calls=4,
            failure_rate_threshold=50,
            wait_duration_in_open_state=10.0,
            permitted_number_of_calls_in_half_open_state=PROBES,
            max_wait_duration_in_half_open_state=0,
        ),
        retry=RetryPolicy(max_attempts=1),
        bulkhead=BulkheadPolicy(max_concurrent=100, max_waiting=100),
    )


async def test_breaker_opens_and_then_fails_fast_without_calling(
    upstream: ScriptedServer, make_clients: ClientsFactory
) -> None:
    """Four 503s open the circuit; the fifth call fails fast and never reaches the server."""
    upstream.script("/c", Reply(503))
    client = make_clients(default_policy=_policy()).get("crm")
    for _ in range(4):
        with pytest.raises(UpstreamServerError):
            await client.send(Request.get(upstream.url("/c")))
    with pytest.raises(CircuitOpenError) as info:
        await client.send(Request.get(upstream.url("/c")))
    assert upstream.hits("/c") == 4
    assert info.value.retry_after == pytest.approx(10.0)


async def test_half_open_lets_exactly_n_probes_through(
    upstream: ScriptedServer, make_clients: ClientsFactory, clock: FakeClock
) -> None:
    """After the open wait, 20 concurrent calls: exactly N reach the server, the rest fail fast."""
    upstream.script("/c", Reply(503))
    client = make_clients(default_policy=_policy()).get("crm")
    for _ in range(4):
        with pytest.raises(UpstreamServerError):
            await client.send(Request.get(upstream.url("/c")))
    clock.advance(10.0)
    # Slow successes keep the probes in flight while the other callers arrive.
    upstream.script("/c", Reply(200, delay=0.2))
    results = await asyncio.gather(
        *(client.send(Request.get(upstream.url("/c"))) for _ in range(20)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    rejected = [r for r in results if isinstance(r, CircuitOpenError)]
    assert len(ok) == PROBES
    assert len(rejected) == 20 - PROBES
    assert upstream.hits("/c") == 4 + PROBES
    assert client.pipeline is not None
    assert client.pipeline.breaker is not None
    assert client.pipeline.breaker.state is CircuitState.CLOSED

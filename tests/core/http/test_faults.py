"""Fault injection: each fault on demand, rates over many draws, and chaos through the guards."""

from __future__ import annotations

import contextlib
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cauce.core.http import (
    ClientOptions,
    FaultInjectingTransport,
    FaultPolicy,
    Request,
    Response,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeoutError,
)
from cauce.core.http.faults import sample_latency
from cauce.core.resilience import AttemptTimeout, FakeClock, RecordingEvents, TimeoutPolicy
from tests.core.http.conftest import ClientsFactory, fast_policy
from tests.core.http.upstream import ScriptedServer

REQUEST = Request.get("http://upstream.test/x")


class Draws:
    """A random source that returns the given values in order."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


class Inner:
    """A transport that answers 200 and counts exchanges."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    async def send(self, request: Request) -> Response:
        self.calls += 1
        return Response(200, url=request.url)

    async def close(self) -> None:
        self.closed = True


def _faulty(policy: FaultPolicy, *draws: float) -> tuple[FaultInjectingTransport, Inner, FakeClock]:
    inner, clock = Inner(), FakeClock()
    return FaultInjectingTransport(inner, policy, rng=Draws(*draws), clock=clock), inner, clock


async def test_no_fault_passes_through() -> None:
    """A draw above every rate reaches the inner transport."""
    transport, inner, _ = _faulty(FaultPolicy(error_rate=0.3), 0.5)
    assert (await transport.send(REQUEST)).status == 200
    assert (inner.calls, transport.passed) == (1, 1)


async def test_error_fault_answers_a_configured_status_without_calling() -> None:
    """A draw under error_rate answers one of error_statuses; the upstream is not called."""
    transport, inner, _ = _faulty(FaultPolicy(error_rate=0.3, error_statuses=(502, 503)), 0.1, 0.9)
    response = await transport.send(REQUEST)
    assert response.status == 503
    assert response.headers["x-cauce-fault"] == "error"
    assert inner.calls == 0
    assert transport.injected == Counter({"error": 1})


async def test_throttle_fault_answers_429_with_retry_after() -> None:
    """A throttle fault is a 429 carrying the configured Retry-After."""
    policy = FaultPolicy(throttle_rate=0.5, retry_after_seconds=2.5)
    transport, inner, _ = _faulty(policy, 0.2)
    response = await transport.send(REQUEST)
    assert (response.status, response.headers["retry-after"]) == (429, "2.500")
    assert inner.calls == 0


async def test_reset_before_send_never_reaches_the_upstream() -> None:
    """A reset before sending raises a connection error and the upstream sees nothing."""
    transport, inner, _ = _faulty(FaultPolicy(reset_rate=1.0), 0.0)
    with pytest.raises(UpstreamConnectionError):
        await transport.send(REQUEST)
    assert inner.calls == 0


async def test_reset_after_send_loses_a_processed_response() -> None:
    """A reset after sending: the upstream handled the request, the caller sees an error."""
    transport, inner, _ = _faulty(FaultPolicy(reset_rate=1.0, reset_when="after_send"), 0.0)
    with pytest.raises(UpstreamConnectionError):
        await transport.send(REQUEST)
    assert inner.calls == 1


async def test_bounded_timeout_fault_waits_then_raises() -> None:
    """With timeout_seconds the fault hangs that long (fake time), then times out."""
    transport, inner, clock = _faulty(FaultPolicy(timeout_rate=1.0, timeout_seconds=4.0), 0.0)
    with pytest.raises(UpstreamTimeoutError):
        await transport.send(REQUEST)
    assert clock.now() == 4.0
    assert inner.calls == 0


async def test_latency_fault_delays_then_passes() -> None:
    """A latency draw under latency_rate sleeps the sampled delay before the exchange."""
    policy = FaultPolicy(
        latency_rate=0.5,
        latency_distribution="uniform",
        latency_seconds=1.0,
        latency_max_seconds=3.0,
    )
    transport, inner, clock = _faulty(policy, 0.4, 0.5)
    assert (await transport.send(REQUEST)).status == 200
    assert clock.sleeps == [2.0]
    assert inner.calls == 1


@given(
    u=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    low=st.floats(min_value=0.0, max_value=10.0),
    spread=st.floats(min_value=0.0, max_value=10.0),
    distribution=st.sampled_from(["fixed", "uniform", "exponential"]),
)
def test_sampled_latency_stays_within_its_bounds(
    u: float, low: float, spread: float, distribution: str
) -> None:
    """Every distribution yields a delay in [0, max]; fixed and uniform stay above the low bound."""
    policy = FaultPolicy.model_validate(
        {
            "latency_distribution": distribution,
            "latency_seconds": low,
            "latency_max_seconds": low + spread,
        }
    )
    delay = sample_latency(policy, u)
    assert 0.0 <= delay <= low + spread + 1e-9
    if distribution != "exponential":
        assert delay >= low - 1e-9


async def test_rates_hold_over_many_draws() -> None:
    """Over 20,000 seeded exchanges each fault lands within 1.5 points of its rate."""
    policy = FaultPolicy(error_rate=0.3, throttle_rate=0.1, reset_rate=0.05)
    inner = Inner()
    transport = FaultInjectingTransport(inner, policy, rng=random.Random(11), clock=FakeClock())
    n = 20_000
    for _ in range(n):
        with contextlib.suppress(UpstreamConnectionError):
            await transport.send(REQUEST)
    share = {kind: count / n for kind, count in transport.injected.items()}
    assert share["error"] == pytest.approx(0.3, abs=0.015)
    assert share["throttle"] == pytest.approx(0.1, abs=0.015)
    assert share["reset"] == pytest.approx(0.05, abs=0.015)
    assert inner.calls == transport.passed == n - sum(transport.injected.values())


def test_policy_refuses_rates_over_one_and_429_as_an_error_status() -> None:
    """Outcome rates must sum to <= 1; 429 belongs to throttle_rate."""
    with pytest.raises(ValidationError):
        FaultPolicy(error_rate=0.6, throttle_rate=0.5)
    with pytest.raises(ValidationError):
        FaultPolicy(error_statuses=(429,))
    assert not FaultPolicy().active
    assert FaultPolicy(latency_rate=0.1).active


async def test_chaos_option_injects_under_the_guards(
    upstream: ScriptedServer, make_clients: ClientsFactory, events: RecordingEvents
) -> None:
    """With faults on for an upstream, the guards retry injected 5xx and the server sees nothing."""
    options = {"chaos": ClientOptions(faults=FaultPolicy(error_rate=1.0))}
    clients = make_clients(options=options)
    with pytest.raises(UpstreamServerError):
        await clients.get("chaos").send(Request.get(upstream.url("/c")))
    assert upstream.hits() == 0
    assert len(events.of("attempt")) == 3
    # Other upstreams are untouched.
    assert (await clients.get("calm").send(Request.get(upstream.url("/c")))).status == 200


async def test_unbounded_timeout_fault_is_cut_by_the_attempt_timeout(
    upstream: ScriptedServer, make_clients: ClientsFactory, clock: FakeClock
) -> None:
    """A hanging fault ends when the pipeline's per-attempt timer fires (fake time)."""
    options = ClientOptions(faults=FaultPolicy(timeout_rate=1.0))
    policy = fast_policy(timeouts=TimeoutPolicy(total=100.0, attempt=2.0))
    client = make_clients(default_options=options, default_policy=policy).get("crm")
    with pytest.raises(AttemptTimeout):
        await client.send(Request.get(upstream.url("/c")))
    assert upstream.hits() == 0
    assert 6.0 <= clock.now() < 7.0

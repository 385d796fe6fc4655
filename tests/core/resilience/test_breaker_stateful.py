"""Stateful property test: the circuit breaker behaves like a naive model of Resilience4j.

The model keeps every outcome in a plain list and recomputes rates from scratch; the
breaker keeps ring buffers and running totals. Hypothesis drives both with random
interleavings of time passing, permissions asked and calls finishing out of order, and
checks that they agree on every decision.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Literal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cauce.core.resilience import (
    BreakerPolicy,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    FakeClock,
    RecordingEvents,
    RetryableError,
    build_breaker,
)

Kind = Literal["success", "failure", "ignored", "cancelled"]
WAIT_OPEN = 5.0
SLOW_DURATION = 1.0


@dataclass
class BreakerModel:
    """The specification, written as directly as possible."""

    window_type: str
    size: int
    min_calls: int
    failure_threshold: float
    slow_threshold: float
    permitted: int
    max_half_open: float
    state: CircuitState = CircuitState.CLOSED
    epoch: int = 0
    calls: list[tuple[int, bool, bool]] = field(default_factory=list)
    probes: list[tuple[bool, bool]] = field(default_factory=list)
    granted: int = 0
    open_until: float = 0.0
    half_open_since: float = 0.0

    def window(self, now: float) -> list[tuple[int, bool, bool]]:
        """The outcomes the breaker should weigh at ``now``."""
        if self.window_type == "count":
            return self.calls[-self.size :]
        second = math.floor(now)
        return [call for call in self.calls if call[0] > second - self.size]

    def exceeds(self, outcomes: list[tuple[bool, bool]]) -> bool:
        """Whether failure or slow rate reaches its threshold."""
        failure_rate = 100.0 * sum(f for f, _ in outcomes) / len(outcomes)
        slow_rate = 100.0 * sum(s for _, s in outcomes) / len(outcomes)
        return failure_rate >= self.failure_threshold or slow_rate >= self.slow_threshold

    def go(self, to: CircuitState, now: float) -> None:
        """Transition."""
        self.state = to
        self.epoch += 1
        if to is CircuitState.OPEN:
            self.open_until = now + WAIT_OPEN
        elif to is CircuitState.HALF_OPEN:
            self.granted = 0
            self.probes = []
            self.half_open_since = now
        else:
            self.calls = []

    def acquire(self, now: float) -> int | None:
        """The token a permission request gets, or None if rejected."""
        if self.state is CircuitState.CLOSED:
            return self.epoch
        if self.state is CircuitState.OPEN:
            if now < self.open_until:
                return None
            self.go(CircuitState.HALF_OPEN, now)
        elif self.max_half_open > 0 and now >= self.half_open_since + self.max_half_open:
            self.go(CircuitState.OPEN, now)
            return None
        if self.granted < self.permitted:
            self.granted += 1
            return self.epoch
        return None

    def complete(self, token: int, kind: Kind, duration: float, now: float) -> None:
        """Report a call's outcome."""
        if token != self.epoch:
            return
        if kind in ("ignored", "cancelled"):
            if self.state is CircuitState.HALF_OPEN:
                self.granted -= 1
            return
        failed, slow = kind == "failure", duration > SLOW_DURATION
        if self.state is CircuitState.CLOSED:
            self.calls.append((math.floor(now), failed, slow))
            window = self.window(now)
            if len(window) >= self.min_calls and self.exceeds([(f, s) for _, f, s in window]):
                self.go(CircuitState.OPEN, now)
            return
        self.probes.append((failed, slow))
        if len(self.probes) >= self.permitted:
            to = CircuitState.OPEN if self.exceeds(self.probes) else CircuitState.CLOSED
            self.go(to, now)


class BreakerMachine(RuleBasedStateMachine):
    """Drives a real breaker and the model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.inflight: list[int] = []

    @initialize(
        window_type=st.sampled_from(["count", "time"]),
        size=st.integers(1, 6),
        min_calls=st.integers(1, 8),
        failure_threshold=st.sampled_from([25.0, 50.0, 100.0]),
        slow_threshold=st.sampled_from([50.0, 100.0]),
        permitted=st.integers(1, 3),
        max_half_open=st.sampled_from([0.0, 4.0]),
    )
    def build(
        self,
        window_type: Literal["count", "time"],
        size: int,
        min_calls: int,
        failure_threshold: float,
        slow_threshold: float,
        permitted: int,
        max_half_open: float,
    ) -> None:
        """Build the breaker from a policy, and the model from the same numbers."""
        policy = BreakerPolicy(
            sliding_window_type=window_type,
            sliding_window_size=size,
            minimum_number_of_calls=min_calls,
            failure_rate_threshold=failure_threshold,
            slow_call_duration_threshold=SLOW_DURATION,
            slow_call_rate_threshold=slow_threshold,
            wait_duration_in_open_state=WAIT_OPEN,
            permitted_number_of_calls_in_half_open_state=permitted,
            max_wait_duration_in_half_open_state=max_half_open,
        )
        self.breaker: CircuitBreaker = build_breaker(
            "crm",
            policy,
            clock=self.clock,
            events=RecordingEvents(),
            is_failure=lambda error: not isinstance(error, KeyError),
        )
        effective_min = min(min_calls, size) if window_type == "count" else min_calls
        self.model = BreakerModel(
            window_type,
            size,
            effective_min,
            failure_threshold,
            slow_threshold,
            permitted,
            max_half_open,
        )

    @rule(seconds=st.sampled_from([0.0, 0.4, 1.0, 2.5, 5.0]))
    def advance(self, seconds: float) -> None:
        """Time passes."""
        self.clock.advance(seconds)

    @rule()
    def acquire(self) -> None:
        """A call asks for permission; breaker and model agree on the answer."""
        expected = self.model.acquire(self.clock.now())
        try:
            token: int | None = self.breaker.acquire()
        except CircuitOpenError:
            token = None
        assert token == expected
        if token is not None:
            self.inflight.append(token)

    @precondition(lambda self: bool(self.inflight))
    @rule(
        data=st.data(),
        kind=st.sampled_from(["success", "failure", "ignored", "cancelled"]),
        duration=st.sampled_from([0.1, 2.0]),
    )
    def complete(self, data: st.DataObject, kind: Kind, duration: float) -> None:
        """Some in-flight call (not necessarily the oldest) finishes."""
        token = self.inflight.pop(data.draw(st.integers(0, len(self.inflight) - 1)))
        if kind == "success":
            self.breaker.on_success(token, duration)
        elif kind == "failure":
            self.breaker.on_error(token, duration, RetryableError("503"))
        elif kind == "ignored":
            self.breaker.on_error(token, duration, KeyError("not counted"))
        else:
            self.breaker.on_error(token, duration, asyncio.CancelledError())
        self.model.complete(token, kind, duration, self.clock.now())

    @invariant()
    def same_state(self) -> None:
        """Breaker and model are in the same state."""
        assert self.breaker.state is self.model.state

    @invariant()
    def same_window(self) -> None:
        """While CLOSED the breaker's running totals match the model's recount."""
        if self.model.state is CircuitState.CLOSED:
            now = self.clock.now()
            window = self.breaker.window
            window.refresh(now)
            expected = self.model.window(now)
            assert window.total == len(expected)
            assert window.failed == sum(f for _, f, _ in expected)
            assert window.slow == sum(s for _, _, s in expected)

    @invariant()
    def never_more_probes_than_permitted(self) -> None:
        """In HALF_OPEN, no more than N probes of the current epoch are ever out at once."""
        if self.model.state is CircuitState.HALF_OPEN:
            current = sum(token == self.model.epoch for token in self.inflight)
            assert current <= self.model.permitted


def test_breaker_agrees_with_model() -> None:
    """Random interleavings of time, permissions and outcomes never split breaker and model."""
    run_state_machine_as_test(
        BreakerMachine,
        settings=settings(max_examples=300, stateful_step_count=50, deadline=None),
    )

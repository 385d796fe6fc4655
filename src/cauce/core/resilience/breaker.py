"""Circuit breaker with Resilience4j semantics; state is local to the process.

- **CLOSED**: every call passes; outcomes go to a sliding window (count or time based).
  Once the window holds ``minimum_number_of_calls`` outcomes, a failure rate or a
  slow-call rate at or above its threshold opens the circuit.
- **OPEN**: every call fails fast with :class:`CircuitOpenError` until
  ``wait_duration_in_open_state`` has passed; the next call then moves it to HALF_OPEN
  (lazily, as Resilience4j does without its automatic-transition thread).
- **HALF_OPEN**: exactly ``permitted_number_of_calls_in_half_open_state`` probes pass;
  everyone else fails fast. When all probes have reported, their failure and slow rates
  decide OPEN or CLOSED. ``max_wait_duration_in_half_open_state`` > 0 re-opens a
  breaker whose probes take too long (0 waits forever).

Permission and outcome are split (:meth:`CircuitBreaker.acquire` then ``on_success`` /
``on_error`` / ``release``) and contain no ``await``: on one event loop the check and
the increment of the probe counter cannot interleave, which is what makes "exactly N
probes" hold under any concurrency. ``acquire`` returns the breaker's *epoch* (bumped on
every transition) and outcomes from an older epoch are dropped, so a slow call started
while CLOSED cannot close a breaker that has since opened, nor count as a probe.

Exceptions for which ``is_failure`` is False are ignored (neither success nor failure)
and give their probe slot back; so does a cancelled call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import IntEnum

from cauce.core.resilience.clock import Clock
from cauce.core.resilience.errors import CircuitOpenError, DeadlineExceeded, RejectedError
from cauce.core.resilience.events import EventSink
from cauce.core.resilience.windows import SlidingWindow

__all__ = ["CircuitBreaker", "CircuitState", "default_is_failure"]


class CircuitState(IntEnum):
    """Breaker states; the values are those of the ``cauce_circuit_state`` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN


def default_is_failure(error: BaseException) -> bool:
    """Count every exception as a failure except local decisions.

    A rejection by a guard or the caller's own deadline says nothing about the
    upstream's health (Resilience4j and Polly likewise count every exception by default).
    """
    return not isinstance(error, RejectedError | DeadlineExceeded)


class CircuitBreaker:
    """One upstream's circuit breaker (see the module docstring for the semantics)."""

    __slots__ = (
        "_clock",
        "_epoch",
        "_events",
        "_failure_threshold",
        "_half_open_deadline",
        "_is_failure",
        "_max_wait_half_open",
        "_min_calls",
        "_open_until",
        "_permitted",
        "_probes_done",
        "_probes_failed",
        "_probes_granted",
        "_probes_slow",
        "_slow_duration",
        "_slow_threshold",
        "_state",
        "_wait_open",
        "_window",
        "name",
    )

    def __init__(
        self,
        name: str,
        *,
        window: SlidingWindow,
        clock: Clock,
        events: EventSink,
        minimum_number_of_calls: int = 100,
        failure_rate_threshold: float = 50.0,
        slow_call_duration_threshold: float = 60.0,
        slow_call_rate_threshold: float = 100.0,
        wait_duration_in_open_state: float = 60.0,
        permitted_number_of_calls_in_half_open_state: int = 10,
        max_wait_duration_in_half_open_state: float = 0.0,
        is_failure: Callable[[BaseException], bool] = default_is_failure,
    ) -> None:
        if minimum_number_of_calls < 1 or permitted_number_of_calls_in_half_open_state < 1:
            raise ValueError("call counts must be >= 1")
        if not (0 < failure_rate_threshold <= 100 and 0 < slow_call_rate_threshold <= 100):
            raise ValueError("rate thresholds are percentages in (0, 100]")
        self.name = name
        self._window = window
        self._clock = clock
        self._events = events
        self._min_calls = minimum_number_of_calls
        self._failure_threshold = failure_rate_threshold
        self._slow_duration = slow_call_duration_threshold
        self._slow_threshold = slow_call_rate_threshold
        self._wait_open = wait_duration_in_open_state
        self._permitted = permitted_number_of_calls_in_half_open_state
        self._max_wait_half_open = max_wait_duration_in_half_open_state
        self._is_failure = is_failure
        self._state = _CLOSED
        self._epoch = 0
        self._open_until = 0.0
        self._half_open_deadline = math.inf
        self._probes_granted = 0
        self._probes_done = 0
        self._probes_failed = 0
        self._probes_slow = 0

    @property
    def state(self) -> CircuitState:
        """The current state (an OPEN breaker turns HALF_OPEN only when a call arrives)."""
        return self._state

    @property
    def window(self) -> SlidingWindow:
        """The CLOSED-state sliding window (for inspection)."""
        return self._window

    def acquire(self) -> int:
        """Ask permission for one call; return the epoch token to report the outcome with.

        Raises :class:`CircuitOpenError` when the call must fail fast.
        """
        state = self._state
        if state is _CLOSED:
            return self._epoch
        now = self._clock.now()
        if state is _OPEN:
            if now < self._open_until:
                raise CircuitOpenError(self.name, retry_after=self._open_until - now)
            self._transition(_HALF_OPEN, now)
        elif now >= self._half_open_deadline:
            self._transition(_OPEN, now)
            raise CircuitOpenError(self.name, retry_after=self._wait_open)
        if self._probes_granted < self._permitted:
            self._probes_granted += 1
            return self._epoch
        raise CircuitOpenError(self.name, half_open=True)

    def on_success(self, epoch: int, duration: float) -> None:
        """Record a successful call that took ``duration`` seconds."""
        if epoch == self._epoch:
            self._record(False, duration > self._slow_duration)

    def on_failure(self, epoch: int, duration: float) -> None:
        """Record a failed call that took ``duration`` seconds."""
        if epoch == self._epoch:
            self._record(True, duration > self._slow_duration)

    def on_error(self, epoch: int, duration: float, error: BaseException) -> None:
        """Record ``error`` as a failure, or release the permission if it does not count."""
        if isinstance(error, Exception) and self._is_failure(error):
            self.on_failure(epoch, duration)
        else:
            self.release(epoch)

    def release(self, epoch: int) -> None:
        """Give the permission back without an outcome (ignored error, cancellation)."""
        if epoch == self._epoch and self._state is _HALF_OPEN:
            self._probes_granted -= 1

    def reset(self) -> None:
        """Force CLOSED with an empty window (operator action)."""
        if self._state is _CLOSED:
            self._window.reset()
        else:
            self._transition(_CLOSED, self._clock.now())

    def _record(self, failed: bool, slow: bool) -> None:
        now = self._clock.now()
        if self._state is _CLOSED:
            window = self._window
            window.record(now, failed, slow)
            total = window.total
            if total >= self._min_calls and self._exceeds(window.failed, window.slow, total):
                self._transition(_OPEN, now)
            return
        # Same epoch and not CLOSED means HALF_OPEN: OPEN grants no permissions.
        self._probes_done += 1
        if failed:
            self._probes_failed += 1
        if slow:
            self._probes_slow += 1
        if self._probes_done >= self._permitted:
            if self._exceeds(self._probes_failed, self._probes_slow, self._probes_done):
                self._transition(_OPEN, now)
            else:
                self._transition(_CLOSED, now)

    def _exceeds(self, failed: int, slow: int, total: int) -> bool:
        # Compare in integers-times-100 to avoid a division per call.
        return (
            failed * 100 >= self._failure_threshold * total
            or slow * 100 >= self._slow_threshold * total
        )

    def _transition(self, to: CircuitState, now: float) -> None:
        previous = self._state
        self._state = to
        self._epoch += 1
        if to is _OPEN:
            self._open_until = now + self._wait_open
        elif to is _HALF_OPEN:
            self._probes_granted = self._probes_done = 0
            self._probes_failed = self._probes_slow = 0
            wait = self._max_wait_half_open
            self._half_open_deadline = now + wait if wait > 0 else math.inf
        else:
            self._window.reset()
        self._events.on_breaker_transition(self.name, previous, to)

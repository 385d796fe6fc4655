"""Deciding, request by request, which fault to inject.

One seeded ``random.Random`` draws every decision in request order, so a fixed seed and a
fixed request sequence give the same faults on every run. The outage window is measured
on the sandbox clock from the moment the settings were (re)applied.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import TypeVar

from cauce.sandbox.config import FaultSettings

__all__ = ["Fault", "FaultInjector"]

T = TypeVar("T")

_ERROR_STATUSES = (500, 502, 503, 504)
_AFTER_WRITE_STATUSES = (500, 504)


class Fault(enum.Enum):
    """The fault chosen for one request."""

    NONE = "none"
    ERROR = "error"
    ERROR_AFTER_WRITE = "error_after_write"
    RESET = "reset"


class FaultInjector:
    """Holds the current :class:`FaultSettings` and draws decisions from them."""

    def __init__(
        self, settings: FaultSettings, *, seed: int | None, clock: Callable[[], float]
    ) -> None:
        settings.validate()
        self._settings = settings
        # Separate streams, so shuffling results or repeating webhooks (which happen at
        # times that depend on the network) never shift which requests fail.
        self._random = random.Random(seed)  # noqa: S311 - fault injection, not security
        self._order = random.Random(None if seed is None else seed + 1)  # noqa: S311
        self._events = random.Random(None if seed is None else seed + 2)  # noqa: S311
        self._clock = clock
        self._since = clock()

    @property
    def settings(self) -> FaultSettings:
        """The settings in force."""
        return self._settings

    def reconfigure(self, settings: FaultSettings) -> None:
        """Replace the settings; a configured outage is timed from now."""
        settings.validate()
        self._settings = settings
        self._since = self._clock()

    def in_outage(self) -> bool:
        """Whether the configured outage window covers this instant."""
        after = self._settings.outage_after
        if after is None or self._settings.outage_for <= 0:
            return False
        elapsed = self._clock() - self._since
        return after <= elapsed < after + self._settings.outage_for

    def outage_remaining(self) -> float:
        """Seconds left in the outage (0 if none is in progress)."""
        if not self.in_outage():
            return 0.0
        assert self._settings.outage_after is not None
        end = self._since + self._settings.outage_after + self._settings.outage_for
        return max(0.0, end - self._clock())

    def latency(self) -> float:
        """Seconds to wait before answering (uniform in [0.5, 1.5] x the mean)."""
        mean = self._settings.latency_ms / 1000.0
        if mean <= 0:
            return 0.0
        return mean * (0.5 + self._random.random())

    def draw(self) -> tuple[Fault, int]:
        """Pick the fault for one request and the status code it answers with."""
        s = self._settings
        if s.error_rate <= 0 and s.error_after_write_rate <= 0 and s.reset_rate <= 0:
            return Fault.NONE, 0
        roll = self._random.random()
        if roll < s.reset_rate:
            return Fault.RESET, 0
        roll -= s.reset_rate
        if roll < s.error_rate:
            return Fault.ERROR, self._random.choice(_ERROR_STATUSES)
        roll -= s.error_rate
        if roll < s.error_after_write_rate:
            return Fault.ERROR_AFTER_WRITE, self._random.choice(_AFTER_WRITE_STATUSES)
        return Fault.NONE, 0

    def chance(self, rate: float) -> bool:
        """A seeded coin with probability ``rate`` (used for duplicated webhooks)."""
        return rate > 0 and self._events.random() < rate

    def shuffle(self, items: list[T]) -> None:
        """Shuffle in place with the seeded source."""
        self._order.shuffle(items)

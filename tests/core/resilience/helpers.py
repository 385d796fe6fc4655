"""Small helpers shared by the resilience tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class Flaky:
    """An async callable that raises the given errors in turn, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


class AlwaysFails:
    """An async callable that raises a fresh error from ``make`` on every call."""

    def __init__(self, make: Callable[[], BaseException]) -> None:
        self.make = make
        self.calls = 0
        self.raised: list[BaseException] = []

    async def __call__(self) -> str:
        self.calls += 1
        error = self.make()
        self.raised.append(error)
        raise error

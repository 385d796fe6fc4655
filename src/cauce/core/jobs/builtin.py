"""Core's own task: `jobs.probe`, the canary an operator defers to check the workers.

A probe does nothing but wait `sleep_seconds` (0 by default), or fail at once when
`fail` is true. After a deploy, a probe that reaches `succeeded` shows that some worker
consumes its queue end to end (claim, attempt row, trace); a long probe shows what a
rolling restart does to work in flight; a failing one exercises the dead-letter path
and the alerts watching it, and can then be replayed.
"""

from __future__ import annotations

import asyncio

from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JsonDict, PermanentJobError
from cauce.core.jobs.registry import TaskRegistry, TaskSpec

PROBE_TASK = "jobs.probe"
MAX_PROBE_SECONDS = 300.0


class ProbeFailed(PermanentJobError):
    """The failure a probe was asked for."""


async def probe(ctx: JobContext, payload: JsonDict) -> None:
    """Wait `payload["sleep_seconds"]`, or fail when `payload["fail"]` is true."""
    seconds = payload.get("sleep_seconds", 0)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= MAX_PROBE_SECONDS
    ):
        raise PermanentJobError(f"sleep_seconds must be a number from 0 to {MAX_PROBE_SECONDS:g}")
    if payload.get("fail") is True:
        raise ProbeFailed("the probe was asked to fail")
    await asyncio.sleep(seconds)


def register_core_tasks(registry: TaskRegistry) -> None:
    """Register the tasks `core` itself provides."""
    # One attempt: a probe measures the path, retrying it would only blur the picture.
    registry.add(TaskSpec(PROBE_TASK, probe, policy=RetryPolicy(max_attempts=1)))

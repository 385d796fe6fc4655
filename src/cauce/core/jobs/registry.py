"""Task registration: each context registers its handlers and schedules at start-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from croniter import croniter

from cauce.core.jobs.policy import DEFAULT_POLICY, RetryPolicy
from cauce.core.jobs.ports import Handler, JsonDict

DEFAULT_QUEUE = "default"


class UnknownTask(LookupError):
    """A job names a task nobody registered."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A registered task."""

    name: str
    handler: Handler
    queue: str = DEFAULT_QUEUE
    policy: RetryPolicy = DEFAULT_POLICY


@dataclass(frozen=True, slots=True)
class Schedule:
    """A periodic task: fires once per cron period across all workers."""

    task: str
    cron: str
    payload: JsonDict = field(default_factory=dict)


class TaskRegistry:
    """Name -> task, plus periodic schedules. Built per app, never at import time."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskSpec] = {}
        self._schedules: list[Schedule] = []

    def task(
        self, name: str, *, queue: str = DEFAULT_QUEUE, retry: RetryPolicy = DEFAULT_POLICY
    ) -> Callable[[Handler], Handler]:
        """Decorator registering `handler(ctx, payload)` as task `name`."""

        def register(handler: Handler) -> Handler:
            self.add(TaskSpec(name, handler, queue, retry))
            return handler

        return register

    def add(self, spec: TaskSpec) -> None:
        """Register `spec`; names are unique."""
        if not spec.name or len(spec.name) > 128:
            raise ValueError("task names are 1 to 128 characters")
        if spec.name in self._tasks:
            raise ValueError(f"task {spec.name!r} is already registered")
        self._tasks[spec.name] = spec

    def schedule(self, cron: str, task: str, payload: JsonDict | None = None) -> None:
        """Run `task` periodically; `cron` has 5 fields, or 6 with seconds last."""
        if not croniter.is_valid(cron):
            raise ValueError(f"invalid cron expression {cron!r}")
        self._schedules.append(Schedule(task, cron, payload or {}))

    def copy(self) -> TaskRegistry:
        """A new registry with the same tasks and schedules (adding to it leaves this one)."""
        clone = TaskRegistry()
        clone._tasks = dict(self._tasks)
        clone._schedules = list(self._schedules)
        return clone

    def get(self, name: str) -> TaskSpec:
        """The task called `name`, or `UnknownTask`."""
        try:
            return self._tasks[name]
        except KeyError:
            raise UnknownTask(f"no task named {name!r} is registered") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        """Every registered task by name."""
        return dict(self._tasks)

    @property
    def schedules(self) -> list[Schedule]:
        """Every periodic schedule."""
        return list(self._schedules)

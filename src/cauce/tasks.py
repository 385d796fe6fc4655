"""Every context's job handlers and schedules, registered in one place.

`cauce serve` (the API, and on SQLite its embedded worker) and `cauce worker` both call
`register_tasks` once their resources are built, so a job deferred by one process can
run in the other. A context adds its tasks with one line here, e.g.
`leads_tasks.register(registry, resources)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cauce.core.db.analyze import ANALYZE_TASK, analyze
from cauce.core.jobs.builtin import register_core_tasks
from cauce.core.jobs.policy import RetryPolicy
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.registry import TaskRegistry, TaskSpec
from cauce.core.jobs.retention import register_jobs_purge, retention_from
from cauce.core.web.idempotency import register_idempotency_tasks

if TYPE_CHECKING:
    from cauce.app import Resources


def register_tasks(registry: TaskRegistry, resources: Resources) -> None:
    """Add every context's tasks to `registry`; handlers may close over `resources`."""
    register_core_tasks(registry)
    register_idempotency_tasks(registry, resources.settings.http.idempotency_purge_cron)
    jobs = resources.settings.jobs
    register_jobs_purge(registry, retention_from(jobs), jobs.purge_cron)
    _register_db_analyze(registry, resources)


def _register_db_analyze(registry: TaskRegistry, resources: Resources) -> None:
    """`core.db_analyze` (`core.db.analyze`), on `db.analyze_cron`, and when an erasure
    asks for it on PostgreSQL (`core.jobs.db_analyze.request_analyze`)."""
    db = resources.db

    async def run(_ctx: JobContext, payload: JsonDict) -> None:
        tables = payload.get("tables", [])
        named = [str(t) for t in tables] if isinstance(tables, list) else []
        await analyze(db.sessionmaker, named)

    # One attempt: a failed run is simply done again by the next period.
    registry.add(TaskSpec(ANALYZE_TASK, run, policy=RetryPolicy(max_attempts=1)))
    cron = resources.settings.db.analyze_cron
    if cron is not None:
        registry.schedule(cron, ANALYZE_TASK)

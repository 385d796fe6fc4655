"""The in-process dispatcher while its database is not answering: one compact warning
every few seconds, not a traceback every poll (a locked SQLite wrote ~9 KB every 0.8 s);
a real bug keeps its traceback each time."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any, cast

from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from cauce.core.jobs.embedded_worker import EmbeddedWorker
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner


class _FailingQueue:
    """A queue whose every claim fails with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.wakeup = asyncio.Event()
        self.claims = 0

    async def claim(self, *_: Any) -> list[Any]:
        self.claims += 1
        raise self.error

    async def release(self, *_: Any) -> None:
        return None


async def _run(
    error: Exception, seconds: float = 0.5
) -> tuple[list[MutableMapping[str, Any]], int]:
    queue = _FailingQueue(error)

    def no_runner(worker_id: str) -> AttemptRunner:
        return cast(AttemptRunner, object())  # never used: no job is claimed

    worker = EmbeddedWorker(
        queue,  # type: ignore[arg-type]
        no_runner,
        TaskRegistry(),
        poll_seconds=0.02,
    )
    with capture_logs() as logs:
        await worker.start()
        await asyncio.sleep(seconds)
        await worker.stop()
    return logs, queue.claims


async def test_a_database_not_answering_is_one_warning_not_a_traceback_a_poll() -> None:
    locked = OperationalError("SELECT ...", {}, Exception("database is locked"))
    logs, claims = await _run(locked)
    assert claims >= 5  # it kept polling
    warnings = [e for e in logs if e["event"] == "jobs.database_unavailable"]
    assert len(warnings) == 1
    assert warnings[0]["reason"] == "database is locked"
    assert warnings[0]["during"] == "jobs.dispatcher_error"
    assert not any(e["event"] == "jobs.dispatcher_error" for e in logs)


async def test_any_other_error_logs_its_traceback_every_time() -> None:
    logs, claims = await _run(RuntimeError("a bug"))
    errors = [e for e in logs if e["event"] == "jobs.dispatcher_error"]
    assert claims >= 5
    assert len(errors) == claims
    assert all(e.get("exc_info") for e in errors)

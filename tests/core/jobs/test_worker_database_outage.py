"""The procrastinate worker when PostgreSQL goes away (restarted, connections killed).

procrastinate's worker stops when its database connection dies, and `ProcrastinateWorker`
starts it again. Two things follow from a blip, found by a chaos run (helper-144):

* each restart and each failed sweep logged a 5 KB traceback at ERROR, several per blip
  and per worker; now, as the in-process dispatcher does, a database that is not
  answering is one compact warning every few seconds (a real bug keeps its traceback);
* the ended worker could not unregister (the database was what failed), so the jobs it
  had been running stayed `doing` until its heartbeat aged `stalled_seconds` (20 s by
  default: CRM deliveries and imports stood still that long after a 1 ms blip); now the
  sweeper unregisters it as soon as the database answers and hands its jobs back at once.
"""

from __future__ import annotations

from typing import Any, cast

import psycopg
import pytest
from procrastinate.exceptions import ConnectorException
from sqlalchemy import text
from structlog.testing import capture_logs

from cauce.core.db import Database, unit_of_work
from cauce.core.jobs.ports import JobContext, JsonDict
from cauce.core.jobs.procrastinate_engine import ProcrastinateJobQueue
from cauce.core.jobs.procrastinate_worker import ProcrastinateWorker
from cauce.core.jobs.registry import TaskRegistry
from cauce.core.jobs.runner import AttemptRunner
from tests.core.jobs.conftest import KitFactory
from tests.core.jobs.kits_pg import ProcrastinateKit


class _Queue:
    """Just what building a worker reads from its queue (nothing connects)."""

    conninfo = "postgresql://nobody@127.0.0.1:1/none"
    sessionmaker = None


def _worker() -> ProcrastinateWorker:
    def no_runner(worker_id: str) -> AttemptRunner:
        return cast(AttemptRunner, object())  # never used: nothing runs

    return ProcrastinateWorker(
        cast(ProcrastinateJobQueue, _Queue()), no_runner, TaskRegistry(), stalled_seconds=20.0
    )


def _connection_lost() -> ConnectorException:
    """What procrastinate raises when PostgreSQL cut its connection."""
    try:
        try:
            raise psycopg.OperationalError("consuming input failed: server closed the connection")
        except psycopg.OperationalError as exc:
            raise ConnectorException from exc
    except ConnectorException as wrapped:
        return wrapped


def _log_many(worker: ProcrastinateWorker, event: str, error: Exception, times: int) -> None:
    for _ in range(times):
        try:
            raise error
        except Exception as exc:  # noqa: BLE001 - what the worker's loops catch
            worker._log_error(event, exc)


def test_a_lost_database_connection_is_one_compact_warning_not_tracebacks() -> None:
    """Restarts and sweeps failing because the database went away log one warning (per
    loop, every few seconds) naming the driver's reason, with no traceback."""
    worker = _worker()
    with capture_logs() as logs:
        _log_many(worker, "jobs.worker_error", _connection_lost(), 5)
        _log_many(worker, "jobs.sweep_error", _connection_lost(), 5)
    assert [(e["event"], e["during"]) for e in logs] == [
        ("jobs.database_unavailable", "jobs.worker_error"),
        ("jobs.database_unavailable", "jobs.sweep_error"),
    ]
    assert logs[0]["reason"] == "consuming input failed: server closed the connection"
    assert logs[0]["error_class"] == "OperationalError"
    assert not any(e.get("exc_info") for e in logs)


def test_any_other_worker_error_keeps_its_traceback_every_time() -> None:
    """A bug (not a database that is not answering) is logged with its traceback each time."""
    worker = _worker()
    with capture_logs() as logs:
        _log_many(worker, "jobs.worker_error", RuntimeError("a bug"), 3)
        _log_many(worker, "jobs.sweep_error", ConnectorException("no cause"), 2)
    assert [e["event"] for e in logs] == ["jobs.worker_error"] * 3 + ["jobs.sweep_error"] * 2
    assert all(e.get("exc_info") for e in logs)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_the_jobs_of_a_worker_that_ended_unregistered_go_back_at_the_next_sweep(
    backend: str, make_kit: KitFactory, db: Database
) -> None:
    """A procrastinate worker of this process that ended without unregistering (the
    database failed under it) has its `doing` jobs handed back by the next sweep, not
    after its heartbeat aged `stalled_seconds`."""
    registry = TaskRegistry()

    @registry.task("noop")
    async def noop(ctx: JobContext, payload: JsonDict) -> None:
        return None

    kit = await make_kit(registry)
    assert isinstance(kit, ProcrastinateKit)
    async with unit_of_work(db.sessionmaker) as session:
        deferred = await kit.queue.defer(session, "noop", {})
    app = kit.worker.app
    await app.open_async()
    try:
        # A worker claims the job, then its run ends on a dead connection: the job stays
        # `doing` under a worker row whose heartbeat is fresh.
        ended = await app.job_manager.register_worker()
        claimed = await app.job_manager.fetch_job(queues=None, worker_id=ended)
        assert claimed is not None
        assert claimed.id == deferred.job_id
        assert await kit.worker.sweep() == 0  # its heartbeat is fresh: not stalled
        kit.worker._ended.add(ended)  # what `_run` records when that run ends
        assert await kit.worker.sweep() == 1
        assert not kit.worker._ended
        async with db.sessionmaker() as session:
            row: Any = (
                await session.execute(
                    text("SELECT status, worker_id FROM procrastinate_jobs WHERE id = :id"),
                    {"id": deferred.job_id},
                )
            ).one()
        assert (row.status, row.worker_id) == ("todo", None)
        assert await kit.worker.sweep() == 0  # once
    finally:
        await app.close_async()

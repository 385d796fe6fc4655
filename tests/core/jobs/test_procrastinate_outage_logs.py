"""procrastinate's and psycopg pool's own lines while PostgreSQL is away (`OutageLogs`).

A worker whose database stopped for 8 s logged 2 procrastinate ERROR lines with a
traceback each and ~15 psycopg pool warnings (one per connection attempt, one per
connection discarded); now each kind is one warning without a traceback every few
seconds, saying how many like it were left out. Anything else passes untouched.
"""

from __future__ import annotations

import logging

import psycopg
from procrastinate.exceptions import ConnectorException

from cauce.core.jobs.procrastinate_logs import OutageLogs, unavailable_cause


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _record(
    name: str, level: int, msg: str, *args: object, exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, level, __file__, 1, msg, args or None, exc_info)


def _connection_lost() -> ConnectorException:
    try:
        try:
            raise psycopg.OperationalError("consuming input failed: server closed the connection")
        except psycopg.OperationalError as exc:
            raise ConnectorException("\n    Database error.\n    ") from exc
    except ConnectorException as wrapped:
        return wrapped


def test_pool_warnings_are_one_line_per_kind_every_interval() -> None:
    clock = _Clock()
    outage = OutageLogs(interval=5.0, clock=clock)

    def connecting() -> logging.LogRecord:
        return _record(
            "psycopg.pool", logging.WARNING, "error connecting in %r: %s", "pool-1", "refused"
        )

    first = connecting()
    assert outage.filter(first)
    assert first.getMessage() == "error connecting in 'pool-1': refused"
    kept = [outage.filter(connecting()) for _ in range(6)]
    assert kept == [False] * 6
    discarded = _record("psycopg.pool", logging.WARNING, "discarding closed connection: %s", "c")
    assert outage.filter(discarded)  # another kind: its own line
    clock.now += 5.0
    again = connecting()
    assert outage.filter(again)
    assert again.getMessage() == "error connecting in 'pool-1': refused (6 like it left out)"
    assert outage.filter(_record("psycopg.pool", logging.ERROR, "pool is broken"))


def test_procrastinates_tracebacks_of_a_lost_database_are_compact_warnings() -> None:
    clock = _Clock()
    outage = OutageLogs(interval=5.0, clock=clock)
    name = "procrastinate.worker.cauce@host:1"

    def failed() -> logging.LogRecord:
        return _record(
            name,
            logging.ERROR,
            "Side task listener failed with exception: %s, stopping worker",
            "Database error.",
            exc=_connection_lost(),
        )

    record = failed()
    assert outage.filter(record)
    assert record.levelno == logging.WARNING
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert record.getMessage() == (
        "Side task listener failed with exception: Database error., stopping worker "
        "(OperationalError: consuming input failed: server closed the connection)"
    )
    assert not outage.filter(failed())
    clock.now += 6
    later = failed()
    assert outage.filter(later)
    assert later.getMessage().endswith("server closed the connection) (1 like it left out)")


def test_any_other_record_passes_as_it_is() -> None:
    outage = OutageLogs(interval=5.0, clock=_Clock())
    try:
        raise KeyError("a bug")
    except KeyError as exc:
        bug = exc
    for _ in range(3):  # never throttled
        record = _record("procrastinate.worker", logging.ERROR, "Job ended: %s", "Error", exc=bug)
        assert outage.filter(record)
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
        assert record.exc_info[1] is bug
    info = _record("procrastinate.worker", logging.INFO, "Starting worker")
    assert outage.filter(info)
    assert outage.filter(_record("cauce.jobs", logging.WARNING, "error connecting"))
    assert unavailable_cause(bug) is None
    assert unavailable_cause(None) is None
    assert isinstance(unavailable_cause(_connection_lost()), psycopg.OperationalError)


def test_a_statement_the_server_refused_is_no_outage() -> None:
    """A deadlock, a lock timeout or a cancelled query is an OperationalError too, from a
    server that answers: procrastinate's record of it keeps its traceback and level."""
    for error in (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
        try:
            try:
                raise error("the server refused this statement")
            except psycopg.OperationalError as exc:
                raise ConnectorException("\n    Database error.\n    ") from exc
        except ConnectorException as wrapped:
            refused = wrapped
        assert unavailable_cause(refused) is None
        record = _record("procrastinate.worker", logging.ERROR, "listener", exc=refused)
        assert OutageLogs(interval=5.0, clock=_Clock()).filter(record)
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None
    shutdown = psycopg.errors.AdminShutdown("terminating connection")
    ended = ConnectorException("x")
    ended.__cause__ = shutdown
    assert unavailable_cause(ended) is shutdown  # pg_terminate_backend, a shutdown

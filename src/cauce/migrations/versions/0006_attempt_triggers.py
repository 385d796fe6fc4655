"""Jobs: attempts opened and closed by the job's own state change.

PostgreSQL: triggers on procrastinate's job table write our attempts log in the statement
that moves the job. `todo -> doing` (procrastinate's claim) opens an attempt (number =
attempts counted since the last replay + 1, worker = the claiming connection's
`application_name` + procrastinate's worker id, trace id from the stored `traceparent`)
and hands its number back to the worker through procrastinate's `attempts` column, which
Cauce does not otherwise use. Leaving `doing` closes a still-running attempt: `succeeded`
and `failed` as such, anything else (released by a sweeper, a stopping worker) as `lost`.
A worker writes a failure's outcome and error first, so the close finds nothing to do.

SQLite: the index the embedded dispatcher's claim order walks (`status, priority DESC, id`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_ATTEMPT = """
CREATE FUNCTION cauce_open_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    counted integer;
BEGIN
    SELECT count(*) INTO counted FROM job_attempts AS a
     WHERE a.job_id = NEW.id
       AND a.outcome IN ('succeeded', 'retry', 'failed', 'lost')
       AND a.id > coalesce((SELECT max(r.id) FROM job_attempts AS r
                             WHERE r.job_id = NEW.id AND r.outcome = 'replayed'), 0);
    NEW.attempts := counted;
    INSERT INTO job_attempts (job_id, task, queue, attempt, started_at, outcome, worker_id,
                              trace_id)
    VALUES (NEW.id, NEW.task_name, NEW.queue_name, counted + 1, now(), 'running',
            right(coalesce(nullif(current_setting('application_name', true), ''), 'worker')
                  || ':procrastinate-' || coalesce(NEW.worker_id::text, '?'), 64),
            nullif(split_part(coalesce(NEW.args #>> '{context,traceparent}', ''), '-', 2), ''));
    RETURN NEW;
END
$$;
CREATE TRIGGER cauce_open_attempt BEFORE UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW WHEN (NEW.status = 'doing' AND OLD.status <> 'doing')
    EXECUTE FUNCTION cauce_open_attempt();
"""

CLOSE_ATTEMPT = """
CREATE FUNCTION cauce_close_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE job_attempts
       SET finished_at = now(),
           outcome = CASE NEW.status WHEN 'succeeded' THEN 'succeeded'
                                     WHEN 'failed' THEN 'failed'
                                     ELSE 'lost' END
     WHERE job_id = NEW.id AND outcome = 'running';
    RETURN NULL;
END
$$;
CREATE TRIGGER cauce_close_attempt AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW WHEN (OLD.status = 'doing' AND NEW.status <> 'doing')
    EXECUTE FUNCTION cauce_close_attempt();
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Driver-level: SQLAlchemy's text() would read `:procrastinate` as a parameter.
        op.get_bind().exec_driver_sql(OPEN_ATTEMPT)
        op.get_bind().exec_driver_sql(CLOSE_ATTEMPT)
        return
    op.create_index(
        "ix_cauce_jobs_todo_order",
        "cauce_jobs",
        ["status", sa.text("priority DESC"), "id"],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER cauce_close_attempt ON procrastinate_jobs")
        op.execute("DROP TRIGGER cauce_open_attempt ON procrastinate_jobs")
        op.execute("DROP FUNCTION cauce_close_attempt()")
        op.execute("DROP FUNCTION cauce_open_attempt()")
        return
    op.drop_index("ix_cauce_jobs_todo_order", table_name="cauce_jobs")

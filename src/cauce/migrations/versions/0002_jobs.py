"""Jobs: the attempts log (both databases), the embedded job table (SQLite), and
procrastinate's schema (PostgreSQL).

procrastinate's schema is the one of the locked procrastinate version (uv.lock); an upgrade
of procrastinate that ships SQL migrations gets its own Alembic revision applying them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from procrastinate.schema import SchemaManager

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "job_attempts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("queue", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_class", sa.String(length=200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_attempts")),
    )
    op.create_index(op.f("ix_job_attempts_job_id"), "job_attempts", ["job_id"])

    if op.get_bind().dialect.name == "postgresql":
        op.execute(SchemaManager.get_schema())
        return

    op.create_table(
        "cauce_jobs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("queue", sa.String(length=128), nullable=False),
        sa.Column("task", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lock", sa.String(length=255), nullable=True),
        sa.Column("dedupe_key", sa.String(length=255), nullable=True),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cauce_jobs")),
    )
    op.create_index("ix_cauce_jobs_claim", "cauce_jobs", ["status", "queue", "priority", "id"])
    op.create_index(
        "uq_cauce_jobs_dedupe_todo",
        "cauce_jobs",
        ["dedupe_key"],
        unique=True,
        sqlite_where=sa.text("status = 'todo' AND dedupe_key IS NOT NULL"),
    )
    op.create_index(
        "ix_cauce_jobs_lock_doing",
        "cauce_jobs",
        ["lock"],
        sqlite_where=sa.text("status = 'doing'"),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        raise NotImplementedError("procrastinate's schema is not removed automatically")
    op.drop_table("cauce_jobs")
    op.drop_table("job_attempts")

"""Job tables: the attempts log (both engines) and the embedded engine's job table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cauce.core.db.base import Base, UtcDateTime, utcnow

# SQLite only autoincrements INTEGER PRIMARY KEY; PostgreSQL job ids are bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class JobAttempt(Base):
    """One attempt of one job: its row is written when it starts and completed once when it
    ends (or marked `lost` by the sweeper). Rows go only with their job, when the job is
    purged past its retention (retention.py)."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger, index=True)
    task: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    outcome: Mapped[str] = mapped_column(String(16))
    error_class: Mapped[str | None] = mapped_column(String(200), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    worker_id: Mapped[str | None] = mapped_column(String(64), default=None)
    trace_id: Mapped[str | None] = mapped_column(String(32), default=None)


class EmbeddedJob(Base):
    """A job of the embedded (SQLite) engine; PostgreSQL uses procrastinate's table."""

    __tablename__ = "cauce_jobs"
    __table_args__ = (
        Index("ix_cauce_jobs_claim", "status", "queue", "priority", "id"),
        # At most one waiting job per dedupe key.
        Index(
            "uq_cauce_jobs_dedupe_todo",
            "dedupe_key",
            unique=True,
            sqlite_where=text("status = 'todo' AND dedupe_key IS NOT NULL"),
        ),
        Index("ix_cauce_jobs_lock_doing", "lock", sqlite_where=text("status = 'doing'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="todo")
    lock: Mapped[str | None] = mapped_column(String(255), default=None)
    dedupe_key: Mapped[str | None] = mapped_column(String(255), default=None)
    scheduled_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


# The dispatcher's claim order (migration 0006).
Index("ix_cauce_jobs_todo_order", EmbeddedJob.status, EmbeddedJob.priority.desc(), EmbeddedJob.id)

"""Database: async engine, the unit of work, the declarative base and migrations."""

from cauce.core.db.base import Base, UtcDateTime, utcnow
from cauce.core.db.engine import Database, create_database
from cauce.core.db.uow import on_commit, unit_of_work, writer_connection

__all__ = [
    "Base",
    "Database",
    "UtcDateTime",
    "create_database",
    "on_commit",
    "unit_of_work",
    "utcnow",
    "writer_connection",
]

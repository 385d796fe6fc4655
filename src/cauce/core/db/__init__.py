"""Database: async engine, the unit of work, the declarative base and migrations."""

from cauce.core.db.base import Base, UtcDateTime, utcnow
from cauce.core.db.engine import Database, create_database
from cauce.core.db.uow import unit_of_work

__all__ = ["Base", "Database", "UtcDateTime", "create_database", "unit_of_work", "utcnow"]

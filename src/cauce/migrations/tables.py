"""Import every module that declares tables, so `Base.metadata` knows all of them.

Alembic's environment and the schema test both import this; a context adds one line here.
"""

from cauce.core.db.base import Base
from cauce.core.jobs import models as _job_models  # noqa: F401 - registers tables
from cauce.core.security import models as _security_models  # noqa: F401 - registers tables
from cauce.core.web import idempotency as _idempotency  # noqa: F401 - registers tables
from cauce.leads import models as _leads_models  # noqa: F401 - registers tables

metadata = Base.metadata

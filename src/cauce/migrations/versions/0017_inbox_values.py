"""Webhook inbox: applied events keep no property value Cauce took no status from.

Since this version an applied event drops its `propertyValue` unless Cauce set a lead's
status from it (`webhooks.process_inbox`): an app subscribed to email or phone changes
sent those values, personal data the inbox has no use for once applied and that an
erasure of the lead never looked for. This drops them from the events applied before.
Nothing comes back on a downgrade.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Applied events whose outcome is no status taken from them, and that kept a value.
_SQLITE = (
    "UPDATE webhook_inbox SET payload = json_remove(payload, '$.propertyValue') "
    "WHERE processed_at IS NOT NULL AND (outcome IS NULL OR substr(outcome, 1, 7) <> 'status:')"
    " AND json_extract(payload, '$.propertyValue') IS NOT NULL"
)
_POSTGRES = (
    "UPDATE webhook_inbox SET payload = CAST(CAST(payload AS jsonb) - 'propertyValue' AS json) "
    "WHERE processed_at IS NOT NULL AND (outcome IS NULL OR substr(outcome, 1, 7) <> 'status:')"
    " AND jsonb_exists(CAST(payload AS jsonb), 'propertyValue')"
)


def upgrade() -> None:
    """Drop `propertyValue` from the payloads of events applied without a status."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(sa.text(_SQLITE if sqlite else _POSTGRES))


def downgrade() -> None:
    """Nothing to undo: the values dropped are gone."""

"""retention indexes

Feedback and shadow outputs get a retention of their own (issue 31): the sweeper deletes
their rows older than FEEDBACK_RETENTION_SECONDS and SHADOW_OUTPUT_RETENTION_SECONDS, the
oldest first, in bounded batches; and batches that answered no job still kept (a shadow's)
once past JOB_RETENTION_SECONDS. An index on the time each is kept by makes each of those
batches a range scan of the index instead of a scan of the table.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


_INDEXED = {"feedback": "created_at", "shadow_outputs": "created_at", "batches": "completed_at"}


def upgrade() -> None:
    for table, column in _INDEXED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_{column}"), [column], unique=False)


def downgrade() -> None:
    for table, column in _INDEXED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_{column}"))

"""console indexes

The operator console's queries (issue 35): recent failed jobs of a model, a key's own
recent jobs, and the newest batch jobs (all of them, or a key's own), each an index scan
with a million jobs stored.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_FAILED = sa.text("status = 'failed'")


def upgrade() -> None:
    op.create_index(
        "ix_jobs_failed_by_model",
        "jobs",
        ["model_name", "completed_at"],
        postgresql_where=_FAILED,
        sqlite_where=_FAILED,
    )
    op.create_index("ix_jobs_owner_created", "jobs", ["owner_key_id", "created_at"])
    op.create_index("ix_bulk_jobs_created", "bulk_jobs", ["created_at"])
    op.create_index("ix_bulk_jobs_owner_created", "bulk_jobs", ["owner_key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_bulk_jobs_owner_created", "bulk_jobs")
    op.drop_index("ix_bulk_jobs_created", "bulk_jobs")
    op.drop_index("ix_jobs_owner_created", "jobs")
    op.drop_index("ix_jobs_failed_by_model", "jobs")

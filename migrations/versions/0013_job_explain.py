"""job explain

What a job asked to be explained ("predicted", "all", or nothing), so that a job the
sweeper queues again from the database is explained all the same.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("explain", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("explain")

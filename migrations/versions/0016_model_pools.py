"""model pools

A model's worker pool (issue 30): its online rows wake Celery queue ``inference.<pool>``; null is
the default pool (queue ``inference``).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pool", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("pool")

"""job owners

A job records the API key that submitted it (None when auth was off), so only that key or
an admin key can read it or post its feedback. Idempotency keys become per API key: the
stored key is prefixed with the owner's id (``<key id>:<Idempotency-Key>``), so the
column grows by room for that prefix.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 18:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_key_id", sa.Integer(), nullable=True))
        batch_op.alter_column(
            "idempotency_key", existing_type=sa.String(length=200), type_=sa.String(length=240)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column(
            "idempotency_key", existing_type=sa.String(length=240), type_=sa.String(length=200)
        )
        batch_op.drop_column("owner_key_id")

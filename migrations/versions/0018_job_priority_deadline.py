"""job priority and deadline

Jobs a client can steer (issue 32): a job's priority and deadline (its status may now be
expired or cancelled, both strings as before); a model's default deadline, set by admins;
an API key's default priority and its ceiling.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.String(8), nullable=False, server_default="normal"))
        batch_op.add_column(sa.Column("deadline", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("default_deadline_ms", sa.Integer(), nullable=True))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("default_priority", sa.String(8), nullable=True))
        batch_op.add_column(sa.Column("max_priority", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("max_priority")
        batch_op.drop_column("default_priority")
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("default_deadline_ms")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("deadline")
        batch_op.drop_column("priority")

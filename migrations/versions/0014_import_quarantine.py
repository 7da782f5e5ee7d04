"""import quarantine

An import whose labels the serving version does not vouch for is quarantined: its status and
reason, who accepted it and when, and the evaluation set carved from it; each training run
lists the quarantined imports it left out.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_imports", schema=None) as batch_op:
        # Imports made before the check were all trained on: they stay accepted.
        batch_op.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="accepted"))
        batch_op.add_column(sa.Column("reason", sa.String(1000), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("accepted_by", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("evaluation_set", sa.Integer(), nullable=True))
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quarantined_imports", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_column("quarantined_imports")
    with op.batch_alter_table("training_imports", schema=None) as batch_op:
        for column in ("evaluation_set", "accepted_by", "accepted_at", "reason", "status"):
            batch_op.drop_column(column)

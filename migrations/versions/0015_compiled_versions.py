"""compiled versions

A version's compiled backend (issue 33): what the parity gate found, the crossover batch
size, and the ONNX artifact's path and sha256; null when the version was never compiled.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("compiled", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("compiled")

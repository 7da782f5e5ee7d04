"""bulk jobs

Batch jobs (bulk scoring of a file) and their chunks: one row per chunk, so progress,
retries and the sweeper's re-queues work from the database (issue 16).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        sa.Column("id_column", sa.String(length=200), nullable=True),
        sa.Column("output_format", sa.String(length=8), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("chunk_rows", sa.Integer(), nullable=False),
        sa.Column("chunks_total", sa.Integer(), nullable=False),
        sa.Column("result_path", sa.String(length=1000), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("owner_key_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_jobs")),
    )
    with op.batch_alter_table("bulk_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bulk_jobs_model_name"), ["model_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_bulk_jobs_status"), ["status"], unique=False)

    op.create_table(
        "bulk_chunks",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["bulk_jobs.id"], name=op.f("fk_bulk_chunks_job_id_bulk_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "index", name=op.f("pk_bulk_chunks")),
    )
    with op.batch_alter_table("bulk_chunks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bulk_chunks_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bulk_chunks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bulk_chunks_status"))
    op.drop_table("bulk_chunks")
    with op.batch_alter_table("bulk_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bulk_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_bulk_jobs_model_name"))
    op.drop_table("bulk_jobs")

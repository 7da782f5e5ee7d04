"""jobs: a BRIN index on completed_at

The sweeper drops a day past retention after moving its stragglers (jobs still queued or
running, or finished within retention) to the default partition; it reads them after DETACH,
under a lock every query on ``jobs`` waits behind (workers/partitions.py). Read by status
alone the day was scanned whole there: seconds of stall for a busy day. With this index and
the status btree the read is a few index probes. A BRIN keeps one summary per 128 pages, so
inserts barely pay for it; SQLite has no BRIN and gets a plain index (its jobs are few).

Building it reads every partition of ``jobs`` once, writes waiting meanwhile (a BRIN build
is one sequential pass, no sort).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 14:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_completed_brin", "jobs", ["completed_at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index("ix_jobs_completed_brin", table_name="jobs")

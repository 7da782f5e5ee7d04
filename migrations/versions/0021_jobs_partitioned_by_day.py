"""jobs partitioned by day

Issue 31: on PostgreSQL ``jobs`` and ``batches`` become tables partitioned by RANGE on
``created_at``, a partition a day (the sweeper creates them ahead and drops whole days past
retention: workers/partitions.py) and a DEFAULT partition, so an insert never fails when no
partition covers its day. A partitioned table's keys must include its partition key, so:

- ``jobs``' key is ``(id, created_at)`` (a new job's id is a UUIDv7 naming its created_at:
  app/db/ids.py), ``batches`` gets the ``created_at`` it lacked and the key ``(id, created_at)``;
- ``jobs.batch_id`` loses its foreign key (it would have to name both columns);
- the Idempotency-Key's uniqueness moves to a table of its own, ``idempotency_keys``.

Converted in place: the existing table is renamed ``<table>_legacy``, its indexes given
names of their own, and attached to the new partitioned parent as one partition covering
every time up to the start of the next day (UTC), behind a CHECK constraint validated
first, so ATTACH does not scan it again under its exclusive lock. Its rows go when that
bound is past retention (old finished ones meanwhile in batches, as the default's). The
new key ``(id, created_at)`` is one index build over the old table, inside this migration.

SQLite (make run's embedded database) keeps plain tables and its row-by-row retention: it
gets the same ``idempotency_keys`` table, ``batches.created_at``, and loses the foreign key
and ``jobs.idempotency_key``, so one set of models describes both.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 13:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

#: Days of partitions made ahead by the migration (the sweeper keeps PARTITION_DAYS_AHEAD).
_AHEAD = 2


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=240), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # Held to the end of the migration's transaction: no key is written during the copy.
        op.execute("LOCK TABLE jobs, batches IN ACCESS EXCLUSIVE MODE")
    op.execute(
        "INSERT INTO idempotency_keys (key, job_id, created_at) "
        "SELECT idempotency_key, id, created_at FROM jobs WHERE idempotency_key IS NOT NULL"
    )
    if op.get_bind().dialect.name == "postgresql":
        _partition_postgresql()
    else:
        _alter_sqlite()


def _alter_sqlite() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_jobs_batch_id_batches", type_="foreignkey")
        batch_op.drop_constraint("uq_jobs_idempotency_key", type_="unique")
        batch_op.drop_column("idempotency_key")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE batches SET created_at = started_at")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_index(batch_op.f("ix_batches_created_at"), ["created_at"], unique=False)


def _partition_postgresql() -> None:
    op.execute("ALTER TABLE jobs DROP CONSTRAINT fk_jobs_batch_id_batches")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT uq_jobs_idempotency_key")
    op.execute("ALTER TABLE jobs DROP COLUMN idempotency_key")
    # batches' time: when the batch started (a batch id names it from now on).
    op.execute("ALTER TABLE batches ADD COLUMN created_at timestamptz")
    op.execute("UPDATE batches SET created_at = started_at")
    op.execute("CREATE INDEX ix_batches_created_at ON batches (created_at)")
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for table in ("jobs", "batches"):
        _convert(table, today)


def _convert(table: str, today: datetime) -> None:
    """``table`` becomes the partitioned parent of its old self (``<table>_legacy``, attached)."""
    conn = op.get_bind()
    legacy = f"{table}_legacy"
    indexes = conn.execute(
        sa.text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = :table AND indexname <> :pk"
        ),
        {"table": table, "pk": f"pk_{table}"},
    ).all()
    newest = conn.execute(sa.text(f"SELECT max(created_at) FROM {table}")).scalar()
    upper = today + timedelta(days=1)
    if newest is not None and newest >= upper:  # a clock ahead: the bound covers every row
        upper = newest.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    op.execute(f"ALTER TABLE {table} RENAME TO {legacy}")
    op.execute(f"ALTER TABLE {legacy} DROP CONSTRAINT pk_{table}")
    for name, _ in indexes:
        op.execute(f"ALTER INDEX {name} RENAME TO {name.replace(table, legacy, 1)}")
    op.execute(f"ALTER TABLE {legacy} ALTER COLUMN created_at SET NOT NULL")
    op.execute(f"ALTER TABLE {legacy} ADD CONSTRAINT pk_{legacy} PRIMARY KEY (id, created_at)")
    op.execute(
        f"CREATE TABLE {table} (LIKE {legacy} INCLUDING DEFAULTS INCLUDING COMPRESSION) "
        "PARTITION BY RANGE (created_at)"
    )
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id, created_at)")
    for _, definition in indexes:  # the same definitions, on the parent (named as before)
        op.execute(definition)
    if newest is None:
        op.execute(f"DROP TABLE {legacy}")
        first = today
    else:
        bound = f"'{upper.isoformat()}'"
        # Validated before ATTACH (which takes the exclusive lock): ATTACH then skips its scan.
        op.execute(
            f"ALTER TABLE {legacy} ADD CONSTRAINT {legacy}_bound CHECK (created_at < {bound}) NOT VALID"
        )
        op.execute(f"ALTER TABLE {legacy} VALIDATE CONSTRAINT {legacy}_bound")
        op.execute(f"ALTER TABLE {table} ATTACH PARTITION {legacy} FOR VALUES FROM (MINVALUE) TO ({bound})")
        op.execute(f"ALTER TABLE {legacy} DROP CONSTRAINT {legacy}_bound")
        first = upper
    day = first
    while day <= today + timedelta(days=_AHEAD):
        after = day + timedelta(days=1)
        op.execute(
            f"CREATE TABLE {table}_p{day:%Y%m%d} PARTITION OF {table} "
            f"FOR VALUES FROM ('{day.isoformat()}') TO ('{after.isoformat()}')"
        )
        day = after
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("LOCK TABLE jobs, batches IN ACCESS EXCLUSIVE MODE")
        for table in ("batches", "jobs"):
            _unpartition(table)
        op.execute("ALTER TABLE batches DROP COLUMN created_at")  # its index goes with it
        # A job kept past its day may have outlived its batch (no foreign key meanwhile).
        op.execute(
            "UPDATE jobs SET batch_id = NULL WHERE batch_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = jobs.batch_id)"
        )
        op.execute(
            "ALTER TABLE jobs ADD CONSTRAINT fk_jobs_batch_id_batches "
            "FOREIGN KEY (batch_id) REFERENCES batches (id)"
        )
    else:
        with op.batch_alter_table("batches", schema=None) as batch_op:
            batch_op.drop_index(batch_op.f("ix_batches_created_at"))
            batch_op.drop_column("created_at")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=240), nullable=True))
    op.execute(
        "UPDATE jobs SET idempotency_key = (SELECT key FROM idempotency_keys k WHERE k.job_id = jobs.id)"
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f("uq_jobs_idempotency_key"), ["idempotency_key"])
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")


def _unpartition(table: str) -> None:
    """``table`` a plain table again, keyed by ``id``, its indexes under their names of before."""
    conn = op.get_bind()
    indexes = (
        conn.execute(
            sa.text(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = :table AND indexname NOT IN (:pk, 'ix_batches_created_at')"
            ),
            {"table": table, "pk": f"pk_{table}"},
        )
        .scalars()
        .all()
    )
    op.execute(f"CREATE TABLE {table}_plain (LIKE {table} INCLUDING DEFAULTS INCLUDING COMPRESSION)")
    op.execute(f"INSERT INTO {table}_plain SELECT * FROM {table}")
    op.execute(f"DROP TABLE {table}")  # and its partitions
    op.execute(f"ALTER TABLE {table}_plain RENAME TO {table}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")
    for definition in indexes:
        op.execute(definition)

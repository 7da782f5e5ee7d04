"""The retention settings (workers/retention.py, workers/partitions.py): fields of
:class:`app.config.Settings`, which inherits them, kept in a module of their own so that
app/config.py stays under the module cap. Read from the environment like every other setting
(JOB_RETENTION_SECONDS, ...; README, Configuration).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetentionSettings:
    job_retention_seconds: int = 7 * 24 * 3600
    """The sweeper deletes finished jobs (their batches, their keys) older than this; 0 keeps them."""

    partition_days_ahead: int = 3
    """PostgreSQL: days of partitions of jobs and batches the sweeper keeps made ahead of today."""

    retention_budget_seconds: float = 10.0
    """Longest one sweep spends deleting expired rows, in batches, before it leaves the rest to the next."""

    feedback_retention_seconds: int = 90 * 24 * 3600
    """The sweeper deletes feedback recorded longer ago than this; 0 keeps it forever."""

    shadow_output_retention_seconds: int = 7 * 24 * 3600
    """The sweeper deletes shadow outputs stored longer ago than this; 0 keeps them forever."""

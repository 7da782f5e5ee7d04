"""What the API and the bulk workers share about a batch job: where its files live, the
states it and its chunks go through, and sending a chunk to a bulk worker.

Under BATCH_ROOT/<job id>/: ``input.parquet`` (the input rewritten at submit, until the
job finishes), ``parts/part-NNNNNN.parquet`` (one per scored chunk, until merged) and
``result.parquet`` or ``result.csv``.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from kombu.exceptions import OperationalError as BrokerError

from app.celery_app import SCORE_CHUNK
from app.services import Services

log = logging.getLogger(__name__)

FINISHED = ("succeeded", "partial", "failed", "cancelled")
CHUNK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
INPUT_FILE = "input.parquet"


def job_dir(settings: Any, job_id: uuid.UUID | str) -> Path:
    return Path(settings.batch_root) / str(job_id)


def part_path(directory: Path, index: int) -> Path:
    return directory / "parts" / f"part-{index:06d}.parquet"


def send_chunk(svc: Services, job_id: uuid.UUID, index: int, model: str, rows: int) -> bool:
    """One bulk task for a chunk (the model and rows ride along so Flower shows them)."""
    try:
        svc.celery.send_task(SCORE_CHUNK, args=[str(job_id), index], kwargs={"model": model, "rows": rows})
    except BrokerError as exc:
        # The chunk is stored as queued: the sweeper sends it again (workers/bulk.py).
        log.warning("could not queue chunk %d of batch job %s: %s", index, job_id, exc)
        return False
    return True

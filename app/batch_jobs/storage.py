"""What the API and the bulk workers share about a batch job: where its files live, the
states it and its chunks go through, and sending a chunk to a bulk worker.

Under BATCH_ROOT/<job id>/ (a directory or an S3 prefix: the Services' ``batches`` store,
app/storage/): ``input/chunk-NNNNNN.parquet`` (the input rewritten at submit, a file per
chunk, until the job finishes), ``parts/part-NNNNNN.parquet`` (one per scored chunk, until
merged) and ``result.parquet`` or ``result.csv``. These functions give the keys, relative to BATCH_ROOT.
"""

from __future__ import annotations

import logging
import uuid

from kombu.exceptions import OperationalError as BrokerError

from app.celery_app import SCORE_CHUNK
from app.services import Services

log = logging.getLogger(__name__)

FINISHED = ("succeeded", "partial", "failed", "cancelled")
CHUNK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def job_dir(job_id: uuid.UUID | str) -> str:
    return str(job_id)


def input_dir(job_id: uuid.UUID | str) -> str:
    return f"{job_id}/input"


def input_key(job_id: uuid.UUID | str, index: int) -> str:
    return f"{job_id}/input/chunk-{index:06d}.parquet"


def parts_dir(job_id: uuid.UUID | str) -> str:
    return f"{job_id}/parts"


def part_key(job_id: uuid.UUID | str, index: int) -> str:
    return f"{job_id}/parts/part-{index:06d}.parquet"


def result_key(job_id: uuid.UUID | str, fmt: str) -> str:
    return f"{job_id}/result.{fmt}"


def send_chunk(svc: Services, job_id: uuid.UUID, index: int, model: str, rows: int) -> bool:
    """One bulk task for a chunk (the model and rows ride along so Flower shows them)."""
    try:
        svc.celery.send_task(SCORE_CHUNK, args=[str(job_id), index], kwargs={"model": model, "rows": rows})
    except BrokerError as exc:
        # The chunk is stored as queued: the sweeper sends it again (workers/bulk.py).
        log.warning("could not queue chunk %d of batch job %s: %s", index, job_id, exc)
        return False
    return True

"""What the API and the bulk workers share about a batch job: where its files live, the
states it and its chunks go through, and sending a chunk to a bulk worker.

Under BATCH_ROOT/<job id>/ (a directory or an S3 prefix: the Services' ``batches`` store,
app/storage/): ``input/chunk-NNNNNN.parquet`` (the input rewritten at submit, a file per
chunk, until the job finishes), ``parts/part-NNNNNN.parquet`` (one per scored chunk, until
merged) and ``result.parquet`` or ``result.csv``. These functions give the keys, relative to BATCH_ROOT.

A job's end is also marked in Redis (the queue's, ``REDIS_URL``), for callers waiting on it
(``GET /v1/batch-jobs/{id}?wait=S``): ``predq:batch-done:{job id}``, a list holding one item,
the final status (``succeeded``, ``partial``, ``failed`` or ``cancelled``, UTF-8), pushed once
the transaction that ends the job has committed and kept ``ENDED_TTL_SECONDS``. A waiter
BLMOVEs it onto itself, so it stays for every other waiter, then reads the job from the
database. The mark is a wake-up, never the truth: lost, a waiter waits out its ``wait``.
"""

from __future__ import annotations

import logging
import uuid

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from app.celery_app import SCORE_CHUNK
from app.long_polls import wait_on
from app.services import Services

log = logging.getLogger(__name__)

FINISHED = ("succeeded", "partial", "failed", "cancelled")
CHUNK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
#: How long a job's end mark stays for waiters (a waiter arriving later reads the job ended).
ENDED_TTL_SECONDS = 300


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


def ended_key(job_id: uuid.UUID | str) -> str:
    return f"predq:batch-done:{job_id}"


def announce_end(svc: Services, job_id: uuid.UUID | str, status: str) -> None:
    """Wake the callers waiting on the job; call after the transaction that ended it commits.

    Best effort: the job has ended in the database, and a waiter that misses the mark
    waits out its ``wait``, then reads it there.
    """
    key = ended_key(job_id)
    try:
        pipe = svc.redis.pipeline(transaction=True)
        pipe.rpush(key, status)
        pipe.expire(key, ENDED_TTL_SECONDS)
        pipe.execute()
    except RedisError as exc:
        log.warning("batch job %s ended %s, but its waiters were not told: %s", job_id, status, exc)


def wait_for_end(svc: Services, job_id: uuid.UUID | str, seconds: float) -> bool:
    """Hold up to ``seconds`` for the job's end mark; whether it came (False too when Redis fails)."""
    return wait_on(svc, ended_key(job_id), seconds, f"batch job {job_id}") is not None

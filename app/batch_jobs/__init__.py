"""Batch jobs: a whole CSV or Parquet file scored by the bulk workers.

At submit the file (an upload spooled to disk, or a path under BATCH_INPUT_ROOT) is
checked and rewritten in chunks of BATCH_CHUNK_ROWS rows (``files.py``); the job and one
row per chunk are stored, and one Celery task per chunk goes to the ``bulk`` queue as soon
as the chunk's file is whole (``intake.py``: scoring starts while the rest is read), which
only bulk workers take, so online batches never wait behind a file (``jobs.py``, the API's
side: create, view, cancel, result). A worker scores a chunk into a part file
and the last one merges the parts into the result, in input order (workers/bulk.py).

``storage.py`` is what the API and the workers share: where a job's files live, the
states a job and its chunks go through, and sending a chunk.
"""

"""A batch job's files in BATCH_ROOT, as the bulk workers read and write them (app/storage/).

A part is written whole or not at all (a temporary name renamed, or one S3 upload), so a
half-written part is never taken for a finished one; the merge reads the parts in chunk
order, one in memory at a time.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from app.batch_jobs import files, storage
from app.batch_jobs.warm_up import warm_up as warm_input_path
from app.storage import ObjectStore


def read_chunk(
    store: ObjectStore, job_id: uuid.UUID, index: int, signature: dict[str, Any]
) -> tuple[np.ndarray, pa.Array | None]:
    """Chunk ``index`` of the job's input, its own file read whole in one request."""
    return files.read_chunk(pa.BufferReader(store.read_bytes(storage.input_key(job_id, index))), signature)


def write_part(store: ObjectStore, key: str, table: pa.Table) -> None:
    """Write a part whole or not at all (app/storage/): readers never see half of one."""
    with store.writing(key) as sink:
        pq.write_table(table, sink, use_dictionary=dictionary_columns(table.schema))


def warm_up() -> None:
    """A chunk's file work before a pool process's first chunk: an input read, checked and
    read back (app/batch_jobs/warm_up.py, which says what pyarrow's first use costs a process),
    a part and a result written in both formats."""
    warm_input_path()
    part = pa.table(
        {"row": np.arange(64), "prediction": np.zeros(64, dtype=np.int64), "probability_0": np.ones(64)}
    )
    pq.write_table(part, io.BytesIO(), use_dictionary=dictionary_columns(part.schema))
    pa_csv.write_csv(part, io.BytesIO())


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The output's columns worth a dictionary: predictions and probabilities (a forest's are
    few distinct values), not the id column (distinct per row: the dictionary tried and given up
    on was a third of the merge's time)."""
    return schema.names[1:]


def merge(store: ObjectStore, parts: list[str], result: str, fmt: str) -> None:
    """The parts, in order, as one file; one part in memory at a time."""
    if fmt == "parquet" and len(parts) == 1:
        store.move(parts[0], result)  # a one-chunk job's part is its result, as it was written
        return
    with store.open_input(parts[0]) as first:
        schema = pq.read_schema(first)
    with store.writing(result) as sink:
        writer = (
            pq.ParquetWriter(sink, schema, use_dictionary=dictionary_columns(schema))
            if fmt == "parquet"
            else pa_csv.CSVWriter(sink, schema)
        )
        with writer:
            for part in parts:
                with store.open_input(part) as source:
                    writer.write_table(pq.read_table(source, use_threads=False))

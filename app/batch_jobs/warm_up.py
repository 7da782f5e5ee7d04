"""A process's first batch job, paid before it comes: pyarrow's file code and memory warmed."""

from __future__ import annotations

import io
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from app.batch_jobs import files


def warm_up() -> None:
    """Read, check and rewrite a chunk's worth of Parquet (and a tiny CSV file), and read the
    chunk back, so that a process's first batch job does not pay for pyarrow's first use of
    that code and memory: in a fresh process the first 1M-row file took 1.3 s to normalize,
    0.96 s of it in the kernel, against 0.4 s for every later one. The API's processes run it
    as they start (app/wsgi.py), the bulk workers' pool processes as they warm
    (workers/warming.py, through workers/bulk_files.py); it takes ~0.1 s and touches only
    memory and a temporary directory."""
    signature = {"feature_names": [f"f{j}" for j in range(20)], "n_features": 20, "dtypes": ["float64"]}
    rng = np.random.default_rng(0)
    table = pa.table({f"f{j}": rng.normal(size=WARM_ROWS) for j in range(20)} | {"id": np.arange(WARM_ROWS)})
    with tempfile.TemporaryDirectory(prefix="predq-warm-") as folder:
        sources = {"parquet": Path(folder) / "warm.parquet", "csv": Path(folder) / "warm.csv"}
        pq.write_table(table, sources["parquet"])
        pa_csv.write_csv(table.slice(0, 64), sources["csv"])
        for fmt, source in sources.items():
            chunk = io.BytesIO()
            _normalize_into(chunk, source, fmt, signature)
            files.read_chunk(pa.BufferReader(chunk.getvalue()), signature)


#: Rows of the Parquet file ``warm_up`` reads: a chunk at the default BATCH_CHUNK_ROWS (a
#: 64-row file left the first 200,000-row job's check and rewrite at 2.4x a later job's).
WARM_ROWS = 50_000


def _normalize_into(chunk: io.BytesIO, source: Path, fmt: str, signature: dict[str, Any]) -> None:
    files.normalize(source, fmt, lambda _: nullcontext(chunk), signature, WARM_ROWS, "id")

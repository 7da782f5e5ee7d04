"""A batch job's CSV input, read in blocks by pyarrow; a value that is not a number named by row
and column (``files.py`` checks and rewrites what is read)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from app.errors import InvalidInput

_CSV_BLOCK_BYTES = 8 << 20


def open_batches(
    source: Path, features: list[str] | None, id_column: str | None
) -> tuple[Any, Callable[[BaseException], BaseException]]:
    """A reader of the file's record batches and how to explain a read error (the bad value named).

    ``features``: the model's feature names, or None for a model fitted without names (every
    column but the id column is a feature)."""
    header = _csv_header(source)
    # Features are read as float64 straight away (inferring types per block could guess
    # int64 from the first block and fail on a later one); the id column keeps its type.
    wanted = set(features) if features is not None else set(header) - {id_column}
    types = {name: pa.float64() for name in header if name in wanted}
    try:
        # Reads the first block: a bad value there raises here, a later one while reading.
        reader = pa_csv.open_csv(
            source,
            read_options=pa_csv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(column_types=types),
        )
    except pa.ArrowInvalid as exc:
        raise _csv_value_error(source, header, types) or exc from None
    return reader, lambda exc: _csv_value_error(source, header, types) or exc


def _csv_header(source: Path) -> list[str]:
    with open(source, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise InvalidInput("the file holds no rows")
    return header


def _csv_value_error(source: Path, header: list[str], numeric: dict[str, Any]) -> InvalidInput | None:
    """The first value of a numeric column that is not a number, row and column named (error path only)."""
    positions = [(i, name) for i, name in enumerate(header) if name in numeric]
    with open(source, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row, values in enumerate(reader):
            for i, name in positions:
                value = values[i].strip() if i < len(values) else ""
                if value == "":
                    continue  # missing: reported as such by the null check
                try:
                    float(value)
                except ValueError:
                    return InvalidInput(
                        f"row {row}, column {name!r}: {value[:40]!r} is not a number", row=row, field=name
                    )
    return None

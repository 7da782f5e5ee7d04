"""What ``Client.score_file`` (and ``predq score``) does besides I/O: what an upload says it
is, and the progress bar while the batch job runs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

FINISHED = ("succeeded", "partial", "failed", "cancelled")
_FILE_TYPES = {
    ".csv": "text/csv",
    ".parquet": "application/vnd.apache.parquet",
    ".pq": "application/vnd.apache.parquet",
}


def upload(
    path: Path, output_path: Path, id_column: str | None, version: int | None, alias: str | None
) -> tuple[str, dict[str, Any]]:
    """The Content-Type and query of a batch job's upload; ValueError for a file that is neither
    CSV nor Parquet. The result is CSV when ``output_path`` ends in .csv, else Parquet."""
    content_type = _FILE_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise ValueError(f"{path} is neither .csv nor .parquet")
    output_format = "csv" if output_path.suffix.lower() == ".csv" else None
    params = {"id_column": id_column, "version": version, "alias": alias, "output_format": output_format}
    return content_type, {k: v for k, v in params.items() if v is not None}


def pause(job: Any, hold: float, poll: float, took: float, remaining: float) -> float:
    """Seconds to sleep before the next read of an unfinished job: none after a long-poll the
    server held, ``poll`` after one it answered at once (a server that ignores ``wait``, or
    whose Redis is down), so the loop polls as it did before long-polls."""
    if job["status"] in FINISHED or took >= hold / 2:
        return 0.0
    return max(0.0, min(poll, remaining - 0.1))


def progress_bar(total: int, shown: bool) -> Callable[[int | None], None]:
    """A progress bar over ``total`` rows: tqdm when installed, else a line on stderr; None closes it."""
    if not shown:
        return lambda done: None
    try:
        from tqdm import tqdm
    except ImportError:
        last = [-1]

        def line(done: int | None) -> None:
            if done is None:
                print(file=sys.stderr)
            elif done != last[0]:
                last[0] = done
                print(f"\r{done:,} / {total:,} rows", end="", file=sys.stderr, flush=True)

        return line
    bar = tqdm(total=total, unit="rows", unit_scale=True)

    def update(done: int | None) -> None:
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return update

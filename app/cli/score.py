"""``models score``: a file scored by a batch job, its result written when it finishes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from app.batch_jobs import files, jobs, storage
from app.cli.common import cli_errors, models_cli
from app.services import current_services


@models_cli.command("score")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The result file.")
@click.option("--id-column", default=None, help="An input column carried to the output (else a row number).")
@click.option("--version", type=int, default=None, help="Score with this version (default: the champion).")
@click.option("--alias", default=None, help="Score with the version this alias points at.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def models_score(
    name: str,
    path: str,
    output: str,
    id_column: str | None,
    version: int | None,
    alias: str | None,
    progress: bool,
) -> None:
    """Score the .csv or .parquet file PATH with NAME as a batch job (bulk workers do the work);
    write the result to OUTPUT (.parquet or .csv, by its suffix) when it finishes."""
    svc = current_services()
    fmt = files.SUFFIXES.get(Path(path).suffix.lower())
    output_format = "csv" if Path(output).suffix.lower() == ".csv" else "parquet"
    if fmt is None:
        raise click.ClickException(f"{path} is neither .csv nor .parquet")
    with cli_errors():
        job = jobs.create(
            svc, name, Path(path), fmt, label=path, version=version, alias=alias,
            id_column=id_column, output_format=output_format,
        )  # fmt: skip
        job_id = job["id"]
        rows, chunks = job["rows"]["total"], job["chunks"]["total"]
        click.echo(f"{name}: batch job {job_id}, {rows} rows in {chunks} chunks")
        job = _follow(svc, job, progress)
    if job["result"] is None:
        raise click.ClickException(f"batch job {job_id} {job['status']}: nothing to write ({job['error']})")
    with open(output, "wb") as out:
        for piece in svc.batches.stream(jobs.result_file(svc, job_id, None)[0]):
            out.write(piece)
    click.echo(f"{name}: batch job {job_id} {job['status']}; {job['rows']['done']} rows written to {output}")
    if job["status"] != "succeeded":
        raise click.ClickException(f"{job['chunks']['failed']} chunks failed: {job['failed_chunks'][:3]}")


def _follow(svc: Any, job: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Wait for a batch job's end (0.5 s at a time while the progress bar moves by the rows scored)."""
    hold = 0.5 if progress else svc.settings.max_wait_seconds
    with tqdm(total=job["rows"]["total"], unit="rows", unit_scale=True, disable=not progress) as bar:
        while job["status"] not in storage.FINISHED:
            asked = time.monotonic()
            job = jobs.get(svc, job["id"], None, wait=hold)
            bar.update(job["rows"]["done"] - bar.n)
            if job["status"] not in storage.FINISHED and time.monotonic() - asked < hold / 2:
                time.sleep(0.5)  # the wait answered at once (Redis down): poll, not in a tight loop
    return job

"""``models import-data|eval-set|imports|accept-import|drop-import|drift-check|retrain|schedule|runs``:
retraining and its data."""

from __future__ import annotations

import json

import click

from app.cli.common import actor, cli_errors, logs_to_stderr, models_cli, read_table
from app.lifecycle import training, training_data, training_runs
from app.services import current_services


@models_cli.command("import-data")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--label", required=True, help="The column holding the true label or value.")
def models_import_data(name: str, path: str, label: str) -> None:
    """Add the labeled rows of a .csv or .parquet file to NAME's training set (quarantined when
    the serving version does not vouch for its labels)."""
    with cli_errors(), logs_to_stderr():
        done = training_data.import_examples(current_services(), name, read_table(path), label, path)
    warnings = f"; checks: {'; '.join(done['problems'])}" if done["problems"] else ""
    if done["status"] == "quarantined":
        click.echo(
            f"{name}: import {done['id']}: {done['rows']} rows QUARANTINED, not trained on: {done['reason']}"
            f"{warnings}\n  accept it: flask --app app models accept-import {name} {done['id']}"
            f"   drop it: flask --app app models drop-import {name} {done['id']}"
        )
        return
    carved = f", {done['evaluation_rows']} more became the evaluation set" if done["evaluation_rows"] else ""
    click.echo(f"{name}: import {done['id']}: {done['rows']} training examples{carved}{warnings}")


@models_cli.command("eval-set")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--label", required=True, help="The column holding the true label or value.")
def models_eval_set(name: str, path: str, label: str) -> None:
    """Make the labeled rows of a .csv or .parquet file NAME's evaluation set (a new version)."""
    with cli_errors():
        made = training_data.register_evaluation_set(current_services(), name, read_table(path), label, path)
    click.echo(f"{name}: evaluation set v{made['version']}, {made['rows']} rows")


@models_cli.command("imports")
@click.argument("name")
def models_imports(name: str) -> None:
    """NAME's imports, newest first: rows, checks, in use, quarantined or dropped."""
    with cli_errors():
        found = training_data.imports(current_services(), name)
    for i in found:
        state = f"dropped {i['dropped_at']:%Y-%m-%d %H:%M}" if i["dropped_at"] else "in use"
        if i["status"] == "quarantined" and not i["dropped_at"]:
            state = "QUARANTINED"
        problems = "; ".join([i["reason"]] * bool(i["reason"]) + i["checks"].get("problems", []))
        problems = problems or "checks passed"
        click.echo(
            f"{i['id']:>6}  {i['created_at']:%Y-%m-%d %H:%M:%S}  {i['rows']:>8} rows  {state:<22} {problems}"
        )


@models_cli.command("accept-import")
@click.argument("name")
@click.argument("import_id", type=int)
def models_accept_import(name: str, import_id: int) -> None:
    """Accept quarantined import IMPORT_ID: later training runs of NAME use its rows."""
    with cli_errors():
        accepted = training_data.accept_import(current_services(), name, import_id, actor())
    carved = (
        f"; evaluation set v{accepted['evaluation_set']} carved from it" if accepted["evaluation_set"] else ""
    )
    click.echo(
        f"{name}: import {import_id} accepted ({accepted['rows']} rows trained on from now on{carved})"
    )


@models_cli.command("drop-import")
@click.argument("name")
@click.argument("import_id", type=int)
def models_drop_import(name: str, import_id: int) -> None:
    """Take import IMPORT_ID's rows out of every later training run of NAME."""
    with cli_errors():
        dropped = training_data.drop_import(current_services(), name, import_id)
    click.echo(f"{name}: import {import_id} dropped ({dropped['rows']} rows no longer trained on)")


@models_cli.command("drift-check")
@click.argument("name")
def models_drift_check(name: str) -> None:
    """Check NAME's champion for drift now (as beat does), store and print the report."""
    from app.lifecycle.drift import check_model

    with cli_errors(), logs_to_stderr():
        report = check_model(current_services(), name)
    click.echo(json.dumps(report, default=str, indent=2))


@models_cli.command("retrain")
@click.argument("name")
@click.option("--here", is_flag=True, help="Train in this process and print the decision (no worker needed).")
def models_retrain(name: str, here: bool) -> None:
    """Start a training run of NAME (queued for a worker unless --here)."""
    svc = current_services()
    with cli_errors():
        if here:
            with logs_to_stderr():  # stdout holds only the decision line
                run = training.retrain(svc, name, trigger="manual")
            click.echo(f"{name}: run {run['id']} {run['status']}: {run['reason']}")
            return
        run_id = training_runs.start_run(svc, name)
    click.echo(f"{name}: training run {run_id} queued (see: flask --app app models runs {name})")


@models_cli.command("schedule")
@click.argument("name")
@click.option(
    "--every", type=float, default=None, help="Retrain every this many seconds (omit: not on a schedule)."
)
@click.option(
    "--on-drift/--not-on-drift", default=False, show_default=True, help="Retrain when drift is found."
)
def models_schedule(name: str, every: float | None, on_drift: bool) -> None:
    """Set when NAME retrains by itself."""
    with cli_errors():
        training_runs.set_schedule(current_services(), name, every, on_drift)
    click.echo(f"{name}: retrain {'every ' + str(every) + ' s' if every else 'not on a schedule'}"
               f"{', and on drift' if on_drift else ''}")  # fmt: skip


@models_cli.command("runs")
@click.argument("name")
def models_runs(name: str) -> None:
    """NAME's training runs, newest first, with their decisions."""
    with cli_errors():
        found = training_runs.runs(current_services(), name)
    for r in found:
        started = f"{r['started_at']:%Y-%m-%d %H:%M:%S}"
        click.echo(f"{started}  {r['id']}  {r['trigger']:<8} {r['status']:<9} {r['reason']}")

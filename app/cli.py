"""``flask --app app db upgrade``, ``... models register|list|promote``, ``... keys create|list|revoke``."""

from __future__ import annotations

import getpass
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup
from tqdm import tqdm

from app import bulk, bulkfiles
from app.auth import SCOPES
from app.errors import PredqError
from app.lifecycle import traffic, training
from app.migrate import upgrade
from app.services import current_services

db_cli = AppGroup("db", help="Database schema (Alembic migrations).")
models_cli = AppGroup("models", help="The model registry.")
keys_cli = AppGroup("keys", help="API keys (shown once at creation, stored hashed).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    upgrade(current_services().settings.database_url, revision)
    click.echo(f"database upgraded to {revision}")


@models_cli.command("register")
@click.option("--name", required=True, help="Model name, e.g. churn.")
@click.option(
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A .skops file, or a joblib/pickle file (anything else).",
)
@click.option(
    "--alias",
    default=None,
    help="Point this alias at the new version (the first version is always champion).",
)
@click.option(
    "--metrics",
    default=None,
    help='JSON object of evaluation metrics, e.g. {"accuracy": 0.93}.',
)
@click.option(
    "--trust",
    multiple=True,
    help="A type a .skops file may hold beyond the trusted defaults (repeat; inspect it first).",
)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Training inputs (.csv or .parquet) to sample as the baseline for drift checks.",
)
@click.option(
    "--card-notes",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A Markdown file: the version's intended use and limitations, for its model card.",
)
def models_register(
    name: str,
    path: str,
    alias: str | None,
    metrics: str | None,
    trust: tuple[str, ...],
    reference: str | None,
    card_notes: str | None,
) -> None:
    """Store an artifact (.skops, or joblib/pickle: it runs code on load) as the next version of NAME."""
    registry = current_services().registry
    with _cli_errors():
        served = registry.register(
            name,
            path,
            alias=alias,
            metrics=json.loads(metrics) if metrics else None,
            trust=list(trust),
            reference=_read_table(reference) if reference else None,
            card_notes=Path(card_notes).read_text() if card_notes else None,
        )
    sig = served.signature
    click.echo(
        f"registered {served.name} v{served.version} ({served.format}) sha256={served.sha256} "
        f"({sig['estimator']}, {sig['task']}, {sig['n_features']} features)"
    )


def _read_table(path: str) -> Any:
    import pandas as pd

    return pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)


@models_cli.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="champion", show_default=True, help="The alias to point at VERSION.")
@click.option("--reason", default="", help="Why, for the audit trail.")
def models_promote(name: str, version: int, alias: str, reason: str) -> None:
    """Point ALIAS of NAME at VERSION (API processes pick it up within REGISTRY_CACHE_SECONDS)."""
    with _cli_errors():
        current_services().registry.set_alias(name, alias, version, _actor(), reason)
    click.echo(f"{name}: {alias} -> v{version}")


@models_cli.command("traffic")
@click.argument("name")
@click.argument("routes", nargs=-1, required=True)
@click.option(
    "--shadow", default=None, help="An alias, or vN for a version, that scores every request unseen."
)
def models_traffic(name: str, routes: tuple[str, ...], shadow: str | None) -> None:
    """Split NAME's traffic: ROUTES like champion=90 challenger=10 (or v7=10 for a version)."""
    svc = current_services()
    with _cli_errors():
        policy = traffic.parse_cli(routes, shadow)
        svc.registry.set_policy(name, policy)
    click.echo(f"{name}: {json.dumps(policy.as_dict())}")


@models_cli.command("rollback")
@click.argument("name")
@click.option("--alias", default="champion", show_default=True, help="The alias to move back.")
@click.option("--reason", default="", help="Why, for the audit trail.")
def models_rollback(name: str, alias: str, reason: str) -> None:
    """Point ALIAS of NAME back at the version it pointed at before its last move."""
    with _cli_errors():
        version = current_services().registry.rollback(name, alias, _actor(), reason)
    click.echo(f"{name}: {alias} -> v{version} (rolled back)")


@models_cli.command("history")
@click.argument("name")
def models_history(name: str) -> None:
    """The audit trail of NAME's aliases, newest first."""
    with _cli_errors():
        events = current_services().registry.alias_history(name)
    for e in events:
        moved = (
            f"v{e['from_version']} -> v{e['to_version']}" if e["from_version"] else f"-> v{e['to_version']}"
        )
        click.echo(
            f"{e['at']:%Y-%m-%d %H:%M:%S}  {e['alias']:<12} {moved:<12} {e['actor']:<20} {e['reason']}"
        )


@models_cli.command("import-data")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--label", required=True, help="The column holding the true label or value.")
def models_import_data(name: str, path: str, label: str) -> None:
    """Add the labeled rows of a .csv or .parquet file to NAME's training set."""
    with _cli_errors():
        done = training.import_examples(current_services(), name, _read_table(path), label, path)
    carved = f", {done['evaluation_rows']} more became the evaluation set" if done["evaluation_rows"] else ""
    warnings = f"; checks: {'; '.join(done['problems'])}" if done["problems"] else ""
    click.echo(f"{name}: import {done['id']}: {done['rows']} training examples{carved}{warnings}")


@models_cli.command("eval-set")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--label", required=True, help="The column holding the true label or value.")
def models_eval_set(name: str, path: str, label: str) -> None:
    """Make the labeled rows of a .csv or .parquet file NAME's evaluation set (a new version)."""
    with _cli_errors():
        made = training.register_evaluation_set(current_services(), name, _read_table(path), label, path)
    click.echo(f"{name}: evaluation set v{made['version']}, {made['rows']} rows")


@models_cli.command("imports")
@click.argument("name")
def models_imports(name: str) -> None:
    """NAME's imports, newest first: rows, checks, dropped or not."""
    with _cli_errors():
        found = training.imports(current_services(), name)
    for i in found:
        state = f"dropped {i['dropped_at']:%Y-%m-%d %H:%M}" if i["dropped_at"] else "in use"
        problems = "; ".join(i["checks"].get("problems", [])) or "checks passed"
        click.echo(
            f"{i['id']:>6}  {i['created_at']:%Y-%m-%d %H:%M:%S}  {i['rows']:>8} rows  {state:<22} {problems}"
        )


@models_cli.command("drop-import")
@click.argument("name")
@click.argument("import_id", type=int)
def models_drop_import(name: str, import_id: int) -> None:
    """Take import IMPORT_ID's rows out of every later training run of NAME."""
    with _cli_errors():
        dropped = training.drop_import(current_services(), name, import_id)
    click.echo(f"{name}: import {import_id} dropped ({dropped['rows']} rows no longer trained on)")


@models_cli.command("card")
@click.argument("name")
@click.option("--version", type=int, default=None, help="The version (default: the champion).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write it here, not to stdout."
)
def models_card(name: str, version: int | None, output: str | None) -> None:
    """NAME's model card, in Markdown (with -o, its importance plot is written beside it)."""
    from app.cards import card, plot

    target = Path(output) if output else None
    plot_path = target.with_name(f"{target.stem}-importance.png") if target else None
    with _cli_errors(), _logs_to_stderr():
        made = card(current_services(), name, version, plot_path.name if plot_path else None)
    if target is None:
        click.echo(made["markdown"])
        return
    target.write_text(made["markdown"])
    importance = made["sections"]["feature_importance"]
    if importance and plot_path is not None:
        plot_path.write_bytes(plot(importance))
    click.echo(f"{name} v{made['version']}: card written to {output}")


@models_cli.command("drift-check")
@click.argument("name")
def models_drift_check(name: str) -> None:
    """Check NAME's champion for drift now (as beat does), store and print the report."""
    from app.lifecycle.drift import check_model

    with _cli_errors(), _logs_to_stderr():
        report = check_model(current_services(), name)
    click.echo(json.dumps(report, default=str, indent=2))


@models_cli.command("retrain")
@click.argument("name")
@click.option("--here", is_flag=True, help="Train in this process and print the decision (no worker needed).")
def models_retrain(name: str, here: bool) -> None:
    """Start a training run of NAME (queued for a worker unless --here)."""
    svc = current_services()
    with _cli_errors():
        if here:
            with _logs_to_stderr():  # stdout holds only the decision line
                run = training.retrain(svc, name, trigger="manual")
            click.echo(f"{name}: run {run['id']} {run['status']}: {run['reason']}")
            return
        run_id = training.start_run(svc, name)
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
    with _cli_errors():
        training.set_schedule(current_services(), name, every, on_drift)
    click.echo(f"{name}: retrain {'every ' + str(every) + ' s' if every else 'not on a schedule'}"
               f"{', and on drift' if on_drift else ''}")  # fmt: skip


@models_cli.command("runs")
@click.argument("name")
def models_runs(name: str) -> None:
    """NAME's training runs, newest first, with their decisions."""
    with _cli_errors():
        found = training.runs(current_services(), name)
    for r in found:
        started = f"{r['started_at']:%Y-%m-%d %H:%M:%S}"
        click.echo(f"{started}  {r['id']}  {r['trigger']:<8} {r['status']:<9} {r['reason']}")


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
    fmt = bulkfiles.SUFFIXES.get(Path(path).suffix.lower())
    output_format = "csv" if Path(output).suffix.lower() == ".csv" else "parquet"
    if fmt is None:
        raise click.ClickException(f"{path} is neither .csv nor .parquet")
    with _cli_errors():
        job = bulk.create(
            svc, name, Path(path), fmt, label=path, version=version, alias=alias,
            id_column=id_column, output_format=output_format,
        )  # fmt: skip
        job_id = job["id"]
        rows, chunks = job["rows"]["total"], job["chunks"]["total"]
        click.echo(f"{name}: batch job {job_id}, {rows} rows in {chunks} chunks")
        job = _follow(svc, job, progress)
    if job["result"] is None:
        raise click.ClickException(f"batch job {job_id} {job['status']}: nothing to write ({job['error']})")
    shutil.copyfile(bulk.result_file(svc, job_id, None)[0], output)
    click.echo(f"{name}: batch job {job_id} {job['status']}; {job['rows']['done']} rows written to {output}")
    if job["status"] != "succeeded":
        raise click.ClickException(f"{job['chunks']['failed']} chunks failed: {job['failed_chunks'][:3]}")


def _follow(svc: Any, job: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Poll a batch job until it finishes, moving a progress bar by the rows scored."""
    with tqdm(total=job["rows"]["total"], unit="rows", unit_scale=True, disable=not progress) as bar:
        while job["status"] not in bulk.FINISHED:
            time.sleep(0.5)
            job = bulk.get(svc, job["id"], None)
            bar.update(job["rows"]["done"] - bar.n)
    return job


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """Log lines to stderr for the block (predq's processes log to stdout), so a command's
    answer is alone on stdout."""
    moved = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout
    ]
    for handler in moved:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in moved:
            handler.setStream(sys.stdout)


@contextmanager
def _cli_errors() -> Iterator[None]:
    """predq's errors as a one-line CLI error, not a traceback."""
    try:
        yield
    except PredqError as exc:
        raise click.ClickException(exc.message) from exc


@models_cli.command("list")
def models_list() -> None:
    """Show every model, its versions and aliases."""
    models = current_services().registry.list_models()
    if not models:
        click.echo("no models registered")
        return
    click.echo(
        f"{'NAME':<24} {'VERSION':>7}  {'ALIASES':<20} {'TASK':<15} {'FEATURES':>8}  {'SHA256':<14} CREATED"
    )
    for model in models:
        for v in model["versions"]:
            sig = v["signature"]
            click.echo(
                f"{model['name']:<24} {v['version']:>7}  {','.join(v['aliases']) or '-':<20} "
                f"{sig['task']:<15} {sig['n_features']:>8}  {v['sha256'][:12]:<14} "
                f"{v['created_at']:%Y-%m-%d %H:%M:%S}"
            )


@keys_cli.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    default=["predict"],
    show_default=True,
    type=click.Choice(SCOPES),
    help="Repeat for several; admin allows everything.",
)
@click.option(
    "--rate-limit", default=None, help="This key's own limit, e.g. '500/second' (default RATE_LIMIT)."
)
def keys_create(name: str, scopes: tuple[str, ...], rate_limit: str | None) -> None:
    """Create an API key called NAME and print its token (the only time it is shown)."""
    with _cli_errors():
        principal, token = current_services().keys.create(name, list(scopes), rate_limit)
    scopes_shown = ", ".join(sorted(principal.scopes))
    click.echo(f"created API key {principal.name!r} with scopes {scopes_shown}", err=True)
    click.echo("store this token now; it cannot be shown again:", err=True)
    click.echo(token)


@keys_cli.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the API key called NAME (API processes stop accepting it within AUTH_CACHE_SECONDS)."""
    with _cli_errors():
        current_services().keys.revoke(name)
    click.echo(f"revoked API key {name!r}")


@keys_cli.command("list")
def keys_list() -> None:
    """Show every API key (never the token)."""
    keys = current_services().keys.list()
    if not keys:
        click.echo("no API keys")
        return
    click.echo(f"{'NAME':<24} {'PREFIX':<12} {'SCOPES':<16} {'RATE LIMIT':<16} {'CREATED':<19}  REVOKED")
    for key in keys:
        revoked = f"{key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "-"
        click.echo(
            f"{key.name:<24} {key.prefix + '…':<12} {','.join(key.scopes):<16} "
            f"{key.rate_limit or 'default':<16} {key.created_at:%Y-%m-%d %H:%M:%S}  {revoked}"
        )


def register_cli(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(models_cli)
    app.cli.add_command(keys_cli)

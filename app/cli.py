"""``flask --app app db upgrade`` and ``flask --app app models register|list``."""

from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.errors import PredqError
from app.migrate import upgrade

db_cli = AppGroup("db", help="Database schema (Alembic migrations).")
models_cli = AppGroup("models", help="The model registry.")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    upgrade(current_app.extensions["predq"].settings.database_url, revision)
    click.echo(f"database upgraded to {revision}")


@models_cli.command("register")
@click.option("--name", required=True, help="Model name, e.g. churn.")
@click.option(
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A joblib artifact.",
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
def models_register(name: str, path: str, alias: str | None, metrics: str | None) -> None:
    """Store a joblib artifact as the next version of NAME."""
    registry = current_app.extensions["predq"].registry
    try:
        served = registry.register(name, path, alias=alias, metrics=json.loads(metrics) if metrics else None)
    except PredqError as exc:
        raise click.ClickException(exc.message) from exc
    sig = served.signature
    click.echo(
        f"registered {served.name} v{served.version} sha256={served.sha256} "
        f"({sig['estimator']}, {sig['task']}, {sig['n_features']} features)"
    )


@models_cli.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="champion", show_default=True, help="The alias to point at VERSION.")
def models_promote(name: str, version: int, alias: str) -> None:
    """Point ALIAS of NAME at VERSION (API processes pick it up within REGISTRY_CACHE_SECONDS)."""
    try:
        current_app.extensions["predq"].registry.set_alias(name, alias, version)
    except PredqError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{name}: {alias} -> v{version}")


@models_cli.command("list")
def models_list() -> None:
    """Show every model, its versions and aliases."""
    models = current_app.extensions["predq"].registry.list_models()
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


def register_cli(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(models_cli)

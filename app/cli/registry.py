"""``models register|compile|list|promote|traffic|rollback|history|card``: the model registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from app.cli.common import actor, cli_errors, logs_to_stderr, models_cli, read_table
from app.errors import PredqError
from app.lifecycle import compiling
from app.registry import pools, traffic
from app.services import current_services


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
@click.option(
    "--eval-set",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Labeled rows (.csv or .parquet) to make the model's evaluation set at once (needs --label).",
)
@click.option("--label", default=None, help="The column of --eval-set holding the true label or value.")
def models_register(
    name: str,
    path: str,
    alias: str | None,
    metrics: str | None,
    trust: tuple[str, ...],
    reference: str | None,
    card_notes: str | None,
    eval_set: str | None,
    label: str | None,
) -> None:
    """Store an artifact (.skops, or joblib/pickle: it runs code on load) as the next version of NAME."""
    svc = current_services()
    registry = svc.registry
    evaluation_rows = read_table(eval_set) if eval_set else None
    if evaluation_rows is not None and (label is None or label not in evaluation_rows.columns):
        raise click.UsageError(f"--eval-set needs --label naming one of its columns (got {label!r})")
    with cli_errors():
        served = registry.register(
            name,
            path,
            alias=alias,
            metrics=json.loads(metrics) if metrics else None,
            trust=list(trust),
            reference=read_table(reference) if reference else None,
            card_notes=Path(card_notes).read_text() if card_notes else None,
        )
    sig = served.signature
    click.echo(
        f"registered {served.name} v{served.version} ({served.format}) sha256={served.sha256} "
        f"({sig['estimator']}, {sig['task']}, {sig['n_features']} features)"
    )
    if evaluation_rows is not None and label is not None:
        from app.lifecycle.training_data import register_evaluation_set

        try:
            made = register_evaluation_set(svc, name, evaluation_rows, label, str(eval_set))
        except PredqError as exc:
            raise click.ClickException(
                f"{name} v{served.version} is registered, but its evaluation set was refused: {exc.message}"
                f" (fix the file, then: flask --app app models eval-set {name} FILE --label COL)"
            ) from exc
        click.echo(f"{name}: evaluation set v{made['version']}, {made['rows']} rows")
    # After the evaluation set, so a compile (COMPILE_ON_REGISTER) checks on its rows too.
    found = compiling.after_registration(svc, served.name, served.version)
    if found is not None:
        click.echo(_compiled_line(served.name, served.version, found))


@models_cli.command("compile")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--tolerance", type=float, default=None, help="The gate's bound (default COMPILE_TOLERANCE).")
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Check this ONNX conversion of your own instead of skl2onnx's (the gate judges it the same).",
)
@click.option("--off", is_flag=True, help="Serve the version with scikit-learn alone again.")
def models_compile(
    name: str, version: int, tolerance: float | None, onnx_path: str | None, off: bool
) -> None:
    """Compile NAME VERSION to ONNX and serve it with onnxruntime if its parity gate passes."""
    svc = current_services()
    with cli_errors(), logs_to_stderr():
        if off:
            found = compiling.turn_off(svc, name, version)
        else:
            onnx = Path(onnx_path).read_bytes() if onnx_path else None
            found = compiling.compile_version(svc, name, version, tolerance, onnx)
    click.echo(_compiled_line(name, version, found))
    if found["status"] not in ("serving", "off"):
        raise SystemExit(1)


def _compiled_line(name: str, version: int, found: dict[str, Any]) -> str:
    if found["status"] == "serving":
        return (
            f"{name} v{version}: serving with onnxruntime for batches up to {found['crossover_rows']} rows; "
            f"gate: {found['rows_checked']} rows, max |difference| {found['max_abs_diff']:.3g} "
            f"(tolerance {found['tolerance']:g})"
        )
    return f"{name} v{version}: {found['status']}, served with scikit-learn: {found.get('reason')}"


@models_cli.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="champion", show_default=True, help="The alias to point at VERSION.")
@click.option("--reason", default="", help="Why, for the audit trail.")
def models_promote(name: str, version: int, alias: str, reason: str) -> None:
    """Point ALIAS of NAME at VERSION (API processes pick it up within REGISTRY_CACHE_SECONDS)."""
    with cli_errors():
        current_services().registry.set_alias(name, alias, version, actor(), reason)
    click.echo(f"{name}: {alias} -> v{version}")


@models_cli.command("pool")
@click.argument("name")
@click.argument("pool")
def models_pool(name: str, pool: str) -> None:
    """Serve NAME's online rows by worker POOL (a worker with -Q inference.POOL); POOL is one the
    POOLS setting lists, or default."""
    svc = current_services()
    with cli_errors():
        svc.registry.require(name)
        pools.check(pool, svc.settings.pools)
        svc.registry.set_pool(name, pool)
    click.echo(f"{name}: pool {pool} (Celery queue {pools.queue_of(pool)})")


@models_cli.command("traffic")
@click.argument("name")
@click.argument("routes", nargs=-1, required=True)
@click.option(
    "--shadow", default=None, help="An alias, or vN for a version, that scores every request unseen."
)
def models_traffic(name: str, routes: tuple[str, ...], shadow: str | None) -> None:
    """Split NAME's traffic: ROUTES like champion=90 challenger=10 (or v7=10 for a version)."""
    svc = current_services()
    with cli_errors():
        policy = traffic.parse_cli(routes, shadow)
        svc.registry.set_policy(name, policy)
    click.echo(f"{name}: {json.dumps(policy.as_dict())}")


@models_cli.command("rollback")
@click.argument("name")
@click.option("--alias", default="champion", show_default=True, help="The alias to move back.")
@click.option("--reason", default="", help="Why, for the audit trail.")
def models_rollback(name: str, alias: str, reason: str) -> None:
    """Point ALIAS of NAME back at the version it pointed at before its last move."""
    with cli_errors():
        version = current_services().registry.rollback(name, alias, actor(), reason)
    click.echo(f"{name}: {alias} -> v{version} (rolled back)")


@models_cli.command("history")
@click.argument("name")
def models_history(name: str) -> None:
    """The audit trail of NAME's aliases, newest first."""
    with cli_errors():
        events = current_services().registry.alias_history(name)
    for e in events:
        moved = (
            f"v{e['from_version']} -> v{e['to_version']}" if e["from_version"] else f"-> v{e['to_version']}"
        )
        click.echo(
            f"{e['at']:%Y-%m-%d %H:%M:%S}  {e['alias']:<12} {moved:<12} {e['actor']:<20} {e['reason']}"
        )


@models_cli.command("card")
@click.argument("name")
@click.option("--version", type=int, default=None, help="The version (default: the champion).")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write it here, not to stdout."
)
def models_card(name: str, version: int | None, output: str | None) -> None:
    """NAME's model card, in Markdown (with -o, its importance plot is written beside it)."""
    from app.lifecycle.cards import card, plot

    target = Path(output) if output else None
    plot_path = target.with_name(f"{target.stem}-importance.png") if target else None
    with cli_errors(), logs_to_stderr():
        made = card(current_services(), name, version, plot_path.name if plot_path else None)
    if target is None:
        click.echo(made["markdown"])
        return
    target.write_text(made["markdown"])
    importance = made["sections"]["feature_importance"]
    if importance and plot_path is not None:
        plot_path.write_bytes(plot(importance))
    click.echo(f"{name} v{made['version']}: card written to {output}")


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

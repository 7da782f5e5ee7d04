"""``db upgrade`` and ``keys create|list|revoke``."""

from __future__ import annotations

import click

from app.access.auth import SCOPES
from app.cli.common import cli_errors, db_cli, keys_cli
from app.db import PRIORITIES
from app.migrate import upgrade
from app.services import current_services


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    upgrade(current_services().settings.database_url, revision)
    click.echo(f"database upgraded to {revision}")


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
@click.option(
    "--default-priority",
    type=click.Choice(PRIORITIES),
    default=None,
    help="Its submits' priority when they name none (default normal).",
)
@click.option(
    "--max-priority",
    type=click.Choice(PRIORITIES),
    default=None,
    help="The highest priority it may ask for; higher is refused 403 (default: any).",
)
def keys_create(
    name: str,
    scopes: tuple[str, ...],
    rate_limit: str | None,
    default_priority: str | None,
    max_priority: str | None,
) -> None:
    """Create an API key called NAME and print its token (the only time it is shown)."""
    with cli_errors():
        principal, token = current_services().keys.create(
            name, list(scopes), rate_limit, default_priority=default_priority, max_priority=max_priority
        )
    scopes_shown = ", ".join(sorted(principal.scopes))
    click.echo(f"created API key {principal.name!r} with scopes {scopes_shown}", err=True)
    click.echo("store this token now; it cannot be shown again:", err=True)
    click.echo(token)


@keys_cli.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke the API key called NAME (API processes stop accepting it within AUTH_CACHE_SECONDS)."""
    with cli_errors():
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

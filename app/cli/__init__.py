"""predq's commands: ``flask --app app db …``, ``… models …``, ``… keys …``.

Each module adds its commands to a group of app/cli/common.py; importing them here is
what registers them.
"""

from __future__ import annotations

from flask import Flask

from app.cli import admin, registry, retraining, score  # noqa: F401  (their commands join the groups)
from app.cli.common import db_cli, keys_cli, models_cli


def register_cli(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(models_cli)
    app.cli.add_command(keys_cli)

"""What every command group shares: the groups, and how a command reports errors and logs."""

from __future__ import annotations

import getpass
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask.cli import AppGroup

from app.errors import PredqError

db_cli = AppGroup("db", help="Database schema (Alembic migrations).")
models_cli = AppGroup("models", help="The model registry.")
keys_cli = AppGroup("keys", help="API keys (shown once at creation, stored hashed).")


def read_table(path: str) -> Any:
    """A .parquet file (else a .csv) as a DataFrame."""
    import pandas as pd

    return pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)


def actor() -> str:
    """Who moved an alias, for the audit trail."""
    return f"cli:{getpass.getuser()}"


@contextmanager
def logs_to_stderr() -> Iterator[None]:
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
def cli_errors() -> Iterator[None]:
    """predq's errors as a one-line CLI error, not a traceback."""
    try:
        yield
    except PredqError as exc:
        raise click.ClickException(exc.message) from exc

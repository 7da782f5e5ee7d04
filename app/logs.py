"""Structured logs: one JSON object per line, carrying what the line is about.

The API binds ``request_id`` for each request, then ``job_id``, ``model`` and ``version``
once it knows them; a worker binds ``batch_id``, ``model`` and ``version`` for a batch and
lists the batch's ``job_ids`` and ``request_ids``. So ``grep <job id>`` over the API's and
the workers' logs follows one job across processes. Every logger (Flask, granian,
Celery, warnings) writes through :class:`JsonLineFormatter`.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_context: ContextVar[dict[str, Any] | None] = ContextVar("predq_log_context", default=None)


def current() -> dict[str, Any]:
    """The fields bound so far (never mutated in place: each change sets a new dict)."""
    return _context.get() or {}


def bind(**fields: Any) -> None:
    """Add ``fields`` to every line logged from here on in this request or task."""
    _context.set({**current(), **fields})


def reset(**fields: Any) -> None:
    """Start a fresh context (a new request), holding only ``fields``."""
    _context.set(dict(fields))


class JsonLineFormatter(JsonFormatter):
    """time, level, logger, message, the bound context, and any ``extra=`` fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        super().__init__(*args, **kwargs)

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        for key, value in current().items():
            log_record.setdefault(key, value)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send every logger to stdout, as JSON lines (``fmt="json"``) or plain text."""
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Python warnings (Celery's, for one) would otherwise print plain text to stderr.
    logging.captureWarnings(True)
    # Alembic announces its plugins at INFO on import (the CLI is imported with the app).
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

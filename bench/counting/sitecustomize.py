"""Counts of what one process asks of PostgreSQL, Redis and Celery, for bench/counts.py.

Python imports ``sitecustomize`` at start from the path; bench.counts puts this folder on
the PYTHONPATH of the API and workers it starts (of either tree it compares) and sets
``PREDQ_COUNT_DIR``. Without that variable it does nothing. Each process keeps its counts
in memory and a thread writes them, when they changed, to ``<dir>/<kind>-<pid>.json``
every 0.2 s (a forked child starts its own counts and thread).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter

DIR = os.environ.get("PREDQ_COUNT_DIR")
_counts: Counter[str] = Counter()
_scripts: dict[str, str] = {}


def _kind() -> str:
    known = os.environ.get("PREDQ_COUNT_KIND")
    if known:
        return known
    with open("/proc/self/cmdline", "rb") as f:
        argv = f.read().decode(errors="replace").split("\0")
    kind = (
        "api"
        if "app.serve" in argv or any("gunicorn" in a for a in argv)
        else ("workers" if any(a.endswith("celery") for a in argv) else "other")
    )
    os.environ["PREDQ_COUNT_KIND"] = kind  # spawned children (granian's workers) inherit it
    return kind


def _dump_forever() -> None:
    last: dict[str, int] = {}
    path = os.path.join(DIR or ".", f"{_kind()}-{os.getpid()}.json")
    while True:
        time.sleep(0.2)
        now = dict(_counts)
        if now != last:
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(now, f)
            os.replace(tmp, path)
            last = now


def _start() -> None:
    threading.Thread(target=_dump_forever, name="predq-counts", daemon=True).start()


def _after_fork() -> None:
    _counts.clear()
    _start()


_SPACE = re.compile(r"\s+")


def _label(statement: str) -> str:
    return _SPACE.sub(" ", statement).strip()[:90]


def _install() -> None:
    import psycopg._connection_base as pg_base
    from redis.client import Pipeline, Redis
    from redis.commands.core import Script
    from redis.connection import AbstractConnection
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        many = executemany and isinstance(parameters, (list, tuple)) and len(parameters) > 1
        _counts[f"sql {'many ' if many else ''}{_label(statement)}"] += 1
        if many:
            _counts[f"sql rows {_label(statement)}"] += len(parameters)

    exec_command = pg_base.BaseConnection._exec_command

    def _exec_command(self, command, *args, **kwargs):  # type: ignore[no-untyped-def]
        word = bytes(command).split(b" ", 1)[0].decode() if isinstance(command, bytes) else "composed"
        _counts[f"pgcmd {word}"] += 1
        return exec_command(self, command, *args, **kwargs)

    pg_base.BaseConnection._exec_command = _exec_command  # type: ignore[method-assign]

    send = AbstractConnection.send_packed_command

    def _send(self, command, check_health=True):  # type: ignore[no-untyped-def]
        _counts["redis round trips"] += 1
        return send(self, command, check_health)

    AbstractConnection.send_packed_command = _send  # type: ignore[method-assign]

    script_init = Script.__init__

    def _script_init(self, registered_client, script):  # type: ignore[no-untyped-def]
        script_init(self, registered_client, script)
        text = script.decode() if isinstance(script, bytes) else str(script)
        _scripts[self.sha] = text.split(":", 1)[0].lstrip("- ").strip()[:30]

    Script.__init__ = _script_init  # type: ignore[method-assign]

    execute_command = Redis.execute_command

    def _execute_command(self, *args, **options):  # type: ignore[no-untyped-def]
        name = str(args[0]).upper() if args else "?"
        if name in ("EVALSHA", "EVAL") and len(args) > 1:
            name += " " + _scripts.get(str(args[1]), "?")
        _counts[f"redis {name}"] += 1
        return execute_command(self, *args, **options)

    Redis.execute_command = _execute_command  # type: ignore[method-assign]

    pipeline_execute = Pipeline.execute

    def _pipeline_execute(self, raise_on_error=True):  # type: ignore[no-untyped-def]
        names = "+".join(sorted({str(args[0]).upper() for args, _ in self.command_stack}))
        _counts[f"redis pipeline {names}"] += 1
        return pipeline_execute(self, raise_on_error)

    Pipeline.execute = _pipeline_execute  # type: ignore[method-assign]

    from celery import signals

    def _published(sender=None, **kwargs):  # type: ignore[no-untyped-def]
        _counts[f"celery publish {sender}"] += 1

    def _ran(sender=None, **kwargs):  # type: ignore[no-untyped-def]
        _counts[f"celery run {getattr(sender, 'name', sender)}"] += 1

    signals.before_task_publish.connect(_published, weak=False)
    signals.task_prerun.connect(_ran, weak=False)


if DIR:
    _install()
    os.register_at_fork(after_in_child=_after_fork)
    _start()

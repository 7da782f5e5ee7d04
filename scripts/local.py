"""Running predq's pieces locally: shared by `make run`, the tests and the benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def process_group(
    argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    """Run ``argv`` in its own process group, logging to ``log_path``; stop the whole group after.

    A group, because the API server and Celery fork children that must go down with them.
    """
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def wait_for_http(
    url: str,
    procs: Iterable[subprocess.Popen],
    timeout: float = 90.0,
    ready: Callable[[int], bool] = lambda status: status < 500,
) -> None:
    """Return once ``url`` answers with a status ``ready`` accepts; fail early if a process dies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready(httpx.get(url, timeout=2).status_code):
                return
        except httpx.HTTPError:
            pass
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited before {url} was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} was not ready after {timeout:.0f} s")
        time.sleep(0.3)


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one run; yields its URL and drops it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

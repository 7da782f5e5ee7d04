"""Point prometheus_client at a metrics directory shared by one server's processes.

The API's HTTP server and Celery's prefork pool run each request or batch in a child process, so
predq uses the client library's multiprocess mode: every process writes its samples to
files in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (or the worker's exporter) adds
them up. prometheus_client reads that variable when it is *imported*, so this module must not
import it, and :func:`use_multiprocess_metrics` runs before predq creates any metric.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def use_multiprocess_metrics(kind: str) -> Path:
    """A fresh directory for this server (``<VAR_DIR>/metrics/<kind>-<pid>``), exported to children.

    Directories left by servers that are no longer running are removed, so restarts do
    not add up old counts. An explicit PROMETHEUS_MULTIPROC_DIR is used as given.
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        _choose_value_class_again()
        return Path(given)
    from app.config import Settings

    root = Path(Settings.from_env().var_dir) / "metrics"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    directory = root / f"{kind}-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    _choose_value_class_again()
    return directory


def _choose_value_class_again() -> None:
    """Re-read the directory if prometheus_client was imported before we could set it.

    The ``celery`` command loads Flower as a plugin, and Flower imports prometheus_client,
    so in a worker the library has already picked its single-process value class by the
    time ``workers`` runs. Metrics made from here on (all of predq's) use the right one.
    """
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]  # set at import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

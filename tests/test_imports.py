"""Importing predq's worker modules has no side effects: only the entry point builds the app."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import settings_env

# What a fresh interpreter reports after running the import under test.
REPORT = (
    "import json, os, sys; print(json.dumps({'entry_point_loaded': 'workers.main' in sys.modules,"
    " 'metrics_dir': os.environ.get('PROMETHEUS_MULTIPROC_DIR')}))"
)


def _fresh_interpreter(statement: str, settings, tmp_path) -> dict:
    env = settings_env(settings) | {"VAR_DIR": str(tmp_path / "var")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", f"{statement}; {REPORT}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_worker_modules_builds_no_app_and_touches_no_directory(settings, tmp_path):
    found = _fresh_interpreter(
        "import workers, workers.batching, workers.bulk, workers.sweeper, workers.tasks", settings, tmp_path
    )

    assert found == {"entry_point_loaded": False, "metrics_dir": None}
    assert list(tmp_path.iterdir()) == [], "nothing written where the process runs or under VAR_DIR"


def test_celery_finds_the_app_through_the_entry_point(settings, tmp_path):
    # What `celery -A workers.main` does: find the Celery app in the entry point.
    found = _fresh_interpreter(
        "from celery.app.utils import find_app; assert find_app('workers.main').main == 'predq'",
        settings,
        tmp_path,
    )

    assert found["entry_point_loaded"] is True
    assert found["metrics_dir"] is not None and (tmp_path / "var").is_dir(), "the worker's metrics directory"

"""Server processes exempt their startup objects from full garbage collections (app/gcfreeze.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts.local import ROOT
from tests.helpers import settings_env

# Each prints how many objects the hook left frozen, in a fresh interpreter.
HOOKS = {
    "granian worker (app.wsgi)": "import gc, app.wsgi; print(gc.get_freeze_count())",
    "gunicorn post_worker_init": (
        "import gc, runpy; from app import create_app; app = create_app();"
        " runpy.run_path('gunicorn.conf.py')['post_worker_init'](None); print(gc.get_freeze_count())"
    ),
    "celery worker_process_init": (
        "import gc, workers.main; from celery.signals import worker_process_init;"
        " worker_process_init.send(sender=None); print(gc.get_freeze_count())"
    ),
}


@pytest.mark.parametrize("hook", HOOKS)
def test_a_server_process_freezes_what_it_started_with(settings, hook):
    done = subprocess.run(
        [sys.executable, "-c", HOOKS[hook]],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    frozen = int(done.stdout.strip().splitlines()[-1])
    assert frozen > 50_000, f"{hook} froze {frozen} objects; the app alone holds far more"

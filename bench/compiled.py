"""The benchmark's model compiled (issue 33): its gate's record, and its parity on the
benchmark's own rows and on 50,000 random rows, beside the uncompiled figures.

    python -m bench.compiled        # the parity figures alone, in process (a minute)

``bench.run`` and ``bench.ab --compile`` call :func:`compile_bench_model` on their stage.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench import loadgen


def compile_bench_model(env: dict[str, str], model_name: str) -> dict[str, Any]:
    """Compile the registered benchmark model (version 1) as an admin would; its record."""
    from app import create_app
    from app.config import Settings
    from app.lifecycle.compiling import compile_version

    app = create_app(Settings.from_env(env))
    with app.app_context():
        record = compile_version(app.extensions["predq"], model_name, 1)
    print(
        f"  compiled: {record['status']}, crossover {record.get('crossover_rows')} rows, gate max |diff| "
        f"{record.get('max_abs_diff')} on {record.get('rows_checked')} rows ({record.get('reason') or 'passed'})",
        flush=True,
    )
    return record


def parity(env: dict[str, str], model_name: str, model: Any, rows: int = 50_000) -> dict[str, Any]:
    """The compiled version against ``model.predict_proba``/``predict`` on the benchmark's kind of
    rows (as its load generator makes them) and on ``rows`` random ones."""
    from app import create_app
    from app.config import Settings

    app = create_app(Settings.from_env(env))
    loaded = app.extensions["predq"].registry.loaded(model_name, 1)
    if loaded.compiled is None:
        return {"compiled": False}
    rng = np.random.default_rng(33)
    found = {}
    for label, X in (
        ("benchmark rows", rng.normal(0, 1.5, size=(rows, loadgen.N_FEATURES))),
        ("random rows", rng.uniform(-10, 10, size=(rows, loadgen.N_FEATURES))),
    ):
        predictions, proba = loaded.compiled.predict_arrays(model, loaded.served.signature, X)
        found[label] = {
            "rows": rows,
            "max_abs_diff": float(np.abs(proba - model.predict_proba(X)).max()),
            "predictions_equal": bool((predictions == model.predict(X)).all()),
        }
    return {"compiled": True, **found}


def main() -> int:
    from bench.run import ADMIN_URL, MODEL, prepare
    from scripts.local import scratch_database

    work = Path(tempfile.mkdtemp(prefix="predq-bench-compiled-"))
    with scratch_database(ADMIN_URL, "predq_bench_compiled") as database_url:
        stage = prepare(database_url, work)
        record = compile_bench_model(stage.env, MODEL)
        print(json.dumps({"record": record, "parity": parity(stage.env, MODEL, stage.model)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

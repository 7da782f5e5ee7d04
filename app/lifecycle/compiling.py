"""Compiling a version: convert it, run the parity gate, measure the crossover, and switch the
version to its compiled backend only when the gate passed (DESIGN §5: exact, or it does not
ship). Opt-in: ``flask --app app models compile NAME VERSION``, or COMPILE_ON_REGISTER.

What it finds is recorded on the version (``compiled``: status, reason, gate figures,
crossover, timings, the ONNX artifact and its sha256) whatever the outcome, so
``GET /v1/models/{name}`` and the model card say why a version is or is not compiled:

- ``serving``: the gate passed and onnxruntime was faster up to ``crossover_rows``;
- ``refused``: the gate found a difference (the reason says how many rows, how far);
- ``unsupported``: skl2onnx cannot convert the model, or there are no rows to check;
- ``not_faster``: the gate passed but onnxruntime was slower at every measured size;
- ``off``: an admin turned it off (``--off``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from app.lifecycle.evaluation import latest_set
from app.predictions.queue import PREFIX
from app.scoring import compiled
from app.services import Services

log = logging.getLogger(__name__)


def compile_version(
    svc: Services, name: str, version: int, tolerance: float | None = None, onnx: bytes | None = None
) -> dict[str, Any]:
    """Compile ``name`` ``version`` and record the outcome (returned). ``onnx``: a conversion of
    the caller's own to check instead of skl2onnx's (the gate judges it all the same)."""
    tolerance = svc.settings.compile_tolerance if tolerance is None else tolerance
    estimator, served = svc.registry.load(name, version)
    record: dict[str, Any] = {
        "backend": compiled.BACKEND,
        "tolerance": tolerance,
        "compiled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "libraries": {lib: package_version(lib) for lib in ("skl2onnx", "onnxruntime", "onnx")},
    }
    samples = _own_rows(svc, name, version)
    if not samples:
        return _finish(svc, name, version, record | {
            "status": "unsupported",
            "reason": "no rows to check it on: register the version with a reference sample"
                      " (--reference) or import an evaluation set for the model",
        })  # fmt: skip
    try:
        data = onnx if onnx is not None else compiled.convert(estimator, served.signature)
        model = compiled.CompiledModel(data, crossover_rows=0)
    except Exception as exc:  # skl2onnx raises many kinds for what it cannot convert
        reason = f"{type(estimator).__name__} cannot be converted: {type(exc).__name__}: {exc}"
        return _finish(svc, name, version, record | {"status": "unsupported", "reason": reason[:1000]})
    rows = compiled.gate_rows(samples)
    record["input_dtype"] = str(model.dtype)
    try:
        gate = compiled.parity_gate(estimator, served.signature, model, rows, tolerance)
    except Exception as exc:  # the graph runs but not on these rows (a wrong shape, a type)
        gate = compiled.GateResult(
            False, float("nan"), len(rows), f"the graph failed: {type(exc).__name__}: {exc}"
        )
    record |= {"max_abs_diff": gate.max_abs_diff, "rows_checked": gate.rows_checked}
    if not gate.passed:
        return _finish(svc, name, version, record | {"status": "refused", "reason": gate.reason})
    crossover, timings = compiled.measure_crossover(estimator, served.signature, model, rows)
    record |= {"crossover_rows": crossover, "timings_ms": timings}
    if crossover == 0:
        reason = "onnxruntime was slower than scikit-learn at every measured batch size"
        return _finish(svc, name, version, record | {"status": "not_faster", "reason": reason})
    return _finish(svc, name, version, record | {"status": "serving", "reason": None}, data)


def turn_off(svc: Services, name: str, version: int) -> dict[str, Any]:
    """Serve ``name`` ``version`` with scikit-learn alone again (its record kept, marked off)."""
    _, served = svc.registry.load(name, version)
    record = dict(served.compiled or {}) | {"status": "off", "reason": "turned off by an admin"}
    return _finish(svc, name, version, record)


def after_registration(svc: Services, name: str, version: int) -> dict[str, Any] | None:
    """COMPILE_ON_REGISTER: compile a version just registered or retrained. Never fails the
    registration: what went wrong is recorded on the version (or logged)."""
    if not svc.settings.compile_on_register:
        return None
    try:
        return compile_version(svc, name, version)
    except Exception:
        log.exception("compiling %s v%s after its registration failed", name, version)
        return None


def _own_rows(svc: Services, name: str, version: int) -> list[np.ndarray]:
    """The version's reference sample and the model's newest evaluation set (up to a bound)."""
    found = []
    reference = svc.registry.reference(name, version)
    if reference is not None and len(reference):
        found.append(reference)
    evaluation = latest_set(svc, name)
    if evaluation is not None and len(evaluation.x):
        found.append(evaluation.x[: compiled.MOST_EVALUATION_ROWS])
    return found


def _finish(
    svc: Services, name: str, version: int, record: dict[str, Any], onnx: bytes | None = None
) -> dict[str, Any]:
    svc.registry.record_compiled(name, version, record, onnx)
    _forget_cached_outputs(svc, name, version)
    log.info("compiled %s v%s: %s (%s)", name, version, record["status"], record.get("reason") or "passed")
    return svc.registry.resolve(name, version=version).compiled or record


def _forget_cached_outputs(svc: Services, name: str, version: int) -> None:
    """Cached outputs of the version were computed by the backend it had: a version turned off
    (or on) answers from its new backend from now on, not from the cache."""
    try:
        keys = list(svc.cache.scan_iter(match=f"{PREFIX}:*cache:{name}:{version}:*", count=1000))
        for start in range(0, len(keys), 1000):
            svc.cache.delete(*keys[start : start + 1000])
    except RedisError as exc:
        log.warning("could not clear the cached outputs of %s v%s: %s", name, version, exc)

"""The compiled backend: a version's model as an ONNX graph run by onnxruntime, only where a
parity gate showed it answers as the scikit-learn model does (README, Compiled inference).

- :func:`convert`: the model to ONNX with skl2onnx, its input in the dtype scikit-learn
  computes in (float32 for trees and their ensembles, which cast their input so; float64
  otherwise);
- :class:`CompiledModel`: one onnxruntime session (one thread) and the batch size up to
  which it is faster than scikit-learn (its crossover, measured when compiled);
- :func:`gate_rows` and :func:`parity_gate`: the rows checked and the check itself;
  :func:`measure_crossover`: where onnxruntime stops being faster.

Compiling a version (the gate, the record, the artifact) is app/lifecycle/compiling.py.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline

from app.scoring.inference import predict_arrays

BACKEND = "onnxruntime"
#: skl2onnx's operator sets: ai.onnx.ml 3 holds the tree ensembles onnxruntime runs fastest.
OPSET = {"": 18, "ai.onnx.ml": 3}
#: Batch sizes the crossover is measured at (a bulk chunk, 50,000 rows, lies past the largest).
CROSSOVER_SIZES = (1, 8, 32, 128, 256, 512, 1024, 4096)
#: Made-up rows the gate adds to the version's own (resampled with noise).
SYNTHETIC_ROWS = 4000
#: Evaluation-set rows the gate reads at most.
MOST_EVALUATION_ROWS = 20_000


def reads_float32(estimator: Any) -> bool:
    """Whether the model (a pipeline's last step) casts its input to float32, as trees do."""
    last = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    return type(last).__module__.startswith(("sklearn.ensemble", "sklearn.tree"))


def convert(estimator: Any, signature: dict[str, Any]) -> bytes:
    """The model as an ONNX graph (input ``X``; outputs ``label`` and ``probabilities`` for a
    classifier, no ZipMap); raises whatever skl2onnx raises for a model it cannot convert."""
    from skl2onnx import to_onnx  # noqa: PLC0415  (only an admin's compile needs it)

    dtype = np.float32 if reads_float32(estimator) else np.float64
    last = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    options = {id(last): {"zipmap": False}} if signature.get("has_proba") else None
    sample = np.zeros((1, signature["n_features"]), dtype=dtype)
    graph = to_onnx(estimator, sample, options=options, target_opset=OPSET)
    return bytes(graph.SerializeToString())


class CompiledModel:
    """A version's ONNX graph in one onnxruntime session, one thread (the pool is the parallelism)."""

    backend = BACKEND

    def __init__(self, onnx: bytes, crossover_rows: int) -> None:
        import onnxruntime as ort  # noqa: PLC0415  (a worker that serves no compiled version never loads it)

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.dtype = np.dtype(np.float32 if first.type == "tensor(float)" else np.float64)
        self.outputs = [output.name for output in self.session.get_outputs()]
        self.crossover_rows = crossover_rows

    def serves(self, rows: int) -> bool:
        """Whether a batch of ``rows`` rows goes to onnxruntime (up to the measured crossover)."""
        return rows <= self.crossover_rows

    def predict_arrays(
        self, estimator: Any, signature: dict[str, Any], matrix: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """As :func:`app.scoring.inference.predict_arrays`, from the ONNX graph.

        A classifier's label is the scikit-learn model's class at the argmax of the graph's
        probabilities, as scikit-learn computes it (ONNX's own label can break an exact
        tie another way); the gate checked every label against scikit-learn's predict.
        """
        with np.errstate(over="ignore"):  # a value beyond float32 becomes infinity, refused below
            rows = np.ascontiguousarray(matrix, dtype=self.dtype)
        if not np.isfinite(rows).all():
            raise ValueError(
                f"Input X contains NaN, infinity or a value too large for dtype('{self.dtype}')."
            )
        if signature.get("has_proba"):
            (proba,) = self.session.run(["probabilities"], {self.input_name: rows})
            proba = np.asarray(proba, dtype=np.float64)
            return estimator.classes_.take(np.argmax(proba, axis=1)), proba
        (out,) = self.session.run([self.outputs[0]], {self.input_name: rows})
        if signature["task"] == "classification":
            return np.asarray(out).ravel().astype(estimator.classes_.dtype), None
        return np.asarray(out, dtype=np.float64).ravel(), None


def load(onnx: bytes, served: Any) -> CompiledModel:
    """The registry's compiled loader (app/services.py): a session for a version's checked ONNX bytes."""
    return CompiledModel(onnx, int((served.compiled or {}).get("crossover_rows") or 0))


def gate_rows(samples: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """The rows the gate checks: the version's own (reference sample, evaluation set), as many
    again made from them (resampled, each feature moved by noise of 1% of its spread), and
    the extremes (each feature at its least and largest value seen, the others at their
    median; every feature at its least, every one at its largest).

    Rows holding NaN or infinity are left out: predq refuses them at the API and in batch
    files, and skl2onnx's forests do not treat NaN as scikit-learn does (sklearn-onnx#1253).
    """
    base = np.vstack([np.asarray(s, dtype=np.float64) for s in samples if s is not None and len(s)])
    base = base[np.isfinite(base).all(axis=1)]
    rng = np.random.default_rng(seed)
    picked = base[rng.integers(0, len(base), SYNTHETIC_ROWS)]
    noisy = picked + rng.standard_normal(picked.shape) * (0.01 * base.std(axis=0))
    low, high, middle = base.min(axis=0), base.max(axis=0), np.median(base, axis=0)
    n = base.shape[1]
    extremes = np.repeat(middle[None, :], 2 * n + 2, axis=0)
    extremes[np.arange(n), np.arange(n)] = low
    extremes[n + np.arange(n), np.arange(n)] = high
    extremes[-2], extremes[-1] = low, high
    return np.vstack([base, noisy, extremes])


@dataclass(frozen=True)
class GateResult:
    """What the parity gate found: passed or not, why not, the largest difference, rows checked."""

    passed: bool
    max_abs_diff: float
    rows_checked: int
    reason: str | None = None


def parity_gate(
    estimator: Any, signature: dict[str, Any], compiled: CompiledModel, rows: np.ndarray, tolerance: float
) -> GateResult:
    """Every prediction of ``compiled`` equal to the scikit-learn model's, and every probability
    (a regressor's value: relative to its size, at least 1) within ``tolerance``, on ``rows``."""
    expected, expected_proba = predict_arrays(estimator, signature, rows)
    got, got_proba = compiled.predict_arrays(estimator, signature, rows)
    if signature["task"] == "regression":
        scale = np.maximum(1.0, np.abs(expected.astype(np.float64)))
        diff = np.nan_to_num(np.abs(got - expected) / scale, nan=np.inf)  # NaN is no match
        worst = float(diff.max())
        bad = int(np.count_nonzero(diff > tolerance))
        reason = f"{bad} of {len(rows)} values differ by more than {tolerance:g} (at most {worst:.3g})"
        return GateResult(not bad, worst, len(rows), None if not bad else reason)
    worst = float(np.abs(got_proba - expected_proba).max()) if got_proba is not None else 0.0
    labels = int(np.count_nonzero(got != expected))
    far = (
        int(np.count_nonzero(np.abs(got_proba - expected_proba).max(axis=1) > tolerance))
        if got_proba is not None
        else 0
    )
    if labels or far:
        reason = (
            f"{labels} of {len(rows)} predictions differ; {far} rows have a probability more than"
            f" {tolerance:g} away (at most {worst:.3g})"
        )
        return GateResult(False, worst, len(rows), reason)
    return GateResult(True, worst, len(rows))


def measure_crossover(
    estimator: Any, signature: dict[str, Any], compiled: CompiledModel, rows: np.ndarray, repeats: int = 5
) -> tuple[int, dict[str, list[float]]]:
    """The largest measured batch size up to which onnxruntime was faster at every size (0: at
    none), and the median milliseconds of each backend by size (alternating calls).

    scikit-learn's side is predq's own inference step (a forest's trees asked directly),
    which is what the compiled backend replaces."""
    rng = np.random.default_rng(1)
    timings: dict[str, list[float]] = {}
    crossover, still_faster = 0, True
    for size in CROSSOVER_SIZES:
        batch = rows[rng.integers(0, len(rows), size)]
        calls = (
            partial(predict_arrays, estimator, signature, batch),
            partial(compiled.predict_arrays, estimator, signature, batch),
        )
        spent: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeats + 1):
            for call, times in zip(calls, spent, strict=True):
                tick = time.perf_counter()
                call()
                times.append(time.perf_counter() - tick)
        sklearn_ms, onnx_ms = (1000 * statistics.median(times[1:]) for times in spent)  # the first warms up
        timings[str(size)] = [round(sklearn_ms, 4), round(onnx_ms, 4)]
        still_faster = still_faster and onnx_ms < sklearn_ms
        if still_faster:
            crossover = size
    return crossover, timings

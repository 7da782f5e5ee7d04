"""The peer users compare predq with: BentoML serving the same model file synchronously.

    bench/.venv-bentoml/bin/bentoml serve bench.peers.bentoml_service:Forest --port 8470

Two worker processes (as predq's API has) and adaptive batching: BentoML gathers
concurrent requests into one ``predict_proba`` call, as predq's workers do, but answers
in the request itself and stores nothing. MODEL_PATH names the joblib file `make bench`
trains. Runs in its own virtualenv (bench/requirements-bentoml.txt): BentoML's pins are
not predq's.
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np


# No access log: predq's request log is off in the benchmark too.
@bentoml.service(workers=2, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class Forest:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["MODEL_PATH"])

    @bentoml.api(batchable=True, max_batch_size=1024, max_latency_ms=1000)
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(inputs)

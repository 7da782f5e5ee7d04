"""Model steps for tests: one that takes its time (so a fault test can strike in the middle of
a batch), one that refuses marked rows, one that counts its calls.

Kept in a module of its own with no test imports: worker processes unpickle a reference to
``slow_identity`` and must import it cheaply.
"""

from __future__ import annotations

import os
import time

import numpy as np

SECONDS_PER_CALL = 0.4


def slow_identity(x: np.ndarray) -> np.ndarray:
    time.sleep(SECONDS_PER_CALL)
    return x


#: A row holding this value makes :func:`refuse_marked_rows` raise: a model error that
#: passes every check at submit (a test of a chunk that fails alone).
MARKER = 666.0


def refuse_marked_rows(x: np.ndarray) -> np.ndarray:
    if (np.asarray(x) == MARKER).any():
        raise ValueError("this model refuses rows holding the marker value")
    return x


#: How many times :func:`counting_identity` ran in this process: a test that runs its worker
#: in-process proves by it that a job was never run (the model was never called on it).
CALLS = {"calls": 0, "rows": 0}

#: A worker process started with this variable set also writes a line per call (its row
#: count) to the file it names: the count a test reads across processes.
CALLS_FILE_VARIABLE = "PREDQ_TEST_MODEL_CALLS_FILE"


def counting_identity(x: np.ndarray) -> np.ndarray:
    CALLS["calls"] += 1
    CALLS["rows"] += len(x)
    path = os.environ.get(CALLS_FILE_VARIABLE)
    if path:
        with open(path, "a") as calls:
            calls.write(f"{len(x)}\n")
    return x

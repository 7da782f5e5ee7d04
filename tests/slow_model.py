"""A model step that takes its time, so a fault test can strike in the middle of a batch.

Kept in a module of its own with no test imports: worker processes unpickle a reference to
``slow_identity`` and must import it cheaply.
"""

from __future__ import annotations

import time

import numpy as np

SECONDS_PER_CALL = 0.4


def slow_identity(x: np.ndarray) -> np.ndarray:
    time.sleep(SECONDS_PER_CALL)
    return x

"""The hot path stays readable: no function on it longer than a screen (issue 20)."""

from __future__ import annotations

import ast

import pytest

from scripts.local import ROOT

# Every module a prediction passes through: decoding and submit in the API, the row queue,
# a worker's batch steps.
HOT_PATH = [
    "app/api/predictions.py",
    "app/api/decoding.py",
    "app/submit.py",
    "app/submission.py",
    "app/submit_stored.py",
    "app/submit_deferred.py",
    "app/jobs.py",
    "app/signature.py",
    "app/rqueue.py",
    "app/queue_items.py",
    "app/job_view.py",
    "workers/batching.py",
    "workers/batch_work.py",
    "workers/batch_store.py",
    "workers/batch_publish.py",
]
MAX_LINES = 60


@pytest.mark.parametrize("module", HOT_PATH)
def test_no_function_on_the_hot_path_is_longer_than_sixty_lines(module):
    tree = ast.parse((ROOT / module).read_text())
    long = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    }
    assert not long, f"{module}: {long}"

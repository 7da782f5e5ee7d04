"""The house stays readable: no module over 300 lines, no function on the hot path longer
than a screen (issue 20)."""

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


MAX_MODULE_LINES = 300
MODULES = sorted(
    str(path.relative_to(ROOT)) for folder in ("app", "workers") for path in (ROOT / folder).rglob("*.py")
)


@pytest.mark.parametrize("module", MODULES)
def test_no_module_of_the_service_is_longer_than_three_hundred_lines(module):
    lines = len((ROOT / module).read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it by what its parts do"

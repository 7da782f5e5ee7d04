"""The README's Open Inference Protocol (V2) example, run as written against a running predq
(the API under granian and a real worker, as tests/conftest.py starts them), so the README
cannot drift from what predq and tritonclient do.

Only what names this machine changes: the address, the API key; the model it names is
registered here, fitted as the example's tensor needs (four features, a bare array).
"""

from __future__ import annotations

import re
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from scripts.local import ROOT
from tests.helpers import stored_estimator

SECTION = "## The Open Inference Protocol (V2)"


def readme_v2_snippet() -> str:
    """The first Python block of the README's V2 section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION) :]
    found = re.search(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    assert found, f"no Python example in the README's section {SECTION!r}"
    return found.group(1)


def fill_in(snippet: str, replacements: dict[str, str]) -> str:
    for placeholder, value in replacements.items():
        assert snippet.count(placeholder) == 1, f"the README's example no longer holds {placeholder!r} once"
        snippet = snippet.replace(placeholder, value)
    return snippet


@pytest.fixture(scope="module")
def churn(svc, tmp_path_factory) -> str:
    """The model the example calls: four features, fitted on an array (one tensor, input-0)."""
    iris = load_iris()
    path = Path(tmp_path_factory.mktemp("readme")) / "churn.joblib"
    joblib.dump(RandomForestClassifier(n_estimators=10, random_state=0).fit(iris.data, iris.target), path)
    svc.registry.register("churn", path)
    return "churn"


def test_the_readmes_v2_example_runs_as_written_against_a_running_predq(
    api_server, tokens, worker, svc, churn
):
    code = fill_in(
        readme_v2_snippet(),
        {
            "127.0.0.1:8000": api_server.removeprefix("http://"),
            "Bearer pq_...": f"Bearer {tokens['predict']}",
        },
    )
    np.random.seed(20261205)  # the example draws its rows from NumPy's global generator

    namespace: dict[str, object] = {}
    exec(compile(code, "README.md (V2 example)", "exec"), namespace)

    np.random.seed(20261205)
    rows = np.random.rand(2, 4)
    result = namespace["result"]
    estimator = stored_estimator(svc, churn)
    assert result.as_numpy("predict").tolist() == estimator.predict(rows).tolist()  # type: ignore[attr-defined]
    assert result.as_numpy("predict_proba").tolist() == estimator.predict_proba(rows).tolist()  # type: ignore[attr-defined]

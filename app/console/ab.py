"""The model page's A/B report, from per-version aggregates that SQL sums (app/console/queries.py)
rather than every labeled row in Python: the same tests as app/lifecycle/feedback.py's
``ab_report`` (pooled two-proportion z-test on accuracy, Welch's t-test on absolute errors),
whose inputs are exactly these sums, so the page costs the same with a million labels."""

from __future__ import annotations

import math
from typing import Any

from scipy import stats


def report(a: dict[str, Any], b: dict[str, Any], minimum: int) -> dict[str, Any]:
    """``a`` and ``b``: {"version", "n", "metric": "accuracy"|"mae", "value", "square"} (square: mean
    squared error, regressors only)."""
    short = [f"v{arm['version']} has {arm['n']}" for arm in (a, b) if arm["n"] < minimum]
    classifier = a["metric"] == "accuracy"
    out: dict[str, Any] = {"a": a, "b": b, "metric": "accuracy" if classifier else "mean absolute error"}
    if short:
        out["verdict"] = (
            f"not enough data: {' and '.join(short)} labeled rows; at least {minimum} per version"
        )
        return out
    p_value = _z_test(a, b) if classifier else _welch(a, b)
    leader = a if (a["value"] > b["value"]) == classifier else b
    better = "higher" if classifier else "lower"
    significance = "significant" if p_value < 0.05 else "not significant"
    out["verdict"] = (
        f"v{leader['version']} is {better} on {out['metric']}; the difference is {significance} "
        f"at the 5% level (p = {p_value:.4g})"
    )
    return out


def _z_test(a: dict[str, Any], b: dict[str, Any]) -> float:
    pooled = (a["value"] * a["n"] + b["value"] * b["n"]) / (a["n"] + b["n"])
    spread = math.sqrt(pooled * (1 - pooled) * (1 / a["n"] + 1 / b["n"]))
    z = (a["value"] - b["value"]) / spread if spread > 0 else 0.0
    return float(2 * stats.norm.sf(abs(z)))


def _welch(a: dict[str, Any], b: dict[str, Any]) -> float:
    def std(arm: dict[str, Any]) -> float:
        variance = max(0.0, arm["square"] - arm["value"] ** 2) * arm["n"] / (arm["n"] - 1)
        return math.sqrt(variance)

    result = stats.ttest_ind_from_stats(
        a["value"], std(a), a["n"], b["value"], std(b), b["n"], equal_var=False
    )
    return float(result.pvalue)

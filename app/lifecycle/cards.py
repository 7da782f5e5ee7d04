"""Model cards: what the registry knows of a version, as a card built with ``skops.card``.

A card holds the estimator and its parameters, the signature, the training data window
and lineage, the metrics recorded at registration or training, live quality from
feedback, the newest drift report, the version's traffic share, the intended use and
limitations its registrant wrote (``--card-notes``), and global feature importance: the
mean absolute SHAP contribution of each feature over the version's reference sample
(when the model has an exact explainer and a reference sample), as a table and a bar chart
(PNG, drawn by matplotlib: ``GET .../card/importance.png``, or beside the CLI's card file).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from skops.card import Card

from app.errors import NotFound
from app.lifecycle import drift, feedback
from app.registry import explainability, held
from app.services import Services

#: Where the REST card's Markdown finds its plot: relative to .../versions/V/card.
PLOT_LINK = "card/importance.png"
#: The plot shows this many features at most, the largest.
PLOT_FEATURES = 20


class ImportanceUnavailable(NotFound):
    code = "importance_unavailable"


_NO_NOTES = (
    "Not given: register the version with `--card-notes notes.md` to say what it is for and where it fails."
)


def card(
    svc: Services, name: str, version: int | None = None, plot_link: str | None = PLOT_LINK
) -> dict[str, Any]:
    """The card of ``name`` ``version`` (default: the champion): its sections as data, and as Markdown.

    The Markdown shows the importance plot from ``plot_link`` (None: the table only).
    """
    served = svc.registry.resolve(name, version=version)
    estimator, _ = svc.registry.load(name, served.version)
    described = svc.registry.describe(name)
    entry = next(v for v in described["versions"] if v["version"] == served.version)
    sections = {
        "model": {
            "name": name,
            "version": served.version,
            "estimator": served.signature.get("estimator"),
            "format": served.format,
            "sha256": served.sha256,
            "registered_at": str(entry["created_at"]),
            "aliases": entry["aliases"],
            "traffic_share": _traffic_share(described["traffic_policy"], served.version, entry["aliases"]),
            "backend": entry["backend"],
            "loaded_on": (held.holders_or_none(svc.redis, name, [served.version]) or {}).get(served.version),
        },
        "compiled": entry["compiled"],
        "intended_use_and_limitations": svc.registry.card_notes(name, served.version) or _NO_NOTES,
        "signature": served.signature,
        "training": entry["lineage"] or {"registered": "by hand (no training run)"},
        "metrics": entry["metrics"],
        "live_quality": next(
            (q for q in feedback.quality(svc, name)["versions"] if q.get("version") == served.version), None
        ),
        "drift": next(
            (r for r in drift.latest_reports(svc, name, 50) if r["model_version"] == served.version), None
        ),
        "feature_importance": _importance(svc, name, served, estimator),
    }
    return {
        "model": name,
        "version": served.version,
        "sections": _plain(sections),
        "markdown": _markdown(estimator, sections, plot_link),
    }


def importance_png(svc: Services, name: str, version: int) -> bytes:
    """The version's importance plot; ImportanceUnavailable (404) when its card has none."""
    served = svc.registry.resolve(name, version=version)
    estimator, _ = svc.registry.load(name, served.version)
    importance = _importance(svc, name, served, estimator)
    if not importance:
        raise ImportanceUnavailable(
            f"{name} v{served.version} has no feature importance: it needs an exact explainer and a"
            " reference sample",
            model=name,
            version=served.version,
        )
    return plot(importance)


def plot(importance: list[dict[str, Any]]) -> bytes:
    """A horizontal bar per feature (the largest PLOT_FEATURES, largest on top), as PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global state shared between threads

    shown = importance[:PLOT_FEATURES][::-1]
    figure = Figure(figsize=(6.4, 1.2 + 0.3 * len(shown)))
    axes = figure.subplots()
    axes.barh([row["feature"] for row in shown], [row["mean_abs_shap"] for row in shown], color="#4c72b0")
    axes.set_xlabel("mean |SHAP| over the reference sample")
    axes.set_title("Global feature importance")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _traffic_share(policy: dict[str, Any], version: int, aliases: list[str]) -> float | None:
    """The share of unpinned requests this version serves under the model's policy (None: none set)."""
    routes = policy.get("routes") or []
    total = sum(r.get("weight", 0) for r in routes)
    if not total:
        return None
    mine = sum(r.get("weight", 0) for r in routes if r.get("version") == version or r.get("alias") in aliases)
    return round(mine / total, 4)


# A version's importance never changes (its artifact and reference sample are fixed), and
# computing it runs shap over up to 500 rows: seconds to minutes on a deep forest. So each
# API process computes it once per version (held in the registry's ``importances``, bounded
# like the loaded versions), not once per card and again for its plot.
_NONE = "none"  # a cached "not computable" (the cache holds no None)


def _importance(svc: Services, name: str, served: Any, estimator: Any) -> list[dict[str, Any]] | None:
    """Mean |SHAP| per feature over the reference sample, largest first (None when not computable)."""
    key = (name, served.version, served.sha256)
    cache = svc.registry.derived("importances")
    held = cache.get(key)
    if held is None:
        held = _compute_importance(svc, name, served, estimator) or _NONE
        cache.put(key, held, 0)  # a few numbers per feature: counted, not weighed
    return None if isinstance(held, str) else held


def _compute_importance(svc: Services, name: str, served: Any, estimator: Any) -> list[dict[str, Any]] | None:
    reference = svc.registry.reference(name, served.version)
    if reference is None or explainability.refusal(served.signature) is not None:
        return None
    from app.scoring.explain import explanations  # shap: only when a card asks
    from app.scoring.inference import predict_arrays

    sample = reference[:500]
    predictions = predict_arrays(estimator, served.signature, sample)[0].tolist()
    found = explanations(
        estimator, served, sample, predictions, lambda: reference, cache=svc.registry.derived("explainers")
    )
    names = list(found[0]["contributions"])
    means = {n: float(np.mean([abs(e["contributions"][n]) for e in found])) for n in names}
    return [
        {"feature": n, "mean_abs_shap": round(v, 6)} for n, v in sorted(means.items(), key=lambda kv: -kv[1])
    ]


def _markdown(estimator: Any, sections: dict[str, Any], plot_link: str | None) -> str:
    model = sections["model"]
    built = Card(estimator, model_diagram=False, template=None)
    built.add(**{
        "Model": f"{model['name']} v{model['version']}: `{model['estimator']}` ({model['format']}, sha256 "
                 f"`{model['sha256'][:16]}…`), registered {model['registered_at']}; aliases: "
                 f"{', '.join(model['aliases']) or 'none'}; traffic share: "
                 f"{'not routed by a policy' if model['traffic_share'] is None else model['traffic_share']}; "
                 f"loaded on {'?' if model['loaded_on'] is None else model['loaded_on']} worker processes.",
        "Intended use and limitations": sections["intended_use_and_limitations"],
        "Inference backend": f"{model['backend']}. " + _json_block(
            sections["compiled"], "Not compiled: every output is the scikit-learn model's own, bit for bit."
        ),
        "Signature": _json_block(sections["signature"]),
        "Training": _json_block(sections["training"]),
        "Metrics at registration or training": _json_block(sections["metrics"], "None recorded."),
        "Live quality (feedback)": _json_block(sections["live_quality"], "No feedback yet."),
        "Drift (newest report)": _json_block(sections["drift"], "No drift report yet."),
    })  # fmt: skip
    built.add_hyperparams(section="Hyperparameters", description="The estimator's parameters.")
    importance = sections["feature_importance"]
    if importance:
        built.add_table(
            description="Mean absolute SHAP contribution over the reference sample.",
            **{"Global feature importance": {
                "feature": [row["feature"] for row in importance],
                "mean |SHAP|": [row["mean_abs_shap"] for row in importance],
            }},
        )  # fmt: skip
        if plot_link:
            built.add_plot(
                **{"Global feature importance/Plot": plot_link}, alt_text="Global feature importance"
            )
    else:
        missing = "Not computed: the version needs an exact explainer and a reference sample."
        built.add(**{"Global feature importance": missing})
    return built.render()


def _json_block(value: Any, empty: str = "None.") -> str:
    if not value:
        return empty
    return "```json\n" + json.dumps(_plain(value), indent=2, default=str) + "\n```"


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))

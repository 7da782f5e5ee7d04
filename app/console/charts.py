"""The console's charts: SVG drawn by matplotlib on the server (a ``Figure`` each, no pyplot
state shared between request threads), inlined in the page, so they need no JavaScript."""

from __future__ import annotations

import io
from collections.abc import Sequence

from markupsafe import Markup

_OK, _FAILED, _LINE = "#2a7d2e", "#b3261e", "#1f5fa8"


def _svg(figure: object, label: str) -> Markup:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")  # type: ignore[attr-defined]
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # no XML prolog or DOCTYPE inside HTML
    # An image with a name for screen readers; the numbers are in a table beside it.
    text = text.replace("<svg ", f'<svg role="img" aria-label="{Markup.escape(label)}" ', 1)
    return Markup(text)


def throughput(minutes: Sequence[tuple[int, dict[str, int]]]) -> Markup:
    """Jobs finished per minute over the last hour: succeeded and failed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.2))
    axes = figure.subplots()
    x = [i - len(minutes) + 1 for i in range(len(minutes))]
    axes.plot(x, [m["ok"] for _, m in minutes], color=_OK, label="predictions")
    axes.plot(x, [m["failed"] for _, m in minutes], color=_FAILED, label="failures")
    axes.set_xlabel("minutes ago")
    axes.set_ylabel("jobs / minute")
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper left", frameon=False)
    figure.tight_layout()
    return _svg(figure, "Predictions and failures per minute over the last hour")


def drift(points: Sequence[tuple[str, float]]) -> Markup:
    """Share of drifted features per drift report, oldest first."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.2))
    axes = figure.subplots()
    axes.plot(range(len(points)), [share for _, share in points], marker="o", color=_LINE)
    axes.set_xticks(range(len(points)), [when[5:16] for when, _ in points], rotation=30, fontsize=7)
    axes.set_ylabel("drifted share")
    axes.set_ylim(0, 1)
    figure.tight_layout()
    return _svg(figure, "Share of drifted features per drift check, oldest first")


def quality(series: dict[int, list[tuple[str, float, int]]], metric: str) -> Markup:
    """Live quality per version per day, one line a version."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.2))
    axes = figure.subplots()
    for version, points in sorted(series.items()):
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"v{version}")
    axes.set_ylabel(metric)
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(loc="best", frameon=False)
    figure.tight_layout()
    return _svg(figure, f"Live {metric} per version per day")

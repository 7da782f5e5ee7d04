"""The console's charts: SVG drawn by matplotlib on the server (a ``Figure`` each, no pyplot
state shared between request threads), inlined in the page, so they need no JavaScript.

Drawing one takes 50-300 ms, more than a page may spend, so each chart is kept per process
for the data it was drawn from (an LRU of :data:`KEPT` per chart; the inputs are tuples): the
throughput chart's minutes are finished ones, which never change, so it is drawn once a
minute; drift and quality charts again only when a report or a day's feedback changes."""

from __future__ import annotations

import io
from functools import lru_cache

from markupsafe import Markup

_OK, _FAILED, _LINE = "#2a7d2e", "#b3261e", "#1f5fa8"
KEPT = 32

Minutes = tuple[tuple[int, tuple[int, int]], ...]
"""(unix minute, (succeeded, failed)), oldest first."""


def _svg(figure: object, label: str) -> Markup:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")  # type: ignore[attr-defined]
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # no XML prolog or DOCTYPE inside HTML
    # An image with a name for screen readers; the numbers are in a table beside it.
    text = text.replace("<svg ", f'<svg role="img" aria-label="{Markup.escape(label)}" ', 1)
    return Markup(text)


@lru_cache(maxsize=KEPT)
def throughput(minutes: Minutes) -> Markup:
    """Jobs finished per minute over the last hour's finished minutes: succeeded and failed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.2))
    axes = figure.subplots()
    x = [i - len(minutes) + 1 for i in range(len(minutes))]
    axes.plot(x, [ok for _, (ok, _) in minutes], color=_OK, label="predictions")
    axes.plot(x, [failed for _, (_, failed) in minutes], color=_FAILED, label="failures")
    axes.set_xlabel("minutes ago")
    axes.set_ylabel("jobs / minute")
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper left", frameon=False)
    figure.tight_layout()
    return _svg(figure, "Predictions and failures per minute over the last hour")


@lru_cache(maxsize=KEPT)
def drift(points: tuple[tuple[str, float], ...]) -> Markup:
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


@lru_cache(maxsize=KEPT)
def quality(series: tuple[tuple[int, tuple[tuple[str, float, int], ...]], ...], metric: str) -> Markup:
    """Live quality per version per day, one line a version."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.2))
    axes = figure.subplots()
    days = sorted({p[0] for _, points in series for p in points})
    position = {day: i for i, day in enumerate(days)}
    for version, points in series:
        axes.plot([position[p[0]] for p in points], [p[1] for p in points], marker="o", label=f"v{version}")
    axes.set_xticks(range(len(days)), [day[5:] for day in days])
    axes.set_ylabel(metric)
    axes.tick_params(axis="x", labelsize=7)
    axes.legend(loc="best", frameon=False)
    figure.tight_layout()
    return _svg(figure, f"Live {metric} per version per day")

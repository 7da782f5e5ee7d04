"""Rows in (lists, dicts, numpy arrays, pandas DataFrames) and outputs out (lists or a DataFrame)."""

from __future__ import annotations

import uuid
from typing import Any


def is_frame(rows: Any) -> bool:
    return type(rows).__name__ == "DataFrame" and hasattr(rows, "to_dict")


def to_inputs(rows: Any) -> list[Any]:
    """The JSON rows: a DataFrame's rows as objects keyed by column (its columns are the
    model's feature names), an array's as lists, lists and dicts as they are."""
    if is_frame(rows):
        return rows.to_dict(orient="records")
    if hasattr(rows, "tolist") and not isinstance(rows, list):
        return rows.tolist()
    return list(rows)


def submit_request(
    inputs: list[Any],
    version: int | None,
    alias: str | None,
    routing_key: str | None,
    idempotency_key: str | None,
    hold: float,
) -> dict[str, Any]:
    """The body, headers and query of a submit (both clients send the same): the caller's
    Idempotency-Key or a fresh one, so every retry of this submit is the same request."""
    body: dict[str, Any] = {"inputs": inputs}
    for key, value in (("version", version), ("alias", alias), ("routing_key", routing_key)):
        if value is not None:
            body[key] = value
    return {
        "json": body,
        "headers": {"Idempotency-Key": idempotency_key or f"predq-client-{uuid.uuid4()}"},
        "params": {"wait": hold} if hold > 0 else None,
    }


def split(inputs: list[Any], size: int) -> list[list[Any]]:
    return [inputs[i : i + size] for i in range(0, len(inputs), size)] or [[]]


def to_frame(outputs: list[dict[str, Any]], index: Any) -> Any:
    """Outputs as a DataFrame aligned to ``index``: ``prediction``, then ``probability_<class>`` columns."""
    import pandas as pd

    data: dict[str, list[Any]] = {"prediction": [o["prediction"] for o in outputs]}
    for label in (outputs[0].get("probabilities") or {}) if outputs else ():
        data[f"probability_{label}"] = [o["probabilities"][label] for o in outputs]
    return pd.DataFrame(data, index=index)


def fewer_rows_allowed(error: Any, max_rows: int) -> bool:
    """Whether ``error`` is the server's 413 for too many rows, with a smaller limit than ``max_rows``."""
    limit = error.details.get("limit")
    # "too_many_rows": the code servers before the one 413 code sent for rows.
    too_many_rows = error.code in ("payload_too_large", "too_many_rows") and "rows" in error.details
    return too_many_rows and isinstance(limit, int) and 0 < limit < max_rows

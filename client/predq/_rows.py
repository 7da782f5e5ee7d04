"""Rows in (lists, dicts, numpy arrays, pandas DataFrames) and outputs out (lists or a DataFrame)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from predq.types import Output

EXPLAIN_CHOICES = (False, True, "all")


@dataclass(frozen=True)
class SubmitOptions:
    """What a submit asks for besides its rows (both clients send the same)."""

    version: int | None = None
    alias: str | None = None
    routing_key: str | None = None
    idempotency_key: str | None = None
    explain: bool | str = False
    """True: each output carries its row's explanation; "all": every class's too (by_class)."""
    priority: str | None = None
    """high, normal or low; None: the API key's default."""
    deadline_ms: int | None = None
    """How long the job may wait to start; None: the server's default, unless ``follow_call``."""
    callback_url: str | None = None
    """Where the server posts the finished job (a signed webhook; see the README's Webhooks)."""
    follow_call: bool = False
    """No ``deadline_ms`` given: send what is left of the call's own deadline (``predict``),
    so the server does no work no one waits for."""

    def __post_init__(self) -> None:
        if self.explain not in EXPLAIN_CHOICES:
            raise ValueError(f"explain must be False, True or 'all', not {self.explain!r}")


def is_frame(rows: Any) -> bool:
    return type(rows).__name__ == "DataFrame" and hasattr(rows, "to_dict")


def to_inputs(rows: Any) -> list[Any]:
    """The JSON rows: a DataFrame's rows as objects keyed by column (its columns are the
    model's feature names), an array's as lists, lists and dicts as they are."""
    if is_frame(rows):
        return cast("list[Any]", rows.to_dict(orient="records"))
    if hasattr(rows, "tolist") and not isinstance(rows, list):
        return cast("list[Any]", rows.tolist())
    return list(rows)


#: The longest deadline_ms a server takes (a day).
MAX_DEADLINE_MS = 86_400_000


def submit_request(
    inputs: list[Any], options: SubmitOptions, hold: float, remaining: float | None = None
) -> dict[str, Any]:
    """The body, headers and query of a submit: the caller's Idempotency-Key or a fresh one,
    so every retry of this submit is the same request (the server's key ignores priority and
    deadline). ``remaining``: seconds left of the call's deadline (sent with ``follow_call``)."""
    body: dict[str, Any] = {"inputs": inputs}
    deadline_ms = options.deadline_ms
    if deadline_ms is None and options.follow_call and remaining is not None:
        deadline_ms = min(MAX_DEADLINE_MS, max(1, int(remaining * 1000)))
    if deadline_ms is not None:
        body["deadline_ms"] = deadline_ms
    for key in ("version", "alias", "routing_key", "priority", "callback_url"):
        if (value := getattr(options, key)) is not None:
            body[key] = value
    if options.explain:
        body["explain"] = True
        if options.explain == "all":
            body["explain_classes"] = "all"
    return {
        "json": body,
        "headers": {"Idempotency-Key": options.idempotency_key or f"predq-client-{uuid.uuid4()}"},
        "params": {"wait": hold} if hold > 0 else None,
    }


def split(inputs: list[Any], size: int) -> list[list[Any]]:
    return [inputs[i : i + size] for i in range(0, len(inputs), size)] or [[]]


def to_frame(outputs: list[Output], index: Any) -> Any:
    """Outputs as a DataFrame aligned to ``index``: ``prediction``, then ``probability_<class>``
    columns, then (when asked for) ``explanation``, each row's as the server sent it."""
    import pandas as pd

    data: dict[str, list[Any]] = {"prediction": [o["prediction"] for o in outputs]}
    for label in (outputs[0].get("probabilities") or {}) if outputs else ():
        data[f"probability_{label}"] = [o["probabilities"][label] for o in outputs]
    if outputs and "explanation" in outputs[0]:
        data["explanation"] = [o["explanation"] for o in outputs]
    return pd.DataFrame(data, index=index)


def fewer_rows_allowed(error: Any, max_rows: int) -> bool:
    """Whether ``error`` is the server's 413 for too many rows, with a smaller limit than ``max_rows``."""
    limit = error.details.get("limit")
    # "too_many_rows": the code servers before the one 413 code sent for rows.
    too_many_rows = error.code in ("payload_too_large", "too_many_rows") and "rows" in error.details
    return too_many_rows and isinstance(limit, int) and 0 < limit < max_rows

"""A submit: routed (the model's traffic policy picks a version unless the request names
one) and validated, then handed to its road, stored or deferred (the package's docstring
draws both)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from app.batch_jobs import files
from app.errors import ExplanationUnsupported, PayloadTooLarge
from app.predictions.cache import ROWS_PER_KEY, keys_for
from app.predictions.deferred import submit_deferred
from app.predictions.idempotency import find_by_key, owned_key, replay, request_hash_of
from app.predictions.stored import peek_at, submit_stored
from app.predictions.submission import Submission
from app.registry import explainability, traffic
from app.registry.signature import checked_matrix, largest_value, rows_to_matrix
from app.services import Services
from app.webhooks.endpoints import check_callback

if TYPE_CHECKING:
    from app.access.ratelimit import RateCharge
    from app.registry.versions import ServedVersion


def submit(
    svc: Services,
    name: str,
    inputs: list[Any] | pa.Table | np.ndarray,
    *,
    version: int | None = None,
    alias: str | None = None,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    routing_key: str | None = None,
    wait: float = 0.0,
    rate: RateCharge | None = None,
    owner: int | None = None,
    explain: str | None = None,
    priority: str = "normal",
    deadline_ms: int | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """Store a job for ``inputs`` (JSON rows, an Arrow table of the model's features, or a float64
    matrix of them in the model's order: /v2's tensors) and queue it; returns the job's public
    view, the finished job's when it finishes within ``wait`` seconds. ``rate`` is the request's
    rate-limit count, sent with the cache lookup (RateLimited when spent); ``owner`` the
    submitting API key's id (None with auth off); ``request_id`` names the request in the
    worker's log; ``explain`` ("predicted" or "all") asks for each row's explanation;
    ``priority`` and ``deadline_ms``: app/predictions/steering.py; ``callback_url`` where its
    end is announced (a stored job).
    """
    served, shadow = _route(svc, name, version, alias, routing_key)
    matrix, hashed = _validated(svc, served, inputs, explain)
    check_callback(svc.engine, svc.settings, callback_url, owner)  # before anything is stored
    rows = _carried(matrix)
    sub = Submission(
        name,
        served.version,
        rows,
        # With the cache off there is nothing to look up, so no row is hashed.
        keys_for(name, served.version, matrix, explain) if svc.settings.cache_ttl_seconds > 0 else [],
        request_id,
        owner,
        explain,
        rate,
        wait,
        shadow=shadow, priority=priority, deadline_ms=deadline_ms, classes=served.class_names,
        callback_url=callback_url)  # fmt: skip
    if idempotency_key is not None:
        # It hashes what the client sent, not the route drawn for it: a replay may draw another.
        request_hash = request_hash_of(name, version, alias, routing_key, hashed or matrix.tolist())
        sub = _with_key(sub, idempotency_key, request_hash)
        existing = find_by_key(svc, sub.stored_key or "")
        if existing is not None:
            return replay(existing, request_hash, idempotency_key)
    if _may_defer(sub):
        deferred = submit_deferred(svc, sub)
        if deferred.view is not None:
            return deferred.view
        assert deferred.peek is not None, "a Deferred without a view carries a peek"
        peek = deferred.peek
    else:
        peek = peek_at(svc, sub)
    return submit_stored(svc, sub, peek)


def _carried(matrix: np.ndarray) -> list[list[float]] | np.ndarray:
    """The rows as the job carries them: lists, or for a request of many rows its matrix, which
    travels as its bytes to the worker (app/predictions/items.py), no number formatted or parsed."""
    return matrix if len(matrix) > ROWS_PER_KEY else matrix.tolist()


def _may_defer(sub: Submission) -> bool:
    """Whether the submit may take the deferred road: it waits, and none of these needs the
    job's row at once: an Idempotency-Key (its row is what finds a replay), a shadow (its
    outputs refer to the job's row), explanations (rare: kept off this road), a callback (its
    outbox row is written with the job's row)."""
    return (
        sub.wait > 0
        and sub.stored_key is None
        and not sub.explain
        and sub.shadow is None
        and sub.callback_url is None
    )


def _route(
    svc: Services, name: str, version: int | None, alias: str | None, routing_key: str | None
) -> tuple[ServedVersion, traffic.Route | None]:
    """The version that serves the request, and the one its model's policy shadows (if any).

    A request naming neither version nor alias is routed by the policy (sticky by
    ``routing_key``); one that names either is served as named, with no shadow.
    """
    if version is not None or alias is not None:
        return svc.registry.resolve(name, version=version, alias=alias), None
    policy = svc.registry.policy(name)
    route = traffic.choose(policy, name, routing_key)
    return svc.registry.resolve(name, version=route.version, alias=route.alias), policy.shadow


def _validated(
    svc: Services, served: ServedVersion, inputs: list[Any] | pa.Table | np.ndarray, explain: str | None
) -> tuple[np.ndarray, list[Any] | None]:
    """The rows as the model's float64 matrix, and the JSON rows as sent (None for Arrow and
    matrices: an Idempotency-Key then hashes the matrix's rows). Raises 413/422 naming what is wrong."""
    refused = explainability.refusal(served.signature) if explain else None
    if refused is not None:
        raise ExplanationUnsupported(
            f"{served.name} v{served.version}: {refused}", estimator=served.signature.get("estimator")
        )
    if explain:
        n_rows = inputs.num_rows if isinstance(inputs, pa.Table) else len(inputs)
        _check_explained_rows(n_rows, svc.settings.explain_max_rows)
    signature = served.signature
    if isinstance(inputs, np.ndarray):
        max_rows = svc.settings.max_rows_per_request
        return checked_matrix(inputs, signature["feature_names"], max_rows, largest_value(signature)), None
    if not isinstance(inputs, list):  # an Arrow table: its columns are the features
        return files.table_matrix(inputs, signature, svc.settings.max_rows_per_request), None
    matrix = rows_to_matrix(
        inputs,
        signature["n_features"],
        served.feature_index,
        svc.settings.max_rows_per_request,
        largest_value(signature),
    )
    return matrix, inputs


def _with_key(sub: Submission, idempotency_key: str, request_hash: str) -> Submission:
    return replace(
        sub,
        idempotency_key=idempotency_key,
        stored_key=owned_key(idempotency_key, sub.owner),
        request_hash=request_hash,
    )


def _check_explained_rows(n_rows: int, limit: int) -> None:
    if n_rows > limit:
        raise PayloadTooLarge(
            f"{n_rows} rows sent with explain; at most {limit} per request that asks for explanations"
            " (EXPLAIN_MAX_ROWS)",
            rows=n_rows,
            limit=limit,
        )

"""A model's training data: imports of labeled rows (each can be quarantined, accepted or
dropped), its evaluation set, and the window of examples a training run fits on
(app/lifecycle/training.py).

Each import is a ``training_imports`` row. Its labels are checked first against the serving
version (app/lifecycle/label_check.py): one that fails is **quarantined**, stored with the
reason and the figures but neither trained on nor carved, until an admin accepts it
(:func:`accept_import`) or drops it. A model's first accepted import, when it has no
evaluation set yet, gives ``training_eval_share`` of its rows to one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from sqlalchemy import Connection, delete, func, insert, or_, select, update

from app.db import TrainingExample, TrainingImport, newest_rows, utcnow
from app.errors import ImportDropped, InvalidInput, NotFound
from app.lifecycle import evaluation
from app.lifecycle.label_check import LabelCheck, check_labels
from app.registry.signature import in_feature_order, rows_to_matrix
from app.services import Services


def import_examples(svc: Services, name: str, table: Any, label: str, source: str = "") -> dict[str, Any]:
    """Add the rows of ``table`` (a DataFrame) to the model's training set, as one import.

    Features are taken by the champion's feature names, or as the first columns in order
    when it has none; ``label`` names the target column. The champion scores the rows first:
    labels it does not vouch for quarantine the import. An accepted import, when the model
    has no evaluation set yet, gives ``training_eval_share`` of its rows to one (not trained on).
    Returns the import: its id, status, reason, the rows trained on and those carved.
    """
    served = svc.registry.resolve(name)
    matrix, labels = _labeled_rows(table, label, served.signature)
    fixed = evaluation.latest_set(svc, name)
    checked = _check(svc, name, served, matrix, labels, fixed)
    train, carved = np.arange(len(labels)), None
    if not checked.quarantined and fixed is None and len(labels) >= 10:
        train, held = _split(svc, labels, served.signature)
        held_labels = [_plain(v) for v in labels[held]]
        carved = evaluation.store_set(
            svc, name, matrix[held], held_labels, f"carved from {source or 'the first import'}"
        )
        fixed = evaluation.EvalRows(carved, matrix[held], labels[held])
    problems, checks = evaluation.data_problems(matrix[train], labels[train], fixed, served.signature)
    checks |= {"problems": problems, "labels": checked.figures}
    with svc.engine.begin() as conn:
        import_id = conn.execute(
            insert(TrainingImport).returning(TrainingImport.id),
            {"model_name": name, "source": source[:1000], "rows": len(train), "checks": checks,
             "status": "quarantined" if checked.quarantined else "accepted",
             "reason": checked.reason[:1000], "evaluation_set": carved},
        ).scalar_one()  # fmt: skip
        conn.execute(
            insert(TrainingExample),
            [
                {"model_name": name, "features": matrix[i].tolist(), "label": _plain(labels[i]),
                 "source": "import", "import_id": import_id}
                for i in train
            ],
        )  # fmt: skip
    return _import(svc, name, import_id) | {
        "evaluation_rows": len(labels) - len(train),
        "problems": problems,
    }


def _check(
    svc: Services, name: str, served: Any, x: np.ndarray, y: np.ndarray, fixed: evaluation.EvalRows | None
) -> LabelCheck:
    """The serving version's verdict on the labels (against its evaluation set, else its
    registration metrics)."""
    estimator, _ = svc.registry.load(name, served.version)
    version = next(v for v in svc.registry.describe(name)["versions"] if v["version"] == served.version)
    alpha = svc.settings.import_label_alpha
    who = f"the serving version v{served.version}"
    return check_labels(estimator, served.signature, x, y, alpha, fixed, version["metrics"], who)


def _split(svc: Services, labels: np.ndarray, signature: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Rows to train on and rows for the evaluation set (stratified for a classifier when it can be)."""
    classifier = signature["task"] == "classification"
    stratify = labels if classifier and min(np.unique(labels, return_counts=True)[1]) >= 2 else None
    train, held = train_test_split(
        np.arange(len(labels)), test_size=svc.settings.training_eval_share, random_state=0, stratify=stratify
    )
    return np.sort(train), held


def accept_import(svc: Services, name: str, import_id: int, actor: str) -> dict[str, Any]:
    """Accept a quarantined import: its rows join later training runs, and when the model has
    no evaluation set yet a share of them becomes it. Accepting an accepted import changes nothing;
    a dropped one cannot be accepted (409)."""
    found = _import(svc, name, import_id)
    if found["dropped_at"] is not None:
        raise ImportDropped(
            f"import {import_id} of {name!r} was dropped; dropped imports stay out",
            model=name,
            import_id=import_id,
        )
    needs_set = evaluation.latest_set(svc, name) is None
    with svc.engine.begin() as conn:
        # Only the caller that moves it out of quarantine carves (two admins accepting at once).
        accepted = conn.execute(
            update(TrainingImport)
            .where(TrainingImport.id == import_id, TrainingImport.status == "quarantined")
            .values(status="accepted", accepted_at=utcnow(), accepted_by=actor[:200])
        ).rowcount
        if accepted and needs_set:
            _carve(svc, conn, name, import_id, found["source"])
    return _import(svc, name, import_id)


def _carve(svc: Services, conn: Connection, name: str, import_id: int, source: str) -> None:
    """Move a share of an import's stored rows into a new evaluation set, in ``conn``'s transaction."""
    rows = conn.execute(
        select(TrainingExample.id, TrainingExample.features, TrainingExample.label)
        .where(TrainingExample.import_id == import_id)
        .order_by(TrainingExample.id)
    ).all()
    if len(rows) < 10:
        return
    labels = np.asarray([r.label for r in rows])
    train, held = _split(svc, labels, svc.registry.resolve(name).signature)
    x = np.asarray([rows[i].features for i in held], dtype=np.float64)
    version = evaluation.store_set(
        svc, name, x, [rows[i].label for i in held], f"carved from {source or f'import {import_id}'}", conn
    )
    conn.execute(delete(TrainingExample).where(TrainingExample.id.in_([rows[i].id for i in held])))
    conn.execute(
        update(TrainingImport)
        .where(TrainingImport.id == import_id)
        .values(rows=len(train), evaluation_set=version)
    )


def register_evaluation_set(
    svc: Services, name: str, table: Any, label: str, source: str = ""
) -> dict[str, Any]:
    """A new version of the model's evaluation set from ``table`` (a DataFrame); returns it."""
    served = svc.registry.resolve(name)
    matrix, labels = _labeled_rows(table, label, served.signature)
    version = evaluation.store_set(svc, name, matrix, [_plain(v) for v in labels], source)
    return {"model": name, "version": version, "rows": len(labels)}


def _labeled_rows(table: Any, label: str, signature: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if label not in table.columns:
        raise InvalidInput(f"no column {label!r} in the training data", column=label)
    features = in_feature_order(table.drop(columns=[label]), signature, "the training data")
    if signature["feature_names"] is None:
        features = features.iloc[:, : signature["n_features"]]
    matrix = rows_to_matrix(features.to_numpy().tolist(), signature["n_features"], None, len(features))
    return matrix, np.asarray(table[label].tolist())


def imports(svc: Services, name: str) -> list[dict[str, Any]]:
    """A model's imports, newest first, with their checks, status and whether they were dropped."""
    svc.registry.require(name)
    return newest_rows(svc.engine, TrainingImport, name, TrainingImport.id, 1000)


def _import(svc: Services, name: str, import_id: int) -> dict[str, Any]:
    svc.registry.require(name)
    _known_id(name, import_id)
    with svc.engine.connect() as conn:
        row = (
            conn.execute(
                select(TrainingImport.__table__).where(
                    TrainingImport.id == import_id, TrainingImport.model_name == name
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"model {name!r} has no import {import_id}", model=name, import_id=import_id)
    return dict(row)


def _known_id(name: str, import_id: int) -> None:
    """An id no import can have (beyond the column's 32 bits) is not found, before any query."""
    if not 0 < import_id < 2**31:
        raise NotFound(f"model {name!r} has no import {import_id}", model=name, import_id=import_id)


def quarantined_imports(svc: Services, name: str) -> list[int]:
    """The ids of a model's quarantined imports (not dropped): what training runs leave out."""
    with svc.engine.connect() as conn:
        return list(
            conn.execute(
                select(TrainingImport.id)
                .where(
                    TrainingImport.model_name == name,
                    TrainingImport.status == "quarantined",
                    TrainingImport.dropped_at.is_(None),
                )
                .order_by(TrainingImport.id)
            ).scalars()
        )


def drop_import(svc: Services, name: str, import_id: int) -> dict[str, Any]:
    """Take an import's rows out of every later run (they stay stored, marked dropped)."""
    svc.registry.require(name)
    _known_id(name, import_id)
    with svc.engine.begin() as conn:
        found = conn.execute(
            update(TrainingImport)
            .where(TrainingImport.id == import_id, TrainingImport.model_name == name)
            .values(dropped_at=func.coalesce(TrainingImport.dropped_at, utcnow()))
            .returning(TrainingImport.id)
        ).first()
    if found is None:
        raise NotFound(f"model {name!r} has no import {import_id}", model=name, import_id=import_id)
    return _import(svc, name, import_id)


def _plain(value: Any) -> Any:
    """A JSON-able label: numpy scalars become Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def training_set(svc: Services, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The newest ``training_window_rows`` examples of a model (none of a dropped or quarantined
    import), oldest first, and their window (with the imports they came from)."""
    left_out = select(TrainingImport.id).where(
        or_(TrainingImport.dropped_at.is_not(None), TrainingImport.status == "quarantined")
    )
    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(
                TrainingExample.id,
                TrainingExample.created_at,
                TrainingExample.features,
                TrainingExample.label,
                TrainingExample.import_id,
            )
            .where(
                TrainingExample.model_name == name,
                or_(TrainingExample.import_id.is_(None), TrainingExample.import_id.not_in(left_out)),
            )
            .order_by(TrainingExample.id.desc())
            .limit(svc.settings.training_window_rows)
        ).all()
    rows = list(reversed(rows))
    x = np.asarray([r.features for r in rows], dtype=np.float64)
    y = np.asarray([r.label for r in rows])
    window = {}
    if rows:
        window = {
            "first_example_id": rows[0].id,
            "last_example_id": rows[-1].id,
            "from": rows[0].created_at.isoformat(),
            "to": rows[-1].created_at.isoformat(),
            "imports": sorted({r.import_id for r in rows if r.import_id is not None}),
        }
    return x, y, window

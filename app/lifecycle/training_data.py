"""A model's training data: imports of labeled rows (each can be dropped), its evaluation
set, and the window of examples a training run fits on (app/lifecycle/training.py).

Each import is a ``training_imports`` row; a model's first import, when it has no
evaluation set yet, gives ``training_eval_share`` of its rows to one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from sqlalchemy import func, insert, or_, select, update

from app.db import TrainingExample, TrainingImport, newest_rows, utcnow
from app.errors import InvalidInput, NotFound
from app.lifecycle import evaluation
from app.registry.signature import in_feature_order, rows_to_matrix
from app.services import Services


def import_examples(svc: Services, name: str, table: Any, label: str, source: str = "") -> dict[str, Any]:
    """Add the rows of ``table`` (a DataFrame) to the model's training set, as one import.

    Features are taken by the champion's feature names, or as the first columns in order
    when it has none; ``label`` names the target column. When the model has no evaluation
    set yet, ``training_eval_share`` of these rows become it (and are not trained on).
    Returns the import: its id, the rows trained on and those given to the evaluation set.
    """
    served = svc.registry.resolve(name)
    matrix, labels = _labeled_rows(table, label, served.signature)
    train = np.arange(len(labels))
    fixed = evaluation.latest_set(svc, name)
    if fixed is None and len(labels) >= 10:
        classifier = served.signature["task"] == "classification"
        stratify = labels if classifier and min(np.unique(labels, return_counts=True)[1]) >= 2 else None
        train, held = train_test_split(
            train, test_size=svc.settings.training_eval_share, random_state=0, stratify=stratify
        )
        train.sort()
        held_labels = [_plain(v) for v in labels[held]]
        carved = f"carved from {source or 'the first import'}"
        version = evaluation.store_set(svc, name, matrix[held], held_labels, carved)
        fixed = evaluation.EvalRows(version, matrix[held], labels[held])
    evaluation_rows = len(labels) - len(train)
    problems, checks = evaluation.data_problems(matrix[train], labels[train], fixed, served.signature)
    with svc.engine.begin() as conn:
        import_id = conn.execute(
            insert(TrainingImport).returning(TrainingImport.id),
            {"model_name": name, "source": source[:1000], "rows": len(train),
             "checks": checks | {"problems": problems}},
        ).scalar_one()  # fmt: skip
        conn.execute(
            insert(TrainingExample),
            [
                {"model_name": name, "features": matrix[i].tolist(), "label": _plain(labels[i]),
                 "source": "import", "import_id": import_id}
                for i in train
            ],
        )  # fmt: skip
    return {
        "id": import_id,
        "rows": len(train),
        "evaluation_rows": evaluation_rows,
        "checks": checks,
        "problems": problems,
    }


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
    """A model's imports, newest first, with their checks and whether they were dropped."""
    svc.registry.require(name)
    return newest_rows(svc.engine, TrainingImport, name, TrainingImport.id, 1000)


def drop_import(svc: Services, name: str, import_id: int) -> dict[str, Any]:
    """Take an import's rows out of every later run (they stay stored, marked dropped)."""
    svc.registry.require(name)
    with svc.engine.begin() as conn:
        found = conn.execute(
            update(TrainingImport)
            .where(TrainingImport.id == import_id, TrainingImport.model_name == name)
            .values(dropped_at=func.coalesce(TrainingImport.dropped_at, utcnow()))
            .returning(TrainingImport.id)
        ).first()
    if found is None:
        raise NotFound(f"model {name!r} has no import {import_id}", model=name, import_id=import_id)
    return next(i for i in imports(svc, name) if i["id"] == import_id)


def _plain(value: Any) -> Any:
    """A JSON-able label: numpy scalars become Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def training_set(svc: Services, name: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The newest ``training_window_rows`` examples of a model (none of a dropped import),
    oldest first, and their window (with the imports they came from)."""
    dropped = select(TrainingImport.id).where(TrainingImport.dropped_at.is_not(None))
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
                or_(TrainingExample.import_id.is_(None), TrainingExample.import_id.not_in(dropped)),
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

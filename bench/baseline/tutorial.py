"""The design tutorials teach, as the reference predq is measured against.

One Celery task per request, a 1-row ``predict_proba`` in the task, the result row in
PostgreSQL, and the client polling ``GET /result/<id>``. Written the way such tutorials
write it (module-level engine, model loaded once per worker process), with none of
predq's batching, so the comparison shows what batching buys.

    gunicorn -c gunicorn.conf.py bench.baseline.tutorial:app
    celery -A bench.baseline.tutorial:celery worker
"""

from __future__ import annotations

import json
import os
import uuid

import joblib
from celery import Celery
from flask import Flask, request
from sqlalchemy import create_engine, text

engine = create_engine(os.environ["DATABASE_URL"], pool_size=32, max_overflow=8)
celery = Celery("tutorial", broker=os.environ["BROKER_URL"])
celery.conf.update(task_ignore_result=True, worker_prefetch_multiplier=1, worker_hijack_root_logger=False)
app = Flask(__name__)


@app.post("/predict")
def predict():  # type: ignore[no-untyped-def]
    row = request.get_json()["inputs"][0]
    job_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tutorial_results (id, status) VALUES (:id, 'queued')"), {"id": job_id})
    predict_one.delay(job_id, row)
    return {"id": job_id, "status": "queued"}, 202


@app.get("/result/<job_id>")
def result(job_id: str):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, output FROM tutorial_results WHERE id = :id"), {"id": job_id}
        ).first()
    if row is None:
        return {"error": "not found"}, 404
    return {"id": job_id, "status": row.status, "output": row.output}


_model = None


@celery.task
def predict_one(job_id: str, row: list[float]) -> None:
    global _model
    if _model is None:
        _model = joblib.load(os.environ["MODEL_PATH"])
    probabilities = _model.predict_proba([row])[0]
    output = {
        "prediction": _model.classes_[probabilities.argmax()].item(),
        "probabilities": probabilities.tolist(),
    }
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE tutorial_results SET status = 'succeeded', output = :out WHERE id = :id"),
            {"id": job_id, "out": json.dumps(output)},
        )

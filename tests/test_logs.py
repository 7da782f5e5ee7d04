"""Structured logs: JSON lines from the API and the worker that share a job's ids."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx

from tests.helpers import api_log_path, bearer


def json_lines(path: Path) -> list[dict]:
    """Every line of a log, each of which must be one JSON object."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"{path.name}: not a JSON line: {line[:200]}") from None
    return parsed


def test_a_job_can_be_followed_from_the_api_log_to_the_worker_log(
    api_server, worker, tokens, registered, tmp_path_factory
):
    request_id = f"trace-{uuid.uuid4().hex[:8]}"
    headers = bearer(tokens["predict"]) | {"X-Request-ID": request_id}
    submitted = httpx.post(
        f"{api_server}/v1/models/iris/predictions?wait=20",
        json={"inputs": [[5.05, 3.33, 1.41, 0.21]]},
        headers=headers,
        timeout=30,
    )
    job_id = submitted.json()["id"]
    assert submitted.status_code == 200 and submitted.headers["X-Request-ID"] == request_id
    polled = httpx.get(f"{api_server}/v1/predictions/{job_id}", headers=bearer(tokens["predict"]), timeout=10)

    deadline = time.monotonic() + 10
    while True:  # the processes flush their lines a moment after answering
        api_lines, worker_lines = json_lines(api_log_path(tmp_path_factory)), json_lines(worker)
        api_mine = [line for line in api_lines if line.get("job_id") == job_id]
        worker_mine = [line for line in worker_lines if job_id in line.get("job_ids", [])]
        if (len(api_mine) >= 2 and worker_mine) or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    access = [line for line in api_lines if line["logger"] in ("granian.access", "gunicorn.access")]
    assert not access, "the server's access log is off unless ACCESS_LOG=1"
    submit_line = next(line for line in api_mine if line.get("request_id") == request_id)
    assert submit_line["model"] == "iris" and submit_line["version"] == 1 and submit_line["status"] == 200
    assert submit_line["route"] == "/v1/models/<string:name>/predictions" and submit_line["level"] == "INFO"
    poll_line = next(line for line in api_mine if line["request_id"] == polled.headers["X-Request-ID"])
    assert poll_line["route"] == "/v1/predictions/<string:job_id>"
    (batch_line,) = worker_mine
    assert batch_line["model"] == "iris" and batch_line["version"] == 1
    assert batch_line["batch_id"] and request_id in batch_line["request_ids"]

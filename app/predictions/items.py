"""What the API and workers pass through Redis: queue items (one job's rows) and finished
jobs' views, encoded here and nowhere else (app/predictions/queue.py keeps the keys and scripts).

A queue item is one job's rows that still need the model, encoded as
``"<row count>|<deadline>|<job id>|<json>"`` so the pop script can count rows, drop a
cancelled job (its mark, app/predictions/queue.py) and set aside one past its deadline
without decoding JSON (``<deadline>``: unix milliseconds, 0 for none; items queued before
deadlines existed are ``"<row count>|<json>"``, read the same way)::

    {"id": job id, "rows": [[float, ...], ...] (a request of many rows: "m", its float64 matrix's
           bytes, row-major, in base64, and "mc", its columns), "slots": [index in job, ...] | null,
     "pre": {"index": output} | null, "n": rows in job, "c": job created_at (ISO 8601),
     "t": enqueue unix time, "r": the submitting request's id (for logs) | null,
     "s": true when a shadow version scores the rows (outputs stored apart, never returned),
     "d": true when the job has no database row yet (the worker inserts it, see
           app/predictions/deferred.py),
     "o": the id of the API key that owns the job | null,
     "x": "predicted" or "all" when each row's explanation is asked for (app/scoring/explain.py) | null,
     "p": "high" | "low" (absent: "normal"), "dl": the deadline (ISO 8601) | absent,
     "w": the job's callback_url (its end is announced, app/webhooks/) | absent}

``slots``/``pre`` are set only when part of the job was answered from the cache.
Outputs and views are MessagePack (msgspec), without the field names every row and job
would repeat (what Redis holds per prediction; README, Redis keys). A row's output is
``[prediction]`` for ``{"prediction": p}``, ``[prediction, [p, ...]]`` for a classifier's
``{"prediction": p, "probabilities": {class: p, ...}}`` (the probabilities in the order of
the classes), and any other output (explained rows) the map it is. Cached under its row's
key (or a request's outputs, an array of them, under the request's key), an output names no
classes: the reader takes them from the version's signature.

A finished job's view, under its result key and on its done list, is the array::

    [owner key id | nil, job id (16 bytes), status, model name, model version,
     [class, ...] | nil (the classes its outputs' probabilities follow, once per job),
     [output, ...] | nil, error | nil, done, priority, deadline | nil, created_at, completed_at,
     callback_url (only for a job that has one)]

its times in microseconds since the epoch (UTC), or as the text they were when that would not
give back the same text; so a poll answered from Redis checks ownership without a database
read. A view written as ``"<owner key id>|<json>"`` (before this form) is still read.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import orjson

from app.predictions.view import webhook_view


@dataclass
class QueuedRows:
    """One queue item, decoded (the fields as the module docstring names them)."""

    job_id: str
    rows: list[list[float]] | np.ndarray
    slots: list[int] | None
    pre: dict[str, Any] | None
    n_rows: int
    created_at: str
    enqueued_at: float
    request_id: str | None = None
    shadow: bool = False
    deferred: bool = False
    owner: int | None = None
    explain: str | None = None
    priority: str = "normal"
    deadline: str | None = None
    """ISO 8601; None: no deadline."""

    def past_deadline(self, now: datetime) -> bool:
        return self.deadline is not None and datetime.fromisoformat(self.deadline) <= now

    callback_url: str | None = None


def encode_item(
    job_id: str,
    rows: list[list[float]] | np.ndarray,
    *,
    n_rows: int,
    created_at: str,
    slots: list[int] | None = None,
    pre: dict[str, Any] | None = None,
    request_id: str | None = None,
    shadow: bool = False,
    deferred: bool = False,
    owner: int | None = None,
    explain: str | None = None,
    priority: str = "normal",
    deadline: datetime | None = None,
    callback_url: str | None = None,
) -> bytes:
    fields: dict[str, Any] = {
        "id": job_id,
        # A matrix (a request of many rows) as its bytes: no number formatted, nor parsed back.
        **(
            {"m": base64.b64encode(rows.astype("<f8").tobytes()).decode(), "mc": rows.shape[1]}
            if isinstance(rows, np.ndarray)
            else {"rows": rows}
        ),
        "slots": slots,
        "pre": pre,
        "n": n_rows,
        "c": created_at,
        "t": time.time(),
        "r": request_id,
        "s": shadow,
        "d": deferred,
        "o": owner,
        "x": explain,
    }
    if priority != "normal":
        fields["p"] = priority
    if deadline is not None:
        fields["dl"] = deadline.isoformat()
    if callback_url:
        fields["w"] = callback_url
    deadline_ms = round(deadline.timestamp() * 1000) if deadline is not None else 0
    return f"{len(rows)}|{deadline_ms}|{job_id}|".encode() + orjson.dumps(fields)


def decode_item(raw: bytes) -> QueuedRows:
    # The JSON starts at the first brace: nothing in the header holds one.
    body = orjson.loads(raw[raw.index(b"{") :])
    return QueuedRows(
        job_id=body["id"],
        rows=body["rows"]
        if "m" not in body
        else np.frombuffer(base64.b64decode(body["m"]), "<f8").reshape(-1, body["mc"]),
        slots=body["slots"],
        pre=body["pre"],
        n_rows=body["n"],
        created_at=body["c"],
        enqueued_at=body["t"],
        request_id=body.get("r"),
        shadow=body.get("s", False),
        deferred=body.get("d", False),
        owner=body.get("o"),
        explain=_explain_mode(body.get("x")),
        priority=body.get("p", "normal"),
        deadline=body.get("dl"),
        callback_url=body.get("w"),
    )


def _explain_mode(raw: Any) -> str | None:
    # Items queued before explain_classes existed say true or false.
    return "predicted" if raw is True else raw or None


_PACK = msgspec.msgpack.Encoder()
_UNPACK = msgspec.msgpack.Decoder()


def encode_output(output: dict[str, Any]) -> bytes:
    """A row's output as the cache keeps it (the module docstring's compact form)."""
    return _PACK.encode(_compact(output, None))


def decode_outputs(values: list[bytes | None], classes: list[str] | None) -> list[Any]:
    """Cached outputs (None where missing) decoded; ``classes`` are the version's class
    names as strings. A value that does not decode, or whose probabilities do not match
    the classes, is a miss (None): the row goes to a worker."""
    found: list[Any] = []
    for value in values:
        try:
            found.append(_expanded(_UNPACK.decode(value), classes) if value is not None else None)
        except msgspec.DecodeError:
            found.append(None)
    return found


def encode_outputs(outputs: list[Any]) -> bytes:
    """A request's outputs as one cached value (cached whole, app/predictions/cache.py)."""
    return _PACK.encode([_compact(output, None) for output in outputs])


def decode_whole(value: bytes | None, classes: list[str] | None, n_rows: int) -> list[Any]:
    """What :func:`encode_outputs` cached: ``n_rows`` outputs, or all None (a miss) when it is
    missing, does not decode or holds another number of outputs."""
    try:
        found = [_expanded(output, classes) for output in _UNPACK.decode(value)] if value else []
    except (msgspec.DecodeError, TypeError):
        found = []
    return found if len(found) == n_rows and None not in found else [None] * n_rows


def encode_view(owner: int | None, view: dict[str, Any]) -> bytes:
    """A job's public view with its owner's key id, for its result key and done list (the
    module docstring's form)."""
    outputs, classes = view["outputs"], None
    if outputs:
        probabilities = outputs[0].get("probabilities") if isinstance(outputs[0], dict) else None
        classes = list(probabilities) if isinstance(probabilities, dict) else None
    model = view["model"]
    webhook = view.get("webhook")
    return _PACK.encode(
        [
            owner,
            uuid.UUID(view["id"]).bytes,
            view["status"],
            model["name"],
            model["version"],
            classes,
            None if outputs is None else [_compact(output, classes) for output in outputs],
            view["error"],
            view["done"],
            view["priority"],
            _packed_time(view["deadline"]),
            _packed_time(view["created_at"]),
            _packed_time(view["completed_at"]),
            *([webhook["url"]] if webhook else []),
        ]
    )


def decode_view(raw: bytes) -> tuple[int | None, dict[str, Any]]:
    """The owner's key id and the public view of what :func:`encode_view` stored."""
    try:
        packed = _UNPACK.decode(raw)
        (owner, job_id, status, name, version, classes, outputs, error, done, priority, deadline, created,
         completed) = packed[:13]  # fmt: skip
    except (msgspec.DecodeError, ValueError, TypeError):
        # Written before views were MessagePack: "<owner>|<json>".
        tag, _, view = raw.partition(b"|")
        return (int(tag) if tag else None), orjson.loads(view)
    return owner, {
        "id": str(uuid.UUID(bytes=job_id)),
        "status": status,
        "done": done,
        "model": {"name": name, "version": version},
        "outputs": None if outputs is None else [_expanded(output, classes) for output in outputs],
        "error": error,
        "priority": priority,
        "deadline": _unpacked_time(deadline),
        "created_at": _unpacked_time(created),
        "completed_at": _unpacked_time(completed),
        "webhook": webhook_view(packed[13] if len(packed) > 13 else None, done),
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _packed_time(stamp: str | None) -> int | str | None:
    """A UTC ISO 8601 time as microseconds since the epoch (9 bytes, not 32), when that gives
    back the very same text; any other as it is."""
    if stamp is None or not stamp.endswith("+00:00"):
        return stamp
    micros = (datetime.fromisoformat(stamp) - _EPOCH) // _MICROSECOND
    return micros if _unpacked_time(micros) == stamp else stamp


def _unpacked_time(packed: int | str | None) -> str | None:
    return (_EPOCH + packed * _MICROSECOND).isoformat() if isinstance(packed, int) else packed


def _compact(output: Any, classes: list[str] | None) -> Any:
    """``[prediction]``, ``[prediction, [p, ...]]`` (with ``classes`` None: the version's
    classes, else these), or the output as it is."""
    if not isinstance(output, dict):
        return output
    if len(output) == 1 and "prediction" in output:
        return [output["prediction"]]
    probabilities = output.get("probabilities")
    if len(output) == 2 and "prediction" in output and isinstance(probabilities, dict):
        if classes is None or list(probabilities) == classes:
            return [output["prediction"], list(probabilities.values())]
    return output


def _expanded(value: Any, classes: list[str] | None) -> Any:
    if isinstance(value, dict):
        return value
    if not isinstance(value, list):
        return None
    if len(value) == 1:
        return {"prediction": value[0]}
    if (
        len(value) == 2
        and classes is not None
        and isinstance(value[1], list)
        and len(value[1]) == len(classes)
    ):
        return {"prediction": value[0], "probabilities": dict(zip(classes, value[1], strict=True))}
    return None

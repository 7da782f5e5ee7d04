"""Batch jobs over REST: POST a file (or a server path), follow it, cancel it, download the result."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from flask import request, send_file
from flask.typing import ResponseReturnValue

from app.access.auth import current_principal
from app.api.blueprint import Blueprint
from app.api.decoding import body_of
from app.batch_jobs import files, jobs, storage
from app.errors import InvalidInput, MalformedJSON, UnsupportedMediaType
from app.services import current_services

blp = Blueprint("batch_jobs", __name__, url_prefix="/v1", description="Score whole files (bulk)")

_RESULT_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}
_OPTIONS = ("id_column", "version", "alias", "output_format")
_SUBMIT_DOC = {
    "description": (
        "Score a whole CSV or Parquet file. Send it as `multipart/form-data` (field `file`),"
        " or as the body with `Content-Type: text/csv` or `application/vnd.apache.parquet`"
        " (options in the query string), or name a server-side file under BATCH_INPUT_ROOT"
        ' with `application/json` `{"path": ...}`. Options: `id_column` (carried to the output;'
        " else a `row` column numbers the input rows), `version` or `alias`, `output_format`"
        " (`parquet`, the default, or `csv`). The file is checked before anything is queued."
    ),
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        **{name: {"type": "string"} for name in ("id_column", "alias", "output_format")},
                        "version": {"type": "integer"},
                    },
                    "required": ["path"],
                }
            },
        },
    },
}


@blp.route("/models/<string:name>/batch-jobs", methods=["POST"])
@blp.doc(**_SUBMIT_DOC)
@blp.alt_response(202, schema="BatchJob", description="Accepted: the file is checked and its chunks queued.")
@blp.alt_response(403, schema="Error", description="A server path outside BATCH_INPUT_ROOT.")
@blp.alt_response(404, schema="Error", description="Unknown model, version or alias.")
@blp.alt_response(413, schema="Error", description="The file is larger than BATCH_MAX_BYTES.")
@blp.alt_response(415, schema="Error", description="Neither CSV, Parquet, a multipart upload nor JSON.")
@blp.alt_response(422, schema="Error", description="The file does not fit the model (row and column named).")
def submit_batch_job(name: str) -> ResponseReturnValue:
    svc = current_services()
    settings = svc.settings
    mimetype = request.mimetype
    if mimetype != "application/json":
        request.max_content_length = settings.batch_max_bytes  # files may be far larger than JSON
    owner = current_principal()
    with tempfile.TemporaryDirectory(dir=_spool_dir(settings)) as spool:
        if mimetype == "application/json":
            options = _json_options()
            source, fmt = jobs.server_file(settings, options.pop("path"))
            label = str(source)
        elif mimetype == "multipart/form-data":
            upload = request.files.get("file")
            if upload is None:
                raise InvalidInput("send the file in the multipart field 'file'", field="file")
            fmt = _format_of(upload.mimetype, upload.filename)
            source = Path(spool) / "upload"
            jobs.spool(upload.stream, source, settings.batch_max_bytes)
            options, label = _text_options(request.form), upload.filename or "upload"
        elif mimetype in files.FORMATS:
            fmt = files.FORMATS[mimetype]
            source = Path(spool) / "upload"
            jobs.spool(request.stream, source, settings.batch_max_bytes)
            options, label = _text_options(request.args), f"request body ({mimetype})"
        else:
            raise UnsupportedMediaType(
                "send a CSV or Parquet file (multipart/form-data, text/csv, application/vnd.apache.parquet)"
                f" or a server path as application/json, not {mimetype or 'no content type'}"
            )
        view = jobs.create(
            svc,
            name,
            source,
            fmt,
            label=label,
            owner=owner.key_id if owner is not None else None,
            **options,
        )
    return view, 202, {"Location": f"/v1/batch-jobs/{view['id']}"}


@blp.route("/batch-jobs/<string:job_id>", methods=["GET"])
@blp.alt_response(200, schema="BatchJob", description="Status, progress, speed, ETA, where the result is.")
@blp.alt_response(404, schema="Error", description="No such batch job (or another API key's).")
def get_batch_job(job_id: str) -> ResponseReturnValue:
    return jobs.get(current_services(), job_id, current_principal()), 200


@blp.route("/batch-jobs/<string:job_id>", methods=["DELETE"])
@blp.alt_response(200, schema="BatchJob", description="Cancelled: queued chunks dropped, running ones end.")
@blp.alt_response(404, schema="Error", description="No such batch job (or another API key's).")
@blp.alt_response(409, schema="Error", description="The batch job has already finished.")
def cancel_batch_job(job_id: str) -> ResponseReturnValue:
    return jobs.cancel(current_services(), job_id, current_principal()), 200


@blp.route("/batch-jobs/<string:job_id>/result", methods=["GET"])
@blp.alt_response(200, description="The result file (Parquet or CSV), streamed.")
@blp.alt_response(404, schema="Error", description="No such batch job, or no result (yet).")
def get_batch_job_result(job_id: str) -> ResponseReturnValue:
    path, fmt = jobs.result_file(current_services(), job_id, current_principal())
    return send_file(path, mimetype=_RESULT_TYPES[fmt], as_attachment=True, download_name=f"{job_id}.{fmt}")


#: The view of a batch job (app/batch_jobs/jobs.py ``view``) in /openapi.json.
BATCH_JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "enum": ["queued", "running", *storage.FINISHED]},
        "model": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "version": {"type": "integer"}},
        },
        "source": {"type": "string"},
        "id_column": {"type": "string", "nullable": True},
        "rows": {"type": "object", "properties": {"total": {"type": "integer"}, "done": {"type": "integer"}}},
        "chunks": {
            "type": "object",
            "properties": {
                key: {"type": "integer"} for key in ("total", "chunk_rows", *storage.CHUNK_STATUSES)
            },
        },
        "rows_per_second": {"type": "number", "nullable": True},
        "eta_seconds": {"type": "number", "nullable": True},
        "failed_chunks": {"type": "array", "items": {"type": "object"}},
        "result": {"type": "object", "nullable": True},
        "error": {"type": "object", "nullable": True},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": "string", "nullable": True},
        "completed_at": {"type": "string", "nullable": True},
    },
}


def register_schemas(spec: Any) -> None:
    spec.components.schema("BatchJob", component=BATCH_JOB_SCHEMA)


def _spool_dir(settings: Any) -> Path:
    directory = Path(settings.batch_root) / "uploads"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _format_of(mimetype: str | None, filename: str | None) -> str:
    """An upload's format, by its content type or else its file name's suffix."""
    fmt = files.FORMATS.get(mimetype or "") or files.SUFFIXES.get(Path(filename or "").suffix.lower())
    if fmt is None:
        raise UnsupportedMediaType(f"the upload {filename!r} is neither CSV nor Parquet (by type or name)")
    return fmt


def _json_options() -> dict[str, Any]:
    body = request.get_json(silent=True) if body_of(request) else None
    if not isinstance(body, dict):
        raise MalformedJSON('send {"path": ...} as a JSON object')
    unknown = sorted(set(body) - {"path", *_OPTIONS})
    if unknown:
        raise InvalidInput(f"unknown fields: {', '.join(unknown)}", fields=unknown)
    if not isinstance(body.get("path"), str) or not body["path"]:
        raise InvalidInput("path must be a non-empty string", field="path")
    options = {key: body[key] for key in ("path", *_OPTIONS) if body.get(key) is not None}
    return _typed(options)


def _text_options(values: Any) -> dict[str, Any]:
    """Options from a query string or form fields (text: version is converted)."""
    unknown = sorted(set(values) - set(_OPTIONS))
    if unknown:
        raise InvalidInput(f"unknown options: {', '.join(unknown)}", fields=unknown)
    return _typed({key: values[key] for key in _OPTIONS if values.get(key)})


def _typed(options: dict[str, Any]) -> dict[str, Any]:
    if "version" in options:
        raw = options["version"]
        try:
            options["version"] = int(raw) if isinstance(raw, (int, str)) and not isinstance(raw, bool) else 0
        except ValueError:
            options["version"] = 0
        if options["version"] < 1:
            raise InvalidInput("version must be a positive integer", field="version")
    for key in ("id_column", "alias", "output_format"):
        if key in options and not isinstance(options[key], str):
            raise InvalidInput(f"{key} must be a string", field=key)
    return options

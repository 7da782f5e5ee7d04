"""Batch jobs over REST: POST a file (or a server path), follow it, cancel it, download the result."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from flask import request
from flask.typing import ResponseReturnValue
from msgspec import UNSET, Meta, Struct, UnsetType

from app.access.auth import current_principal
from app.api import decoding
from app.api.blueprint import Blueprint
from app.api.bodies import body_of, loads_loose
from app.api.decoding import CallbackUrl, Version, field_messages
from app.api.openapi import refusals
from app.batch_jobs import files, jobs, storage
from app.batch_jobs.results import result_response
from app.errors import InvalidInput, UnsupportedMediaType
from app.services import current_services

blp = Blueprint("batch_jobs", __name__, url_prefix="/v1", description="Score whole files (bulk)")

_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_FILE = {"type": "string", "format": "binary"}
_FILE_TYPES = ", ".join(files.FORMATS)


class BatchOptions(Struct, forbid_unknown_fields=True):
    """A batch job's options: in the query string (a file as the body), the form (multipart),
    or beside ``path`` (JSON). The one definition that checks them and documents them."""

    id_column: (
        Annotated[str, Meta(min_length=1, description="A column carried to the output (else a row number).")]
        | UnsetType
    ) = UNSET
    version: Version | UnsetType = UNSET
    alias: Annotated[str, Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    output_format: (
        Annotated[Literal["parquet", "csv"], Meta(description="The result's format (default parquet).")]
        | UnsetType
    ) = UNSET
    callback_url: CallbackUrl | UnsetType = UNSET

    def given(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not UNSET}


class ServerFile(BatchOptions, kw_only=True):
    """A server-side file under BATCH_INPUT_ROOT, named by ``path``, and the options."""

    # No NUL: no file name holds one (the operating system refuses it).
    path: Annotated[str, Meta(min_length=1, pattern=r"^[^\x00]*$", description="Under BATCH_INPUT_ROOT.")]


_OPTIONS = msgspec.json.schema(BatchOptions)["$defs"]["BatchOptions"]["properties"]
_SUBMIT_DOC = {
    "description": (
        "Score a whole CSV or Parquet file. Send it as `multipart/form-data` (field `file`, the"
        " options as form fields), or as the body with `Content-Type: text/csv` or"
        " `application/vnd.apache.parquet` (the options in the query string), or name a"
        ' server-side file under BATCH_INPUT_ROOT with `application/json` `{"path": ...}`.'
        " The file is checked before anything is queued. The query string's options apply to"
        " every body; the same option in the JSON body or the form takes precedence."
    ),
    "parameters": [
        {"in": "query", "name": name, "required": False, "schema": schema}
        for name, schema in _OPTIONS.items()
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": _FILE, **_OPTIONS},
                    "required": ["file"],
                    "additionalProperties": False,
                },
                "encoding": {"file": {"contentType": _FILE_TYPES}},
            },
            "text/csv": {"schema": _FILE},
            "application/vnd.apache.parquet": {"schema": _FILE},
            "application/json": {"schema": {"$ref": "#/components/schemas/ServerFile"}},
        },
    },
}


@blp.route("/models/<string:name>/batch-jobs", methods=["POST"])
@blp.doc(**_SUBMIT_DOC)
@blp.alt_response(202, schema="BatchJob", description="Accepted: the file is checked and its chunks queued.")
@blp.alt_response(404, schema="Error", description="Unknown model, version or alias.")
@blp.alt_response(415, schema="Error", description="Neither CSV, Parquet, a multipart upload nor JSON.")
@refusals(
    blp,
    {
        403: "A server path while BATCH_INPUT_ROOT is unset, or one outside it.",
        413: "The file is larger than BATCH_MAX_BYTES.",
        503: "BATCH_ROOT is an object store that cannot be reached now (store_unavailable).",
        422: "The file does not fit the model: not CSV or Parquet as its type says, the model's"
        " features missing or not numbers (row and column named), no id_column; or no such"
        " server file; or a callback_url refused (credentials, a private address, no webhook secret).",
    },
)
def submit_batch_job(name: str) -> ResponseReturnValue:
    svc = current_services()
    settings = svc.settings
    mimetype = request.mimetype
    if mimetype != "application/json":
        request.max_content_length = settings.batch_max_bytes  # files may be far larger than JSON
    owner = current_principal()
    # The query string's options apply to every body; the JSON body's or the form's win.
    query = _convert(request.args.to_dict(), BatchOptions).given()
    if svc.batches.remote:
        svc.batches.require()  # 503 before a large upload is spooled, not after
    with tempfile.TemporaryDirectory(dir=_spool_dir(svc)) as spool:
        if mimetype == "application/json":
            options = query | _convert(loads_loose(body_of(request)), ServerFile, strict=True).given()
            source, fmt = jobs.server_file(settings, options.pop("path"))
            label = str(source)
        elif mimetype == "multipart/form-data":
            upload = request.files.get("file")
            if upload is None:
                raise InvalidInput("send the file in the multipart field 'file'", field="file")
            fmt = _format_of(upload.mimetype, upload.filename)
            source = Path(spool) / "upload"
            jobs.spool(upload.stream, source, settings.batch_max_bytes)
            form = {key: value for key, value in request.form.items() if key != "file"}
            # The name is shown as the job's source (stored: PostgreSQL's text holds no NUL).
            label = (upload.filename or "upload").replace("\x00", "\ufffd")
            options = query | _convert(form, BatchOptions).given()
        elif mimetype in files.FORMATS:
            fmt = files.FORMATS[mimetype]
            source = Path(spool) / "upload"
            jobs.spool(request.stream, source, settings.batch_max_bytes)
            options, label = query, f"request body ({mimetype})"
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
@blp.doc(**decoding.POLL_DOC)
@blp.alt_response(200, schema="BatchJob", description="Status, progress, speed, ETA, where the result is.")
@blp.alt_response(404, schema="Error", description="No such batch job (or another API key's).")
def get_batch_job(job_id: str) -> ResponseReturnValue:
    """A batch job's view; with ?wait=S, held until the job ends or S seconds pass (S ≤ 30)."""
    svc = current_services()
    wait = min(decoding.wait_seconds(request.args.get("wait")), svc.settings.max_wait_seconds)
    return jobs.get(svc, job_id, current_principal(), wait=wait), 200


@blp.route("/batch-jobs/<string:job_id>", methods=["DELETE"])
@blp.alt_response(200, schema="BatchJob", description="Cancelled: queued chunks dropped, running ones end.")
@blp.alt_response(404, schema="Error", description="No such batch job (or another API key's).")
@refusals(blp, {409: "The batch job has already finished."})
def cancel_batch_job(job_id: str) -> ResponseReturnValue:
    return jobs.cancel(current_services(), job_id, current_principal()), 200


@blp.route("/batch-jobs/<string:job_id>/result", methods=["GET"])
@blp.alt_response(200, description="The result file (Parquet or CSV), streamed.")
@blp.alt_response(
    302,
    description="BATCH_PRESIGNED_RESULTS, s3:// BATCH_ROOT: Location is a presigned URL of the result.",
    headers={"Location": {"description": "The presigned URL.", "schema": {"type": "string"}}},
)
@blp.alt_response(404, schema="Error", description="No such batch job, or no result (yet).")
@refusals(blp, {503: "BATCH_ROOT is an object store that cannot be reached now."})
def get_batch_job_result(job_id: str) -> ResponseReturnValue:
    return result_response(current_services(), job_id, current_principal())


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
    _, components = msgspec.json.schema_components([ServerFile], ref_template="#/components/schemas/{name}")
    for name, schema in components.items():
        spec.components.schema(name, component=schema)


def _spool_dir(svc: Any) -> Path:
    """Uploads are spooled on this machine: under a local BATCH_ROOT, else under VAR_DIR."""
    directory = svc.batches.local_path("uploads") or Path(svc.settings.var_dir) / "uploads"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _format_of(mimetype: str | None, filename: str | None) -> str:
    """An upload's format, by its content type or else its file name's suffix."""
    fmt = files.FORMATS.get(mimetype or "") or files.SUFFIXES.get(Path(filename or "").suffix.lower())
    if fmt is None:
        raise UnsupportedMediaType(f"the upload {filename!r} is neither CSV nor Parquet (by type or name)")
    return fmt


def _convert(value: Any, type_: Any, *, strict: bool = False) -> Any:
    # Not strict for the query string and form fields, which are text: "2" is a version there.
    if not isinstance(value, dict):
        raise InvalidInput('send {"path": ...} as a JSON object', field="_schema")
    try:
        return msgspec.convert(value, type_, strict=strict)
    except msgspec.ValidationError as exc:
        unknown = _UNKNOWN.search(str(exc))
        message = f"unknown options: {unknown.group(1)}" if unknown else f"batch job options: {exc}"
        raise InvalidInput(message, fields=field_messages(str(exc), None)) from None

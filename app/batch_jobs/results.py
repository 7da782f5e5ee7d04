"""A finished batch job's result as an HTTP answer, for the API and the console alike.

From a local BATCH_ROOT the file is sent as it is (gunicorn's sendfile when there is one);
from S3 it is streamed through the process in 8 MiB ranged reads, or, with
BATCH_PRESIGNED_RESULTS, answered with a 302 to a presigned URL (signed for
S3_PUBLIC_ENDPOINT when set) so the bytes go from the store to the client directly.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

from flask import Response, redirect, request, send_file
from flask.typing import ResponseReturnValue
from werkzeug.wsgi import FileWrapper

from app.batch_jobs import jobs
from app.errors import BatchJobNotFound
from app.services import Services

if TYPE_CHECKING:
    from app.access.auth import Principal

TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv"}


def result_response(svc: Services, job_id: str, reader: Principal | None) -> ResponseReturnValue:
    """The job's result file as a download (BatchJobNotFound while there is none)."""
    key, fmt = jobs.result_file(svc, job_id, reader)
    name, mimetype = f"{job_id}.{fmt}", TYPES[fmt]
    path = svc.batches.local_path(key)
    if path is not None:
        # A server with a file wrapper of its own (gunicorn: sendfile, no copy through Python)
        # keeps it; granian has none, and werkzeug's default reads 8 KiB per step.
        request.environ.setdefault("wsgi.file_wrapper", LargeBlocks)
        return send_file(path, mimetype=mimetype, as_attachment=True, download_name=name)
    if svc.settings.batch_presigned_results:
        return redirect(svc.batches.presigned_url(key, svc.settings.batch_presigned_seconds, name), 302)
    size = svc.batches.size(key)
    if size is None:
        raise BatchJobNotFound(f"the result of batch job {job_id} is gone from the store", id=job_id)
    headers = {"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{name}"'}
    return Response(svc.batches.stream(key), 200, headers, mimetype=mimetype)


class LargeBlocks(FileWrapper):
    """werkzeug's file wrapper reading 1 MiB a step: a result of 100 MB crosses from Python to
    the HTTP server 100 times, not 12,800 (8 KiB, the size send_file asks for)."""

    def __init__(self, file: IO[bytes], buffer_size: int = 8192) -> None:
        super().__init__(file, max(buffer_size, 1 << 20))

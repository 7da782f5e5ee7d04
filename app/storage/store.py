"""Where artifacts and batch files live: a local directory or an S3 bucket, behind one class.

ARTIFACT_ROOT and BATCH_ROOT each name a root: a local path, or ``s3://bucket/prefix`` on
any S3-compatible store (AWS, MinIO, Ceph, moto: S3_ENDPOINT_URL names the endpoint). Both
kinds go through pyarrow.fs (LocalFileSystem, S3FileSystem): the same calls read one
Parquet row group by ranged reads, stream a result out, and write parts, in C++ and off
the GIL. botocore does what pyarrow does not: it resolves the credentials up front (a
missing key is named at once, not a 403 later) and signs presigned GET URLs.

Keys are relative paths (``iris/3/model.skops``, ``<job id>/parts/part-000001.parquet``).
A write is whole or absent: locally a temporary name renamed into place; on S3 one upload
that completes on close (deleted again when the writer failed before the end).
A missing key raises FileNotFoundError; a store that cannot be reached, or refuses the
credentials, raises StoreUnavailable (503 ``store_unavailable``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from pyarrow import fs

from app.errors import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEME = "s3://"
#: One attempt per call, bounded: callers that must wait (an artifact fetch) retry themselves.
_CONNECT_SECONDS = 3.0
_REQUEST_SECONDS = 30.0
_FIRST_PAUSE = 0.5
_LONGEST_PAUSE = 10.0


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible store (from Settings: S3_ENDPOINT_URL, S3_REGION, ...)."""

    endpoint_url: str = ""
    region: str = "us-east-1"
    public_endpoint: str = ""


def is_remote(root: str) -> bool:
    return root.startswith(SCHEME)


class ObjectStore:
    """One root (a directory or ``s3://bucket/prefix``) and the calls predq makes on it."""

    def __init__(self, root: str, s3: S3Options | None = None) -> None:
        self.root = root
        self.remote = is_remote(root)
        self.s3 = s3 or S3Options()
        if self.remote:
            bucket, _, prefix = root[len(SCHEME) :].partition("/")
            if not bucket:
                raise ValueError(f"{root!r}: an s3:// root names a bucket (s3://bucket/prefix)")
            self.bucket, self.prefix = bucket, prefix.strip("/")
            self._base = f"{bucket}/{self.prefix}".rstrip("/")
        else:
            self._base = str(Path(root).resolve())
        self._fs: tuple[int, fs.FileSystem] | None = None

    def __repr__(self) -> str:
        return f"ObjectStore({self.root!r})"

    # -- reading ---------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        # A random-access file knows its size and reads it in one GET; an input stream's read()
        # grows its requests piece by piece (an 8 MiB object: 0.13 s against 0.02 s on moto).
        with _translated(self), self._filesystem().open_input_file(self._path(key)) as source:
            return bytes(source.read())

    @contextmanager
    def open_input(self, key: str) -> Iterator[pa.NativeFile]:
        """A random-access file (Parquet reads its footer, then only the row groups asked for)."""
        with _translated(self):
            handle = self._filesystem().open_input_file(self._path(key))
        with handle:
            yield handle

    def stream(self, key: str, piece: int = 8 << 20) -> Iterator[bytes]:
        """The object's bytes, ``piece`` at a time (a result streamed to a client); on S3 a piece
        is one ranged GET, so pieces are large."""
        with _translated(self), self._filesystem().open_input_file(self._path(key)) as source:
            while data := source.read(piece):
                yield bytes(data)

    def size(self, key: str) -> int | None:
        """The object's size, or None when there is none."""
        with _translated(self):
            info = self._filesystem().get_file_info(self._path(key))
        return info.size if info.type == fs.FileType.File else None

    def local_path(self, key: str) -> Path | None:
        """The file's path on this machine, for a local root (None on S3)."""
        return None if self.remote else Path(self._path(key))

    # -- writing ---------------------------------------------------------------------

    def write_bytes(self, key: str, data: bytes) -> None:
        with self.writing(key) as out:
            out.write(data)

    @contextmanager
    def writing(self, key: str) -> Iterator[pa.NativeFile]:
        """An output stream for ``key``: the object exists, whole, only once the block ended well."""
        filesystem, target = self._filesystem(), self._path(key)
        if self.remote:
            with _translated(self):
                out = filesystem.open_output_stream(target)
            try:
                with _translated(self):  # an upload that failed midway: the store, not a bug
                    yield out
            except BaseException:
                # pyarrow has no abort: the upload completes, and is deleted again (best effort:
                # with the store down neither happens, and no object is left either).
                with suppress(OSError, StoreUnavailable):
                    out.close()
                    self.delete(key)
                raise
            with _translated(self):
                out.close()
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        temporary = f"{os.path.dirname(target)}/.{os.path.basename(target)}.{uuid.uuid4().hex}.tmp"
        try:
            with filesystem.open_output_stream(temporary) as out:
                yield out
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)

    def move(self, source: str, target: str) -> None:
        """Rename a key (on S3 a server-side copy, then a delete)."""
        with _translated(self):
            self._filesystem().move(self._path(source), self._path(target))

    def delete(self, key: str) -> None:
        """Delete one object; a missing one is no error."""
        with _translated(self):
            try:
                self._filesystem().delete_file(self._path(key))
            except FileNotFoundError:
                pass

    def delete_dir(self, prefix: str) -> None:
        """Delete every object under ``prefix``; a missing one is no error."""
        if not self.remote:
            shutil.rmtree(self._path(prefix), ignore_errors=True)
            return
        with _translated(self):
            try:
                self._filesystem().delete_dir(self._path(prefix))
            except FileNotFoundError:
                pass

    # -- health ------------------------------------------------------------------------

    def check(self) -> str:
        """``ok``, or what is wrong (readiness): credentials, the endpoint, the bucket."""
        if not self.remote:
            return "ok" if os.access(_existing_parent(Path(self._base)), os.W_OK) else "not writable"
        try:
            with _translated(self):
                info = self._filesystem().get_file_info(self.bucket)
        except StoreUnavailable as exc:
            return f"unreachable: {exc.message}"
        return "ok" if info.type != fs.FileType.NotFound else f"no bucket {self.bucket!r}"

    def require(self) -> None:
        """StoreUnavailable unless :meth:`check` finds the store ready."""
        state = self.check()
        if state != "ok":
            raise StoreUnavailable(f"the object store {self.root} is unavailable: {state}")

    def presigned_url(self, key: str, seconds: int, filename: str) -> str:
        """A GET URL for ``key`` valid ``seconds``, signed for S3_PUBLIC_ENDPOINT when set."""
        from app.storage.credentials import s3_client

        endpoint = self.s3.public_endpoint or self.s3.endpoint_url
        client = s3_client(endpoint, self.s3.region)
        return str(
            client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self._path(key).partition("/")[2],
                    "ResponseContentDisposition": f'attachment; filename="{filename}"',
                },
                ExpiresIn=seconds,
            )
        )

    # -- inside --------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in Path(key).parts:
            raise ValueError(f"{key!r} is not a key under the store's root")
        return f"{self._base}/{key}" if self._base else key

    def _filesystem(self) -> fs.FileSystem:
        # One per process: the AWS SDK's connections are not shared across a fork.
        if self._fs is None or self._fs[0] != os.getpid():
            self._fs = (os.getpid(), self._connect())
        return self._fs[1]

    def _connect(self) -> fs.FileSystem:
        if not self.remote:
            return fs.LocalFileSystem()
        from app.storage.credentials import require_credentials

        require_credentials(self.root)
        endpoint = self.s3.endpoint_url
        options: dict[str, Any] = {}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            options = {"endpoint_override": host or scheme, "scheme": scheme if host else "https"}
        return fs.S3FileSystem(
            region=self.s3.region,
            connect_timeout=_CONNECT_SECONDS,
            request_timeout=_REQUEST_SECONDS,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=2),
            **options,
        )


def retried(call: Callable[[], T], seconds: float) -> T:
    """``call()``, called again while it raises StoreUnavailable, for up to ``seconds`` (then
    StoreUnavailable saying so): a store that is down for a moment delays work, never fails it."""
    deadline = time.monotonic() + seconds
    pause = _FIRST_PAUSE
    while True:
        try:
            return call()
        except StoreUnavailable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable(
                    f"{exc.message} (retried for {seconds:g} s, STORE_RETRY_SECONDS)"
                ) from exc
            log.warning("%s; retrying in %.1f s", exc.message, min(pause, left))
            time.sleep(min(pause, left))
            pause = min(pause * 2, _LONGEST_PAUSE)


@contextmanager
def _translated(store: ObjectStore) -> Iterator[None]:
    """pyarrow's OSError for an unreachable or refusing store as StoreUnavailable (a missing key stays)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not store.remote:
            raise
        message = str(exc).splitlines()[0][:300]
        raise StoreUnavailable(f"the object store {store.root} is unavailable: {message}") from exc


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path

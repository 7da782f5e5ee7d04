"""Model artifacts in the store, and a worker's copies of them on its local disk.

Registration uploads an artifact once (:meth:`Artifacts.put`). A process that loads a version
asks :meth:`Artifacts.fetch` for its bytes: from MODEL_CACHE_DIR when a file named by the
registry's sha256 is there and still hashes to it, else from the store, waiting for a store
that does not answer for up to STORE_RETRY_SECONDS. Only bytes whose sha256 is the registry's
are kept on disk (the caller refuses the others: artifact_integrity_error). The directory is
bounded by MODEL_CACHE_DIR_BYTES: the files least recently used (mtime, touched on each use)
are deleted first. Several processes share it: a file is written under a temporary name and
renamed, and a file deleted by another process is simply fetched again.

A local ARTIFACT_ROOT is read in place: no copy is cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

from app.storage.store import ObjectStore, retried

log = logging.getLogger(__name__)


class Artifacts:
    """The artifact store (ARTIFACT_ROOT) with this host's disk cache in front of it."""

    def __init__(
        self,
        store: ObjectStore,
        cache_dir: str | Path | None = None,
        cache_bytes: int = 10 << 30,
        retry_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.cache_dir = Path(cache_dir) if cache_dir and store.remote else None
        self.cache_bytes = cache_bytes
        self.retry_seconds = retry_seconds

    def put(self, key: str, data: bytes) -> None:
        """Upload an artifact (once: a version's files are never rewritten)."""
        self.store.write_bytes(key, data)

    def fetch(self, key: str, sha256: str) -> tuple[bytes, str]:
        """The artifact's bytes and their sha256 (the caller compares it with ``sha256``)."""
        cached = self._cached(sha256)
        if cached is not None:
            return cached, sha256
        data = self._download(key)
        digest = hashlib.sha256(data).hexdigest()
        if digest == sha256 and self.cache_dir is not None:
            self._keep(sha256, data)
        return data, digest

    def cached_digests(self) -> list[str]:
        """The sha256 of every artifact this host holds on disk."""
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return []
        return sorted(p.name for p in self.cache_dir.iterdir() if not p.name.startswith("."))

    def _download(self, key: str) -> bytes:
        """The store's bytes, retried while the store is unavailable, for up to retry_seconds."""
        return retried(lambda: self.store.read_bytes(key), self.retry_seconds)

    def _cached(self, sha256: str) -> bytes | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / sha256
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:  # changed on disk: fetch it again
            log.warning("cached artifact %s does not match its name; fetching it again", sha256[:12])
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # most recently used
        return data

    def _keep(self, sha256: str, data: bytes) -> None:
        assert self.cache_dir is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = self.cache_dir / f".{sha256}.{uuid.uuid4().hex}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self.cache_dir / sha256)
        self._trim(keep=sha256)

    def _trim(self, keep: str) -> None:
        """Delete the least recently used files until the directory fits cache_bytes."""
        assert self.cache_dir is not None
        files = []
        for path in self.cache_dir.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.cache_bytes:
                break
            if path.name == keep:
                continue  # larger than the budget alone: kept until the next one comes
            path.unlink(missing_ok=True)
            total -= size
            log.info("model cache: deleted %s (least recently used)", path.name[:12])

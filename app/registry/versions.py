"""What names a model version: the rules for names, the default alias, and the record the
API and workers serve a version by (:class:`ServedVersion`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from app.errors import ModelNotFound

DEFAULT_ALIAS = "champion"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
"""What a model's name and an alias may be; matched whole (fullmatch), as /openapi.json's
``pattern`` means it (there ``$`` does not let a trailing newline through)."""

MAX_VERSION = 2**31 - 1
"""The largest version number the database holds (a 32-bit integer column)."""


@dataclass(frozen=True)
class ServedVersion:
    """What the API and workers need to know about one version to serve it."""

    name: str
    version: int
    sha256: str
    artifact_path: str
    signature: dict[str, Any]
    feature_index: dict[str, int] | None
    format: str = "joblib"
    trusted_types: tuple[str, ...] = ()
    compiled: dict[str, Any] | None = None
    """The compiled backend's record (status, gate figures, crossover, ONNX artifact), if any."""

    @cached_property
    def class_names(self) -> list[str] | None:
        """The classes as strings, as an output's probabilities name them (app/scoring/inference.py);
        None for a regressor. Once per version (and process), not per submit."""
        classes = self.signature.get("classes")
        return [str(c) for c in classes] if classes is not None else None

    @property
    def compiled_serving(self) -> bool:
        """An admin compiled this version and its parity gate passed (INFERENCE_BACKEND aside)."""
        return bool(self.compiled) and self.compiled.get("status") == "serving"  # type: ignore[union-attr]


@dataclass
class LoadedVersion:
    """A version as a process holds it: its estimator, and its compiled backend when it serves
    one (both counted as the version's memory: one entry of the registry's loaded versions)."""

    served: ServedVersion
    estimator: Any
    compiled: Any = None
    """What the registry's compiled loader built from the ONNX artifact (app/scoring/compiled.py)."""
    artifact_bytes: int = 0
    """The artifact's size, measured at load: the version's weight in the memory budget ..."""
    onnx_bytes: int = 0
    """... plus its ONNX artifact's, when the compiled backend is loaded with it."""

    @property
    def nbytes(self) -> int:
        return self.artifact_bytes + self.onnx_bytes


def existing_name(name: str) -> None:
    """Refuse, before any query, a name no registered model can have (say, one holding NUL)."""
    if not NAME.fullmatch(name):
        raise ModelNotFound(f"no model named {name!r}", model=name)

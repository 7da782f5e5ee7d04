"""Reading settings from environment variables: one variable per field, named in upper case.

Kept apart from :mod:`app.config` so that the list of settings stays the only thing there.
A variable that is unset or empty leaves the field's default; one that does not parse as the
field's type is a ``ValueError`` naming the variable (the process refuses to start).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parsed(settings_class: Any, environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields of ``settings_class`` given in ``environ``, each coerced to its type."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(settings_class):
        if f.name == "extra":
            continue
        raw = environ.get(f.name.upper())
        if raw is None or raw == "":
            continue
        values[f.name] = _coerce(f.type, raw, f.name)
    return values


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    kind = str(type_name)
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE
        raise ValueError(f"environment variable {name.upper()}={raw!r} is not a boolean (true/false)")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name.upper()}={raw!r} is not a {kind}") from exc
    return raw

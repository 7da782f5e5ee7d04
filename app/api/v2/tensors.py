"""Tensors and a model's rows, both ways: a version's signature as V2 metadata, an inference
request's input tensors as the model's feature columns, a job's outputs as output tensors.

Layout (as MLServer's scikit-learn runtime has it): a model fitted on named features takes
one tensor per feature, named like it, of shape ``[-1]`` (or ``[-1, 1]``); a model fitted
without names one tensor ``input-0`` of shape ``[-1, n_features]``. Either is ``FP32`` for a
model that reads float32 (trees and their ensembles) and ``FP64`` otherwise, and any numeric
datatype is read. Outputs: ``predict`` (a classifier's labels, ``INT64``, ``FP64``, ``BOOL``
or ``BYTES`` as its classes are; a regressor's ``FP64``) and, for a classifier with
probabilities, ``predict_proba`` (``FP64``, ``[-1, n_classes]``, in the order of its classes).

Binary tensor data (Triton's extension) is little-endian, row-major; ``BYTES`` elements are
each a 4-byte length and the UTF-8 bytes.
"""

from __future__ import annotations

import itertools
import math
import operator
import struct
from typing import Any

import numpy as np
import orjson
from msgspec import UNSET

from app.api.v2.protocol import NUMERIC, Datatype, InferenceRequest, MetadataTensor, RequestInput, parameter
from app.errors import InvalidInferenceRequest

SINGLE_INPUT = "input-0"
PREDICT, PREDICT_PROBA = "predict", "predict_proba"


def input_metadata(signature: dict[str, Any]) -> list[MetadataTensor]:
    datatype: Datatype = "FP32" if "float32" in signature["dtypes"] else "FP64"
    names = signature["feature_names"]
    if names is not None:
        return [MetadataTensor(name, datatype, [-1]) for name in names]
    return [MetadataTensor(SINGLE_INPUT, datatype, [-1, signature["n_features"]])]


def output_metadata(signature: dict[str, Any]) -> list[MetadataTensor]:
    found = [MetadataTensor(PREDICT, label_datatype(signature), [-1])]
    if signature.get("has_proba"):
        found.append(MetadataTensor(PREDICT_PROBA, "FP64", [-1, len(signature["classes"])]))
    return found


def label_datatype(signature: dict[str, Any]) -> Any:
    classes = signature.get("classes") if signature["task"] == "classification" else None
    if classes is None:
        return "FP64"
    kinds = {type(c) for c in classes}
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def input_matrix(request: InferenceRequest, tail: memoryview, signature: dict[str, Any]) -> np.ndarray:
    """The request's input tensors as the model's float64 matrix (features in its order), for
    the checks every request's rows get (app/registry/signature.py: finite, within the dtype)."""
    arrays = _arrays(request.inputs, tail)
    names = signature["feature_names"]
    expected = list(names) if names is not None else [SINGLE_INPUT]
    given = [tensor.name for tensor in request.inputs]
    missing = [name for name in expected if name not in given]
    unknown = [name for name in given if name not in expected]
    if missing or unknown or len(set(given)) != len(given):
        parts = [f"missing input {', '.join(map(repr, missing[:5]))}"] if missing else []
        parts += [f"unknown input {', '.join(map(repr, unknown[:5]))}"] if unknown else []
        parts += [] if parts else ["an input named twice"]
        raise InvalidInferenceRequest(
            f"{'; '.join(parts)}: the model takes {_listed(expected)} (GET its metadata)"
        )
    if names is None:
        (tensor,) = request.inputs
        n = signature["n_features"]
        if len(tensor.shape) != 2 or tensor.shape[1] != n:
            raise InvalidInferenceRequest(
                f"input {tensor.name!r} has shape {tensor.shape}; the model takes [-1, {n}]"
            )
        return _some_rows(arrays[0].reshape(tensor.shape))
    rows = {tensor.shape[0] if tensor.shape else -1 for tensor in request.inputs}
    for tensor in request.inputs:
        if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ([], [1]):
            raise InvalidInferenceRequest(
                f"input {tensor.name!r} has shape {tensor.shape}; the model takes [-1]"
            )
    if len(rows) != 1:
        raise InvalidInferenceRequest(f"the inputs hold different numbers of rows: {sorted(rows)}")
    by_name = dict(zip(given, arrays, strict=True))
    return _some_rows(np.column_stack([by_name[name] for name in names]))


def _some_rows(matrix: np.ndarray) -> np.ndarray:
    if not len(matrix):
        raise InvalidInferenceRequest("the inputs hold no rows")
    return np.ascontiguousarray(matrix)


def _listed(names: list[str]) -> str:
    return ", ".join(map(repr, names[:10])) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _arrays(inputs: list[RequestInput], tail: memoryview) -> list[np.ndarray]:
    """Each input's elements, flat; its binary bytes taken from ``tail`` in order."""
    arrays, offset = [], 0
    for tensor in inputs:
        dtype = NUMERIC.get(tensor.datatype)
        if dtype is None:
            raise InvalidInferenceRequest(
                f"input {tensor.name!r} is {tensor.datatype}; the model reads numbers (FP64, FP32, INT64...)"
            )
        size = parameter(tensor.parameters, "binary_data_size", int, f"input {tensor.name!r}")
        count = math.prod(tensor.shape)
        if size is not None:
            if offset + size > len(tail):
                raise InvalidInferenceRequest(
                    f"input {tensor.name!r}: binary_data_size {size} runs past the body"
                    f" ({len(tail) - offset} bytes left after the JSON header)"
                )
            array = (
                np.frombuffer(tail[offset : offset + size], dtype=dtype)
                if size % np.dtype(dtype).itemsize == 0
                else None
            )
            offset += size
        elif tensor.data is not UNSET:
            array = _json_elements(tensor)
        else:
            raise InvalidInferenceRequest(f"input {tensor.name!r} has neither data nor binary_data_size")
        if array is None or array.size != count:
            got = "a partial element" if array is None else f"{array.size} elements"
            raise InvalidInferenceRequest(
                f"input {tensor.name!r}: shape {tensor.shape} needs {count} elements, its data holds {got}"
            )
        arrays.append(array.astype(np.float64, copy=False))
    if offset != len(tail):
        raise InvalidInferenceRequest(f"{len(tail) - offset} bytes follow the last binary input")
    return arrays


_NUMBERS = {int, float}


def _json_elements(tensor: RequestInput) -> np.ndarray:
    """A JSON tensor's elements (flat or nested, row-major) as float64; refused naming the
    element's row when one is not a number (a boolean is not one)."""
    flat: list[Any] = tensor.data  # type: ignore[assignment]  # not UNSET: checked by the caller
    while flat and any(type(item) is list for item in flat):
        if not all(type(item) is list for item in flat):
            raise InvalidInferenceRequest(f"input {tensor.name!r}: its data nests lists unevenly")
        flat = list(itertools.chain.from_iterable(flat))
    if not set(map(type, flat)) <= _NUMBERS:
        bad = next(i for i, v in enumerate(flat) if type(v) not in _NUMBERS)
        width = math.prod(tensor.shape[1:]) or 1
        raise InvalidInferenceRequest(
            f"input {tensor.name!r}, row {bad // width}: {flat[bad]!r} is not a number",
        )
    try:
        return np.array(flat, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        raise InvalidInferenceRequest(f"input {tensor.name!r}: a number beyond float64") from None


def output_tensors(
    outputs: list[dict[str, Any]], signature: dict[str, Any], wanted: list[tuple[str, bool]]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The job's outputs as the ``wanted`` tensors (name, binary?): their JSON objects, and the
    bytes of those sent binary, in order."""
    objects, blobs = [], []
    for name, binary in wanted:
        datatype = label_datatype(signature) if name == PREDICT else "FP64"
        if name == PREDICT:
            values: list[Any] = [o["prediction"] for o in outputs]
            shape = [len(values)]
        else:
            keys = [str(c) for c in signature["classes"]]
            if len(keys) == 1:  # itemgetter of one key gives the value, not a tuple
                values = [(o["probabilities"][keys[0]],) for o in outputs]
            else:
                row = operator.itemgetter(*keys)
                values = [row(o["probabilities"]) for o in outputs]
            shape = [len(values), len(keys)]
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            blob = _binary(values, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = list(itertools.chain.from_iterable(values)) if name == PREDICT_PROBA else values
        objects.append(tensor)
    return objects, blobs


_BINARY_TYPES = {"FP64": "<f8", "INT64": "<i8", "BOOL": "?"}


def _binary(values: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in values]
        return b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    return np.asarray(values, dtype=_BINARY_TYPES[datatype]).tobytes()


def encode(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)

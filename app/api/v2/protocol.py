"""The Open Inference Protocol's (V2) JSON objects, decoded and checked by msgspec, and their
part of ``/openapi.json`` written from the same definitions (as app/api/decoding.py does for
/v1's submit).

An inference request is JSON, or (Triton's binary tensor data extension) JSON followed by
raw tensor bytes: the ``Inference-Header-Content-Length`` header gives the JSON's length,
and each input sent that way says its byte count in ``parameters.binary_data_size``, the
bytes following the JSON in the order of ``inputs``. ``split_body`` cuts such a body.

Unknown fields are ignored, as the protocol's own schema allows (Triton's examples send
``model_name`` in the request); unknown parameters too (tritonclient sends ``priority`` and
``timeout`` when asked). Every refusal here is a ``InvalidInferenceRequest`` (400), whose message names
the part of the request at fault.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from app.api.bodies import loads_loose
from app.errors import InvalidInferenceRequest, PredqError

#: The header giving the JSON's length when tensor bytes follow it.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: The media type of a body holding tensor bytes (request or response).
BINARY = "application/octet-stream"

#: Every datatype of the protocol; those a model's features can be read from are NUMERIC.
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
]  # fmt: skip
#: Datatypes whose elements are numbers, with their little-endian numpy types.
NUMERIC = {
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip

Parameter = str | int | float | bool
Parameters = Annotated[
    dict[str, Parameter],
    Meta(
        description="Name/value pairs. predq reads, on a request: alias and routing_key (strings),"
        " priority (high, normal, low; or Triton's 1, 2, 3), deadline_ms, binary_data_output;"
        " on an input: binary_data_size; on an output: binary_data. Others are ignored."
    ),
]


class RequestInput(Struct):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    shape: Annotated[list[Annotated[int, Meta(ge=0, le=2**31 - 1)]], Meta(max_length=8)]
    datatype: Datatype
    parameters: Parameters | UnsetType = UNSET
    data: (
        Annotated[
            list[Any],
            Meta(description="Row-major, flat or nested; absent when sent as binary (binary_data_size)."),
        ]
        | UnsetType
    ) = UNSET


class RequestOutput(Struct):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    parameters: Parameters | UnsetType = UNSET


class InferenceRequest(Struct):
    """An inference request: input tensors, and optionally which outputs and how."""

    inputs: Annotated[list[RequestInput], Meta(min_length=1, max_length=10_000)]
    id: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    parameters: Parameters | UnsetType = UNSET
    outputs: list[RequestOutput] | UnsetType = UNSET


class MetadataTensor(Struct):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadata(Struct):
    name: str
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    versions: list[str] | UnsetType = UNSET


class ServerMetadata(Struct):
    name: str
    version: str
    extensions: list[str]


class Readiness(Struct):
    ready: bool
    name: str | UnsetType = UNSET


class Liveness(Struct):
    live: bool


class ResponseOutput(Struct):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: Parameters | UnsetType = UNSET
    data: list[Any] | UnsetType = UNSET


class InferenceResponse(Struct):
    model_name: str
    outputs: list[ResponseOutput]
    model_version: str | UnsetType = UNSET
    id: str | UnsetType = UNSET
    parameters: Parameters | UnsetType = UNSET


class ErrorMessage(Struct):
    error: str


_DECODE = msgspec.json.Decoder(InferenceRequest)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The request's JSON and the tensor bytes after it (empty without the header)."""
    if header_length is None:
        return body, memoryview(b"")
    try:
        length = int(header_length)
    except ValueError:
        raise InvalidInferenceRequest(
            f"{HEADER_LENGTH} must be an integer, not {header_length[:50]!r}"
        ) from None
    if not 0 < length <= len(body):
        raise InvalidInferenceRequest(f"{HEADER_LENGTH} is {length}, but the body holds {len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def inference_request(header: bytes) -> InferenceRequest:
    """The request's JSON, decoded and checked; InvalidInferenceRequest (400) naming what does not fit."""
    try:
        return _DECODE.decode(header)
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass  # NaN, Infinity or huge integers (read by the standard library), or not JSON
    except msgspec.ValidationError as exc:
        raise InvalidInferenceRequest(f"the inference request does not fit the protocol: {exc}") from None
    except RecursionError:
        raise InvalidInferenceRequest("the inference request is nested too deeply") from None
    try:
        loose = loads_loose(header)
        return msgspec.convert(loose, InferenceRequest, strict=True)
    except PredqError as exc:
        raise InvalidInferenceRequest(f"the inference request is not JSON: {exc.message}") from None
    except msgspec.ValidationError as exc:
        raise InvalidInferenceRequest(f"the inference request does not fit the protocol: {exc}") from None


def parameter(parameters: dict[str, Parameter] | UnsetType, name: str, kind: type, where: str) -> Any:
    """``parameters[name]`` when given (None otherwise); InvalidInferenceRequest unless it is a ``kind``."""
    if parameters is UNSET or name not in parameters:
        return None
    value = parameters[name]
    # bool is an int subclass: a true is no number, and 1 no boolean.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidInferenceRequest(f"{where} parameter {name!r} must be a {kind.__name__}, not {value!r}")
    return value


_DOCUMENTED = (InferenceRequest, InferenceResponse, ModelMetadata, ServerMetadata, Readiness, Liveness,
               ErrorMessage)  # fmt: skip


def register_schemas(spec: Any) -> None:
    """Add the protocol's objects to the OpenAPI document (components named V2...)."""
    _, components = msgspec.json.schema_components(_DOCUMENTED, ref_template="#/components/schemas/V2{name}")
    for name, schema in components.items():
        spec.components.schema(f"V2{name}", component=schema)


def ref(struct: type[Struct]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/V2{struct.__name__}"}

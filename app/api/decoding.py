"""The submit and poll routes' inputs, decoded and checked by msgspec (compiled), not webargs.

These two routes carry nearly all traffic; webargs and marshmallow cost them a sixth of
the API's CPU per prediction. Each input is defined once here, as a msgspec type, and
that one definition both decodes requests and writes their part of ``/openapi.json``
(``register_schemas``, ``SUBMIT_DOC``, ``POLL_DOC``). Rows are checked against the
model's signature afterwards (app/registry/signature.py), which names the row and field at fault.

A body msgspec refuses is read once more by the standard library, which accepts what
some clients send (``NaN``, ``Infinity``, numbers beyond float64) so that the row check
can name the row and field, and which answers the same 400/422 as before otherwise.
Only bad input takes that road.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import msgspec
import pyarrow as pa
from flask import Request
from msgspec import UNSET, Meta, Struct, UnsetType

from app.errors import InvalidInput, MalformedArrow, MalformedJSON

#: Versions are stored as 32-bit integers.
Version = Annotated[int, Meta(ge=1, le=2**31 - 1)]


ExplainClasses = Annotated[
    Literal["predicted", "all"],
    Meta(
        description="With explain, a classifier's rows are explained for the predicted class, or for"
        " every class too (by_class)."
    ),
]


def explain_mode(explain: bool, classes: str) -> str | None:
    """What the worker explains: None (nothing), "predicted" or "all" (every class too)."""
    if not explain:
        if classes != "predicted":
            raise InvalidInput(
                "explain_classes needs explain: true", fields={"explain_classes": ["Needs explain: true."]}
            )
        return None
    return classes


class PredictionRequest(Struct, forbid_unknown_fields=True):
    """A prediction request: the rows, and optionally which version serves them."""

    inputs: Annotated[
        list[Any],
        Meta(
            min_length=1,
            description="Rows: lists of numbers in feature order, or objects keyed by feature name.",
            extra_json_schema={"example": [[5.1, 3.5, 1.4, 0.2]]},  # OpenAPI 3.0's keyword
        ),
    ]
    version: Version | UnsetType = UNSET
    alias: Annotated[str, Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    routing_key: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    explain: Annotated[
        bool, Meta(description="Each row's feature contributions too (shap; tree and linear models).")
    ] = False
    explain_classes: ExplainClasses = "predicted"

    def get(self, field: str) -> Any:
        """The field's value, None when the body left it out."""
        value = getattr(self, field)
        return None if value is UNSET else value

    def explain_mode(self) -> str | None:
        return explain_mode(self.explain, self.explain_classes)


#: The content type of a prediction request's rows as an Arrow IPC stream (big requests).
ARROW_STREAM = "application/vnd.apache.arrow.stream"


class ArrowOptions(Struct, forbid_unknown_fields=True):
    """What an Arrow request's query string may say besides ``wait``: which version serves it."""

    version: Version | UnsetType = UNSET
    alias: Annotated[str, Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    routing_key: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    explain: bool = False
    explain_classes: ExplainClasses = "predicted"

    def get(self, field: str) -> Any:
        value = getattr(self, field)
        return None if value is UNSET else value

    def explain_mode(self) -> str | None:
        return explain_mode(self.explain, self.explain_classes)


def arrow_request(body: bytes, args: dict[str, str]) -> tuple[Any, ArrowOptions]:
    """An Arrow IPC stream body as a table (its columns the model's features) and the query's
    options; MalformedArrow (400) when the body is not such a stream."""
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise MalformedArrow("request body is not an Arrow IPC stream", reason=str(exc)[:200]) from None
    options = {key: value for key, value in args.items() if key != "wait"}
    return table, _convert(options, ArrowOptions, "query string does not match the schema")


Wait = Annotated[
    float, Meta(ge=0, le=30, description="Hold the request up to this many seconds for the result.")
]
IdempotencyKey = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=200,
        # Printable ASCII: granian passes a header value with any other byte on as '' (README).
        pattern="^[ -~]+$",
        description="The same key and body give the same job; another body gets 409. Printable ASCII.",
    ),
]

_DECODE_REQUEST = msgspec.json.Decoder(PredictionRequest)
_MISSING = re.compile(r"missing required field `([^`]+)`")
_AT = re.compile(r" - at `\$\.?([^`]*)`$")


def body_of(request: Request) -> bytes:
    """The request's body; 413 when it is larger than MAX_CONTENT_LENGTH, sent chunked too.

    werkzeug checks a declared Content-Length, but reads a chunked body only up to the
    limit and stops there, so a larger one would arrive cut short (and fail as malformed
    JSON). One more read past the limit makes werkzeug raise its 413.
    """
    body = request.get_data()
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(body) >= limit:
        request.stream.read(1)
    return body


def prediction_request(body: bytes) -> PredictionRequest:
    """The submit body, decoded and checked; raises MalformedJSON (400) or InvalidInput (422)."""
    try:
        return _DECODE_REQUEST.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    except RecursionError:  # nested deeper than msgspec follows
        raise MalformedJSON("request body is nested too deeply") from None
    try:
        # Slow road, bad input only: the standard library reads NaN, Infinity and 1e999.
        loose = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedJSON("request body is not valid JSON", reason=str(exc)[:200]) from None
    checked: PredictionRequest = _convert(
        loose, PredictionRequest, "request body does not match the schema", strict=True
    )
    return checked


def wait_seconds(raw: str | None) -> float:
    """``?wait=S``: 0 when absent; 422 when not a number in [0, 30]."""
    return 0.0 if raw is None else _convert(raw, Wait, "query parameter 'wait' is invalid", "wait")


def idempotency_key(raw: str | None) -> str | None:
    """The ``Idempotency-Key`` header, or None; 422 unless 1 to 200 printable ASCII characters."""
    if raw is None:
        return None
    if raw == "":
        # What granian hands on for a value with a non-ASCII byte: say so, never act as if
        # no key had been sent (a retry would then make a second job).
        raise InvalidInput(
            "header 'Idempotency-Key' arrived empty; send 1 to 200 printable ASCII characters "
            "(the HTTP server passes on a header value holding any other character as empty)",
            fields={"Idempotency-Key": ["empty: printable ASCII only"]},
        )
    key: str = _convert(raw, IdempotencyKey, "header 'Idempotency-Key' is invalid", "Idempotency-Key")
    return key


def _convert(value: Any, type_: Any, message: str, field: str | None = None, *, strict: bool = False) -> Any:
    # Not strict for query strings and headers, which are text: "2.5" is a number there.
    try:
        return msgspec.convert(value, type_, strict=strict)
    except msgspec.ValidationError as exc:
        raise InvalidInput(message, fields=_field_messages(str(exc), field)) from None


def _field_messages(error: str, field: str | None) -> dict[str, list[str]]:
    """msgspec's message as ``{field: [message]}``, the shape webargs gave (and clients read)."""
    missing = _MISSING.search(error)
    if missing:
        return {missing.group(1): ["Missing data for required field."]}
    at = _AT.search(error)
    where = at.group(1) if at else (field or "_schema")
    return {where or "_schema": [_AT.sub("", error)]}


_REF = "#/components/schemas/{name}"


def register_schemas(spec: Any) -> None:
    """Add the request body's schema (and any it refers to) to the OpenAPI document."""
    _, components = msgspec.json.schema_components([PredictionRequest], ref_template=_REF)
    for name, schema in components.items():
        spec.components.schema(name, component=schema)


_WAIT_PARAMETER = {"in": "query", "name": "wait", "required": False, "schema": msgspec.json.schema(Wait)}

#: The submit and poll operations' inputs in ``/openapi.json`` (``blp.doc(**...)``).
SUBMIT_DOC: dict[str, Any] = {
    "parameters": [
        _WAIT_PARAMETER,
        {"in": "header", "name": "Idempotency-Key", "required": False,
         "schema": msgspec.json.schema(IdempotencyKey)},
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": _REF.format(name=PredictionRequest.__name__)}},
            # Many rows at once: one column per feature (by name, or in order for a model
            # fitted without names); version, alias and routing_key in the query string.
            ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
        },
    },
}  # fmt: skip
POLL_DOC: dict[str, Any] = {"parameters": [_WAIT_PARAMETER]}

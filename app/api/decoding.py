"""The submit and poll routes' inputs, decoded and checked by msgspec (compiled), not webargs.

These two routes carry nearly all traffic; webargs and marshmallow cost them a sixth of
the API's CPU per prediction. Each input is defined once here, as a msgspec type, and
that one definition both decodes requests and writes their part of ``/openapi.json``
(``register_schemas``, ``SUBMIT_DOC``, ``POLL_DOC``). Rows are checked against the
model's signature afterwards (app/registry/signature.py), which names the row and field at fault.

A body msgspec refuses is read once more by the standard library (app/api/bodies.py),
which accepts what some clients send (``NaN``, ``Infinity``, numbers beyond float64), and
checked against a twin of the request type whose rows are left loose, so that the row
check can name the row and field at fault; anything else gets the same 400/422 as
msgspec's own. Only bad input takes that road.

An Arrow IPC stream body (``application/vnd.apache.arrow.stream``, its options in the
query string) is a binary protocol: it is left out of ``/openapi.json`` and described in
the route's description and the README.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
import pyarrow as pa
from msgspec import UNSET, Meta, Struct, UnsetType

from app.api.bodies import loads_loose
from app.errors import InvalidInput, MalformedArrow, MalformedJSON
from app.predictions.steering import MAX_DEADLINE_MS

#: Versions are stored as 32-bit integers.
Version = Annotated[int, Meta(ge=1, le=2**31 - 1)]


ExplainClasses = Annotated[
    Literal["predicted", "all"],
    Meta(
        description="With explain, a classifier's rows are explained for the predicted class, or for"
        " every class too (by_class)."
    ),
]


#: explain_mode's rule in JSON Schema, for /openapi.json: explain_classes "all" needs explain true
#: (an absent explain is false).
EXPLAIN_CLASSES_NEEDS_EXPLAIN: dict[str, Any] = {
    "not": {
        "required": ["explain_classes"],
        "properties": {"explain_classes": {"enum": ["all"]}, "explain": {"enum": [False]}},
    }
}


def explain_mode(explain: bool, classes: str) -> str | None:
    """What the worker explains: None (nothing), "predicted" or "all" (every class too)."""
    if not explain:
        if classes != "predicted":
            raise InvalidInput(
                "explain_classes needs explain: true", fields={"explain_classes": ["Needs explain: true."]}
            )
        return None
    return classes


#: Where a job's end is announced (a webhook, app/webhooks/): http(s), with no credentials and
#: no literal private address, both checked after decoding (422 naming the field).
CallbackUrl = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=2048,
        pattern="^[Hh][Tt][Tt][Pp][Ss]?://",
        description="POSTed the finished job (Standard Webhooks, signed with this API key's webhook secret).",
    ),
]


#: One row: numbers in the model's feature order, or an object of numbers keyed by feature
#: name (a model fitted on a DataFrame). How many, and which names, is the model's signature
#: (GET /v1/models/{name}), checked after decoding (app/registry/signature.py).
Row = Annotated[
    list[float] | dict[str, float],
    Meta(description="Numbers in the model's feature order, or an object of numbers keyed by feature name."),
]

_INPUTS_META = Meta(
    min_length=1,
    description="Rows (at most MAX_ROWS_PER_REQUEST; with explain, EXPLAIN_MAX_ROWS).",
    extra_json_schema={"example": [[5.1, 3.5, 1.4, 0.2]]},  # OpenAPI 3.0's keyword
)


Priority = Annotated[
    Literal["high", "normal", "low"],
    Meta(
        description="Which of the version's row queues the job waits on; a worker drains them highest first."
        " Default: the API key's default (normal); above the key's ceiling: 403."
    ),
]
DeadlineMs = Annotated[
    int,
    Meta(
        ge=1,
        le=MAX_DEADLINE_MS,
        description="Milliseconds the job may wait to start; not started by then, it ends expired (never"
        " run). Default: the model's default, else QUEUE_TTL_SECONDS, else none.",
    ),
]


class PredictionRequest(Struct, forbid_unknown_fields=True):
    """A prediction request: the rows, and optionally which version serves them."""

    inputs: Annotated[list[Row], _INPUTS_META]
    version: Version | UnsetType = UNSET
    alias: Annotated[str, Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    routing_key: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    explain: Annotated[
        bool, Meta(description="Each row's feature contributions too (shap; tree and linear models).")
    ] = False
    explain_classes: ExplainClasses = "predicted"
    priority: Priority | UnsetType = UNSET
    deadline_ms: DeadlineMs | UnsetType = UNSET
    callback_url: CallbackUrl | UnsetType = UNSET

    def get(self, field: str) -> Any:
        """The field's value, None when the body left it out."""
        value = getattr(self, field)
        return None if value is UNSET else value

    def explain_mode(self) -> str | None:
        return explain_mode(self.explain, self.explain_classes)


def _loose_twin(struct: type[Struct]) -> Any:
    """``struct`` with its rows left as any JSON: what a body msgspec refused is checked
    against, so that a bad row is named by the signature check (row and field), and every
    other field is checked exactly as ``struct`` checks it (a subclass: the same methods)."""
    loose = Annotated[list[Any], _INPUTS_META]
    return msgspec.defstruct(
        f"Loose{struct.__name__}", [("inputs", loose)], bases=(struct,), forbid_unknown_fields=True
    )


_LoosePredictionRequest = _loose_twin(PredictionRequest)


#: The content type of a prediction request's rows as an Arrow IPC stream (big requests).
ARROW_STREAM = "application/vnd.apache.arrow.stream"


class ArrowOptions(Struct, forbid_unknown_fields=True):
    """What an Arrow request's query string may say besides ``wait``: which version serves it."""

    version: Version | UnsetType = UNSET
    alias: Annotated[str, Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    routing_key: Annotated[str, Meta(max_length=200)] | UnsetType = UNSET
    explain: bool = False
    explain_classes: ExplainClasses = "predicted"
    priority: Priority | UnsetType = UNSET
    deadline_ms: DeadlineMs | UnsetType = UNSET
    callback_url: CallbackUrl | UnsetType = UNSET

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
_UNKNOWN = re.compile(r"unknown field `([^`]+)`")
_AT = re.compile(r" - at `\$\.?([^`]*)`$")


def prediction_request(body: bytes) -> PredictionRequest:
    """The submit body, decoded and checked; raises MalformedJSON (400) or InvalidInput (422).

    What the slow road returns is the loose twin: its rows are for the signature check to name.
    """
    try:
        return _DECODE_REQUEST.decode(body)
    # UnicodeDecodeError: invalid UTF-8 inside a string, which msgspec reports so.
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        pass
    except RecursionError:  # nested deeper than msgspec follows
        raise MalformedJSON("request body is nested too deeply") from None
    checked: PredictionRequest = _convert(
        loads_loose(body), _LoosePredictionRequest, "request body does not match the schema", strict=True
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
        raise InvalidInput(message, fields=field_messages(str(exc), field)) from None


def field_messages(error: str, field: str | None) -> dict[str, list[str]]:
    """msgspec's message as ``{field: [message]}``, the shape webargs gave (and clients read)."""
    missing = _MISSING.search(error)
    if missing:
        return {missing.group(1): ["Missing data for required field."]}
    unknown = _UNKNOWN.search(error)
    if unknown:
        return {unknown.group(1): ["Unknown field."]}
    at = _AT.search(error)
    where = at.group(1) if at else (field or "_schema")
    return {where or "_schema": [_AT.sub("", error)]}


_REF = "#/components/schemas/{name}"


def register_schemas(spec: Any, max_rows: int) -> None:
    """Add the request body's schema (and any it refers to) to the OpenAPI document, with
    this deployment's row limit (MAX_ROWS_PER_REQUEST, which the row check enforces: 413)."""
    _, components = msgspec.json.schema_components([PredictionRequest], ref_template=_REF)
    request = components[PredictionRequest.__name__]
    inputs = request["properties"]["inputs"]
    inputs["maxItems"] = max_rows
    # msgspec writes a union as anyOf; a row's two shapes (array, object) never overlap, so
    # oneOf says the same, and is what generated clients read as "one of these types".
    inputs["items"]["oneOf"] = inputs["items"].pop("anyOf")
    request.update(EXPLAIN_CLASSES_NEEDS_EXPLAIN)
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
        },
    },
}  # fmt: skip
POLL_DOC: dict[str, Any] = {"parameters": [_WAIT_PARAMETER]}

"""What /openapi.json says beyond each route's own schemas, from the code that decides it.

- Who may call: the bearer scheme on every ``/v1`` operation when auth is on (the paths
  app/access/auth.py guards), ``401`` there, ``403`` where the view needs the admin scope
  (the mark ``requires_scope`` leaves, which the auth hook reads).
- What every ``/v1`` operation can answer whatever its input: ``429`` (rate limits, per
  key), ``503`` (the database unreachable), each with ``Retry-After``.
- Each operation's ``operationId``: its view's name (``submit_prediction``).
- Path parameters' shapes: model names and aliases match the registry's NAME pattern
  (other names are not found; an alias to set that does not match is refused), job ids
  are UUIDs (others are not found).
- ``refusals``: the statuses an operation can give a request the schema allows, because the
  answer depends on the model, the stored state or the deployment's limits (a row of the
  wrong width, an Idempotency-Key reused). Each is declared on its route with the reason,
  and listed under the operation's ``x-valid-request-refusals``, which tests/ tells
  schemathesis as that operation's only accepted statuses beyond 2xx and 404.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apispec import BasePlugin
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.openapi import OpenAPIConverter
from flask import Flask
from flask_smorest import Blueprint
from marshmallow import validate

from app.access.auth import PROTECTED_PREFIXES
from app.registry.versions import NAME

#: The extension listing, per operation, the statuses a schema-valid request may get beyond 2xx/404.
REFUSALS = "x-valid-request-refusals"

_ERROR = {"$ref": "#/components/schemas/Error"}
_V2_ERROR = {"$ref": "#/components/schemas/V2ErrorMessage"}
#: The header every 429 and 503 carries.
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}
}
_EVERY_V1_ROUTE = {
    "429": "Rate limited: this API key's requests, or this address's unknown keys, passed their limit.",
    "503": "The database is unreachable (or, where said, the service is overloaded).",
}
_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "pattern": NAME.pattern},
    "alias": {"type": "string", "pattern": NAME.pattern},
    "job_id": {"type": "string", "format": "uuid"},
    "webhook_id": {"type": "string", "format": "uuid"},
    "delivery_id": {"type": "string", "pattern": "^msg_[0-9a-f]{32}$"},
}


def refusals(blp: Blueprint, reasons: dict[int, str]) -> Callable[[Any], Any]:
    """Declare that the route may answer a schema-valid request with these statuses, and why."""

    def decorate(view: Any) -> Any:
        for status, why in reasons.items():
            view = blp.alt_response(status, schema="Error", description=why)(view)
        return blp.doc(**{REFUSALS: {str(status): why for status, why in reasons.items()}})(view)

    return decorate


class _Converter(OpenAPIConverter):
    def field2property(self, field: Any) -> dict[str, Any]:
        ret: dict[str, Any] = super().field2property(field)
        any_of = ret.get("anyOf", [])
        if len(any_of) == 2 and any_of[0] == {"type": "object", "nullable": True}:
            # apispec's nullable nested schema for OpenAPI 3.0 admits any object in its first
            # branch; what is meant is the nested schema or null.
            del ret["anyOf"]
            ret.update(allOf=[any_of[1]], nullable=True)
        # apispec writes a Range's bounds but not whether they are exclusive (OpenAPI 3.0: flags).
        for validator in field.validators:
            if isinstance(validator, validate.Range):
                if validator.min is not None and not validator.min_inclusive:
                    ret["exclusiveMinimum"] = True
                if validator.max is not None and not validator.max_inclusive:
                    ret["exclusiveMaximum"] = True
        return ret

    def schema2jsonschema(self, schema: Any) -> dict[str, Any]:
        json_schema: dict[str, Any] = super().schema2jsonschema(schema)  # type: ignore[no-untyped-call]  # apispec's
        # ExactlyOneOfSchema's rule (app/api/schemas.py), from the same tuple it checks.
        one_of = getattr(schema, "EXACTLY_ONE_OF", ())
        if one_of:
            json_schema["oneOf"] = [{"required": [name]} for name in one_of]
        return json_schema


class ContractMarshmallowPlugin(MarshmallowPlugin):
    """apispec's marshmallow plugin, writing ExactlyOneOfSchema's rule as oneOf."""

    Converter = _Converter


class ContractPlugin(BasePlugin):
    """An apispec plugin adding, to each operation flask-smorest registers, what applies to it."""

    def __init__(self, app: Flask, auth_enabled: bool) -> None:
        self.app = app
        self.auth_enabled = auth_enabled

    def init_spec(self, spec: Any) -> None:
        super().init_spec(spec)
        if self.auth_enabled:
            spec.components.security_scheme(
                "bearer",
                {"type": "http", "scheme": "bearer", "description": "An API key (predq keys create)."},
            )

    def path_helper(self, path: str | None = None, operations: Any = None, parameters: Any = None,
                    **kwargs: Any) -> None:  # fmt: skip
        for parameter in parameters or []:
            if parameter.get("in") == "path" and parameter.get("name") in _PATH_PARAMETERS:
                parameter["schema"] = dict(_PATH_PARAMETERS[parameter["name"]])

    def operation_helper(self, path: str | None = None, operations: Any = None, **kwargs: Any) -> None:
        rule = kwargs.get("rule")
        for operation in (operations or {}).values():
            if rule is not None:
                # The view's name (unique, one view per method): what generated clients call it.
                operation.setdefault("operationId", rule.endpoint.rsplit(".", 1)[-1])
        if rule is not None and rule.rule.startswith("/v2"):
            for operation in (operations or {}).values():
                operation.setdefault("responses", {})["default"] = _error("An error.", _V2_ERROR)
        if rule is None or not rule.rule.startswith(PROTECTED_PREFIXES):
            for operation in (operations or {}).values():
                operation["security"] = []  # public, when auth is on elsewhere
            return
        view = self.app.view_functions.get(rule.endpoint)
        admin = getattr(view, "required_scope", "predict") == "admin"
        # The Open Inference Protocol's routes answer its own error shape (app/api/v2).
        error = _V2_ERROR if rule.rule.startswith("/v2/") else _ERROR
        for operation in (operations or {}).values():
            self._guarded(operation, admin, error)

    def _guarded(self, operation: dict[str, Any], admin: bool, error: dict[str, str]) -> None:
        responses = operation.setdefault("responses", {})
        if self.auth_enabled:
            operation["security"] = [{"bearer": []}]
            responses.setdefault("401", _error("No API key, or an unknown or revoked one.", error))
            if admin:
                responses.setdefault("403", _error("The API key lacks the admin scope.", error))
        for status, why in _EVERY_V1_ROUTE.items():
            response = responses.setdefault(status, _error(why, error))
            response.setdefault("headers", {}).update(RETRY_AFTER)
            operation.setdefault(REFUSALS, {}).setdefault(status, response["description"])


def _error(description: str, schema: dict[str, str] = _ERROR) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}

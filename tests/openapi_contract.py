"""What schemathesis is told about predq, from /openapi.json itself, and the one check of our own.

- ``st_config``: per operation, ``positive_data_acceptance`` accepts 2xx, 404 (ids and
  versions that do not exist) and exactly the statuses the operation lists under
  ``x-valid-request-refusals`` (app/api/openapi.py): nothing broader. Path parameters get
  values that exist (a registered model, a stored job, a finished batch job, an import), so
  every operation is reached beyond its 404.
- ``rows_refused_only_for_the_model``: submit may answer a schema-valid request 422 only for
  a reason of its model's, and this check asks the model's signature (GET /v1/models/{name})
  whether the rows really do not fit it (written apart from app/registry/signature.py). A
  row the service refused for any other reason fails the run, as ``{"inputs": [null]}`` did.

Loaded by ``st run`` as hooks (``SCHEMATHESIS_HOOKS=tests.openapi_contract``); ``python -m
tests.openapi_contract URL TOKEN MODEL`` writes the config for a running predq.
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

import requests
import schemathesis

SUBMIT = "POST /v1/models/{name}/predictions"
BATCH_SUBMIT = "POST /v1/models/{name}/batch-jobs"
REFUSALS = "x-valid-request-refusals"
FLOAT32_MAX = 3.4028234663852886e38
#: schemathesis' own negative-data statuses, and 413: a body past a documented size is refused so.
NEGATIVE_REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


def st_config(document: dict[str, Any], headers: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """schemathesis' configuration for ``document``; ``values``: path parameter values that exist,
    by name, with ``batch_job_id`` for the batch-job routes' ``job_id``, and ``batch_file``: a
    file under the server's BATCH_INPUT_ROOT for a batch job's JSON body."""
    operations = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            refused = sorted(operation.get(REFUSALS, {}))
            entry: dict[str, Any] = {
                # One filter: each include-* key would be a filter of its own, OR-ed.
                "include-name": f"{method.upper()} {path}",
                "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404", *refused]}},
            }
            parameters = _path_values(path, values)
            if "batch_file" in values and entry["include-name"] == BATCH_SUBMIT:
                # Half of the JSON bodies name a server file that exists: the route's 202 is reached.
                parameters["body.path"] = {"dictionary": "batch_files", "probability": 0.5}
            if parameters:
                entry["parameters"] = parameters
            operations.append(entry)
    return {
        "headers": headers,
        "dictionaries": {"batch_files": {"values": [values.get("batch_file", "rows.csv")]}},
        "checks": {"negative_data_rejection": {"expected-statuses": NEGATIVE_REJECTIONS}},
        "phases": {"stateful": {"enabled": False}},
        "operations": operations,
    }


def _path_values(path: str, values: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name in ("name", "alias", "version", "import_id", "job_id", "webhook_id", "delivery_id"):
        if "{" + name + "}" in path:
            key = "batch_job_id" if name == "job_id" and path.startswith("/v1/batch-jobs") else name
            if key in values:
                found[f"path.{name}"] = values[key]
    return found


@schemathesis.check
def rows_refused_only_for_the_model(ctx: Any, response: Any, case: Any) -> bool | None:
    """A schema-valid prediction request answered 422 holds a row its model cannot take."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or case.operation.label != SUBMIT:
        return None
    if response.status_code != 422 or not isinstance(case.body, dict):
        return None
    error = response.json()["error"]
    if error["code"] == "webhook_secret_missing" or "callback_url" in error["details"].get("fields", {}):
        # Refused for its callback_url, not its rows: the URL must be one a webhook may not reach.
        assert error["code"] == "webhook_secret_missing" or callback_refusal(case.body), (
            f"a schema-valid callback_url was refused: {response.text[:300]}"
        )
        return None
    signatures = _signatures(response, case.path_parameters["name"], case.body.get("version"))
    reasons = [misfit(case.body, signature) for signature in signatures]
    assert any(reasons), (
        f"a schema-valid request was refused for a reason that is not its model's: {response.text[:300]}"
    )
    return None


def _signatures(response: Any, model: str, version: int | None) -> list[dict[str, Any]]:
    """The signatures of the versions that may have served the request: the one it named, else
    any (the run moves aliases and traffic; its model's versions share one signature)."""
    sent = response.request
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(sent.url))
    auth = {"Authorization": sent.headers["Authorization"]} if "Authorization" in sent.headers else {}
    answer = requests.get(f"{origin}/v1/models/{model}", headers=auth, timeout=10)
    assert answer.status_code == 200, f"could not read {model}'s signature: {answer.status_code}"
    versions = answer.json()["versions"]
    return [v["signature"] for v in versions if version is None or v["version"] == version]


def callback_refusal(body: dict[str, Any]) -> str | None:
    """Why ``body``'s callback_url may not be one (written apart from app/webhooks/urls.py), or None."""
    url = body.get("callback_url")
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port that is not a number)
    except ValueError:
        return "not a URL"
    if "@" in parts.netloc:
        return "credentials"
    if not parts.hostname:
        return "no host"
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(parts.hostname))
        except OSError:
            return None  # a name: resolved at send time
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return None if address.is_global else f"{address} is not a global address"


def misfit(body: dict[str, Any], signature: dict[str, Any]) -> str | None:
    """Why the model with ``signature`` cannot take ``body``'s rows, or None when it can."""
    if body.get("explain") and signature.get("explainer") is None:
        return "explain for a model shap cannot explain"
    names = signature["feature_names"]
    largest = FLOAT32_MAX if "float32" in signature["dtypes"] else math.inf
    for i, row in enumerate(body["inputs"]):
        if isinstance(row, dict):
            if names is None or set(row) != set(names):
                return f"row {i}: not the model's feature names"
            values = list(row.values())
        else:
            if len(row) != signature["n_features"]:
                return f"row {i}: {len(row)} values for {signature['n_features']} features"
            values = row
        if any(abs(float(v)) > largest for v in values):
            return f"row {i}: beyond float32"
    return None


def to_toml(config: dict[str, Any]) -> str:
    """``config`` as TOML (tables and arrays of tables of strings, numbers, lists): what st reads."""
    lines: list[str] = []
    _table(lines, [], {k: v for k, v in config.items() if k != "operations"})
    for operation in config.get("operations", []):
        lines.append("\n[[operations]]")
        _table(lines, ["operations"], operation)
    return "\n".join(lines) + "\n"


def _table(lines: list[str], where: list[str], table: dict[str, Any]) -> None:
    for key, value in table.items():
        if not isinstance(value, dict):
            lines.append(f"{json.dumps(key)} = {json.dumps(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            lines.append(f"[{'.'.join(json.dumps(k) for k in [*where, key])}]")
            _table(lines, [*where, key], value)


if __name__ == "__main__":
    url, token, model = sys.argv[1:4]
    extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    doc = requests.get(f"{url}/openapi.json", timeout=10).json()
    print(to_toml(st_config(doc, {"Authorization": f"Bearer {token}"}, {"name": model, **extra})))

"""flask-smorest's Blueprint, with request bodies read by orjson (every route but submit
and poll, which app/api/decoding.py reads with msgspec).

webargs reads JSON bodies with the standard library, which costs ~2 µs per number.
orjson reads the same documents several times faster. What orjson refuses and the
standard library reads (NaN, Infinity, integers beyond a float64) goes to the standard
library (app/api/bodies.py), so those still reach the validators; broken JSON, JSON nested
deeper than the standard library recurses and strings that are not Unicode text get a 400.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Request
from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from app.api.bodies import loads_loose


class OrjsonParser(FlaskParser):
    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return core.missing
        data = req.get_data(cache=True)
        if not data:  # as webargs has it: no body is no arguments, not broken JSON
            return core.missing
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return loads_loose(data)


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = OrjsonParser()

"""Reading a request's body: its bytes (with the size limit kept for chunked bodies too), and
JSON that the fast decoders (msgspec, orjson) refused, read once more by the standard library.

The standard library reads what some clients send and the fast decoders refuse (``NaN``,
``Infinity``, integers beyond a float64), so that the validators can name the row and field
at fault. It also reads what is not text at all: an escaped lone surrogate (``"\\ud800"``)
is valid JSON syntax but no Unicode character, and would fail later wherever the string is
encoded (an error message, the database). Every route reads its fallback here, so each
refuses such a body the same way: ``400 malformed_json``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from app.errors import MalformedJSON


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


def loads_loose(body: bytes) -> Any:
    """``body`` read by the standard library (NaN, Infinity, 1e999 and huge integers included);
    MalformedJSON (400) when it is not JSON, is nested deeper than Python recurses, or holds
    a string that is not Unicode text."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedJSON("request body is not valid JSON", reason=str(exc)[:200]) from None
    if _holds_lone_surrogate(value):
        raise MalformedJSON("request body holds a string that is not Unicode text (a lone surrogate escape)")
    return value


def _holds_lone_surrogate(value: Any) -> bool:
    # A loop, not recursion: the value may be nested as deep as json.loads itself went.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False

"""Rate limits per API key, counted in Redis by Flask-Limiter.

Every /v1 request counts against its key's limit (the key's own ``rate_limit``, else
``Settings.rate_limit``); with auth off, against the client address. Fixed windows cost
one Redis round trip per request (a sliding window costs more); headers other than
Retry-After are off for the same reason. If Redis is down the limiter lets requests
through (``swallow_errors``): jobs are stored in the database and must still be accepted.
"""

from __future__ import annotations

import math
import time

from flask import Flask, Response, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address

from app.auth import PROTECTED_PREFIX, current_principal
from app.config import Settings
from app.errors import RateLimited


def init_rate_limits(app: Flask, settings: Settings) -> Limiter:
    def limit_for_caller() -> str:
        principal = current_principal()
        return (principal.rate_limit if principal else None) or settings.rate_limit

    def caller() -> str:
        principal = current_principal()
        return f"key:{principal.key_id}" if principal else f"addr:{get_remote_address()}"

    def over_limit(limit: RequestLimit) -> Response:
        retry_after = max(1, math.ceil(limit.reset_at - time.time()))
        error = RateLimited(
            f"rate limit of {limit.limit} exceeded; retry in {retry_after} s",
            retry_after=retry_after,
            limit=str(limit.limit),
        )
        return Response(
            app.json.dumps(error.to_body()),
            status=error.status,
            headers=error.headers(),
            mimetype="application/json",
        )

    return Limiter(
        caller,
        app=app,
        storage_uri=settings.redis_url,
        # One connection pool per process, the same way our own Redis clients are built.
        storage_options={"health_check_interval": 30},
        strategy="fixed-window",
        key_prefix="predq",
        default_limits=[limit_for_caller],
        default_limits_exempt_when=lambda: not request.path.startswith(PROTECTED_PREFIX),
        on_breach=over_limit,
        swallow_errors=True,
        headers_enabled=False,
    )

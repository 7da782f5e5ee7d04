"""predq: asynchronous, batched prediction serving for scikit-learn models."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from app.config import Settings


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON, through orjson for responses (every poll returns a job's outputs)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            return super().dumps(obj, **kwargs)  # types orjson does not know (Decimal, ...)


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app; ``settings`` default to the environment (see app/config.py)."""
    from app.access.auth import init_auth
    from app.access.ratelimit import count_failed_key, init_rate_limits
    from app.api import observe_requests, register_api
    from app.celery_app import celery_init_app
    from app.cli import register_cli
    from app.console import register_console
    from app.errors import register_error_handlers
    from app.logs import configure_logging
    from app.services import build_services

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        **settings.extra,
    )
    celery = celery_init_app(app, settings)
    svc = app.extensions["predq"] = build_services(settings, celery)
    register_error_handlers(app)
    observe_requests(app, settings.log_requests)  # first, so refused requests are timed too
    # Auth next: the rate limiter counts per key, so it needs to know the caller. A refused
    # key is counted against its client address (AUTH_FAILURE_LIMIT).
    init_auth(app, svc.keys, settings.auth_enabled, lambda: count_failed_key(svc.limits, settings))
    init_rate_limits(app, settings, svc.limits)
    register_api(app, settings)
    register_console(app, settings)
    register_cli(app)
    if settings.trusted_proxies:
        # Only then is X-Forwarded-For believed, and only its last hops, the ones those
        # proxies appended: a client can put anything before them.
        # X-Forwarded-Proto too: behind a TLS proxy the console's cookie is marked Secure.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    if not logging.getLogger().handlers:  # gunicorn and Celery configure it before this
        configure_logging(settings.log_level, settings.log_format)
    # No Redis check here: CLI commands and tests build apps too. The serving processes check
    # as they start (app/serve.py, gunicorn.conf.py, workers/main.py; app/redis_memory.py).
    return app

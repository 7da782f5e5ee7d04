"""predq: asynchronous, batched prediction serving for scikit-learn models."""

from __future__ import annotations

import logging

from flask import Flask

from app.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """The Flask app; ``settings`` default to the environment (see app/config.py)."""
    from app.api import register_api
    from app.celery_app import make_celery
    from app.cli import register_cli
    from app.errors import register_error_handlers
    from app.services import build_services

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        PREDQ_SETTINGS=settings,
        **settings.extra,
    )
    celery = make_celery(settings)
    app.extensions["celery"] = celery
    app.extensions["predq"] = build_services(settings, celery)
    register_error_handlers(app)
    register_api(app)
    register_cli(app)
    if not app.debug and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return app

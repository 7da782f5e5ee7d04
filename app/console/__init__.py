"""The operator console at /console: server-rendered pages (Jinja2) over what predq stores.

Pages work without JavaScript; htmx (vendored in ``static/`` with its licence) refreshes the
live parts, and charts are SVG drawn by matplotlib on the server (app/console/charts.py).
Modules: ``blueprint`` (who is looking, error pages), ``signin``, ``overview``, ``models``
(the registry and its admin actions), ``jobs`` (jobs and batch jobs), ``keys``, ``queries``
(the SQL behind the pages) and ``charts``. None of these routes is in /openapi.json: they
answer HTML, not the API's JSON.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, Request, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from werkzeug.exceptions import NotFound

from app.config import Settings

log = logging.getLogger(__name__)


class ConsoleSessions(SecureCookieSessionInterface):
    """Flask's signed cookie, marked Secure whenever the request came over TLS (directly, or
    through TRUSTED_PROXIES that say so in X-Forwarded-Proto), expiring a fixed time after the
    sign-in: Flask's own expiry would move with every request the session makes."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # Only the console has sessions (its cookie's path is /console, so no other request
        # carries one): an API request skips building the signer and parsing the cookies,
        # ~6% of the API's CPU per prediction. None: Flask gives the request a null session.
        if not _is_console_path(request.path):
            return None
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        signed_in_at = session.get("signed_in_at")
        if not session.permanent or not isinstance(signed_in_at, (int, float)):
            return super().get_expiration_time(app, session)
        return datetime.fromtimestamp(signed_in_at, UTC) + app.permanent_session_lifetime


def _is_console_path(path: str) -> bool:
    return path == "/console" or path.startswith("/console/")


def register_console(app: Flask, settings: Settings) -> None:
    from app.console import jobs, keys, models, overview, signin  # noqa: F401  (their routes)
    from app.console.blueprint import bp, csrf, not_found_page
    from app.errors import error_response

    secret = settings.secret_key
    if not secret:
        log.warning("SECRET_KEY is unset: console sessions are signed with a key of this process alone")
        secret = secrets.token_hex(32)
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="predq_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/console",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.console_session_seconds),
        # An absolute lifetime: the cookie is sent again only when the session changes, with the
        # sign-in's expiry (ConsoleSessions), never pushed further out by use.
        SESSION_REFRESH_EACH_REQUEST=False,
        # The console's blueprint checks the token of every POST itself; the API has none.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    app.session_interface = ConsoleSessions()
    csrf.init_app(app)
    app.register_blueprint(bp)

    @app.errorhandler(NotFound)
    def _not_found(error: NotFound) -> Any:
        # An unknown console URL gets the console's HTML page; everything else the API's JSON.
        if _is_console_path(request.path):
            return not_found_page()
        return error_response(error)

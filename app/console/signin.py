"""Signing in and out: an API key typed into a form; its id kept in Flask's signed session cookie.

The token itself is never stored in the cookie: only the key's id, signed with SECRET_KEY
(HttpOnly, SameSite=Lax, Secure when the request came over TLS), with the time of the
sign-in: it lasts CONSOLE_SESSION_SECONDS from then, however busy the session (checked on
every request, and the cookie's own expiry set to the same moment). Every request reads the
key's row: a revoked key's session ends at its next request.

A refused key counts against the client address exactly as a refused bearer token does
(``AUTH_FAILURE_LIMIT``, app/access/ratelimit.py): the form is no way around the API's
failed-key limit. Past it, refused keys get a 429 page; a valid key still signs in.
"""

from __future__ import annotations

import time

from flask import redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from app.access.ratelimit import count_failed_key
from app.console.blueprint import bp, page
from app.services import current_services


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    svc = current_services()
    target = _safe_next(request.values.get("next", ""))
    if not svc.settings.auth_enabled:
        return redirect(target)
    if request.method == "GET":
        return page("sign_in.html", next=target, error=None)
    token = request.form.get("api_key", "").strip()
    if not token:  # as a request with no bearer token: refused, not counted
        return page("sign_in.html", 401, next=target, error="Paste an API key.")
    principal = svc.keys.authenticate(token)
    if principal is None:
        count_failed_key(svc.limits, svc.settings)  # raises RateLimited (a 429 page) once spent
        return page("sign_in.html", 401, next=target, error="That API key is unknown or revoked.")
    session.clear()  # a fresh session (and CSRF token) for the new key
    session.permanent = True  # the cookie expires with the sign-in (app/console/__init__.py)
    session["key_id"] = principal.key_id
    session["signed_in_at"] = time.time()  # the sign-in lasts CONSOLE_SESSION_SECONDS from now
    return redirect(target, 303)


@bp.route("/sign-out", methods=["POST"])
def sign_out() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("console.sign_in"), 303)


def _safe_next(target: str) -> str:
    # Only a path inside the console: never an open redirect to another site.
    if target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target.rstrip("?")
    return url_for("console.overview")

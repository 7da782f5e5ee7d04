"""The console's blueprint, who is looking, and how a page is rendered.

Who: with auth on, the API key whose id the signed session cookie holds (app/console/signin.py),
read from the api_keys table on every request, so a revoked key's session ends at its next
request, and only for CONSOLE_SESSION_SECONDS from the sign-in time the session holds;
with auth off, nobody (``None``), and only from this machine.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError, CSRFProtect

from app.access.auth import ApiKeys, Principal
from app.errors import Forbidden, PredqError
from app.services import current_services

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)
csrf = CSRFProtect()

#: Endpoints a browser reaches before signing in.
OPEN_ENDPOINTS = frozenset({"console.sign_in", "console.static"})


def viewer() -> Principal | None:
    """The signed-in key; None when nobody is signed in, as always with auth off."""
    principal: Principal | None = g.get("console_principal")
    return principal


def is_admin() -> bool:
    """Whether this request may see and do what an admin key may.

    With auth off the console is open by design to anyone on this machine (the before-request
    hook refuses other addresses; every page's banner says so): yes. With auth on, only a
    signed-in key with the admin scope: nobody signed in is never an admin (every page but
    sign-in sends them there first, and the pages that render without a key, the sign-in form,
    error and 404 pages, show nothing an admin's do).
    """
    if not current_services().settings.auth_enabled:
        return True
    principal = viewer()
    return principal is not None and principal.allows("admin")


def require_admin() -> None:
    """Refuse (403 page) a key without the admin scope, before anything changes."""
    if not is_admin():
        raise Forbidden("this page needs an API key with the 'admin' scope", required_scope="admin")


def page(template: str, status: int = 200, **context: Any) -> ResponseReturnValue:
    return render_template(f"console/{template}", **context), status


@bp.before_request
def _who_is_looking() -> ResponseReturnValue | None:
    if request.endpoint == "console.static":
        return None
    svc = current_services()
    if request.method == "POST":
        csrf.protect()  # every form that changes something carries its token
    if not svc.settings.auth_enabled:
        if not _loopback(request.remote_addr):
            raise Forbidden("auth is off (AUTH_ENABLED=false): the console answers only on 127.0.0.1")
        g.console_principal = None
        return None
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    principal = _signed_in_key(svc.keys, svc.settings.console_session_seconds)
    if principal is None:  # never signed in, the sign-in is too old, or the key was revoked
        session.clear()
        target = url_for("console.sign_in", next=request.full_path if request.method == "GET" else None)
        if request.headers.get("HX-Request"):
            return "", 204, {"HX-Redirect": target}
        return redirect(target)
    g.console_principal = principal
    return None


def _signed_in_key(keys: ApiKeys, lifetime: float) -> Principal | None:
    """The session's key while its sign-in is younger than ``lifetime`` seconds (counted from
    the sign-in, however busy the session since) and the key is not revoked."""
    key_id, signed_in_at = session.get("key_id"), session.get("signed_in_at")
    if not isinstance(key_id, int) or not isinstance(signed_in_at, (int, float)):
        return None
    if not 0 <= time.time() - signed_in_at < lifetime:
        return None
    return keys.by_id(key_id)


@bp.app_context_processor
def _everywhere() -> dict[str, Any]:
    if not request.blueprint == "console" and not request.path.startswith("/console"):
        return {}
    svc = current_app.extensions["predq"]
    viewing = g.get("console_principal")
    return {"auth_on": svc.settings.auth_enabled, "viewer": viewing, "is_admin": is_admin()}


@bp.errorhandler(PredqError)
def _error_page(error: PredqError) -> ResponseReturnValue:
    title = _TITLES.get(error.status, "Error")
    html = render_template("console/error.html", title=title, message=error.message)
    # Retry-After stays (a 429 or 503); WWW-Authenticate is the API's, not a page's.
    return html, error.status, {k: v for k, v in error.headers().items() if k == "Retry-After"}


@bp.errorhandler(CSRFError)
def _csrf_refused(error: CSRFError) -> ResponseReturnValue:
    message = f"The form was refused and nothing changed: {error.description} Reload the page and try again."
    return page("error.html", 400, title="Form refused", message=message)


def not_found_page(message: str = "There is no such page in the console.") -> ResponseReturnValue:
    return page("error.html", 404, title="Not found", message=message)


_TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Conflict", 422: "Invalid input",
           429: "Too many attempts", 503: "Unavailable"}  # fmt: skip


def _loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

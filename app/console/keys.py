"""API keys (admin): the list, a new key (its token shown once, on the page that made it), revoking."""

from __future__ import annotations

from flask import flash, redirect, request, url_for
from flask.typing import ResponseReturnValue

from app.access.auth import SCOPES
from app.console.blueprint import bp, page, require_admin
from app.errors import ApiKeyError, NotFound
from app.services import current_services


@bp.route("/keys", methods=["GET", "POST"])
def keys() -> ResponseReturnValue:
    require_admin()
    svc = current_services()
    created, error = None, None
    if request.method == "POST":
        scope = request.form.get("scope", "")
        try:
            if scope not in SCOPES:
                raise ApiKeyError(f"Choose a scope among {', '.join(SCOPES)}.")
            principal, token = svc.keys.create(request.form.get("name", "").strip(), [scope])
            created = {"name": principal.name, "token": token}
        except ApiKeyError as refused:
            error = refused.message
    status = 422 if error else (201 if created else 200)
    return page("keys.html", status, keys=svc.keys.list(), created=created, error=error, scopes=SCOPES)


@bp.route("/keys/<string:name>/revoke", methods=["GET", "POST"])
def revoke_key(name: str) -> ResponseReturnValue:
    require_admin()
    svc = current_services()
    if name not in {key.name for key in svc.keys.list()}:
        raise NotFound(f"There is no API key named {name!r}.")
    if request.method == "GET":
        return page("revoke.html", name=name)
    svc.keys.revoke(name)
    flash(
        f"Key {name} is revoked: its console sessions end at once, its API calls within AUTH_CACHE_SECONDS."
    )
    return redirect(url_for("console.keys"), 303)

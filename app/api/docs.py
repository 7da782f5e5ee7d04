"""Swagger UI's files, served by predq itself: /docs works with no route to the internet.

flask-smorest renders /docs as a page that loads ``swagger-ui.css``,
``swagger-ui-standalone-preset.js`` and ``swagger-ui-bundle.js`` from
OPENAPI_SWAGGER_UI_URL. The flask-swagger-ui wheel carries Swagger UI's ``dist/`` (with
its licence), so that URL is a folder of this app, never a CDN.
"""

from __future__ import annotations

from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, Response, send_from_directory

#: Where the browser fetches Swagger UI's files (flask-smorest appends the file names).
SWAGGER_UI_URL = "/static/swagger-ui/"

_DIST = Path(flask_swagger_ui.__file__).resolve().parent / "dist"

blp = Blueprint(
    "swagger_ui_files", __name__, static_folder=str(_DIST), static_url_path=SWAGGER_UI_URL.rstrip("/")
)


@blp.route("/favicon.ico", methods=["GET"])
def favicon() -> Response:
    # Browsers ask for it on every page; a 404 there is a failed request in the console.
    return send_from_directory(_DIST, "favicon-32x32.png", mimetype="image/png")

"""The ceiling: a bare Flask endpoint, served with the same gunicorn settings as predq.

gunicorn -c gunicorn.conf.py bench.baseline.hello:app
"""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello() -> dict[str, bool]:
    return {"ok": True}

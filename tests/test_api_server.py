"""The API's HTTP server (granian, app/serve.py): a dead worker process is replaced, SIGTERM stops all."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import httpx
import psutil

from scripts.local import free_port, process_group, wait_for_http
from tests.helpers import bearer, count_jobs, settings_env


def _log(directory: Path) -> str:
    return (directory / "api.log").read_text()


def _children(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children()


def test_a_killed_worker_process_is_replaced_and_sigterm_stops_every_process(settings, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = settings_env(settings) | {
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "VAR_DIR": str(tmp_path),
    }
    argv = [str(Path(sys.executable).parent / "python"), "-m", "app.serve"]
    with process_group(argv, env, tmp_path / "api.log") as server:
        wait_for_http(f"{base}/healthz", [server], timeout=60)
        first = _children(server.pid)
        assert len(first) == 2, _log(tmp_path)[-2000:]

        first[0].kill()
        # The replacement has loaded the app when the server says so (a third "Started worker").
        deadline = time.monotonic() + 60
        while _log(tmp_path).count("Started worker") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        replaced = _children(server.pid)
        assert len(replaced) == 2 and first[0].pid not in {p.pid for p in replaced}, _log(tmp_path)[-2000:]
        assert all(httpx.get(f"{base}/healthz", timeout=5).status_code == 200 for _ in range(6))

        everyone = [psutil.Process(server.pid), *replaced]
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
        _, alive = psutil.wait_procs(everyone, timeout=10)
        assert not alive, f"still running after SIGTERM: {alive}"


def test_a_chunked_body_over_the_limit_gets_413_and_stores_nothing(api_server, tokens, registered, svc):
    # No Content-Length, so only reading the body can tell it is too large.
    def chunks():
        yield b'{"inputs": [[5.1, 3.5, 1.4, 0.2]], "pad": "'
        for _ in range(9):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    jobs_before = count_jobs(svc)
    answer = httpx.post(
        f"{api_server}/v1/models/iris/predictions",
        content=chunks(),
        headers=bearer(tokens["predict"]) | {"Content-Type": "application/json"},
        timeout=60,
    )

    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["error"]["code"] == "payload_too_large"
    assert count_jobs(svc) == jobs_before

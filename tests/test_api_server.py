"""The API's HTTP server (granian, app/serve.py): a dead worker process is replaced, SIGTERM stops all;
what it does with headers no app sees (the README's one exception to "errors are JSON")."""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from scripts.local import free_port, process_group, wait_for_http
from tests.helpers import bearer, count_jobs, settings_env

ROW = b'{"inputs": [[5.1, 3.5, 1.4, 0.2]]}'


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


def raw_request(base: str, head: bytes) -> bytes:
    """Send ``head`` (a request's lines, without the blank line) over a bare socket; the whole answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("byte", [b"\x01", b"\x7f", b"\x00"], ids=["SOH", "DEL", "NUL"])
def test_a_header_with_a_control_byte_gets_the_servers_empty_400_the_one_answer_not_in_json(
    api_server, tokens, byte
):
    # The README's reproducer: granian's HTTP parser (hyper) refuses the request and answers
    # itself, before predq sees it. If this fails, granian changed: update the README's exception.
    answer = raw_request(
        api_server,
        b"GET /v1/models HTTP/1.1\r\nHost: predq\r\n"
        + b"Authorization: Bearer " + tokens["predict"].encode() + b"\r\n"
        + b"X-Test: a" + byte + b"b\r\n",
    )  # fmt: skip

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type" not in head.lower() and body == b"", answer


def test_a_non_ascii_idempotency_key_gets_a_clear_422_and_makes_no_job(api_server, tokens, registered, svc):
    jobs_before = count_jobs(svc)

    # granian passes a header value holding non-ASCII bytes on as '': a clear refusal, never
    # a submit that silently goes without its key (a retry would make a second job).
    answer = httpx.post(
        f"{api_server}/v1/models/iris/predictions",
        content=ROW,
        headers=bearer(tokens["predict"])
        | {"Content-Type": "application/json", "Idempotency-Key": "clé".encode()},
        timeout=30,
    )

    assert answer.status_code == 422, answer.text
    assert "arrived empty" in answer.json()["error"]["message"]
    assert count_jobs(svc) == jobs_before


def test_a_non_ascii_request_id_is_replaced_by_one_of_predqs_own(api_server):
    answer = httpx.get(f"{api_server}/healthz", headers={"X-Request-ID": "trace-é".encode()}, timeout=10)

    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"]), "the id the logs carry, sent back"

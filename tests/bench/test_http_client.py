"""bench/_http_client.py: requests go out as httpx would send them; only the expected status counts."""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bench._http_client import Call, build_call, run_phase
from bench._server import process_cpu_seconds


class _Echo(BaseHTTPRequestHandler):
    """Keep-alive; answers 200 with what it received, or 404 for /missing."""

    protocol_version = "HTTP/1.1"
    served = 0

    def do_POST(self) -> None:
        type(self).served += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        payload = (
            json.dumps(
                {
                    "path": self.path,
                    "auth": self.headers["Authorization"],
                    "type": self.headers["Content-Type"],
                }
            ).encode()
            + b"\n"
            + body
        )
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _post(base: str, path: str, expect: int) -> Call:
    request = httpx.Request(
        "POST",
        f"{base}{path}",
        headers={"Authorization": "Bearer k1"},
        files={"dataset": ("train.jsonl", b'{"a": 1}\n', "application/jsonl")},
        data={"spec": "{}"},
    )
    return build_call(f"POST {path}", expect, request)


def test_multipart_requests_arrive_whole_over_kept_alive_connections(server: str) -> None:
    bodies: list[bytes] = []
    result = run_phase(
        server,
        2,
        0.3,
        itertools.repeat(_post(server, "/jobs", 200)),
        warmup=0.0,
        on_body=lambda _c, b: bodies.append(b),
    )
    assert not result.errors
    assert len(result.samples["POST /jobs"]) == len(bodies) > 2
    head, _, body = bodies[0].partition(b"\n")
    echoed = json.loads(head)
    assert echoed["path"] == "/jobs" and echoed["auth"] == "Bearer k1"
    assert echoed["type"].startswith("multipart/form-data; boundary=")
    assert b'filename="train.jsonl"' in body and b'{"a": 1}' in body


def test_an_unexpected_status_is_an_error_not_a_sample(server: str) -> None:
    result = run_phase(server, 1, 0.2, itertools.repeat(_post(server, "/missing", 200)), warmup=0.0)
    assert "POST /missing" not in result.samples
    assert result.errors and result.errors[0].startswith("POST /missing: 404")


def test_warm_up_requests_are_served_but_not_recorded(server: str) -> None:
    _Echo.served = 0
    result = run_phase(server, 1, 0.3, itertools.repeat(_post(server, "/jobs", 200)), warmup=0.3)
    recorded = len(result.samples["POST /jobs"])
    assert 0 < recorded < _Echo.served  # the warm-up's requests reached the server
    assert result.wall_seconds == pytest.approx(0.3, abs=0.2)  # and its time is not in the wall clock


def test_process_cpu_seconds_grows_with_work() -> None:
    before = process_cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    after = process_cpu_seconds(os.getpid())
    assert after is not None and after - before >= 0.1
    assert process_cpu_seconds(2**22 + 12345) is None  # no such process

"""api.errors: every failure, including crashes and database errors, leaves in the same envelope."""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, OperationalError

from api.main import create_app
from tests.api.conftest import TINY_MODEL, assert_error
from tests.live_api import free_port


def crashing_app() -> FastAPI:
    """The real app plus two routes that fail the way a bug would."""
    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail: password=hunter2")

    @app.get("/constraint")
    def constraint() -> None:
        raise IntegrityError("INSERT INTO x", {}, Exception("duplicate key"))

    return app


def test_unhandled_exception_is_a_bare_500(database_url: str) -> None:
    app = crashing_app()

    @app.get("/db-down")
    def db_down() -> None:
        raise OperationalError("SELECT secret FROM x", {}, Exception("connection refused at 10.0.0.1"))

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
        error = assert_error(response, 500, "internal_error")
        assert "hunter2" not in response.text and "Traceback" not in response.text
        assert error["message"] == "internal error"
        down = client.get("/db-down")
        assert_error(down, 503, "database_unavailable")
        assert "SELECT" not in down.text and "10.0.0.1" not in down.text


def test_unexpected_errors_are_answered_not_reraised_and_logged_with_the_traceback(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # raise_server_exceptions=True: an exception that escapes the app would fail this test.
    with TestClient(crashing_app()) as client, caplog.at_level(logging.ERROR, logger="api.errors"):
        assert_error(client.get("/boom"), 500, "internal_error")
        assert_error(client.get("/constraint"), 500, "internal_error")
    records = [r for r in caplog.records if r.name == "api.errors"]
    tracebacks = [logging.Formatter().formatException(r.exc_info) for r in records if r.exc_info]
    assert len(tracebacks) == 2
    assert "in boom" in tracebacks[0] and "RuntimeError" in tracebacks[0]
    assert "in constraint" in tracebacks[1] and "IntegrityError" in tracebacks[1]


@pytest.fixture()
def live_crashing_app(database_url: str) -> Iterator[int]:
    """crashing_app() under a real uvicorn (in a thread): keep-alive is uvicorn's behaviour."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(crashing_app(), port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def _http_response(sock: socket.socket) -> bytes:
    """One response (headers + Content-Length body) from ``sock``; b"" if the server closed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_the_connection_survives_a_500(live_crashing_app: int) -> None:
    # uvicorn closes a connection whose app raised, so a client's next keep-alive request was reset.
    with socket.create_connection(("127.0.0.1", live_crashing_app), timeout=10) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n")
        first = _http_response(sock)
        assert first.startswith(b"HTTP/1.1 500") and b"connection: close" not in first.lower()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _http_response(sock).startswith(b"HTTP/1.1 200")


def test_auth_errors_carry_www_authenticate(client: TestClient) -> None:
    response = client.get("/jobs")
    assert_error(response, 401, "auth_missing")
    assert response.headers["www-authenticate"] == "Bearer"


def test_openapi_declares_bearer_auth_and_error_bodies(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    get_job = document["paths"]["/jobs/{job_id}"]["get"]
    assert get_job["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert get_job["description"] or get_job["summary"]
    create = document["paths"]["/jobs"]["post"]
    assert set(create["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert "JobCreate" in document["components"]["schemas"]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _param(document: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    (found,) = [p for p in document["paths"][path]["get"]["parameters"] if p["name"] == name]
    schema: dict[str, Any] = found["schema"]
    return schema.get("anyOf", [schema])[0]


def test_openapi_is_as_strict_as_the_server(client: TestClient, auth_headers: dict[str, str]) -> None:
    """Cursors, the multipart `spec`, the /v1 purpose and model: a schema-driven client (or fuzzer)
    learns from the document what the server rejects (issue 13)."""
    document = client.get("/openapi.json").json()
    for path, name, valid, invalid in [
        ("/jobs", "after", "ftjob-" + "0" * 32, "ftjob-nope"),
        ("/v1/fine_tuning/jobs", "after", "ftjob-" + "a" * 32, "ftjob-\u0000"),
        ("/v1/fine_tuning/jobs/{job_id}/events", "after", "ftevent-17", "ftevent-²"),
        ("/v1/fine_tuning/jobs/{job_id}/checkpoints", "after", "ftckpt-" + "1" * 32, "ckpt-1"),
        ("/jobs/{job_id}/checkpoints/{step}/adapter", "step", "best", "²"),
    ]:
        pattern = _param(document, path, name)["pattern"]
        assert re.search(pattern, valid) and not re.search(pattern, invalid), (path, pattern)
    # The server answers the same shapes with a 422 before any lookup.
    for url in ["/jobs?after=ftjob-nope", "/v1/fine_tuning/jobs?after=ftjob-nope"]:
        response = client.get(url, headers=auth_headers)
        assert response.status_code == 422 and response.json()["error"]["param"] == "after", response.text

    multipart = document["paths"]["/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    spec = multipart["schema"]["properties"]["spec"]
    assert spec["contentMediaType"] == "application/json"
    assert {"base_model", "guard", "hyperparameters"} <= set(spec["contentSchema"]["properties"])
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref

    body = schemas["Body_create_file_v1_files_post"]["properties"]["purpose"]
    assert set(body["enum"]) == {"fine-tune", "training", "validation", "evaluation"}
    model = schemas["FineTuningJobCreate"]["properties"]["model"]
    assert model["minLength"] == 1 and TINY_MODEL in model["enum"]
    empty = client.post(
        "/v1/fine_tuning/jobs", headers=auth_headers, json={"model": "", "training_file": "f"}
    )
    assert empty.status_code == 422 and empty.json()["error"]["param"] == "model", empty.text

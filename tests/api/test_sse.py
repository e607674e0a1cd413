"""Server-sent events of a job's log: GET /jobs/{id}/events?stream=true (and /events/stream)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.routes import events_stream
from tests.api.conftest import assert_error, submit_job


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_stream, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(events_stream, "MAX_STREAM_SECONDS", 30.0)


def sse_messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into {"id", "event", "data", "comment"} dicts, one per block."""
    block: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if block:
                yield block
            block = {}
        elif line.startswith(":"):
            block["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            block[name] = json.loads(value) if name == "data" else value
    if block:
        yield block


def new_job(client: TestClient, headers: dict[str, str]) -> str:
    response = submit_job(client, headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_stream_sends_the_log_then_new_events_and_closes_on_cancel(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = new_job(client, auth_headers)
    received: list[dict[str, Any]] = []
    first_event = threading.Event()
    errors: list[BaseException] = []

    def listen() -> None:
        try:
            params = {"stream": "true"}
            with client.stream(
                "GET", f"/jobs/{job_id}/events", headers=auth_headers, params=params
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for message in sse_messages(response.iter_lines()):
                    received.append(message)
                    if message.get("event") == "queued":
                        first_event.set()
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
            first_event.set()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert first_event.wait(10), "the existing event never arrived"
    # Cancelled from another request while the stream is open: the stream must see it and end.
    assert client.post(f"/jobs/{job_id}/cancel", headers=auth_headers).status_code == 200
    listener.join(10)
    assert not listener.is_alive(), "the stream did not close after the job was cancelled"
    assert not errors, errors

    events = [m for m in received if "event" in m]
    assert [m["event"] for m in events] == ["queued", "cancelled", "done"]
    queued, cancelled, done = events
    assert int(queued["id"]) < int(cancelled["id"])
    assert queued["data"]["id"] == int(queued["id"]) and cancelled["data"]["type"] == "cancelled"
    assert done["data"] == {"job_id": job_id, "status": "cancelled", "last_event_id": int(cancelled["id"])}
    assert received[0].get("retry") == "2000"


def test_resume_after_last_event_id(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = new_job(client, auth_headers)
    client.post(f"/jobs/{job_id}/cancel", headers=auth_headers)
    log = client.get(f"/jobs/{job_id}/events", headers=auth_headers).json()["data"]
    assert [e["type"] for e in log] == ["queued", "cancelled"]  # JSON mode is unchanged

    def stream(path: str, **kwargs: Any) -> list[dict[str, Any]]:
        with client.stream("GET", path, headers={**auth_headers, **kwargs.pop("headers", {})}, **kwargs) as r:
            assert r.status_code == 200
            return [m for m in sse_messages(r.iter_lines()) if "event" in m]

    by_header = stream(f"/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(log[0]["id"])})
    assert [m["event"] for m in by_header] == ["cancelled", "done"]
    by_query = stream(f"/jobs/{job_id}/events", params={"stream": "true", "after": log[-1]["id"]})
    assert [m["event"] for m in by_query] == ["done"]


def test_heartbeat_and_bounded_duration(
    client: TestClient, auth_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_stream, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(events_stream, "MAX_STREAM_SECONDS", 0.6)
    job_id = new_job(client, auth_headers)
    with client.stream("GET", f"/jobs/{job_id}/events/stream", headers=auth_headers) as response:
        messages = list(sse_messages(response.iter_lines()))
    assert any(m.get("comment") == "keep-alive" for m in messages)
    events = [m for m in messages if "event" in m]
    assert [m["event"] for m in events] == ["queued", "timeout"]
    assert events[-1]["data"]["status"] == "queued"


def test_stream_is_tenant_scoped(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Callable[..., tuple[str, str]]
) -> None:
    job_id = new_job(client, auth_headers)
    other = {"Authorization": f"Bearer {make_tenant()[1]}"}
    assert_error(client.get(f"/jobs/{job_id}/events/stream", headers=other), 404, "job_not_found")
    assert_error(
        client.get(f"/jobs/{job_id}/events", headers=other, params={"stream": "true"}), 404, "job_not_found"
    )


@pytest.mark.parametrize(
    "last_event_id",
    [b"\xb2", b"9" * 20, b"-1"],  # b"\xb2" is "²" in latin-1, how ASGI decodes header bytes
    ids=["superscript", "int4-overflow", "negative"],
)
@pytest.mark.parametrize("route", ["/events/stream", "/events?stream=true"])
def test_a_last_event_id_that_names_no_event_is_rejected_before_the_stream(
    client: TestClient, auth_headers: dict[str, str], route: str, last_event_id: bytes
) -> None:
    # A 200 followed by a stream that dies mid-way makes EventSource reconnect forever; a 4xx stops it.
    job_id = new_job(client, auth_headers)
    headers: dict[str, Any] = {**auth_headers, "Last-Event-ID": last_event_id}
    response = client.get(f"/jobs/{job_id}{route}", headers=headers)
    assert assert_error(response, 422, "request_invalid")["param"] == "Last-Event-ID"

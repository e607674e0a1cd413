"""Server-sent events of a job's event log: GET /jobs/{job_id}/events/stream, and the same stream
from GET /jobs/{job_id}/events?stream=true.

The stream first sends the events after `after` (or the Last-Event-ID header), then polls the
database in short units of work and sends new events as they are committed:

    id: <event id>\\nevent: <type>\\ndata: <JobEventRead JSON>\\n\\n

When the job is succeeded, failed or cancelled it sends ``event: done`` and closes. A comment line
keeps idle connections alive, and a stream ends with ``event: timeout`` after MAX_STREAM_SECONDS
(reconnect with Last-Event-ID to go on).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from api.deps import INT4_MAX, OwnedJobDep
from api.errors import error_responses
from safetune.db import session_scope
from safetune.errors import ErrorCode
from safetune.models import JobStatus
from safetune.repositories import jobs as jobs_repo
from safetune.schemas import JobEventRead

router = APIRouter(prefix="/jobs", tags=["jobs"])

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 30 * 60.0
BATCH = 200

SSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "text/event-stream of job events; `event: done` when the job has finished",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **error_responses(
        ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED, ErrorCode.REQUEST_INVALID, ErrorCode.JOB_NOT_FOUND
    ),
}

# Event ids are Postgres integers. Validating the header (not parsing it later) answers a 422 before
# the stream starts: "²" passes str.isdigit() but not int(), and an id past 2**31 - 1 used to fail
# the first poll mid-stream, so a browser's EventSource reconnected forever.
LastEventId = Annotated[
    int | None,
    Header(alias="Last-Event-ID", ge=0, le=INT4_MAX, description="id of the last event seen"),
]
AfterEventId = Annotated[
    int | None, Query(ge=0, le=INT4_MAX, description="id of the last event already seen")
]


@dataclass
class _Poll:
    status: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    has_more: bool = False


def _poll(tenant_id: str, job_id: str, after: int | None) -> _Poll:
    """One short unit of work (run in a worker thread, never on the event loop)."""
    with session_scope() as session:
        job = jobs_repo.get_job_for_tenant(session, tenant_id, job_id)
        if job is None:
            return _Poll(None)
        # Status first, events second: a terminal status commits together with its event, so the
        # event query (a later snapshot) is guaranteed to contain it.
        status = job.status
        events, has_more = jobs_repo.list_events(session, tenant_id, job_id, after=after, limit=BATCH)
        return _Poll(
            status, [JobEventRead.model_validate(e).model_dump(mode="json") for e in events], has_more
        )


def sse_message(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _events(tenant_id: str, job_id: str, after: int | None) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    started = last_write = time.monotonic()
    cursor = after
    while True:
        poll = await anyio.to_thread.run_sync(_poll, tenant_id, job_id, cursor)
        if poll.status is None:
            yield sse_message("error", {"code": ErrorCode.JOB_NOT_FOUND.code, "job_id": job_id})
            return
        for event in poll.events:
            cursor = event["id"]
            yield sse_message(event["type"], event, event_id=event["id"])
        now = time.monotonic()
        if poll.events:
            last_write = now
        if poll.has_more:
            continue
        if JobStatus(poll.status).is_terminal():
            yield sse_message("done", {"job_id": job_id, "status": poll.status, "last_event_id": cursor})
            return
        if now - started >= MAX_STREAM_SECONDS:
            yield sse_message("timeout", {"job_id": job_id, "status": poll.status, "last_event_id": cursor})
            return
        if now - last_write >= HEARTBEAT_SECONDS:
            yield ": keep-alive\n\n"
            last_write = now
        await anyio.sleep(POLL_SECONDS)


def event_stream(tenant_id: str, job_id: str, after: int | None) -> StreamingResponse:
    """The SSE response; the job's ownership must already have been checked."""
    return StreamingResponse(
        _events(tenant_id, job_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{job_id}/events/stream", response_class=StreamingResponse, responses=SSE_RESPONSES)
def stream_job_events(
    job: OwnedJobDep,
    after: AfterEventId = None,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Server-sent events of the job's log until the job finishes."""
    return event_stream(job.tenant_id, job.id, after if after is not None else last_event_id)

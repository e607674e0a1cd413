"""Fine-tuning jobs: submit, list, read, events, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, StreamingResponse

from api import job_service
from api.cursors import JobCursor
from api.deps import OwnedJobDep, OwnedJobRowDep, SessionDep, SettingsDep, TenantDep
from api.errors import BAD_REQUEST, error_responses
from api.routes.events_stream import SSE_RESPONSES, AfterEventId, LastEventId, event_stream
from api.uploads import JobSubmission, read_job_submission
from safetune.errors import ErrorCode
from safetune.repositories import jobs as jobs_repo
from safetune.schemas import Deleted, JobCreate, JobEventList, JobEventRead, JobList, JobRead, JobSpec

router = APIRouter(prefix="/jobs", tags=["jobs"])

COMMON_ERRORS = (ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED, ErrorCode.REQUEST_INVALID)
OWNED_ERRORS = (*COMMON_ERRORS, ErrorCode.JOB_NOT_FOUND)


def spec_schema() -> dict[str, Any]:
    """JobSpec's JSON schema; the models it refers to are in components already (through JobCreate)."""
    schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


# The body is parsed by read_job_submission (two content types), so describe it for OpenAPI here.
JOB_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["dataset", "spec"],
                    "properties": {
                        "dataset": {
                            "type": "string",
                            "format": "binary",
                            "description": "JSONL training data",
                        },
                        "spec": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": spec_schema(),
                            "description": "JobSpec as a JSON string",
                        },
                    },
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/JobCreate"}},
        },
    }
}


@router.post(
    "",
    response_model=JobRead,
    status_code=201,
    openapi_extra=JOB_BODY,
    responses={
        200: {"model": JobRead, "description": "idempotent replay of an earlier submission"},
        **error_responses(
            *COMMON_ERRORS,
            ErrorCode.SPEC_INVALID,
            ErrorCode.BASE_MODEL_UNKNOWN,
            ErrorCode.FILE_NOT_FOUND,
            ErrorCode.IDEMPOTENCY_CONFLICT,
            ErrorCode.DATASET_TOO_LARGE,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            ErrorCode.DATASET_INVALID_LINE,
            ErrorCode.DATASET_EMPTY,
            ErrorCode.DATASET_ENCODING,
            ErrorCode.QUOTA_EXCEEDED,
            ErrorCode.STORAGE_QUOTA_EXCEEDED,
        ),
        **BAD_REQUEST,
    },
)
def create_job(
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    submission: Annotated[JobSubmission, Depends(read_job_submission)],
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"^[!-~]+$")] = None,
) -> JobRead | JSONResponse:
    """Validate the spec and the whole dataset, store the job, then queue it for training."""
    submitted = job_service.submit_job(
        session,
        tenant,
        settings,
        submission.spec,
        dataset=submission.dataset,
        training_file_id=submission.training_file_id,
        idempotency_key=idempotency_key,
    )
    if submitted.replayed:
        return JSONResponse(JobRead.model_validate(submitted.row).model_dump(mode="json"), status_code=200)
    return JobRead.model_validate(submitted.row)


@router.get("", response_model=JobList, responses=error_responses(*COMMON_ERRORS))
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    after: JobCursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobList:
    """The tenant's jobs, newest first, paginated with `after`."""
    jobs, has_more = jobs_repo.list_jobs(session, tenant.id, after=after, limit=limit)
    data = [JobRead.model_validate(job) for job in jobs]
    return JobList(data=data, has_more=has_more, next=data[-1].id if has_more else None)


@router.get("/{job_id}", response_model=JobRead, responses=error_responses(*OWNED_ERRORS))
async def get_job(job: OwnedJobRowDep) -> JobRead:
    """One job with its status, progress and error."""
    # async: the dependency did the blocking read; rendering a loaded row blocks nothing, and a
    # `def` route would cost two more threadpool hops (the route, then response validation).
    return JobRead.model_validate(job)


@router.get(
    "/{job_id}/events",
    response_model=JobEventList,
    responses=SSE_RESPONSES,
)
def list_job_events(
    session: SessionDep,
    job: OwnedJobDep,
    after: AfterEventId = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    stream: Annotated[bool, Query(description="answer text/event-stream until the job finishes")] = False,
    last_event_id: LastEventId = None,
) -> JobEventList | StreamingResponse:
    """The job's event log, oldest first, after event id `after` (`stream=true`: server-sent events)."""
    if stream:
        return event_stream(job.tenant_id, job.id, after if after is not None else last_event_id)
    events, has_more = jobs_repo.list_events(session, job.tenant_id, job.id, after=after, limit=limit)
    return JobEventList(data=[JobEventRead.model_validate(e) for e in events], has_more=has_more)


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    responses=error_responses(*OWNED_ERRORS, ErrorCode.JOB_NOT_CANCELLABLE),
)
def cancel_job(session: SessionDep, job: OwnedJobDep) -> JobRead:
    """Cancel a job: at once if queued, at the worker's next step if running."""
    return JobRead.model_validate(jobs_repo.request_cancel(session, job))


@router.delete(
    "/{job_id}",
    response_model=Deleted,
    responses=error_responses(*OWNED_ERRORS, ErrorCode.JOB_NOT_FINISHED),
)
def delete_job(session: SessionDep, job: OwnedJobDep) -> Deleted:
    """Delete a finished job and its blobs (adapter, checkpoints, report); 409 while it is active."""
    job_id = job.id
    jobs_repo.delete_finished_job(session, job)
    return Deleted(id=job_id, object="fine_tuning.job")


__all__ = ["JobCreate", "router"]

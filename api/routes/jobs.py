"""Fine-tuning jobs: submit, list, read, events, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from api.deps import OwnedJobDep, SessionDep, SettingsDep, TenantDep, clean_id, run_after_commit
from api.errors import BAD_REQUEST, error_responses
from api.uploads import JobSubmission, owned_file, parse_upload, read_job_submission, request_hash
from safetune import queue
from safetune.errors import ErrorCode
from safetune.repositories import files as files_repo
from safetune.repositories import idempotency
from safetune.repositories import jobs as jobs_repo
from safetune.schemas import FilePurpose, JobCreate, JobEventList, JobEventRead, JobList, JobRead

router = APIRouter(prefix="/jobs", tags=["jobs"])

COMMON_ERRORS = (ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED, ErrorCode.REQUEST_INVALID)
OWNED_ERRORS = (*COMMON_ERRORS, ErrorCode.JOB_NOT_FOUND)

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
                        "spec": {"type": "string", "description": "JobSpec as a JSON string"},
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
    spec = submission.spec
    parsed = None
    if submission.dataset is not None:
        parsed = parse_upload(submission.dataset, "training", settings, tenant)
        dataset_ref = parsed.sha256
    else:
        assert submission.training_file_id is not None
        dataset_ref = owned_file(
            session, tenant, submission.training_file_id, FilePurpose.TRAINING, "training_file"
        ).id
    if spec.validation_file_id:
        owned_file(session, tenant, spec.validation_file_id, FilePurpose.VALIDATION, "validation_file_id")
    if spec.eval_file_id:
        owned_file(session, tenant, spec.eval_file_id, FilePurpose.EVALUATION, "eval_file_id")

    fingerprint = request_hash(spec.model_dump(mode="json"), dataset_ref)
    if idempotency_key:
        existing_id = idempotency.find_replay(session, tenant.id, "jobs", idempotency_key, fingerprint)
        existing = jobs_repo.get_job_for_tenant(session, tenant.id, existing_id) if existing_id else None
        if existing is not None:
            return JSONResponse(JobRead.model_validate(existing).model_dump(mode="json"), status_code=200)
    jobs_repo.check_queue_quota(session, tenant, max_queued=settings.max_queued_jobs_per_tenant)

    if parsed is not None:
        filename = submission.dataset.filename if submission.dataset else None
        training_file_id = files_repo.create_file(
            session, tenant.id, purpose="training", filename=filename or "dataset.jsonl", dataset=parsed
        ).id
    else:
        training_file_id = dataset_ref
    job = jobs_repo.create_job(
        session,
        tenant.id,
        spec,
        training_file_id=training_file_id,
        validation_file_id=spec.validation_file_id,
        eval_file_id=spec.eval_file_id,
        idempotency_key=idempotency_key,
    )
    if idempotency_key:
        idempotency.record_key(session, tenant.id, "jobs", idempotency_key, fingerprint, job.id)
    job_id = job.id
    run_after_commit(session, lambda: queue.enqueue_training(job_id))
    return JobRead.model_validate(job)


@router.get("", response_model=JobList, responses=error_responses(*COMMON_ERRORS))
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    after: Annotated[
        str | None, Query(max_length=64, description="id of the last job of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobList:
    """The tenant's jobs, newest first, paginated with `after`."""
    cursor = clean_id(after) if after is not None else None
    if after is not None and cursor is None:
        cursor = "-"  # cannot name a job: reported as an unknown cursor
    jobs, has_more = jobs_repo.list_jobs(session, tenant.id, after=cursor, limit=limit)
    data = [JobRead.model_validate(job) for job in jobs]
    return JobList(data=data, has_more=has_more, next=data[-1].id if has_more else None)


@router.get("/{job_id}", response_model=JobRead, responses=error_responses(*OWNED_ERRORS))
def get_job(job: OwnedJobDep) -> JobRead:
    """One job with its status, progress and error."""
    return JobRead.model_validate(job)


@router.get("/{job_id}/events", response_model=JobEventList, responses=error_responses(*OWNED_ERRORS))
def list_job_events(
    session: SessionDep,
    job: OwnedJobDep,
    after: Annotated[
        int | None, Query(ge=0, le=2**31 - 1, description="id of the last event already seen")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobEventList:
    """The job's event log, oldest first, after event id `after`."""
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


__all__ = ["JobCreate", "router"]

"""OpenAI-compatible fine-tuning API under /v1, for the official `openai` SDK (its files are in
api/routes/openai_files.py, its models in api/routes/models.py).

The routes read and render OpenAI's shapes; storing, validating, enqueueing and cancelling go through
the same service and repositories as /files and /jobs (api/job_service.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy.orm import Session

from api import job_service, openai_mapping
from api.cursors import CheckpointCursor, JobCursor, OpenAIEventCursor
from api.deps import OwnedJobDep, SessionDep, SettingsDep, TenantDep
from api.openai_errors import OPENAI_ERROR_RESPONSES, OpenAIRoute
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import Job
from safetune.openai_schemas import (
    CheckpointPage,
    EventPage,
    FineTuningJob,
    FineTuningJobCreate,
    JobPage,
    to_job_spec,
)
from safetune.repositories import artifacts
from safetune.repositories import jobs as jobs_repo
from safetune.schemas import FilePurpose

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=OPENAI_ERROR_RESPONSES)

IdempotencyKey = Annotated[str | None, Header(max_length=200, pattern=r"^[!-~]+$")]


def _render(request: Request, session: Session, tenant_id: str, jobs: list[Job]) -> list[FineTuningJob]:
    """Jobs as OpenAI objects, with the safety verdict and report URL of those that have a report."""
    verdicts = artifacts.verdicts_for_tenant(session, tenant_id, [job.id for job in jobs])
    return [
        openai_mapping.job_object(
            job,
            verdict=verdicts.get(job.id),
            report_url=str(request.url_for("get_safety_report", job_id=job.id))
            if job.id in verdicts
            else None,
        )
        for job in jobs
    ]


@router.post("/fine_tuning/jobs", response_model=FineTuningJob)
def create_job(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    body: FineTuningJobCreate,
    idempotency_key: IdempotencyKey = None,
) -> FineTuningJob:
    """Create a fine-tuning job from an uploaded training file; safetune options go in `safety`."""
    submitted = job_service.submit_job(
        session,
        tenant,
        settings,
        to_job_spec(body),
        training_file_id=body.training_file,
        idempotency_key=idempotency_key,
        validation_purposes=(FilePurpose.VALIDATION, FilePurpose.TRAINING),
        params={"validation_file": "validation_file", "eval_file": "safety.eval_file"},
    )
    return _render(request, session, tenant.id, [submitted.row])[0]


@router.get("/fine_tuning/jobs", response_model=JobPage)
def list_jobs(
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    after: JobCursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobPage:
    """The organization's jobs, newest first, paginated with `after`."""
    jobs, has_more = jobs_repo.list_jobs(session, tenant.id, after=after, limit=limit)
    return JobPage(data=_render(request, session, tenant.id, jobs), has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}", response_model=FineTuningJob)
def retrieve_job(request: Request, session: SessionDep, job: OwnedJobDep) -> FineTuningJob:
    """One fine-tuning job."""
    return _render(request, session, job.tenant_id, [job])[0]


@router.post("/fine_tuning/jobs/{job_id}/cancel", response_model=FineTuningJob)
def cancel_job(request: Request, session: SessionDep, job: OwnedJobDep) -> FineTuningJob:
    """Cancel a job: at once if queued, at the worker's next step if running."""
    return _render(request, session, job.tenant_id, [jobs_repo.request_cancel(session, job)])[0]


@router.get("/fine_tuning/jobs/{job_id}/events", response_model=EventPage)
def list_events(
    session: SessionDep,
    job: OwnedJobDep,
    after: OpenAIEventCursor = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> EventPage:
    """The job's events, newest first; `after` pages towards older events."""
    before = openai_mapping.parse_event_id(after) if after is not None else None
    if after is not None and before is None:
        raise SafetuneError(ErrorCode.REQUEST_INVALID, "unknown pagination cursor", param="after")
    events, has_more = jobs_repo.list_events_newest_first(
        session, job.tenant_id, job.id, before=before, limit=limit
    )
    return EventPage(data=[openai_mapping.event_object(e) for e in events], has_more=has_more)


@router.get("/fine_tuning/jobs/{job_id}/checkpoints", response_model=CheckpointPage)
def list_checkpoints(
    session: SessionDep,
    job: OwnedJobDep,
    after: CheckpointCursor = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> CheckpointPage:
    """The job's checkpoints, newest first; `after` pages towards older ones."""
    # A job keeps a handful of checkpoints (one per checkpoint_every steps), so paging in memory is fine.
    rows = list(reversed(artifacts.list_checkpoints_for_tenant(session, job.tenant_id, job.id)))
    if after is not None:
        ids = [row.id for row in rows]
        if after not in ids:
            raise SafetuneError(ErrorCode.REQUEST_INVALID, "unknown pagination cursor", param="after")
        rows = rows[ids.index(after) + 1 :]
    page = [openai_mapping.checkpoint_object(job, row) for row in rows[:limit]]
    return CheckpointPage(
        data=page,
        has_more=len(rows) > limit,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
    )

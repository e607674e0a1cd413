"""GET /jobs/{job_id}/safety-report."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session

from api.deps import OwnedJobDep, SessionDep
from api.errors import error_responses
from safetune.errors import ErrorCode, SafetuneError
from safetune.models import Job, SafetyReport
from safetune.repositories import artifacts
from safetune.schemas import SafetyReportRead

router = APIRouter(prefix="/jobs", tags=["reports"])


@router.get(
    "/{job_id}/safety-report",
    response_model=SafetyReportRead,
    responses=error_responses(
        ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED, ErrorCode.REQUEST_INVALID, ErrorCode.JOB_NOT_FOUND
    ),
)
def get_safety_report(session: SessionDep, job: OwnedJobDep) -> SafetyReportRead:
    """The safety report (base vs tuned harmfulness); 404 report_not_ready with the job status until then."""
    return SafetyReportRead.model_validate(ready_report(session, job))


def ready_report(session: Session, job: Job) -> SafetyReport:
    """The job's stored report, or 404 report_not_ready naming the job's status (JSON and HTML routes)."""
    report = artifacts.get_report_for_tenant(session, job.tenant_id, job.id)
    if report is None:
        raise SafetuneError(
            ErrorCode.REPORT_NOT_READY,
            f"the safety report is not ready; the job is {job.status}",
            param="job_id",
            status=job.status,
        )
    return report

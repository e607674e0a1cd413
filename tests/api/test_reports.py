"""GET /jobs/{id}/safety-report: not ready until the worker stores it, then the stored report."""

from __future__ import annotations

from fastapi.testclient import TestClient

from safetune.db import session_scope
from safetune.models import SafetyReport
from tests.api.conftest import assert_error, set_status, submit_job


def test_report_not_ready_then_ready(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    set_status(job_id, "evaluating")
    error = assert_error(
        client.get(f"/jobs/{job_id}/safety-report", headers=auth_headers), 404, "report_not_ready"
    )
    assert error["status"] == "evaluating"
    with session_scope() as session:
        session.add(
            SafetyReport(
                job_id=job_id,
                schema_version=1,
                verdict="pass",
                base_harmful_score=0.05,
                tuned_harmful_score=0.06,
                report={"harmful_score": {"base": 0.05, "tuned": 0.06}},
            )
        )
    body = client.get(f"/jobs/{job_id}/safety-report", headers=auth_headers).json()
    assert (body["job_id"], body["verdict"], body["object"]) == (job_id, "pass", "safety_report")
    assert body["report"]["harmful_score"]["tuned"] == 0.06

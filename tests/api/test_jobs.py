"""POST/GET /jobs, events, cancel: the happy paths against real Postgres."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from safetune.db import session_scope
from safetune.models import Adapter, Checkpoint, Job, JobEvent, SafetyReport, StoredFile
from tests.api.conftest import TINY_MODEL, assert_error, chat_jsonl, row_counts, set_status, submit_job


def test_create_job_multipart(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]
) -> None:
    spec = {"base_model": TINY_MODEL, "guard": "ema", "hyperparameters": {"epochs": 2, "lora_r": 4}}
    response = submit_job(client, auth_headers, dataset=chat_jsonl(5), spec=spec)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["id"].startswith("ftjob-")
    assert (job["status"], job["base_model"], job["guard"], job["step"]) == ("queued", TINY_MODEL, "ema", 0)
    assert job["spec"]["hyperparameters"]["epochs"] == 2
    assert job["spec"]["hyperparameters"]["batch_size"] == 8  # defaults are filled in
    assert job["error"] is None and job["queued_at"]
    file = client.get(f"/files/{job['training_file']}", headers=auth_headers).json()
    assert (file["purpose"], file["format"], file["num_examples"]) == ("training", "chat", 5)
    assert row_counts(tenant[0]) == {"files": 1, "jobs": 1, "job_events": 1}


def test_create_job_from_uploaded_file_json_body(client: TestClient, auth_headers: dict[str, str]) -> None:
    upload = client.post(
        "/files",
        headers=auth_headers,
        files={"file": ("a.jsonl", b'{"prompt": "p", "completion": "c"}\n')},
        data={"purpose": "training"},
    )
    assert upload.status_code == 201, upload.text
    file_id = upload.json()["id"]
    response = client.post(
        "/jobs", headers=auth_headers, json={"training_file": file_id, "base_model": TINY_MODEL}
    )
    assert response.status_code == 201, response.text
    assert response.json()["training_file"] == file_id
    validation = client.post(
        "/jobs",
        headers=auth_headers,
        json={"training_file": file_id, "base_model": TINY_MODEL, "validation_file_id": file_id},
    )
    error = assert_error(validation, 422, "spec_invalid")
    assert error["param"] == "validation_file_id"


def test_get_and_list_with_pagination(client: TestClient, auth_headers: dict[str, str]) -> None:
    ids = [submit_job(client, auth_headers).json()["id"] for _ in range(5)]
    assert client.get(f"/jobs/{ids[0]}", headers=auth_headers).json()["id"] == ids[0]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/jobs", headers=auth_headers, params=params).json()
        seen += [job["id"] for job in page["data"]]
        pages += 1
        if not page["has_more"]:
            assert page["next"] is None
            break
        after = page["next"]
    assert seen == list(reversed(ids))
    assert pages == 3
    assert_error(client.get("/jobs", headers=auth_headers, params={"limit": 0}), 422, "request_invalid")
    error = assert_error(
        client.get("/jobs", headers=auth_headers, params={"limit": 101}), 422, "request_invalid"
    )
    assert error["param"] == "limit"


def test_events_after_cursor(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    client.post(f"/jobs/{job_id}/cancel", headers=auth_headers)
    events = client.get(f"/jobs/{job_id}/events", headers=auth_headers).json()["data"]
    assert [e["type"] for e in events] == ["queued", "cancelled"]
    later = client.get(
        f"/jobs/{job_id}/events", headers=auth_headers, params={"after": events[0]["id"]}
    ).json()
    assert [e["type"] for e in later["data"]] == ["cancelled"]
    first = client.get(f"/jobs/{job_id}/events", headers=auth_headers, params={"limit": 1}).json()
    assert first["has_more"] is True and len(first["data"]) == 1


def test_cancel_queued_then_terminal(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    cancelled = client.post(f"/jobs/{job_id}/cancel", headers=auth_headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"]
    error = assert_error(
        client.post(f"/jobs/{job_id}/cancel", headers=auth_headers), 409, "job_not_cancellable"
    )
    assert error["status"] == "cancelled"


def test_cancel_running_sets_flag_and_keeps_status(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    set_status(job_id, "running")
    response = client.post(f"/jobs/{job_id}/cancel", headers=auth_headers)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "running" and body["cancel_requested_at"]
    events = client.get(f"/jobs/{job_id}/events", headers=auth_headers).json()["data"]
    assert events[-1]["type"] == "cancel_requested"
    set_status(job_id, "succeeded")
    assert_error(client.post(f"/jobs/{job_id}/cancel", headers=auth_headers), 409, "job_not_cancellable")


def test_report_adapter_checkpoints_before_they_exist(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    error = assert_error(
        client.get(f"/jobs/{job_id}/safety-report", headers=auth_headers), 404, "report_not_ready"
    )
    assert error["status"] == "queued"
    assert_error(client.get(f"/jobs/{job_id}/adapter", headers=auth_headers), 404, "adapter_not_ready")
    assert client.get(f"/jobs/{job_id}/checkpoints", headers=auth_headers).json() == {
        "object": "list",
        "data": [],
        "best_step": None,
    }


def test_queue_quota(client: TestClient, make_tenant: object) -> None:
    _tenant_id, key = make_tenant(max_queued_jobs=2)  # type: ignore[operator]
    headers = {"Authorization": f"Bearer {key}"}
    assert submit_job(client, headers).status_code == 201
    assert submit_job(client, headers).status_code == 201
    assert_error(submit_job(client, headers), 429, "quota_exceeded")


def test_spec_string_must_be_json(client: TestClient, auth_headers: dict[str, str]) -> None:
    error = assert_error(submit_job(client, auth_headers, spec="{not json"), 422, "spec_invalid")
    assert error["param"]
    assert json.loads(json.dumps(error))  # the envelope is plain JSON


def test_committed_job_is_sent_to_the_broker_by_name(
    client: TestClient, auth_headers: dict[str, str], redis_url: str
) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    broker = redis.Redis.from_url(redis_url)
    try:
        messages = [json.loads(raw) for raw in broker.lrange("training", 0, -1)]
    finally:
        broker.close()
    sent = [m["headers"] for m in messages if job_id in m["headers"]["argsrepr"]]
    assert len(sent) == 1 and sent[0]["task"] == "safetune.train_job"


def test_rejected_submission_sends_nothing(
    client: TestClient, auth_headers: dict[str, str], redis_url: str
) -> None:
    broker = redis.Redis.from_url(redis_url)
    try:
        before = broker.llen("training")
        assert submit_job(client, auth_headers, dataset=b"{bad\n").status_code == 422
        assert broker.llen("training") == before
    finally:
        broker.close()


def test_an_anchor_batch_of_only_benign_look_alikes_is_refused_with_its_field(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    spec = {"base_model": TINY_MODEL, "guard": "anchor", "anchor": {"batch_size": 2, "benign_per_batch": 2}}
    error = assert_error(submit_job(client, auth_headers, spec=spec), 422, "spec_invalid")
    assert "anchor" in error["param"] and "benign_per_batch" in error["message"]


def test_sap_minimum_sequence_length_is_per_model_and_only_for_sap(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    def spec(guard: str, max_seq_len: int) -> dict[str, object]:
        return {"base_model": TINY_MODEL, "guard": guard, "hyperparameters": {"max_seq_len": max_seq_len}}

    error = assert_error(submit_job(client, auth_headers, spec=spec("sap", 255)), 422, "spec_invalid")
    assert error["param"] == "hyperparameters.max_seq_len" and ">= 256" in error["message"]
    assert submit_job(client, auth_headers, spec=spec("sap", 256)).status_code == 201
    assert submit_job(client, auth_headers, spec=spec("none", 64)).status_code == 201
    v1 = client.post(
        "/v1/fine_tuning/jobs",
        headers=auth_headers,
        json={
            "model": TINY_MODEL,
            "training_file": "file-any",
            "safety": {"guard": "sap", "hyperparameters": {"max_seq_len": 64}},
        },
    )
    assert v1.status_code == 422, v1.text
    assert v1.json()["error"]["param"] == "safety.hyperparameters.max_seq_len"


def test_delete_a_finished_job_removes_it_and_its_blobs(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Callable[..., tuple[str, str]]
) -> None:
    job = submit_job(client, auth_headers).json()
    job_id = job["id"]
    result_file_id = with_results(job_id)
    _other, other_key = make_tenant()
    other = {"Authorization": f"Bearer {other_key}"}
    assert_error(client.delete(f"/jobs/{job_id}", headers=other), 404, "job_not_found")

    response = client.delete(f"/jobs/{job_id}", headers=auth_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": job_id, "object": "fine_tuning.job", "deleted": True}
    assert_error(client.get(f"/jobs/{job_id}", headers=auth_headers), 404, "job_not_found")
    assert_error(client.get(f"/jobs/{job_id}/adapter", headers=auth_headers), 404, "job_not_found")
    with session_scope() as session:
        for model in (Adapter, Checkpoint, SafetyReport, JobEvent):
            assert session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id)) == 0
        assert session.get(StoredFile, result_file_id) is None  # the job's own output goes with it
    # The dataset is the tenant's own upload: it stays until DELETE /files/{id}.
    assert client.get(f"/files/{job['training_file']}", headers=auth_headers).status_code == 200


def test_an_active_job_must_be_cancelled_before_it_is_deleted(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    set_status(job_id, "running")
    error = assert_error(client.delete(f"/jobs/{job_id}", headers=auth_headers), 409, "job_not_finished")
    assert error["status"] == "running" and "cancel" in error["message"]
    assert client.get(f"/jobs/{job_id}", headers=auth_headers).status_code == 200
    set_status(job_id, "cancelled")
    assert client.delete(f"/jobs/{job_id}", headers=auth_headers).status_code == 200


def with_results(job_id: str) -> str:
    """What a succeeded job leaves (adapter, checkpoint, report, result file); returns the file id."""
    with session_scope() as session:
        job = session.get_one(Job, job_id)
        result = StoredFile(
            tenant_id=job.tenant_id,
            purpose="fine-tune-results",
            filename="step_metrics.csv",
            format="csv",
            num_examples=1,
            size_bytes=3,
            sha256="0" * 64,
            content=b"csv",
        )
        session.add(result)
        session.flush()
        job.result_file_id = result.id
        job.status = "succeeded"
        session.add(Adapter(job_id=job_id, content=b"zip", sha256="1" * 64, size_bytes=3))
        session.add(Checkpoint(job_id=job_id, step=1, adapter_zip=b"z", state_zip=b"", sha256="2" * 64))
        session.add(SafetyReport(job_id=job_id, schema_version=1, verdict="pass", report={}))
        return result.id

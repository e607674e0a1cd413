"""The OpenAI-compatible /v1 routes against the real database (no worker: jobs stay queued)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from safetune.db import session_scope
from safetune.models import Job, JobStatus, utcnow
from safetune.openai_schemas import DEFAULT_LEARNING_RATE, STATUS_MAP
from safetune.schemas import DEFAULT_GUARD
from tests.api.conftest import TINY_MODEL, chat_jsonl, row_counts, set_status

OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


def upload(
    client: TestClient, headers: dict[str, str], data: bytes | None = None, purpose: str = "fine-tune"
) -> Any:
    return client.post(
        "/v1/files",
        headers=headers,
        files={"file": ("train.jsonl", chat_jsonl() if data is None else data, "application/jsonl")},
        data={"purpose": purpose},
    )


def create_job(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    if "training_file" not in body:
        body["training_file"] = upload(client, headers).json()["id"]
    body.setdefault("model", TINY_MODEL)
    return client.post("/v1/fine_tuning/jobs", headers=headers, json=body)


def openai_error(
    response: Any, status: int, code: str, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert OPENAI_ERROR_KEYS <= set(error), error
    assert (error["code"], error["type"]) == (code, type_), error
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_upload_returns_an_openai_file_object(client: TestClient, auth_headers: dict[str, str]) -> None:
    created = upload(client, auth_headers)
    assert created.status_code == 200, created.text
    body = created.json()
    assert body["object"] == "file" and body["id"].startswith("file-")
    assert (body["purpose"], body["status"], body["filename"]) == ("fine-tune", "processed", "train.jsonl")
    assert isinstance(body["created_at"], int) and body["bytes"] == len(chat_jsonl())  # as uploaded
    assert client.get(f"/v1/files/{body['id']}", headers=auth_headers).json() == body
    # The same file through our own API: one row, purpose training.
    assert client.get(f"/files/{body['id']}", headers=auth_headers).json()["purpose"] == "training"


def test_upload_is_validated_like_post_files(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]
) -> None:
    bad = chat_jsonl(2) + b'{"messages": [{"role": "robot", "content": "x"}]}\n'
    error = openai_error(upload(client, auth_headers, bad), 422, "dataset_invalid_line")
    assert error["line"] == 3
    openai_error(upload(client, auth_headers, purpose="assistants"), 422, "request_invalid")
    assert row_counts(tenant[0])["files"] == 0


def test_create_job_maps_openai_fields_onto_our_spec(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    validation = upload(client, auth_headers).json()["id"]
    response = create_job(
        client,
        auth_headers,
        validation_file=validation,
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5},
        suffix="support-bot",
        seed=7,
        safety={"guard": "none", "hyperparameters": {"max_steps": 3, "checkpoint_every": 1}},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["object"] == "fine_tuning.job" and job["status"] == "queued"
    assert job["model"] == TINY_MODEL and job["fine_tuned_model"] is None
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 0.5}
    assert job["method"]["type"] == "supervised"
    assert (job["seed"], job["validation_file"], job["result_files"]) == (7, validation, [])
    assert job["error"] is None and job["finished_at"] is None and isinstance(job["created_at"], int)
    assert job["safety"]["guard"] == "none" and job["safety"]["verdict"] is None
    with session_scope() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.tenant_id == job["organization_id"]
        hp = row.spec["hyperparameters"]
    assert (hp["epochs"], hp["batch_size"], hp["max_steps"], hp["checkpoint_every"], hp["seed"]) == (
        2,
        4,
        3,
        1,
        7,
    )
    assert hp["learning_rate"] == pytest.approx(0.5 * DEFAULT_LEARNING_RATE)
    assert row.suffix == "support-bot"
    # The native API sees the same job.
    assert client.get(f"/jobs/{job['id']}", headers=auth_headers).json()["status"] == "queued"


def test_auto_values_and_method_supervised(client: TestClient, auth_headers: dict[str, str]) -> None:
    auto = create_job(client, auth_headers, hyperparameters={"n_epochs": "auto"}).json()
    assert auto["hyperparameters"] == {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1.0}
    assert auto["safety"]["guard"] == DEFAULT_GUARD and auto["seed"] == 0
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}}
    assert create_job(client, auth_headers, method=method).json()["hyperparameters"]["n_epochs"] == 3


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "gpt-4o-mini"}, "base_model_unknown", "model"),
        ({"hyperparameters": {"n_epochs": 0}}, "request_invalid", "hyperparameters.n_epochs"),
        ({"method": {"type": "dpo"}}, "request_invalid", "method.type"),
        ({"suffix": "Not Valid!"}, "spec_invalid", "suffix"),
        (
            {"safety": {"hyperparameters": {"max_steps": 0}}},
            "spec_invalid",
            "safety.hyperparameters.max_steps",
        ),
        ({"safety": {"hyperparameters": {"epochs": 2}}}, "spec_invalid", "safety.hyperparameters.epochs"),
        ({"training_file": "file-missing"}, "file_not_found", "training_file"),
        ({"validation_file": "file-missing"}, "file_not_found", "validation_file"),
        ({"metadata": {"team": "a"}}, "spec_invalid", "metadata"),
    ],
)
def test_create_job_errors_use_the_openai_envelope(
    client: TestClient,
    auth_headers: dict[str, str],
    tenant: tuple[str, str],
    body: dict[str, Any],
    code: str,
    param: str,
) -> None:
    before = row_counts(tenant[0])["jobs"]
    error = openai_error(
        create_job(client, auth_headers, **body), 404 if code == "file_not_found" else 422, code
    )
    assert error["param"] == param, error
    assert row_counts(tenant[0])["jobs"] == before


def test_auth_errors_use_the_openai_envelope(client: TestClient) -> None:
    response = client.get("/v1/fine_tuning/jobs")
    openai_error(response, 401, "auth_missing", "authentication_error")
    assert response.headers["www-authenticate"] == "Bearer"
    bad = client.get("/v1/fine_tuning/jobs", headers={"Authorization": "Bearer nope"})
    openai_error(bad, 401, "auth_invalid", "authentication_error")
    # Our own routes keep our envelope.
    assert set(client.get("/jobs").json()["error"]) >= {"code", "message", "param", "line"}


def test_list_is_newest_first_with_cursor_pagination(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    file_id = upload(client, auth_headers).json()["id"]
    ids = [create_job(client, auth_headers, training_file=file_id).json()["id"] for _ in range(5)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/fine_tuning/jobs", headers=auth_headers, params=params).json()
        assert page["object"] == "list"
        seen += [job["id"] for job in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == list(reversed(ids)) and pages == 3
    default = client.get("/v1/fine_tuning/jobs", headers=auth_headers).json()
    assert len(default["data"]) == 5 and default["has_more"] is False
    bad = client.get("/v1/fine_tuning/jobs", headers=auth_headers, params={"after": "ftjob-nope"})
    openai_error(bad, 422, "request_invalid")


def test_cancel_queued_then_events_newest_first(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = create_job(client, auth_headers).json()["id"]
    cancelled = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth_headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and isinstance(cancelled.json()["finished_at"], int)
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth_headers).json()["status"] == "cancelled"
    again = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=auth_headers)
    openai_error(again, 409, "job_not_cancellable")

    events = client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=auth_headers).json()
    assert [e["data"]["event"] for e in events["data"]] == ["cancelled", "queued"]
    first = events["data"][0]
    assert first["object"] == "fine_tuning.job.event" and first["type"] == "message"
    assert first["id"].startswith("ftevent-") and first["level"] == "info"
    older = client.get(
        f"/v1/fine_tuning/jobs/{job_id}/events",
        headers=auth_headers,
        params={"limit": 1, "after": first["id"]},
    ).json()
    assert [e["data"]["event"] for e in older["data"]] == ["queued"] and older["has_more"] is False
    paged = client.get(
        f"/v1/fine_tuning/jobs/{job_id}/events", headers=auth_headers, params={"limit": 1}
    ).json()
    assert paged["has_more"] is True
    # "²" passes str.isdigit() but not int(): a cursor that names no event, not a crash.
    for cursor in ("ftevent-\u00b2", "ftevent-" + "9" * 20, "ftevent-x"):
        bad = client.get(
            f"/v1/fine_tuning/jobs/{job_id}/events", headers=auth_headers, params={"after": cursor}
        )
        assert openai_error(bad, 422, "request_invalid")["param"] == "after"


def test_status_mapping_and_fine_tuned_model(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = create_job(client, auth_headers, suffix="bot").json()["id"]
    assert set(STATUS_MAP) == set(JobStatus)  # every status we store has an OpenAI name
    for ours, theirs in [
        ("evaluating", "running"),
        ("queued", "queued"),
        ("succeeded", "succeeded"),
    ]:
        set_status(job_id, ours)
        job = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth_headers).json()
        assert (job["status"], job["safety"]["status"]) == (theirs, ours)
    assert job["fine_tuned_model"] == f"ft:{TINY_MODEL}:bot:{job_id}"


def test_checkpoints_empty(client: TestClient, auth_headers: dict[str, str]) -> None:
    job_id = create_job(client, auth_headers).json()["id"]
    page = client.get(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", headers=auth_headers).json()
    assert page == {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}


def test_other_tenants_objects_are_404(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Callable[..., tuple[str, str]]
) -> None:
    file_id = upload(client, auth_headers).json()["id"]
    job_id = create_job(client, auth_headers, training_file=file_id).json()["id"]
    other = {"Authorization": f"Bearer {make_tenant()[1]}"}
    for path in ("", "/events", "/checkpoints"):
        openai_error(client.get(f"/v1/fine_tuning/jobs/{job_id}{path}", headers=other), 404, "job_not_found")
    openai_error(client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=other), 404, "job_not_found")
    openai_error(client.get(f"/v1/files/{file_id}", headers=other), 404, "file_not_found")
    openai_error(create_job(client, other, training_file=file_id), 404, "file_not_found")
    assert client.get("/v1/fine_tuning/jobs", headers=other).json()["data"] == []
    missing = client.get("/v1/fine_tuning/jobs/ftjob-missing", headers=auth_headers)
    assert (
        missing.json()["error"]["message"].replace("ftjob-missing", job_id)
        == client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=other).json()["error"]["message"]
    )


def test_idempotent_create(client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]) -> None:
    file_id = upload(client, auth_headers).json()["id"]
    key = {**auth_headers, "Idempotency-Key": "ft-1"}
    body = {"model": TINY_MODEL, "training_file": file_id}
    first = client.post("/v1/fine_tuning/jobs", headers=key, json=body).json()
    again = client.post("/v1/fine_tuning/jobs", headers=key, json=body).json()
    assert first["id"] == again["id"] and row_counts(tenant[0])["jobs"] == 1
    conflict = client.post("/v1/fine_tuning/jobs", headers=key, json={**body, "suffix": "x"})
    openai_error(conflict, 409, "idempotency_conflict")


def test_running_job_has_an_estimated_finish_and_a_succeeded_one_its_results(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = create_job(client, auth_headers).json()["id"]
    started = utcnow() - timedelta(seconds=100)
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", started_at=started, step=25, total_steps=100)
        )
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth_headers).json()
    # 25 of 100 steps in ~100 s: about 400 s after the start.
    assert abs(job["estimated_finish"] - (int(started.timestamp()) + 400)) <= 5
    assert (job["trained_tokens"], job["result_files"]) == (None, [])

    result = upload(client, auth_headers).json()["id"]
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="succeeded", finished_at=utcnow(), trained_tokens=1234, result_file_id=result)
        )
    job = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth_headers).json()
    assert (job["estimated_finish"], job["trained_tokens"], job["result_files"]) == (None, 1234, [result])

"""Tenant A can see nothing of tenant B: every lookup is a 404 identical to a missing id."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import chat_jsonl, row_counts, submit_job


@pytest.fixture()
def two_tenants(client: TestClient, make_tenant: Any) -> tuple[dict[str, str], dict[str, str], str, str]:
    a = {"Authorization": f"Bearer {make_tenant()[1]}"}
    b = {"Authorization": f"Bearer {make_tenant()[1]}"}
    job = submit_job(client, b).json()
    upload = client.post(
        "/files", headers=b, files={"file": ("v.jsonl", chat_jsonl())}, data={"purpose": "validation"}
    )
    return a, b, job["id"], upload.json()["id"]


def _masked(body: dict[str, Any], real_id: str, fake_id: str) -> dict[str, Any]:
    error = dict(body["error"])
    error["message"] = error["message"].replace(real_id, "<id>").replace(fake_id, "<id>")
    return error


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "/events"),
        ("post", "/cancel"),
        ("get", "/safety-report"),
        ("get", "/adapter"),
        ("get", "/checkpoints"),
    ],
)
def test_other_tenants_job_looks_missing(
    client: TestClient, two_tenants: tuple[dict[str, str], dict[str, str], str, str], method: str, suffix: str
) -> None:
    a, b, job_id, _file_id = two_tenants
    fake_id = "ftjob-" + "0" * 32
    theirs = client.request(method, f"/jobs/{job_id}{suffix}", headers=a)
    missing = client.request(method, f"/jobs/{fake_id}{suffix}", headers=a)
    assert theirs.status_code == missing.status_code == 404
    assert _masked(theirs.json(), job_id, fake_id) == _masked(missing.json(), job_id, fake_id)
    assert theirs.json()["error"]["code"] == "job_not_found"
    # ...and the owner still sees it, untouched (the cancel attempt by A did nothing).
    assert client.get(f"/jobs/{job_id}", headers=b).json()["status"] == "queued"


def test_other_tenants_jobs_are_not_listed(
    client: TestClient, two_tenants: tuple[dict[str, str], dict[str, str], str, str]
) -> None:
    a, b, job_id, _ = two_tenants
    assert client.get("/jobs", headers=a).json()["data"] == []
    assert [j["id"] for j in client.get("/jobs", headers=b).json()["data"]] == [job_id]
    # B's job id is not even a valid cursor for A
    assert client.get("/jobs", headers=a, params={"after": job_id}).status_code == 422


def test_other_tenants_files_look_missing(
    client: TestClient, two_tenants: tuple[dict[str, str], dict[str, str], str, str], make_tenant: Any
) -> None:
    a, b, _job_id, file_id = two_tenants
    fake_id = "file-" + "0" * 32
    theirs = client.get(f"/files/{file_id}", headers=a)
    missing = client.get(f"/files/{fake_id}", headers=a)
    assert theirs.status_code == missing.status_code == 404
    assert _masked(theirs.json(), file_id, fake_id) == _masked(missing.json(), file_id, fake_id)
    assert client.get(f"/files/{file_id}", headers=b).status_code == 200
    # nor can A train on B's file
    tenant_id, key = make_tenant()
    use = client.post(
        "/jobs",
        headers={"Authorization": f"Bearer {key}"},
        json={"training_file": file_id, "base_model": "tiny-random-llama"},
    )
    assert use.status_code == 404 and use.json()["error"]["code"] == "file_not_found"
    assert row_counts(tenant_id) == {"files": 0, "jobs": 0, "job_events": 0}


JOB_ROUTES = [
    ("get", "/jobs/{id}/events?stream=true"),
    ("get", "/jobs/{id}/events/stream"),
    ("get", "/jobs/{id}/checkpoints/1/adapter"),
    ("get", "/jobs/{id}/checkpoints/best/adapter"),
    ("get", "/jobs/{id}/safety-report.html"),
    ("post", "/jobs/{id}/report-links"),
    ("delete", "/jobs/{id}"),
    ("get", "/v1/fine_tuning/jobs/{id}"),
    ("post", "/v1/fine_tuning/jobs/{id}/cancel"),
    ("get", "/v1/fine_tuning/jobs/{id}/events"),
    ("get", "/v1/fine_tuning/jobs/{id}/checkpoints"),
]
FILE_ROUTES = [
    ("delete", "/files/{id}"),
    ("get", "/v1/files/{id}"),
    ("get", "/v1/files/{id}/content"),
    ("delete", "/v1/files/{id}"),
]


def _same_as_missing(
    client: TestClient, headers: dict[str, str], method: str, route: str, real: str, fake: str
) -> None:
    theirs = client.request(method, route.format(id=real), headers=headers)
    missing = client.request(method, route.format(id=fake), headers=headers)
    assert theirs.status_code == missing.status_code, (route, theirs.text, missing.text)
    assert theirs.status_code in (404, 422), (route, theirs.status_code)
    body_t, body_m = theirs.json(), missing.json()
    if "error" in body_t and isinstance(body_t["error"], dict):
        assert _masked(body_t, real, fake) == _masked(body_m, real, fake), route


@pytest.mark.parametrize(("method", "route"), JOB_ROUTES)
def test_every_job_route_answers_another_tenants_job_like_a_missing_one(
    client: TestClient, two_tenants: tuple[dict[str, str], dict[str, str], str, str], method: str, route: str
) -> None:
    a, b, job_id, _ = two_tenants
    _same_as_missing(client, a, method, route, job_id, "ftjob-" + "0" * 32)
    assert client.get(f"/jobs/{job_id}", headers=b).json()["status"] == "queued"


@pytest.mark.parametrize(("method", "route"), FILE_ROUTES)
def test_every_file_route_answers_another_tenants_file_like_a_missing_one(
    client: TestClient, two_tenants: tuple[dict[str, str], dict[str, str], str, str], method: str, route: str
) -> None:
    a, b, _, file_id = two_tenants
    _same_as_missing(client, a, method, route, file_id, "file-" + "0" * 32)
    assert client.get(f"/files/{file_id}", headers=b).status_code == 200

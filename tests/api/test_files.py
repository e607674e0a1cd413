"""Native /files: DELETE (the same service code as DELETE /v1/files) and the per-tenant storage
quota on uploads and job submissions (413 storage_quota_exceeded, nothing written)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from safetune.db import session_scope
from safetune.models import Tenant
from safetune.repositories import storage
from tests.api.conftest import TINY_MODEL, assert_error, chat_jsonl, row_counts, set_status, submit_job


def upload(client: TestClient, headers: dict[str, str], content: bytes | None = None) -> Any:
    return client.post(
        "/files",
        headers=headers,
        files={"file": ("a.jsonl", chat_jsonl() if content is None else content)},
        data={"purpose": "training"},
    )


def test_delete_a_file_then_it_is_gone(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Callable[..., tuple[str, str]]
) -> None:
    file_id = upload(client, auth_headers).json()["id"]
    _other_id, other_key = make_tenant()
    other = {"Authorization": f"Bearer {other_key}"}
    not_theirs = assert_error(client.delete(f"/files/{file_id}", headers=other), 404, "file_not_found")
    missing = assert_error(client.delete("/files/file-missing", headers=other), 404, "file_not_found")
    assert not_theirs["param"] == missing["param"] == "file_id"  # another tenant's looks missing

    response = client.delete(f"/files/{file_id}", headers=auth_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": file_id, "object": "file", "deleted": True}
    assert_error(client.get(f"/files/{file_id}", headers=auth_headers), 404, "file_not_found")
    assert_error(client.delete(f"/files/{file_id}", headers=auth_headers), 404, "file_not_found")


def test_a_file_a_queued_job_uses_is_not_deleted(client: TestClient, auth_headers: dict[str, str]) -> None:
    job = submit_job(client, auth_headers).json()
    error = assert_error(
        client.delete(f"/files/{job['training_file']}", headers=auth_headers), 409, "file_in_use"
    )
    assert error["job_ids"] == [job["id"]]
    set_status(job["id"], "failed")
    assert client.delete(f"/files/{job['training_file']}", headers=auth_headers).status_code == 200


def test_uploads_past_the_storage_quota_are_refused_and_write_nothing(
    client: TestClient, make_tenant: Callable[..., tuple[str, str]]
) -> None:
    data = chat_jsonl(3)
    tenant_id, key = make_tenant(storage_quota_bytes=2 * len(data))
    headers = {"Authorization": f"Bearer {key}"}
    assert upload(client, headers, data).status_code == 201
    before = row_counts(tenant_id)
    error = assert_error(upload(client, headers, chat_jsonl(8)), 413, "storage_quota_exceeded")
    assert error["quota_bytes"] == 2 * len(data)
    assert error["used_bytes"] > 0 and error["requested_bytes"] > error["quota_bytes"] - error["used_bytes"]
    assert "DELETE /files" in error["message"]
    assert_error(submit_job(client, headers, dataset=chat_jsonl(8)), 413, "storage_quota_exceeded")
    assert row_counts(tenant_id) == before
    v1 = client.post(
        "/v1/files",
        headers=headers,
        files={"file": ("a.jsonl", chat_jsonl(8))},
        data={"purpose": "fine-tune"},
    )
    assert v1.status_code == 413, v1.text
    assert row_counts(tenant_id) == before


def test_a_tenant_at_its_quota_cannot_start_a_job_until_it_deletes_something(
    client: TestClient, make_tenant: Callable[..., tuple[str, str]]
) -> None:
    tenant_id, key = make_tenant()
    headers = {"Authorization": f"Bearer {key}"}
    file_id = upload(client, headers).json()["id"]
    with session_scope() as session:  # exactly full now
        tenant = session.get_one(Tenant, tenant_id)
        tenant.storage_quota_bytes = storage.tenant_storage_bytes(session, tenant_id)
    assert_error(upload(client, headers), 413, "storage_quota_exceeded")
    job = {"training_file": file_id, "base_model": TINY_MODEL}
    # The job would write an adapter and checkpoints into a full quota.
    assert_error(client.post("/jobs", headers=headers, json=job), 413, "storage_quota_exceeded")
    assert client.delete(f"/files/{file_id}", headers=headers).status_code == 200
    assert upload(client, headers).status_code == 201

"""Idempotency-Key: same key + same request → same resource; same key + different request → 409."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import TINY_MODEL, assert_error, chat_jsonl, row_counts, submit_job


def test_job_replay_returns_the_same_job(
    client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]
) -> None:
    key = {"Idempotency-Key": "submit-1"}
    first = submit_job(client, auth_headers, extra_headers=key)
    again = submit_job(client, auth_headers, extra_headers=key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert row_counts(tenant[0]) == {"files": 1, "jobs": 1, "job_events": 1}
    other_spec = submit_job(
        client, auth_headers, extra_headers=key, spec={"base_model": TINY_MODEL, "guard": "none"}
    )
    assert_error(other_spec, 409, "idempotency_conflict")
    other_data = submit_job(client, auth_headers, extra_headers=key, dataset=chat_jsonl(7))
    assert_error(other_data, 409, "idempotency_conflict")
    assert row_counts(tenant[0])["jobs"] == 1


def test_keys_are_per_tenant(client: TestClient, make_tenant: object) -> None:
    a = {"Authorization": f"Bearer {make_tenant()[1]}"}  # type: ignore[operator]
    b = {"Authorization": f"Bearer {make_tenant()[1]}"}  # type: ignore[operator]
    key = {"Idempotency-Key": "shared-key"}
    job_a = submit_job(client, a, extra_headers=key).json()["id"]
    job_b = submit_job(client, b, extra_headers=key).json()["id"]
    assert job_a != job_b


def test_file_replay(client: TestClient, auth_headers: dict[str, str], tenant: tuple[str, str]) -> None:
    def upload(data: bytes) -> object:
        return client.post(
            "/files",
            headers={**auth_headers, "Idempotency-Key": "f1"},
            files={"file": ("a.jsonl", data)},
            data={"purpose": "training"},
        )

    first, again = upload(chat_jsonl()), upload(chat_jsonl())
    assert (first.status_code, again.status_code) == (201, 200)  # type: ignore[attr-defined]
    assert first.json() == again.json()  # type: ignore[attr-defined]
    assert_error(upload(chat_jsonl(2)), 409, "idempotency_conflict")  # type: ignore[arg-type]
    assert row_counts(tenant[0])["files"] == 1


def test_without_key_each_submission_is_new(client: TestClient, auth_headers: dict[str, str]) -> None:
    assert submit_job(client, auth_headers).json()["id"] != submit_job(client, auth_headers).json()["id"]

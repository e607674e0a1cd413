"""/v1/files: list (purpose filter, cursor), delete (and what a job still using a file does to it),
content download; against the real database, no worker (jobs stay queued)."""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import select

from safetune.db import session_scope
from safetune.models import StoredFile
from tests.api.conftest import assert_error, chat_jsonl, set_status
from tests.api.test_openai_compat import create_job, openai_error, upload

PROMPT_COMPLETION = (
    b'{"prompt": "What is 2+2?", "completion": "4"}\n{"prompt": "Hi", "completion": "Hello!"}\n'
)


def ids(page: dict[str, object]) -> list[str]:
    return [item["id"] for item in page["data"]]  # type: ignore[attr-defined, index]


def test_list_is_newest_first_with_purpose_filter_and_cursor(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Callable[..., tuple[str, str]]
) -> None:
    tuning = [upload(client, auth_headers).json()["id"] for _ in range(3)]
    validation = client.post(
        "/files",
        headers=auth_headers,
        files={"file": ("val.jsonl", chat_jsonl(2), "application/jsonl")},
        data={"purpose": "validation"},
    ).json()["id"]
    other = {"Authorization": f"Bearer {make_tenant()[1]}"}
    upload(client, other)  # another tenant's file is never listed

    everything = client.get("/v1/files", headers=auth_headers).json()
    assert ids(everything) == [validation, *reversed(tuning)]
    assert (everything["object"], everything["has_more"]) == ("list", False)
    assert (everything["first_id"], everything["last_id"]) == (validation, tuning[0])
    assert everything["data"][0] == client.get(f"/v1/files/{validation}", headers=auth_headers).json()

    only_tuning = client.get("/v1/files", headers=auth_headers, params={"purpose": "fine-tune"}).json()
    assert ids(only_tuning) == list(reversed(tuning))
    assert {f["purpose"] for f in only_tuning["data"]} == {"fine-tune"}
    assert ids(client.get("/v1/files", headers=auth_headers, params={"purpose": "validation"}).json()) == [
        validation
    ]

    pages, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/files", headers=auth_headers, params=params).json()
        pages.append(ids(page))
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert pages == [[validation, tuning[2]], [tuning[1], tuning[0]]]
    oldest_first = client.get("/v1/files", headers=auth_headers, params={"order": "asc", "limit": 3}).json()
    assert (ids(oldest_first), oldest_first["has_more"]) == ([*tuning], True)

    assert ids(client.get("/v1/files", headers=other).json()) != ids(everything)
    unknown = client.get("/v1/files", headers=auth_headers, params={"after": "file-" + "0" * 32})
    assert openai_error(unknown, 422, "request_invalid")["param"] == "after"
    foreign = client.get(
        "/v1/files",
        headers=auth_headers,
        params={"after": ids(client.get("/v1/files", headers=other).json())[0]},
    )
    assert openai_error(foreign, 422, "request_invalid")["param"] == "after"
    for bad in ({"after": "file-²"}, {"purpose": "assistants"}, {"limit": 0}, {"order": "up"}):
        openai_error(client.get("/v1/files", headers=auth_headers, params=bad), 422, "request_invalid")


def test_content_is_the_stored_normalised_jsonl_with_its_own_length(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Callable[..., tuple[str, str]]
) -> None:
    created = upload(client, auth_headers, PROMPT_COMPLETION).json()
    response = client.get(f"/v1/files/{created['id']}/content", headers=auth_headers)
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.content.splitlines()]
    assert lines[0] == {
        "messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    }
    # `bytes` is the upload as sent; the download is the normalised JSONL, which is longer here.
    assert created["bytes"] == len(PROMPT_COMPLETION) != len(response.content)
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["content-type"].startswith("application/jsonl")
    other = {"Authorization": f"Bearer {make_tenant()[1]}"}
    openai_error(client.get(f"/v1/files/{created['id']}/content", headers=other), 404, "file_not_found")
    openai_error(client.get("/v1/files/file-missing/content", headers=auth_headers), 404, "file_not_found")


def test_delete_an_unused_file_removes_it(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Callable[..., tuple[str, str]]
) -> None:
    file_id = upload(client, auth_headers).json()["id"]
    other = {"Authorization": f"Bearer {make_tenant()[1]}"}
    openai_error(client.delete(f"/v1/files/{file_id}", headers=other), 404, "file_not_found")

    deleted = client.delete(f"/v1/files/{file_id}", headers=auth_headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"id": file_id, "object": "file", "deleted": True}
    for path in ("", "/content"):
        openai_error(client.get(f"/v1/files/{file_id}{path}", headers=auth_headers), 404, "file_not_found")
    openai_error(client.delete(f"/v1/files/{file_id}", headers=auth_headers), 404, "file_not_found")
    assert file_id not in ids(client.get("/v1/files", headers=auth_headers).json())
    with session_scope() as session:
        assert session.get(StoredFile, file_id) is None


def test_a_file_an_unfinished_job_uses_cannot_be_deleted_and_a_finished_jobs_file_becomes_a_tombstone(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    file_id = upload(client, auth_headers).json()["id"]
    job_id = create_job(client, auth_headers, training_file=file_id).json()["id"]
    in_use = openai_error(client.delete(f"/v1/files/{file_id}", headers=auth_headers), 409, "file_in_use")
    assert (in_use["param"], in_use["job_ids"]) == ("file_id", [job_id])
    assert client.get(f"/v1/files/{file_id}/content", headers=auth_headers).status_code == 200

    set_status(job_id, "failed")
    assert client.delete(f"/v1/files/{file_id}", headers=auth_headers).json()["deleted"] is True
    # The finished job still names its training file; the file itself is gone for every route.
    assert (
        client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth_headers).json()["training_file"] == file_id
    )
    openai_error(client.get(f"/v1/files/{file_id}", headers=auth_headers), 404, "file_not_found")
    assert_error(client.get(f"/files/{file_id}", headers=auth_headers), 404, "file_not_found")
    openai_error(create_job(client, auth_headers, training_file=file_id), 404, "file_not_found")
    with session_scope() as session:
        row = session.scalar(select(StoredFile).where(StoredFile.id == file_id))
        assert row is not None and row.deleted_at is not None
        assert session.scalar(select(StoredFile.content).where(StoredFile.id == file_id)) == b""


def test_the_same_upload_under_the_same_key_after_a_delete_is_a_new_file(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    keyed = {**auth_headers, "Idempotency-Key": "upload-1"}
    first = client.post(
        "/v1/files", headers=keyed, files={"file": ("t.jsonl", chat_jsonl())}, data={"purpose": "fine-tune"}
    ).json()["id"]
    assert client.delete(f"/v1/files/{first}", headers=auth_headers).status_code == 200
    again = client.post(
        "/v1/files", headers=keyed, files={"file": ("t.jsonl", chat_jsonl())}, data={"purpose": "fine-tune"}
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] != first
    assert client.get(f"/v1/files/{again.json()['id']}", headers=auth_headers).status_code == 200

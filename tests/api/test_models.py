"""GET /models (the registry) and OpenAI's /v1/models: base models plus the tenant's fine-tuned ones."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import update

from safetune.base_models import REGISTRY
from safetune.db import session_scope
from safetune.models import Job, utcnow
from tests.api.conftest import TINY_MODEL, assert_error
from tests.api.test_openai_compat import create_job, openai_error


def succeed(job_id: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="succeeded", finished_at=utcnow()))


def test_native_models_list_the_registry(client: TestClient, auth_headers: dict[str, str]) -> None:
    body = client.get("/models", headers=auth_headers).json()
    assert body["object"] == "list"
    assert [m["name"] for m in body["data"]] == list(REGISTRY)
    tiny = next(m for m in body["data"] if m["name"] == TINY_MODEL)
    assert (tiny["object"], tiny["max_seq_len"], tiny["min_sap_seq_len"]) == ("base_model", 512, 256)
    assert_error(client.get("/models"), 401, "auth_missing")


def test_v1_models_are_the_base_models_then_the_tenants_fine_tuned_models(
    client: TestClient, auth_headers: dict[str, str], make_tenant: Callable[..., tuple[str, str]]
) -> None:
    done = create_job(client, auth_headers, suffix="bot").json()["id"]
    create_job(client, auth_headers)  # still queued: no model yet
    succeed(done)
    other = {"Authorization": f"Bearer {make_tenant()[1]}"}
    succeed(create_job(client, other).json()["id"])

    listed = client.get("/v1/models", headers=auth_headers).json()
    name = f"ft:{TINY_MODEL}:bot:{done}"
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == [*REGISTRY, name]
    tuned = listed["data"][-1]
    assert (tuned["object"], tuned["owned_by"]) == (
        "model",
        client.get(f"/v1/fine_tuning/jobs/{done}", headers=auth_headers).json()["organization_id"],
    )
    assert isinstance(tuned["created"], int) and tuned["created"] > 0
    assert client.get(f"/v1/models/{name}", headers=auth_headers).json() == tuned
    assert client.get(f"/v1/models/{TINY_MODEL}", headers=auth_headers).json() == listed["data"][0]

    for missing in (
        f"ft:{TINY_MODEL}:other:{done}",  # the job's id under another suffix names no model
        f"ft:smollm2-135m-instruct:bot:{done}",
        "gpt-4o-mini",
        "ft:x",
        "ft:a:b:%00",
    ):
        error = openai_error(
            client.get(f"/v1/models/{missing}", headers=auth_headers), 404, "model_not_found"
        )
        assert error["param"] == "model"
    openai_error(client.get(f"/v1/models/{name}", headers=other), 404, "model_not_found")
    openai_error(client.get("/v1/models"), 401, "auth_missing", "authentication_error")

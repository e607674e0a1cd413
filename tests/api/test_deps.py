"""api.deps on the hot path: GET /jobs/{id} is one statement and one threadpool hop, same answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import assert_error, submit_job
from tests.api.test_auth import counting_queries


@pytest.fixture()
def threadpool_hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the functions the app hands to the threadpool (FastAPI runs every sync
    dependency, sync route and its response validation there; each hop costs two thread wake-ups)."""
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "func", func).__name__)  # FastAPI passes functools.partial
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    yield hops


def test_get_job_is_one_statement_in_one_threadpool_hop(
    client: TestClient, auth_headers: dict[str, str], threadpool_hops: list[str]
) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    threadpool_hops.clear()
    with counting_queries() as statements:
        response = client.get(f"/jobs/{job_id}", headers=auth_headers)
    assert response.status_code == 200 and response.json()["id"] == job_id
    assert len(statements) == 1 and "api_keys" in statements[0] and "jobs" in statements[0], statements
    assert len(threadpool_hops) == 1, threadpool_hops  # was 7: session x2, limiter, key, job, route, response


def test_healthz_runs_on_the_event_loop(client: TestClient, threadpool_hops: list[str]) -> None:
    assert client.get("/healthz").status_code == 200
    assert threadpool_hops == []


def test_a_bad_key_is_401_before_any_job_lookup_even_for_ids_no_row_can_have(client: TestClient) -> None:
    bad = {"Authorization": "Bearer st-not-a-key"}
    for job_id in ("ftjob-" + "0" * 32, "x" * 65, "a%00b"):
        assert_error(client.get(f"/jobs/{job_id}", headers=bad), 401, "auth_invalid")
        assert_error(client.post(f"/jobs/{job_id}/cancel", headers=bad), 401, "auth_invalid")


def test_ids_no_row_can_have_are_404_for_a_valid_key(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    for job_id in ("x" * 65, "a%00b"):
        assert_error(client.get(f"/jobs/{job_id}", headers=auth_headers), 404, "job_not_found")
        assert_error(client.get(f"/jobs/{job_id}/events", headers=auth_headers), 404, "job_not_found")


def test_a_request_that_never_queries_gives_no_connection_back(
    client: TestClient, threadpool_hops: list[str]
) -> None:
    # Missing key: the session was opened (no I/O) and is closed on the loop, no hop to finish it;
    # the error handler builds the 401 on the loop too.
    with counting_queries() as statements:
        assert_error(client.get("/jobs"), 401, "auth_missing")
    assert statements == []
    assert threadpool_hops == ["get_tenant"], threadpool_hops

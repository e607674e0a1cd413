"""GET /metrics: the exposition parses, and its numbers match the database, Redis and real requests."""

from __future__ import annotations

from typing import Any

import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from safetune.db import session_scope
from safetune.models import Job, JobStatus
from safetune.repositories import jobs as jobs_repo
from tests.api.conftest import set_status, submit_job


def scrape(client: TestClient) -> dict[str, list[Any]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def sample(families: dict[str, list[Any]], name: str, **labels: str) -> float:
    family = name.removesuffix("_count").removesuffix("_bucket").removesuffix("_sum")
    for s in families[family]:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {name} {labels} in {families.get(family)}")


def db_count(status: JobStatus) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Job).where(Job.status == status)) or 0)


def test_job_gauges_follow_the_database(client: TestClient, auth_headers: dict[str, str]) -> None:
    running_id = submit_job(client, auth_headers).json()["id"]
    submit_job(client, auth_headers)
    set_status(running_id, "running")
    with session_scope() as session:
        job = session.get(Job, running_id)
        assert job is not None
        job.tokens_per_second = 1234.5
        jobs_repo.add_event(
            session, running_id, "metrics", "step 4", data={"step": 4, "loss": 1.0, "elapsed_seconds": 2.0}
        )
    families = scrape(client)
    for status in JobStatus:
        assert sample(families, "safetune_jobs", status=status.value) == db_count(status)
    # This test's running job is among the active ones (other tests' jobs may be too).
    assert sample(families, "safetune_active_jobs_tokens_per_second") >= 1234.5
    assert sample(families, "safetune_active_job_step_seconds", stat="max") >= 0.5
    assert sample(families, "safetune_active_job_step_seconds", stat="mean") > 0
    # No series is labelled with a job (or tenant) id: /metrics is unauthenticated.
    text = client.get("/metrics").text
    assert running_id not in text and "job_id" not in text


def test_queue_depth_is_redis_llen_of_the_training_queue(
    client: TestClient, auth_headers: dict[str, str], redis_url: str
) -> None:
    submit_job(client, auth_headers)  # enqueued by name on the per-run Redis db; nobody consumes it
    length = redis.Redis.from_url(redis_url).llen("training")
    assert length >= 1
    families = scrape(client)
    assert sample(families, "safetune_queue_depth", queue="training", source="redis") == length


def test_request_latency_is_labelled_by_route_template(
    client: TestClient, auth_headers: dict[str, str]
) -> None:
    job_id = submit_job(client, auth_headers).json()["id"]
    for _ in range(3):
        assert client.get(f"/jobs/{job_id}", headers=auth_headers).status_code == 200
    assert client.get("/jobs/ftjob-missing", headers=auth_headers).status_code == 404
    client.get("/no/such/path")
    families = scrape(client)
    labels = {"method": "GET", "route": "/jobs/{job_id}"}
    assert sample(families, "safetune_http_request_duration_seconds_count", status="200", **labels) == 3
    assert sample(families, "safetune_http_request_duration_seconds_count", status="404", **labels) == 1
    assert sample(families, "safetune_http_request_duration_seconds_count", route="unmatched") == 1
    assert sample(families, "safetune_http_request_duration_seconds_count", route="/jobs", method="POST") == 1
    routes = {s.labels["route"] for s in families["safetune_http_request_duration_seconds"]}
    assert not any(job_id in r for r in routes)  # ids never become label values

"""GET /healthz and /readyz."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from safetune.config import get_settings
from safetune.db import reset_engine
from tests.api.conftest import assert_error


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"SAFETUNE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"}, "database_unavailable"),
        ({"SAFETUNE_BROKER_URL": "redis://127.0.0.1:1/0"}, "broker_unavailable"),
    ],
)
def test_readyz_reports_what_is_down(client: TestClient, env: dict[str, str], code: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        reset_engine()
        with TestClient(create_app()) as broken:
            ready = broken.get("/readyz")
            error = assert_error(ready, 503, code)
            assert "127.0.0.1" not in error["message"]
            assert int(ready.headers["Retry-After"]) >= 1  # like a 429: retry after a pause
            if code == "database_unavailable":
                # any request touching the DB is a clean 503, never a stack trace
                jobs = broken.get("/jobs", headers={"Authorization": "Bearer st-x"})
                assert_error(jobs, 503, code)
                assert int(jobs.headers["Retry-After"]) >= 1
    get_settings.cache_clear()
    reset_engine()

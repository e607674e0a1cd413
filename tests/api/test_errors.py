"""api.errors: every failure, including crashes and database errors, leaves in the same envelope."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from api.main import create_app
from tests.api.conftest import assert_error


def test_unhandled_exception_is_a_bare_500(database_url: str) -> None:
    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret detail: password=hunter2")

    @app.get("/db-down")
    def db_down() -> None:
        raise OperationalError("SELECT secret FROM x", {}, Exception("connection refused at 10.0.0.1"))

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
        error = assert_error(response, 500, "internal_error")
        assert "hunter2" not in response.text and "Traceback" not in response.text
        assert error["message"] == "internal error"
        down = client.get("/db-down")
        assert_error(down, 503, "database_unavailable")
        assert "SELECT" not in down.text and "10.0.0.1" not in down.text


def test_auth_errors_carry_www_authenticate(client: TestClient) -> None:
    response = client.get("/jobs")
    assert_error(response, 401, "auth_missing")
    assert response.headers["www-authenticate"] == "Bearer"


def test_openapi_declares_bearer_auth_and_error_bodies(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    get_job = document["paths"]["/jobs/{job_id}"]["get"]
    assert get_job["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert get_job["description"] or get_job["summary"]
    create = document["paths"]["/jobs"]["post"]
    assert set(create["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert "JobCreate" in document["components"]["schemas"]

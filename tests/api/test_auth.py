"""API keys: missing, malformed, unknown and revoked keys are 401; rate limiting is per key."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from safetune.db import session_scope
from safetune.repositories import tenants as tenants_repo
from safetune.security import RateLimiter, hash_api_key, verify_api_key
from tests.api.conftest import assert_error


def test_missing_and_invalid_keys(client: TestClient) -> None:
    assert assert_error(client.get("/jobs"), 401, "auth_missing")["param"] == "Authorization"
    assert_error(client.get("/jobs", headers={"Authorization": "Basic abc"}), 401, "auth_invalid")
    assert_error(client.get("/jobs", headers={"Authorization": "Bearer st-not-a-key"}), 401, "auth_invalid")
    assert_error(client.get("/jobs/ftjob-x"), 401, "auth_missing")


def test_revoked_key(client: TestClient, make_tenant: Any) -> None:
    tenant_id, key = make_tenant()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/jobs", headers=headers).status_code == 200
    with session_scope() as session:
        (api_key,) = tenants_repo.list_api_keys(session, tenant_id)
        assert api_key.key_hash == hash_api_key(key) and key not in api_key.key_hash
        assert tenants_repo.revoke_api_key(session, tenant_id, api_key.id)
    assert_error(client.get("/jobs", headers=headers), 401, "auth_invalid")


def test_key_helpers() -> None:
    assert verify_api_key("st-abc", hash_api_key("st-abc"))
    assert not verify_api_key("st-abd", hash_api_key("st-abc"))


def test_rate_limit_is_per_key(client: TestClient, make_tenant: Any) -> None:
    now = [0.0]
    client.app.state.rate_limiter = RateLimiter(3, clock=lambda: now[0])  # type: ignore[attr-defined]
    a = {"Authorization": f"Bearer {make_tenant()[1]}"}
    b = {"Authorization": f"Bearer {make_tenant()[1]}"}
    assert [client.get("/jobs", headers=a).status_code for _ in range(3)] == [200, 200, 200]
    limited = client.get("/jobs", headers=a)
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert client.get("/jobs", headers=b).status_code == 200
    now[0] += 20.0  # one token refills every 20 s at 3/minute
    assert client.get("/jobs", headers=a).status_code == 200

"""API keys: missing, malformed, unknown and revoked keys are 401; rate limiting is per key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from safetune.db import get_engine, session_scope
from safetune.repositories import tenants as tenants_repo
from safetune.security import RateLimiter, hash_api_key
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


@contextmanager
def counting_queries() -> Iterator[list[str]]:
    """The SQL statements the API runs while the block is open (on the real engine)."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_repeated_invalid_key_is_rate_limited_before_the_key_lookup(client: TestClient) -> None:
    now = [0.0]
    client.app.state.rate_limiter = RateLimiter(3, clock=lambda: now[0])  # type: ignore[attr-defined]
    bad = {"Authorization": "Bearer st-not-a-key"}
    assert [client.get("/jobs", headers=bad).status_code for _ in range(3)] == [401, 401, 401]
    with counting_queries() as statements:
        limited = client.get("/jobs", headers=bad)
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert not any("api_keys" in s for s in statements), statements


def test_made_up_keys_from_one_client_run_out_of_failed_lookups(client: TestClient, make_tenant: Any) -> None:
    now = [0.0]
    client.app.state.rate_limiter = RateLimiter(3, clock=lambda: now[0])  # type: ignore[attr-defined]
    valid = {"Authorization": f"Bearer {make_tenant()[1]}"}
    # Successful lookups do not spend the failure budget.
    assert [client.get("/jobs", headers=valid).status_code for _ in range(3)] == [200, 200, 200]
    now[0] += 60.0
    codes = [
        client.get("/jobs", headers={"Authorization": f"Bearer st-guess-{i}"}).status_code for i in range(3)
    ]
    assert codes == [401, 401, 401]
    with counting_queries() as statements:
        limited = client.get("/jobs", headers={"Authorization": "Bearer st-guess-3"})
    error = assert_error(limited, 429, "rate_limited")
    assert "failed authentications" in error["message"]
    assert statements == []
    now[0] += 20.0  # one failed lookup refills every 20 s at 3/minute
    assert_error(client.get("/jobs", headers={"Authorization": "Bearer st-guess-4"}), 401, "auth_invalid")


def test_rate_limiter_forgets_refilled_buckets() -> None:
    from safetune import security

    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    for i in range(security.PRUNE_AT):
        limiter.check(f"key:{i}")
    now[0] += 2.0  # 2 s refill 2 tokens: every bucket that spent one is full again
    limiter.check("key:fresh")
    assert len(limiter._buckets) == 1

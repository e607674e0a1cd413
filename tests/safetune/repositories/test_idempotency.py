"""safetune.repositories.idempotency: replay, conflict, and the lost race."""

from __future__ import annotations

import uuid

import pytest

from safetune.db import session_scope
from safetune.errors import ErrorCode, SafetuneError
from safetune.repositories import idempotency
from safetune.repositories import tenants as tenants_repo


@pytest.fixture()
def tenant_id(database_url: str) -> str:
    with session_scope() as session:
        return tenants_repo.create_tenant(session, f"idem-{uuid.uuid4().hex[:10]}").id


def test_replay_and_conflict(tenant_id: str) -> None:
    with session_scope() as session:
        assert idempotency.find_replay(session, tenant_id, "jobs", "k", "h1") is None
        idempotency.record_key(session, tenant_id, "jobs", "k", "h1", "ftjob-1")
    with session_scope() as session:
        assert idempotency.find_replay(session, tenant_id, "jobs", "k", "h1") == "ftjob-1"
        assert idempotency.find_replay(session, tenant_id, "files", "k", "h1") is None  # scopes are separate
        with pytest.raises(SafetuneError) as info:
            idempotency.find_replay(session, tenant_id, "jobs", "k", "h2")
        assert info.value.code is ErrorCode.IDEMPOTENCY_CONFLICT


def test_losing_a_race_is_a_conflict_not_a_crash(tenant_id: str) -> None:
    with session_scope() as session:
        idempotency.record_key(session, tenant_id, "jobs", "race", "h", "ftjob-a")
    with pytest.raises(SafetuneError) as info, session_scope() as session:
        # the loser checked before the winner committed, then tries to record too
        idempotency.record_key(session, tenant_id, "jobs", "race", "h", "ftjob-b")
    assert info.value.code is ErrorCode.IDEMPOTENCY_CONFLICT

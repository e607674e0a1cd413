"""on_commit: the one after-commit hook of the API and the worker (issue 12 §8)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from safetune.db import get_sessionmaker, on_commit, session_scope
from safetune.models import Tenant
from safetune.repositories import tenants as tenants_repo


def test_callbacks_run_after_the_commit_and_see_the_committed_row(database_url: str) -> None:
    seen: list[str | None] = []

    def look(tenant_id: str) -> None:
        with session_scope() as other:  # a separate connection sees only committed data
            seen.append(other.scalar(select(Tenant.id).where(Tenant.id == tenant_id)))

    with session_scope() as session:
        tenant = tenants_repo.create_tenant(session, "on-commit-seen")
        tenant_id = tenant.id
        on_commit(session, lambda: look(tenant_id))
        assert seen == []  # not before the commit
    assert seen == [tenant_id]


def test_a_rolled_back_unit_of_work_runs_no_callback(database_url: str) -> None:
    ran: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), session_scope() as session:
        tenants_repo.create_tenant(session, "on-commit-rolled-back")
        on_commit(session, lambda: ran.append(1))
        raise RuntimeError("boom")
    assert ran == []
    with session_scope() as session:
        assert session.scalar(select(Tenant).where(Tenant.name == "on-commit-rolled-back")) is None


def test_a_failing_callback_neither_undoes_the_commit_nor_skips_the_next(database_url: str) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ConnectionError("broker down")

    with session_scope() as session:
        tenants_repo.create_tenant(session, "on-commit-failing")
        on_commit(session, broken)
        on_commit(session, lambda: ran.append("second"))
    assert ran == ["second"]
    with session_scope() as session:
        assert session.scalar(select(Tenant).where(Tenant.name == "on-commit-failing")) is not None


def test_a_session_that_does_not_own_its_commit_is_refused(database_url: str) -> None:
    """Elsewhere the callback could silently never run."""
    session = get_sessionmaker()()
    try:
        with pytest.raises(RuntimeError, match="session_scope"):
            on_commit(session, lambda: None)
    finally:
        session.close()

"""safetune.db: on_commit, the one after-commit hook of the API and the worker (issue 12 §8); pooled
Postgres connections are pinged only after idling, and reads can skip BEGIN/COMMIT."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, select, text

from safetune import db
from safetune.db import (
    IDLE_PING_SECONDS,
    get_sessionmaker,
    make_engine,
    on_commit,
    read_connection,
    session_scope,
)
from safetune.models import Tenant
from safetune.repositories import tenants as tenants_repo


@pytest.fixture()
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the dialect's ping (SQLAlchemy's, used by pool_pre_ping and by us alike)."""
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        pings.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    return pings


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_used_a_moment_ago_is_not_pinged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(engine, monkeypatch)
    first = _backend_pid(engine)
    assert [_backend_pid(engine) for _ in range(5)] == [first] * 5  # the same pooled connection
    assert pings == []  # pool_pre_ping would have sent one round trip per checkout


def test_a_connection_idle_past_the_threshold_is_pinged_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(engine, monkeypatch)
    first = _backend_pid(engine)
    time.sleep(IDLE_PING_SECONDS + 0.1)
    assert _backend_pid(engine) == first  # alive: kept
    assert _backend_pid(engine) == first
    assert pings == [1]


def test_a_connection_that_died_while_idle_is_replaced_not_an_error(
    engine: Engine, database_url: str
) -> None:
    dead = _backend_pid(engine)
    with psycopg.connect(
        database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (dead,)).fetchone() == (True,)
    time.sleep(IDLE_PING_SECONDS + 0.1)
    assert _backend_pid(engine) != dead


def test_read_connection_autocommits_and_the_pool_gets_its_connection_back_transactional(
    database_url: str,
) -> None:
    db.reset_engine()
    with read_connection() as connection:
        connection.execute(text("SELECT 1"))
        dbapi = connection.connection.dbapi_connection
        assert dbapi is not None and dbapi.autocommit  # no BEGIN was sent, none is open
        assert dbapi.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with session_scope() as session:
        session.execute(text("SELECT 1"))
        raw = session.connection().connection.dbapi_connection
        assert raw is dbapi  # the same pooled connection (LIFO), back in transactional mode
        assert not raw.autocommit
        assert raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


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

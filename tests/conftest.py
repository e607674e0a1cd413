"""Shared fixtures: a per-run Postgres database migrated by Alembic, a per-run Redis db index, tenants.

Fixture names are a contract with the other test suites (worker, integration): keep them.
Isolation: every test creates its own tenant (unique name) and only looks at that tenant's rows, so
committed data from other tests never interferes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from safetune.config import Settings, get_settings
from safetune.db import reset_engine, session_scope

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_DSN = os.environ.get("SAFETUNE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_URL_TEMPLATE = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
REDIS_BASE = os.environ.get("SAFETUNE_TEST_REDIS", "redis://127.0.0.1:6379")


def alembic_config(url: str) -> Config:
    """Alembic config for ``url`` (migrations/env.py reads config.attributes["url"])."""
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


def create_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_URL_TEMPLATE.format(name=name)


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_caches() -> None:
    get_settings.cache_clear()
    reset_engine()


@contextmanager
def fresh_database() -> Iterator[str]:
    """A fresh Postgres database `safetune_test_<random>` at Alembic head, exported as
    SAFETUNE_DATABASE_URL while in use (the previous value restored after), then dropped."""
    name = f"safetune_test_{uuid.uuid4().hex[:12]}"
    url = create_database(name)
    previous = os.environ.get("SAFETUNE_DATABASE_URL")
    try:
        command.upgrade(alembic_config(url), "head")
        os.environ["SAFETUNE_DATABASE_URL"] = url
        _reset_caches()
        yield url
    finally:
        if previous is None:
            os.environ.pop("SAFETUNE_DATABASE_URL", None)
        else:
            os.environ["SAFETUNE_DATABASE_URL"] = previous
        reset_engine()
        drop_database(name)
        _reset_caches()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The run's database (see fresh_database)."""
    with fresh_database() as url:
        yield url


@contextmanager
def fresh_redis_db() -> Iterator[str]:
    """redis://127.0.0.1:6379/<n>: a db index picked per use (shared INCR counter mod 15, skipping 0),
    flushed at start and end."""
    admin = redis.Redis.from_url(f"{REDIS_BASE}/0")
    index = 1 + int(admin.incr("safetune:test:db_counter")) % 15
    admin.close()
    url = f"{REDIS_BASE}/{index}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The run's Redis db (see fresh_redis_db)."""
    with fresh_redis_db() as url:
        yield url


@pytest.fixture()
def settings(database_url: str) -> Settings:
    """The Settings the code under test sees (SAFETUNE_* from the environment, DB = the test DB)."""
    return get_settings()


@pytest.fixture()
def make_tenant(database_url: str) -> Callable[..., tuple[str, str]]:
    """make_tenant(name=None, **quota) -> (tenant_id, api_key), committed. Names are unique per call."""
    from safetune.repositories import tenants as tenants_repo

    def _make(name: str | None = None, **quota: int | None) -> tuple[str, str]:
        with session_scope() as session:
            tenant = tenants_repo.create_tenant(session, name or f"tenant-{uuid.uuid4().hex[:12]}", **quota)
            _key, raw = tenants_repo.create_api_key(session, tenant.id)
            return tenant.id, raw

    return _make


@pytest.fixture()
def client(database_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """TestClient(create_app()) against the test DB, with the broker set to the per-run Redis db
    (enqueue uses Celery send_task by name; nothing consumes it in API tests)."""
    from api.main import create_app

    monkeypatch.setenv("SAFETUNE_BROKER_URL", redis_url)
    _reset_caches()
    with TestClient(create_app()) as test_client:
        yield test_client
    monkeypatch.delenv("SAFETUNE_BROKER_URL", raising=False)
    _reset_caches()


@pytest.fixture()
def tenant(make_tenant: Callable[..., tuple[str, str]]) -> tuple[str, str]:
    """(tenant_id, api_key) of a fresh tenant for this test."""
    return make_tenant()


@pytest.fixture()
def auth_headers(tenant: tuple[str, str]) -> dict[str, str]:
    """Authorization header for the `tenant` fixture."""
    return {"Authorization": f"Bearer {tenant[1]}"}


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    """A file-backed SQLite URL (the embedded mode), empty: migrate it yourself."""
    return f"sqlite:///{tmp_path / 'safetune.db'}"

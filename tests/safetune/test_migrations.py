"""Alembic owns the schema: upgrade head / downgrade base work on Postgres and SQLite, and the
models match the migrations (what `alembic check` verifies)."""

from __future__ import annotations

import base64
import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from safetune.models import Base
from tests.conftest import alembic_config, create_database, drop_database


@pytest.fixture()
def fresh_postgres_url() -> object:
    name = f"safetune_test_mig_{uuid.uuid4().hex[:10]}"
    url = create_database(name)
    yield url
    drop_database(name)


def _model_diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "render_as_batch": url.startswith("sqlite")}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_upgrade_check_downgrade(backend: str, fresh_postgres_url: str, sqlite_url: str) -> None:
    url = fresh_postgres_url if backend == "postgres" else sqlite_url
    config = alembic_config(url)
    command.upgrade(config, "head")
    assert _tables(url) == set(Base.metadata.tables)
    assert _model_diff(url) == []
    command.downgrade(config, "base")
    assert _tables(url) == set()
    command.upgrade(config, "head")  # and back up again: downgrades left nothing behind
    assert _model_diff(url) == []


def test_single_head() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_existing_webhook_secrets_become_whsec_with_the_same_key_bytes(sqlite_url: str) -> None:
    """The outbox migration rewrites hex secrets in the Standard Webhooks format, and back."""
    config = alembic_config(sqlite_url)
    command.upgrade(config, "3c1f0a9d2b7e")
    engine = create_engine(sqlite_url)
    key = bytes(range(32))
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO tenants (id, name, webhook_secret, created_at) VALUES ('t1', 'n', :s, :now)"
                ),
                {"s": key.hex(), "now": "2026-01-01 00:00:00"},
            )
        command.upgrade(config, "head")
        with engine.connect() as connection:
            secret = connection.scalar(text("SELECT webhook_secret FROM tenants WHERE id = 't1'"))
        assert secret == "whsec_" + base64.b64encode(key).decode()
        command.downgrade(config, "3c1f0a9d2b7e")
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT webhook_secret FROM tenants WHERE id = 't1'")) == key.hex()
    finally:
        engine.dispose()

"""Engine and unit-of-work helpers. Engines are per process (disposed after fork by the worker).

`session_scope()` is the one unit of work of the API (per request) and of the worker (per state
transition), and `on_commit(session, callback)` the one way to act only once that work is durable
(enqueue a job, wake the webhook dispatcher): a rolled-back transaction runs none of its callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from safetune.config import get_settings

log = logging.getLogger("safetune.db")

AFTER_COMMIT = "safetune_after_commit"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # The embedded default shares one SQLite file between the API threads and the in-process
        # worker thread: WAL + a busy timeout turn lock contention into short waits, not errors.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # pool_pre_ping: after a Postgres restart the first request gets a fresh connection, not an error.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.effective_database_url.startswith("sqlite"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    return make_engine(settings.effective_database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def on_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` after ``session``'s unit of work has committed; never if it rolls back.

    Only for sessions of :func:`session_scope`, which owns the commit: anywhere else the callback
    could silently never run, so that is refused.
    """
    callbacks = session.info.get(AFTER_COMMIT)
    if callbacks is None:
        raise RuntimeError("on_commit needs a session from safetune.db.session_scope()")
    callbacks.append(callback)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception, then run the on_commit
    callbacks (after the connection is back in the pool, so a slow callback holds none)."""
    session = get_sessionmaker()()
    callbacks: list[Callable[[], None]] = []
    session.info[AFTER_COMMIT] = callbacks
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    for callback in callbacks:
        try:
            callback()
        except Exception:
            # The work is committed: a failing follow-up (the broker is down) must not turn it into
            # an error, or the client retries and duplicates it. Each follow-up has its own repair
            # path (the reaper re-sends lost messages; the dispatcher polls the outbox).
            log.exception("after-commit callback failed")


def reset_engine() -> None:
    """Drop the cached engine (after fork, or when a test changes settings)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()

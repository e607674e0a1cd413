"""Engine and unit-of-work helpers. Engines are per process (disposed after fork by the worker).

A unit of work is opened by `open_unit_of_work()` and ended by `end_unit_of_work()`: together they
are `session_scope()` (the worker's per-transition unit), and the API's async SessionDep calls them
itself so that a request which never touched its session pays no threadpool hop.
`on_commit(session, callback)` is the one way to act only once that work is durable (enqueue a job,
wake the webhook dispatcher): a rolled-back unit of work runs none of its callbacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import InvalidatePoolError
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
    # LIFO: under light load the same few connections stay busy (and need no ping, below) while the
    # rest sit idle; FIFO would spread requests over the whole pool and leave every one "idle".
    engine = create_engine(url, pool_size=10, max_overflow=20, pool_use_lifo=True)
    ping_connections_idle_for(engine, IDLE_PING_SECONDS)
    return engine


# pool_pre_ping cost every request a round trip to Postgres (issue 13). A connection that went back
# to the pool a moment ago was alive a moment ago; the ones that die are those left idle across a
# Postgres restart or an idle-connection timeout. So only a connection idle for longer than this is
# pinged at checkout. A restart inside that window fails the requests holding the dead connections
# (503 database_unavailable, which they would get during the outage anyway), and the first such
# disconnect makes SQLAlchemy invalidate every older connection in the pool, so the next requests
# reconnect instead of meeting the same fate.
IDLE_PING_SECONDS = 1.0
_CHECKED_IN_AT = "safetune_checked_in_at"


def ping_connections_idle_for(engine: Engine, seconds: float) -> None:
    @event.listens_for(engine, "checkin")
    def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
        # record.info lives as long as this DBAPI connection: a reconnect starts without the mark.
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get(_CHECKED_IN_AT)
        if checked_in_at is None or time.monotonic() - checked_in_at < seconds:
            return  # freshly connected, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # What pool_pre_ping does on a failed ping: the pool drops this connection and every one
            # older than now (the server probably restarted), then checks out a fresh one.
            raise InvalidatePoolError("a connection idle in the pool did not answer a ping") from exc


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

    Only for sessions of :func:`open_unit_of_work` (and so of :func:`session_scope`), whose end runs
    the callbacks: anywhere else the callback could silently never run, so that is refused.
    """
    callbacks = session.info.get(AFTER_COMMIT)
    if callbacks is None:
        raise RuntimeError("on_commit needs a session from safetune.db.session_scope()")
    callbacks.append(callback)


def open_unit_of_work() -> Session:
    """A Session that collects on_commit callbacks; end it with :func:`end_unit_of_work`. It
    connects at its first statement, not here."""
    session = get_sessionmaker()()
    session.info[AFTER_COMMIT] = []
    return session


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception, then run the on_commit
    callbacks (after the connection is back in the pool, so a slow callback holds none)."""
    session = open_unit_of_work()
    try:
        yield session
    except BaseException:
        end_unit_of_work(session, failed=True)
        raise
    end_unit_of_work(session, failed=False)


def end_unit_of_work(session: Session, *, failed: bool) -> None:
    """Commit (roll back instead after a failure, or when the commit fails), close, and then, only if
    it committed, run the on_commit callbacks."""
    callbacks: list[Callable[[], None]] = session.info.pop(AFTER_COMMIT, [])
    try:
        if failed:
            session.rollback()
        else:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    if failed:
        return
    for callback in callbacks:
        try:
            callback()
        except Exception:
            # The work is committed: a failing follow-up (the broker is down) must not turn it into
            # an error, or the client retries and duplicates it. Each follow-up has its own repair
            # path (the reaper re-sends lost messages; the dispatcher polls the outbox).
            log.exception("after-commit callback failed")


@lru_cache
def get_read_engine() -> Engine:
    # The same pool; autocommit is a client-side switch in psycopg (and sqlite3): nothing is sent.
    return get_engine().execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def read_connection() -> Iterator[Connection]:
    """A Core connection for one read-only statement, e.g. the per-request key + job lookup.

    In autocommit mode that statement is the whole round trip: no BEGIN before it and no COMMIT
    after (two of the three round trips a one-query session_scope() makes), and no Session or ORM
    entities to build. One statement sees one consistent snapshot; several here would each see
    their own, so use session_scope() for anything that reads twice, and for every write.
    """
    with get_read_engine().connect() as connection:
        yield connection


def reset_engine() -> None:
    """Drop the cached engine (after fork, or when a test changes settings)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
    get_read_engine.cache_clear()

"""with_db_retry: transient connection failures are retried with backoff, everything else is not."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, ProgrammingError

from safetune.db import make_engine
from worker.db_retry import with_db_retry

DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # nothing listens on port 1


def test_retries_a_real_connection_failure_then_succeeds(database_url: str) -> None:
    urls = iter([DEAD_DATABASE, DEAD_DATABASE, database_url])
    delays: list[float] = []

    def write() -> int:
        with make_engine(next(urls)).connect() as connection:
            return int(connection.execute(text("select 41 + 1")).scalar_one())

    assert with_db_retry(write, what="test", sleep=delays.append) == 42
    assert delays == [0.5, 1.0]  # exponential backoff between the two failed attempts


def test_gives_up_after_the_last_attempt() -> None:
    def write() -> None:
        with make_engine(DEAD_DATABASE).connect():
            pass

    with pytest.raises(OperationalError):
        with_db_retry(write, what="test", attempts=3, sleep=lambda _: None)


def test_does_not_retry_a_bad_query(database_url: str) -> None:
    calls = []

    def write() -> None:
        calls.append(1)
        with make_engine(database_url).connect() as connection:
            connection.execute(text("select * from no_such_table"))

    with pytest.raises(ProgrammingError):
        with_db_retry(write, what="test", sleep=lambda _: None)
    assert len(calls) == 1

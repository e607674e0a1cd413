"""Embedded mode: enqueue_training hands ids to the runner that registered itself (safetune never
names the worker package)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from safetune import queue
from safetune.config import get_settings


@pytest.fixture()
def embedded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SAFETUNE_BROKER_URL", "")
    get_settings.cache_clear()
    yield
    queue.register_local_runner(None)
    get_settings.cache_clear()


def test_a_registered_runner_receives_the_job(embedded: None) -> None:
    received: list[str] = []
    queue.register_local_runner(received.append)
    queue.enqueue_training("ftjob-1")
    assert received == ["ftjob-1"]


def test_without_a_runner_the_job_stays_queued_and_the_reason_is_logged(
    embedded: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="safetune.queue"):
        queue.enqueue_training("ftjob-2")  # no exception: the row is committed, the request succeeded
    assert "no in-process runner registered" in caplog.text and "ftjob-2" in caplog.text

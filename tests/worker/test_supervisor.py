"""run_job's supervision of a real training child (tiny-random-llama on CPU) against real Postgres.

The child misbehaves through its test-only fault injection (SAFETUNE_FAULT_SUFFIX/KIND): it reports
a NaN loss, or hangs inside a step. The database "stays down" behind a TCP proxy that the test cuts,
so only this supervisor loses Postgres. In every case the job must end (or be left to the reaper) and
no training process may survive.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import psutil

from safetune.db import session_scope
from safetune.models import Job, utcnow
from safetune.repositories import job_runs
from safetune.repositories import jobs as jobs_repo
from tests.worker.conftest import FAULT_SUFFIX, set_columns
from worker import reaper
from worker.pipeline import run_job

RUN_TIMEOUT = 240.0


def spec(max_steps: int, **extra: Any) -> dict[str, Any]:
    hyper = {"max_steps": max_steps, "batch_size": 1, "max_seq_len": 64}
    return {"hyperparameters": hyper, "evaluation": {"max_prompts": 1, "max_new_tokens": 2}, **extra}


def load(job_id: str) -> Job:
    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        session.expunge(job)
        return job


def event_data(job_id: str, kind: str) -> list[dict[str, Any]]:
    with session_scope() as session:
        job = job_runs.load_job(session, job_id)
        rows, _ = jobs_repo.list_events(session, job.tenant_id, job_id, limit=1000)
        return [dict(e.data or {}) for e in rows if e.type == kind]


def training_children(job_id: str) -> list[psutil.Process]:
    """Live (not zombie) training processes of this job, found by their command line."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "worker.training_process" not in cmdline or job_id not in cmdline:
            continue
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


class JobThread:
    """run_job(job_id) in a thread, as the Celery pool would run it; `close` never leaves a child."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            run_job(self.job_id)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def close(self) -> None:
        if self.thread.is_alive():  # the supervisor is stuck (the unfixed code): cancel, then kill
            set_columns(self.job_id, cancel_requested_at=utcnow())
            if not self.join(60):
                for proc in training_children(self.job_id):
                    proc.kill()
                self.join(30)


def run(job_id: str, timeout: float = RUN_TIMEOUT) -> JobThread:
    job = JobThread(job_id)
    finished = job.join(timeout)
    if not finished:
        job.close()
    assert finished, f"run_job did not return within {timeout} s"
    assert job.error is None, job.error
    return job


def test_nan_loss_fails_the_job_as_diverged_and_stops_the_child(
    make_job: Callable[..., str], supervised: Callable[..., None]
) -> None:
    supervised("nan")
    job_id = make_job(spec=spec(40, suffix=FAULT_SUFFIX))
    run(job_id)

    job = load(job_id)
    assert (job.status, job.error_code) == ("failed", "training_diverged"), job.error_message
    assert "diverged at step 2" in (job.error_message or "")
    assert job.step == 2 and job.last_loss is None  # stopped at the first bad step, NaN stored as null
    metrics = event_data(job_id, "metrics")
    assert [m["loss"] for m in metrics if m["step"] == 2] == [None]
    assert training_children(job_id) == []


def test_hung_child_is_failed_by_the_watchdog_and_killed(
    make_job: Callable[..., str], supervised: Callable[..., None]
) -> None:
    supervised("hang", watchdog_min_seconds="3", watchdog_step_factor="3")
    job_id = make_job(spec=spec(40, suffix=FAULT_SUFFIX))
    run(job_id)

    job = load(job_id)
    assert (job.status, job.error_code) == ("failed", "training_stalled"), job.error_message
    assert "no progress" in (job.error_message or "")
    assert job.step == 2
    assert training_children(job_id) == []


class TcpProxy:
    """Forwards a local port to Postgres until `cut()`: then every connection drops and new ones are
    refused, which is what a worker sees when its database goes away."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.open:  # accepted by the kernel before the cut: drop it
                    client.close()
                    return
                upstream = socket.create_connection(self.target)
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self.lock:
            self.open = False
            try:
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() above (Linux)
            except OSError:
                pass
            self.listener.close()
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def test_database_that_stays_down_stops_the_child_and_leaves_the_job_to_the_reaper(
    make_job: Callable[..., str], supervised: Callable[..., None], database_url: str
) -> None:
    real = urlsplit(database_url)
    proxy = TcpProxy((real.hostname or "127.0.0.1", real.port or 5432))
    via_proxy = database_url.replace(f"{real.hostname}:{real.port}", f"127.0.0.1:{proxy.port}")
    job_id = make_job(spec=spec(100_000))
    supervised(database_url=via_proxy, stale_after_seconds="4", heartbeat_seconds="1")
    job = JobThread(job_id)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (load(job_id).step or 0) >= 3:  # training for real, heartbeating through the proxy
            assert time.monotonic() < deadline and job.thread.is_alive(), "the job never trained"
            time.sleep(0.5)
        children = training_children(job_id)
        assert len(children) == 1

        proxy.cut()
        cut_at = time.monotonic()
        finished = job.join(60)
        assert finished, "the supervisor kept waiting for a database that is gone"
        assert job.error is None, job.error
        assert not children[0].is_running() or children[0].status() == psutil.STATUS_ZOMBIE
        assert time.monotonic() - cut_at < 20  # the lease is stale_after / 2 = 2 s, then TERM
    finally:
        proxy.cut()
        # straight to Postgres again
        supervised(database_url=database_url, stale_after_seconds="4", heartbeat_seconds="1")
        job.close()
        for proc in training_children(job_id):
            proc.kill()

    job_row = load(job_id)
    assert job_row.status == "running"  # nothing could be written: the reaper decides, not a guess
    time.sleep(4.5)
    assert reaper.reap()["requeued"] >= 1
    assert load(job_id).status == "queued"

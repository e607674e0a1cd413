"""Prometheus: GET /metrics, plus a middleware timing every request by route template and status.

Job gauges are read from the database at scrape time (a custom collector), so every API replica
reports the same truth and nothing drifts when a worker, not this process, changes a job. /metrics is
unauthenticated like most exporters: it shows service-wide counts and aggregates, never a tenant id,
a job id or job content (no label takes per-job values), and is meant to be reachable only from the
internal network (see README).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safetune.config import get_settings
from safetune.db import session_scope
from safetune.models import JobStatus
from safetune.queue import TRAINING_QUEUE
from safetune.repositories import observability

log = logging.getLogger("safetune.api.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class JobCollector(Collector):
    """jobs by status, queue depth and running-job throughput, queried when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        with session_scope() as session:
            counts = observability.job_counts_by_status(session)
            running = observability.running_job_stats(session)
        by_status = GaugeMetricFamily("safetune_jobs", "Jobs by status", labels=["status"])
        for status, count in counts.items():
            by_status.add_metric([status], count)
        yield by_status

        depth, source = self._queue_depth(counts[JobStatus.QUEUED.value])
        queue = GaugeMetricFamily(
            "safetune_queue_depth", "Messages waiting in the training queue", labels=["queue", "source"]
        )
        queue.add_metric([TRAINING_QUEUE, source], depth)
        yield queue

        # Service-wide aggregates only: a per-job label would publish every tenant's job ids to anyone
        # who can reach /metrics, and grow one series per job.
        rates = [j.tokens_per_second for j in running if j.tokens_per_second is not None]
        steps = [j.seconds_per_step for j in running if j.seconds_per_step is not None]
        yield GaugeMetricFamily(
            "safetune_active_jobs_tokens_per_second",
            "Training throughput summed over active jobs",
            value=sum(rates),
        )
        step = GaugeMetricFamily(
            "safetune_active_job_step_seconds",
            "Seconds per optimizer step over active jobs (mean and max of each job's mean)",
            labels=["stat"],
        )
        if steps:
            step.add_metric(["mean"], sum(steps) / len(steps))
            step.add_metric(["max"], max(steps))
        yield step

    @staticmethod
    def _queue_depth(queued_jobs: int) -> tuple[float, str]:
        """Redis LLEN of the Celery queue when a Redis broker is configured, else queued job rows."""
        broker = get_settings().broker_url
        if broker.startswith(("redis://", "rediss://")):
            try:
                client = redis.Redis.from_url(broker, socket_timeout=1.0, socket_connect_timeout=1.0)
                try:
                    return float(client.llen(TRAINING_QUEUE)), "redis"
                finally:
                    client.close()
            except redis.RedisError:
                log.warning("queue depth: broker unreachable, reporting queued jobs from the database")
        return float(queued_jobs), "database"


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware), so streaming responses are timed to their last byte."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The router stores the matched route in the scope; its template keeps label cardinality
            # bounded (/jobs/{job_id}, never one series per id). Unmatched paths share one label.
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(scope["method"], template, str(status)).observe(time.perf_counter() - start)


router = APIRouter(tags=["observability"])


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's request metrics and the service's job gauges."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """A registry per app (tests build many apps; the global one would reject duplicate names)."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "safetune_http_request_duration_seconds",
        "HTTP request latency by route template and status",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    registry.register(JobCollector())
    app.state.metrics_registry = registry
    app.add_middleware(MetricsMiddleware, histogram=histogram)
    app.include_router(router)

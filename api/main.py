"""FastAPI application factory. Migrations run in a prestart step, never here (STYLE rule 11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from api.errors import UnhandledErrorMiddleware, install_error_handlers
from api.limits import BodySizeLimitMiddleware
from api.metrics import install_metrics
from api.routes import (
    adapters,
    events_stream,
    files,
    health,
    jobs,
    models,
    openai_compat,
    openai_files,
    report_page,
    reports,
    webhook_secret,
)
from safetune.base_models import registry
from safetune.config import get_settings
from safetune.db import reset_engine
from safetune.logging_setup import configure_logging
from safetune.schemas import JobCreate
from safetune.security import RateLimiter


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    reset_engine()


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging()
    registry()  # fail closed: a bad models-file entry stops the API here, naming the entry and field
    app = FastAPI(
        title="safetune",
        version="0.1.0",
        description="Fine-tuning as a service that keeps the model's safety alignment.",
        lifespan=_lifespan,
    )
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    # The report-link path has no API key to charge; it is limited per client address instead.
    app.state.report_link_limiter = RateLimiter(settings.report_link_rate_per_minute)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    for module in (
        health,
        files,
        jobs,
        events_stream,
        reports,
        adapters,
        models,
        openai_compat,
        openai_files,
    ):
        app.include_router(module.router)
    app.include_router(models.openai_router)
    app.include_router(report_page.router)
    app.include_router(webhook_secret.router)
    install_metrics(app)  # GET /metrics + request-latency middleware
    app.add_middleware(UnhandledErrorMiddleware)  # added last, so it wraps all the others
    _document_job_create(app)
    return app


def _document_job_create(app: FastAPI) -> None:
    """POST /jobs parses its body by hand (two content types); add JobCreate to the components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        _, defs = models_json_schema([(JobCreate, "validation")], ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.get("$defs", {}))
        # The registry (built-ins + the models file) is known only at start-up, so the enum is added here.
        names = sorted(registry())
        for model, field in (
            ("JobSpec", "base_model"),
            ("JobCreate", "base_model"),
            ("FineTuningJobCreate", "model"),
        ):
            if field in components.get(model, {}).get("properties", {}):
                components[model]["properties"][field]["enum"] = names
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


app = create_app()

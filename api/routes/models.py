"""The models this server offers: GET /models (the base-model registry, our envelope) and OpenAI's
GET /v1/models and /v1/models/{model} (registry plus the organization's fine-tuned models)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api import openai_mapping
from api.deps import SessionDep, TenantDep, clean_id
from api.errors import error_responses
from api.openai_errors import OPENAI_ERROR_RESPONSES, OpenAIRoute
from safetune.base_models import registry
from safetune.errors import ErrorCode, SafetuneError
from safetune.openai_schemas import ModelList, ModelObject
from safetune.repositories import jobs as jobs_repo
from safetune.schemas import BaseModelList, BaseModelRead

router = APIRouter(tags=["models"])
openai_router = APIRouter(
    prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=OPENAI_ERROR_RESPONSES
)


@router.get(
    "/models",
    response_model=BaseModelList,
    responses=error_responses(ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED, ErrorCode.REQUEST_INVALID),
)
def list_base_models(tenant: TenantDep) -> BaseModelList:
    """The base models a job may name in `base_model`."""
    return BaseModelList(
        data=[BaseModelRead.model_validate(info, from_attributes=True) for info in registry().values()]
    )


@openai_router.get("/models", response_model=ModelList)
def list_models(session: SessionDep, tenant: TenantDep) -> ModelList:
    """The base models, then the organization's fine-tuned models ("ft:…"), oldest first."""
    base = [openai_mapping.base_model_object(name) for name in registry()]
    tuned = [
        openai_mapping.fine_tuned_model_object(job)
        for job in jobs_repo.list_succeeded_jobs(session, tenant.id)
    ]
    return ModelList(data=base + tuned)


@openai_router.get("/models/{model}", response_model=ModelObject)
def retrieve_model(
    session: SessionDep, tenant: TenantDep, model: Annotated[str, Path(description="a model id")]
) -> ModelObject:
    """One base model, or one of the organization's fine-tuned models."""
    if model in registry():
        return openai_mapping.base_model_object(model)
    job_id = openai_mapping.fine_tuned_job_id(model)
    cleaned = clean_id(job_id) if job_id else None
    job = jobs_repo.get_job_for_tenant(session, tenant.id, cleaned) if cleaned else None
    # The whole name must match: another base or suffix with this job id names no model.
    if job is None or openai_mapping.fine_tuned_model(job) != model:
        raise SafetuneError(ErrorCode.MODEL_NOT_FOUND, f"no model {model!r}", param="model")
    return openai_mapping.fine_tuned_model_object(job)

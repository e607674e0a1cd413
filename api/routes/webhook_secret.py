"""GET /webhook-secret: the key that signs this tenant's job webhooks (Standard Webhooks headers)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import TenantDep
from api.errors import error_responses
from safetune.errors import ErrorCode

router = APIRouter(tags=["webhooks"])


class WebhookSecret(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str  # whsec_<base64>: pass it as is to openai's webhooks.unwrap(..., secret=...)
    signature_header: str = "webhook-signature"
    scheme: str = (
        "Standard Webhooks: webhook-signature = v1,base64(HMAC-SHA256(base64decode(secret minus whsec_), "
        '"<webhook-id>.<webhook-timestamp>.<raw body>"))'
    )


@router.get(
    "/webhook-secret",
    response_model=WebhookSecret,
    responses=error_responses(ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED),
)
def get_webhook_secret(tenant: TenantDep) -> WebhookSecret:
    """The secret to verify job webhooks with; any of the tenant's API keys may read it."""
    return WebhookSecret(secret=tenant.webhook_secret)

"""GET /webhook-secret: the key that signs this tenant's job webhooks (safetune-signature header)."""

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
    secret: str
    signature_header: str = "safetune-signature"
    scheme: str = 't=<unix>,v1=hex(HMAC-SHA256(secret, "<t>.<raw body>"))'


@router.get(
    "/webhook-secret",
    response_model=WebhookSecret,
    responses=error_responses(ErrorCode.AUTH_MISSING, ErrorCode.RATE_LIMITED),
)
def get_webhook_secret(tenant: TenantDep) -> WebhookSecret:
    """The secret to verify job webhooks with; any of the tenant's API keys may read it."""
    return WebhookSecret(secret=tenant.webhook_secret)

"""GET /healthz (the process is up) and GET /readyz (database and broker answer)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.errors import error_response, error_responses
from safetune.config import get_settings
from safetune.db import get_engine
from safetune.errors import ErrorCode
from safetune.schemas import HealthRead

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthRead)
async def healthz() -> HealthRead:
    """Liveness: the process answers."""
    # async: on the event loop itself, so a threadpool saturated by slow database calls cannot make
    # a live process fail its liveness probe (and get restarted for it).
    return HealthRead()


def _ping_broker(url: str) -> None:
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()


@router.get(
    "/readyz",
    response_model=HealthRead,
    responses=error_responses(ErrorCode.DATABASE_UNAVAILABLE, ErrorCode.BROKER_UNAVAILABLE),
)
def readyz() -> HealthRead | JSONResponse:
    """Readiness: the database and the broker (if configured) answer a ping."""
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        return _unavailable(ErrorCode.DATABASE_UNAVAILABLE, f"database ping failed ({type(exc).__name__})")
    settings = get_settings()
    if settings.broker_url:
        try:
            _ping_broker(settings.broker_url)
        except Exception as exc:
            return _unavailable(ErrorCode.BROKER_UNAVAILABLE, f"broker ping failed ({type(exc).__name__})")
    return HealthRead(checks={"database": "ok", "broker": "ok" if settings.broker_url else "embedded"})


def _unavailable(code: ErrorCode, message: str) -> JSONResponse:
    return error_response(code.http_status, code.code, message)

"""OpenAI's error envelope for the /v1 routes: {"error": {"message", "type", "param", "code"}}.

The app's global handlers stay the single place that decides status codes and messages; this route
class only re-renders their answer in OpenAI's shape, so /v1 and our own routes never disagree on
what an error means. Everywhere else our own envelope is kept.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from safetune.openai_schemas import OpenAIErrorBody

OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": OpenAIErrorBody, "description": "OpenAI error envelope"},
    "5XX": {"model": OpenAIErrorBody, "description": "OpenAI error envelope"},
}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def to_openai_body(status: int, body: dict[str, Any]) -> dict[str, Any]:
    """Our {"error": {"code", "message", "param", "line", …}} → OpenAI's envelope; our extra
    fields (line, status, retry_after_seconds) are kept when set."""
    ours = dict(body.get("error") or {})
    error = {
        "message": ours.pop("message", "request failed"),
        "type": error_type(status),
        "param": ours.pop("param", None),
        "code": ours.pop("code", None),
    }
    error.update({key: value for key, value in ours.items() if value is not None})
    return {"error": error}


async def _handled(request: Request, exc: Exception) -> Response:
    handlers = request.app.exception_handlers
    handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
    if handler is None:
        raise exc
    response = handler(request, exc)
    if inspect.isawaitable(response):
        response = await response
    return response


class OpenAIRoute(APIRoute):
    """An APIRoute whose errors (auth, validation, domain, crashes) leave in OpenAI's envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as exc:
                ours = await _handled(request, exc)
                body = json.loads(bytes(ours.body))
                headers = {
                    k: v
                    for k, v in ours.headers.items()
                    if k.lower() not in ("content-length", "content-type")
                }
                return JSONResponse(to_openai_body(ours.status_code, body), ours.status_code, headers=headers)

        return route

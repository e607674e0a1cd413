"""Exception handlers and the last-resort middleware: every error leaves as
{"error": {"code", "message", "param", "line"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safetune.errors import ErrorCode, SafetuneError
from safetune.schemas import ErrorBody

log = logging.getLogger("api.errors")

# Codes of the errors Starlette raises itself (unknown route, wrong method, ...).
STATUS_CODES = {
    400: ErrorCode.REQUEST_INVALID.code,
    401: ErrorCode.AUTH_INVALID.code,
    403: "forbidden",
    404: ErrorCode.NOT_FOUND.code,
    405: "method_not_allowed",
    406: "not_acceptable",
    413: ErrorCode.PAYLOAD_TOO_LARGE.code,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE.code,
    422: ErrorCode.REQUEST_INVALID.code,
    429: ErrorCode.RATE_LIMITED.code,
}


# A 503 is an outage (database, broker) that a client should retry after a pause, like a 429.
UNAVAILABLE_RETRY_SECONDS = 5


def retry_after(status: int, extra: dict[str, Any]) -> dict[str, str] | None:
    """The Retry-After header of a 429 (its computed wait, rounded up) or a 503."""
    if "retry_after_seconds" in extra:
        return {"Retry-After": str(int(extra["retry_after_seconds"]) + 1)}
    return {"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)} if status == 503 else None


def error_response(
    status: int, code: str, message: str, *, param: str | None = None, line: int | None = None, **extra: Any
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "param": param, "line": line, **extra}}
    return JSONResponse(status_code=status, content=body, headers=retry_after(status, extra))


def validation_param(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'hyperparameters', 'epochs') -> 'hyperparameters.epochs'; list indices as [i]."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "form", "cookie"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _first_error_message(errors: list[dict[str, Any]]) -> str:
    first = errors[0]
    return f"{validation_param(first.get('loc', ()))}: {first.get('msg', 'invalid value')}"


async def _safetune_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SafetuneError)
    body = exc.to_body()
    headers = retry_after(exc.code.http_status, exc.extra)
    if exc.code in (ErrorCode.AUTH_MISSING, ErrorCode.AUTH_INVALID):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(status_code=exc.code.http_status, content=body, headers=headers)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    is_submission = request.method == "POST" and request.url.path.rstrip("/") == "/jobs"
    code = ErrorCode.SPEC_INVALID if is_submission else ErrorCode.REQUEST_INVALID
    if not errors:
        return error_response(422, code.code, "invalid request")
    return error_response(
        422, code.code, _first_error_message(errors), param=validation_param(errors[0].get("loc", ()))
    )


async def _http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    response = error_response(exc.status_code, code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    # Never leak SQL or connection strings: log the detail, return a stable code.
    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(
            503, ErrorCode.DATABASE_UNAVAILABLE.code, "the database is unavailable; retry later"
        )
    log.error("database error", exc_info=exc)
    return error_response(500, ErrorCode.INTERNAL.code, "internal error")


class UnhandledErrorMiddleware:
    """Answers an exception that no handler took with the 500 envelope and keeps the connection.

    Starlette's last-resort handler (ServerErrorMiddleware) re-raises after answering, and uvicorn
    then closes the connection, so a client's next keep-alive request was reset (issue 13). Add it
    last: it must wrap every other middleware (the body limit turns its own exception into a 413).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            # exc_info=exc, not log.exception(): sync handlers run in a worker thread, outside except.
            log.error("unhandled error: %s %s", scope["method"], scope["path"], exc_info=exc)
            if started:
                raise  # half a response is out; only closing the connection can tell the client
            await error_response(500, ErrorCode.INTERNAL.code, "internal error")(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    # The handlers are async: they only build a response, and Starlette runs a sync handler in the
    # threadpool, so every 401/404/429 used to cost one more thread hand-off (issue 13).
    app.add_exception_handler(SafetuneError, _safetune_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(DBAPIError, _database_error)


BAD_REQUEST: dict[int | str, dict[str, Any]] = {400: {"model": ErrorBody, "description": "malformed body"}}


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the OpenAPI document: each status with the ErrorBody model."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry = out.setdefault(code.http_status, {"model": ErrorBody, "description": ""})
        entry["description"] = ", ".join(filter(None, [entry["description"], code.code]))
    return out

"""One error shape for every 4xx/5xx: {"error": {"code": ..., "message": ...}}.

Messages name the bad value and what is allowed, so a client can fix the request without reading code.
"""

from __future__ import annotations

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_validation_errors(errors: list[dict[str, object]]) -> str:
    """'field text: Input should be a valid string (got 123)' for each pydantic error, joined by '; '."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "missing":
            parts.append(f"field {field!r} is required")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"field {field!r} is not allowed")
        else:
            parts.append(f"field {field!r}: {msg} (got {_short(err.get('input'))})")
    return "; ".join(parts)


def validation_error(exc: ValidationError) -> ApiError:
    return ApiError(422, "invalid_request", describe_validation_errors(exc.errors()))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(redis.RedisError)
    async def _queue_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        # Redis restarting or unreachable while a job is stored or queued: the client can retry, so 503 with
        # Retry-After, as the key check answers, not a bare 500. No job exists for the request.
        return error_response(503, "queue_unavailable", "the job queue (Redis) does not answer "
                              f"({type(exc).__name__}); the job was not queued: retry", {"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", describe_validation_errors(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, "not_found", f"no route for {request.method} {request.url.path!r}; "
                                  "see /openapi.json")
        if exc.status_code == 405:
            return error_response(405, "method_not_allowed",
                                  f"{request.method} is not allowed on {request.url.path!r}")
        return error_response(exc.status_code, "http_error", str(exc.detail))

"""The router's errors in OpenAI's shape {"error": {"message", "type", "code", "param"}}: what
validation, forwarding and the endpoints raise and the app answers."""

from __future__ import annotations

import json

JSON = (b"content-type", b"application/json")


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.param, self.retry_after = param, retry_after
        self.allow: bytes | None = None  # the Allow header of a 405
        self.model: str | None = None  # the configured model, when known (metrics label)
        self.counted = False  # already in llm_router_requests_total

    def body(self) -> bytes:
        error: dict[str, object] = {"message": self.message, "type": self.type, "code": self.code}
        if self.param is not None:
            error["param"] = self.param
        return json.dumps({"error": error}).encode()

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = [JSON]
        if self.retry_after is not None:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        if self.allow is not None:
            headers.append((b"allow", self.allow))
        return headers


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, "invalid_request_error", code, param)


def unauthorized(message: str, code: str) -> ApiError:
    return ApiError(401, message, "authentication_error", code)


def not_allowed(method: str, path: str, allow: bytes) -> ApiError:
    error = ApiError(
        405,
        f"{method} is not allowed on {path}",
        "invalid_request_error",
        "method_not_allowed",
    )
    error.allow = allow
    return error

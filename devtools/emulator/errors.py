"""The errors a route raises, with OpenAI's wording and statuses.

An ``APIError`` is rendered by the flavour of the route that raised it: OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` or Azure's ``{"error": {"code",
"message"}}`` (whose code is ``azure_code`` when Azure names the error differently) or
Anthropic's ``{"type": "error", "error": {"type", "message"}}`` (whose type is
``anthropic_type``, else derived from the status).
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """Raised by a route; rendered in the shape of the route's provider."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        azure_code: str | None = None,
        anthropic_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.azure_code = azure_code
        self.anthropic_type = anthropic_type

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def missing(param: str) -> APIError:
    return APIError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def file_not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id")


def batch_not_found(batch_id: str) -> APIError:
    return APIError(404, f"No batch found with id '{batch_id}'.")


def unauthorized(key: str | None) -> APIError:
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return APIError(401, message, code=None)
    shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"
    return APIError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")


def rate_limited(retry_after: float) -> APIError:
    seconds = max(retry_after, 0.0)
    return APIError(
        429,
        "Rate limit reached for requests (emulated). Please try again later.",
        type="requests",
        code="rate_limit_exceeded",
        azure_code="429",
        headers={
            "retry-after": str(max(int(seconds + 0.999), 0)),
            "retry-after-ms": str(int(seconds * 1000)),
        },
    )


def overloaded() -> APIError:
    """Anthropic's 529: the API is temporarily overloaded."""
    return APIError(
        529, "Overloaded (emulated)", type="server_error", anthropic_type="overloaded_error"
    )


def server_error() -> APIError:
    return APIError(
        500,
        "The server had an error while processing your request. Sorry about that! (emulated)",
        type="server_error",
        azure_code="InternalServerError",
    )

"""What differs between the providers whose Files + Batches API the emulator serves.

One set of route handlers (``routes_files``, ``routes_batches``) serves every provider over the
same store, lifecycle, durability and fault injection; a ``Flavour`` holds only what differs:
the URL prefix, how a request proves who it is (key, API version), the batch endpoints, the
file-expiry range, the line limit and model rules of validation, the id format and the error
shape. OpenAI's API is ``OPENAI`` (``/v1``), Azure OpenAI's is ``AZURE`` (``/openai``, the
``api-version`` query parameter, the ``api-key`` header, deployments instead of models).
Anthropic's Message Batches API (``ANTHROPIC``, ``/v1/messages``) takes its requests inline, so
it has its own routes (``routes_anthropic``); its flavour holds its authentication (the
``x-api-key`` and ``anthropic-version`` headers) and its error shape.

Each provider is its own account: a file or batch created through one flavour is not found
through another (as with two real accounts); the stats count them together.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from batchpipe.devtools.emulator.config import EmulatorConfig
from batchpipe.devtools.emulator.errors import APIError, unauthorized
from batchpipe.devtools.emulator.validate import OPENAI_MODELS, ModelRules

if TYPE_CHECKING:
    from starlette.requests import Request

Json = dict[str, Any]

OPENAI_BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
# Azure Global Batch: the line URLs and the batch endpoint carry no /v1
AZURE_BATCH_ENDPOINTS = ("/chat/completions", "/embeddings", "/responses")
AZURE_API_VERSION = "2024-10-21"  # the GA data-plane version with batches; any value is accepted
AZURE_DEFAULT_CODES = {400: "invalidPayload", 500: "InternalServerError"}
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
AZURE_UNAUTHORIZED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


class Flavour:
    """OpenAI's Files + Batches API; ``AzureFlavour`` overrides what Azure does differently."""

    name = "openai"
    title = "OpenAI"
    prefix = "/v1"
    batch_endpoints: tuple[str, ...] = OPENAI_BATCH_ENDPOINTS
    expiry_seconds = (3600, 2_592_000)  # files' expires_after, batches' output_expires_after
    file_id_chars = 22

    def check(self, request: Request, config: EmulatorConfig) -> None:
        """Authenticate the request (when the emulator has a key): a bearer token."""
        expected = config.api_key
        if expected is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != expected:
            raise unauthorized(token.strip() if scheme.lower() == "bearer" else None)

    def max_batch_lines(self, config: EmulatorConfig) -> int:
        return config.max_batch_lines

    def model_rules(self, config: EmulatorConfig) -> ModelRules:
        return OPENAI_MODELS

    def new_file_id(self) -> str:
        return f"file-{uuid.uuid4().hex[: self.file_id_chars]}"

    def error_body(self, exc: APIError) -> Json:
        return exc.body()

    def unknown_route(self, method: str, path: str) -> APIError:
        return APIError(404, f"Invalid URL ({method} {path})")


class AzureFlavour(Flavour):
    """Azure OpenAI's data-plane Files + Batches API, as ``openai.AzureOpenAI`` calls it:
    ``{azure_endpoint}/openai/files?api-version=...`` with an ``api-key`` header (or an Entra ID
    ``Authorization: Bearer`` token). Every line names the same Global Batch deployment."""

    name = "azure"
    title = "Azure OpenAI"
    prefix = "/openai"
    batch_endpoints = AZURE_BATCH_ENDPOINTS
    expiry_seconds = (1_209_600, 2_592_000)
    file_id_chars = 32

    def check(self, request: Request, config: EmulatorConfig) -> None:
        """No ``api-version``: Azure answers 404 Resource not found; then the key, if set."""
        if not request.query_params.get("api-version"):
            raise self.unknown_route(request.method, request.url.path)
        expected = config.api_key
        if expected is None:
            return
        key = request.headers.get("api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if key != expected:
            raise APIError(401, AZURE_UNAUTHORIZED, azure_code="401")

    def max_batch_lines(self, config: EmulatorConfig) -> int:
        return config.azure_max_batch_lines

    def model_rules(self, config: EmulatorConfig) -> ModelRules:
        known = config.azure_deployments
        return ModelRules(
            mismatch_code="model_mismatch",
            known=frozenset(known) if known is not None else None,
            unknown_code="model_not_found",
            noun="deployment",
        )

    def error_body(self, exc: APIError) -> Json:
        code = exc.azure_code or exc.code or AZURE_DEFAULT_CODES.get(exc.status, str(exc.status))
        return {"error": {"code": code, "message": exc.message}}

    def unknown_route(self, method: str, path: str) -> APIError:
        return APIError(404, "Resource not found", azure_code="404")


class AnthropicFlavour(Flavour):
    """Anthropic's Message Batches API, as ``anthropic.Anthropic`` calls it: the key in the
    ``x-api-key`` header (or ``Authorization: Bearer`` from ``auth_token``), an
    ``anthropic-version`` header on every request, errors as ``{"type": "error", "error":
    {"type", "message"}, "request_id"}``. Its prefix is under OpenAI's ``/v1``, which has no
    ``/v1/messages`` routes: ``flavour_of_path`` tries it first."""

    name = "anthropic"
    title = "Anthropic"
    prefix = "/v1/messages"
    batch_endpoints = ()

    def check(self, request: Request, config: EmulatorConfig) -> None:
        """The key first (401 ``authentication_error``), then the version header (400)."""
        expected = config.api_key
        if expected is not None:
            key = request.headers.get("x-api-key")
            if key is None:
                scheme, _, token = request.headers.get("authorization", "").partition(" ")
                key = token.strip() if scheme.lower() == "bearer" else None
            if key is None:
                raise APIError(401, "x-api-key header is required")
            if key != expected:
                raise APIError(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            raise APIError(400, "anthropic-version: header is required")

    def max_batch_lines(self, config: EmulatorConfig) -> int:
        return config.anthropic_max_batch_requests

    def error_body(self, exc: APIError) -> Json:
        kind = exc.anthropic_type or ANTHROPIC_ERROR_TYPES.get(exc.status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": exc.message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
        }

    def unknown_route(self, method: str, path: str) -> APIError:
        return APIError(404, "Not Found")


OPENAI = Flavour()
AZURE = AzureFlavour()
ANTHROPIC = AnthropicFlavour()
FLAVOURS: tuple[Flavour, ...] = (OPENAI, AZURE)  # the providers of the Files + Batches routes
ALL_FLAVOURS: tuple[Flavour, ...] = (ANTHROPIC, *FLAVOURS)  # the most specific prefix first


def flavour_named(name: str | None) -> Flavour:
    """The flavour a stored batch was created through (batches from before: OpenAI)."""
    return next((f for f in ALL_FLAVOURS if f.name == name), OPENAI)


def flavour_of_path(path: str) -> Flavour:
    """The flavour whose routes ``path`` is under (for errors raised before a route runs)."""
    return next(
        (f for f in ALL_FLAVOURS if path == f.prefix or path.startswith(f.prefix + "/")), OPENAI
    )

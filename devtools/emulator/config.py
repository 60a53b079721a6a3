"""Configuration of the local emulator: where it listens, how fast time runs, which faults.

One ``EmulatorConfig`` drives the CLI (every field is a ``--flag`` and a
``BATCHPIPE_EMULATOR_<NAME>`` env var), the in-process test runner and ``POST /_emulator/faults``
(which updates the fault fields at runtime). Rates are probabilities in [0, 1]; every random
choice is derived from ``seed`` so a run is reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_BATCH_LINES = 50_000
AZURE_MAX_BATCH_LINES = 100_000
MAX_BATCH_FILE_BYTES = 200 * 1024 * 1024
MAX_FILE_BYTES = 512 * 1024 * 1024
ANTHROPIC_MAX_BATCH_REQUESTS = 100_000
ANTHROPIC_MAX_BATCH_BYTES = 256 * 1024 * 1024
# the error types an Anthropic result line may be errored with by ``anthropic_error_rate``
ANTHROPIC_LINE_ERROR_TYPES = (
    "invalid_request_error",
    "overloaded_error",
    "api_error",
    "rate_limit_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "billing_error",
    "timeout_error",
)

# Fields POST /_emulator/faults may change while the emulator runs.
FAULT_FIELDS = (
    "line_failure_rate",
    "line_failure_status",
    "validation_failure_rate",
    "token_limit_failure_rate",
    "enqueued_token_limit",
    "force_expire",
    "create_429_rate",
    "create_529_rate",
    "upload_429_rate",
    "retry_after_seconds",
    "retrieve_5xx_rate",
    "slow_seconds",
    "processing_seconds",
    "completion_window_seconds",
    "anthropic_error_rate",
    "anthropic_error_types",
    "webhook_drop_rate",
)

# Standard Webhooks' retry schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
WEBHOOK_RETRY_DELAYS = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class EmulatorConfig(BaseModel):
    """Everything the emulator needs; defaults are realistic and fault-free."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    data_dir: Path | None = Field(
        default=None, description="SQLite + files live here; None = a fresh temporary directory"
    )
    api_key: str | None = Field(
        default=None,
        description="require this key: OpenAI's bearer token, Azure's api-key header or bearer "
        "token, Anthropic's x-api-key header or bearer token (None: any)",
    )
    processing_seconds: float = Field(default=3.0, ge=0, description="time a batch is in_progress")
    completion_window_seconds: float = Field(
        default=86_400.0, gt=0, description='what "24h" means; shrink it to force expiry'
    )
    seed: int | None = Field(default=None, description="seed of every random choice")
    line_failure_rate: float = Field(default=0.0, ge=0, le=1)
    line_failure_status: list[int] = Field(default_factory=lambda: [500])
    validation_failure_rate: float = Field(default=0.0, ge=0, le=1)
    token_limit_failure_rate: float = Field(default=0.0, ge=0, le=1)
    enqueued_token_limit: int | None = Field(
        default=None,
        ge=1,
        description="per-model cap on the tokens (input file bytes / 4) of batches in_progress "
        "or finalizing; a batch over it fails validation with token_limit_exceeded",
    )
    force_expire: float = Field(
        default=0.0, ge=0, le=1, description="probability a batch expires half done (true = 1)"
    )
    create_429_rate: float = Field(default=0.0, ge=0, le=1)
    create_529_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of Anthropic batch creations answered 529"
    )
    upload_429_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_seconds: float = Field(default=1.0, ge=0)
    retrieve_5xx_rate: float = Field(default=0.0, ge=0, le=1)
    slow_seconds: float = Field(default=0.0, ge=0, description="added latency on every API call")
    max_batch_lines: int = Field(default=MAX_BATCH_LINES, ge=1)
    step_processes: int = Field(
        default=1,
        ge=0,
        description="worker processes for validation and the output pass, so they never stall "
        "the API (0: threads in the API process)",
    )
    max_batch_file_bytes: int = Field(default=MAX_BATCH_FILE_BYTES, ge=1)
    azure_max_batch_lines: int = Field(default=AZURE_MAX_BATCH_LINES, ge=1)
    azure_deployments: list[str] | None = Field(
        default=None,
        description="the Azure deployments that exist; a batch naming another fails with "
        "model_not_found (None: every name is a deployment)",
    )

    anthropic_max_batch_requests: int = Field(default=ANTHROPIC_MAX_BATCH_REQUESTS, ge=1)
    anthropic_max_batch_bytes: int = Field(default=ANTHROPIC_MAX_BATCH_BYTES, ge=1)
    anthropic_error_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of Anthropic result lines that are errored"
    )
    anthropic_error_types: list[str] = Field(
        default_factory=lambda: ["api_error"],
        description="the error type(s) of those lines, one drawn per line",
    )

    webhook_url: str | None = Field(
        default=None,
        description="send OpenAI's signed batch.* events here when an OpenAI batch ends "
        "(e.g. http://127.0.0.1:8001/webhooks/openai; None: no webhooks)",
    )
    webhook_secret: str | None = Field(
        default=None,
        description="the whsec_ secret the events are signed with (OPENAI_WEBHOOK_SECRET of the "
        "receiver)",
    )
    webhook_retry_delays: list[float] = Field(
        default_factory=lambda: list(WEBHOOK_RETRY_DELAYS),
        description="seconds before each delivery attempt (the first is the first attempt)",
    )
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_drop_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of events never sent (lost webhooks)"
    )

    @field_validator("webhook_retry_delays", mode="before")
    @classmethod
    def _delay_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [float(part) for part in value.replace(",", " ").split()]
        return value

    @field_validator("webhook_retry_delays")
    @classmethod
    def _delays_allowed(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("webhook_retry_delays must be one or more delays >= 0")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_format(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("whsec_"):
            raise ValueError("webhook_secret must be a whsec_ secret (base64 after the prefix)")
        return value

    @model_validator(mode="after")
    def _webhooks_signed(self) -> EmulatorConfig:
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("webhook_url needs webhook_secret (events are always signed)")
        return self

    @field_validator("anthropic_error_types", mode="before")
    @classmethod
    def _error_type_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    @field_validator("anthropic_error_types")
    @classmethod
    def _error_type_allowed(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in ANTHROPIC_LINE_ERROR_TYPES]
        if not value or unknown:
            raise ValueError(
                "anthropic_error_types must be among " + ", ".join(ANTHROPIC_LINE_ERROR_TYPES)
            )
        return value

    @field_validator("azure_deployments", mode="before")
    @classmethod
    def _deployment_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part] or None
        return value

    @field_validator("line_failure_status", mode="before")
    @classmethod
    def _status_list(cls, value: Any) -> Any:
        if isinstance(value, int):
            return [value]
        if isinstance(value, str):
            return [int(part) for part in value.replace(",", " ").split()]
        return value

    @field_validator("line_failure_status")
    @classmethod
    def _status_allowed(cls, value: list[int]) -> list[int]:
        if not value or any(status not in (400, 429, 500) for status in value):
            raise ValueError("line_failure_status must be 400, 429 and/or 500")
        return value

    @field_validator("force_expire", mode="before")
    @classmethod
    def _bool_rate(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        return value

    def faults(self) -> dict[str, Any]:
        """The runtime-adjustable part, as ``POST /_emulator/faults`` returns it."""
        return {name: getattr(self, name) for name in FAULT_FIELDS} | {"seed": self.seed}

    def update_faults(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` (names as in ``FAULT_FIELDS``); raises ValueError on a bad one."""
        unknown = set(changes) - set(FAULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        merged = self.model_validate(self.model_dump() | changes)
        for name in changes:
            setattr(self, name, getattr(merged, name))

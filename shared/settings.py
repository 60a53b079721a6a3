"""The one settings model of batchpipe, read from the environment (prefix ``BATCHPIPE_``).

Every service builds its clients from a ``Settings`` instance; nothing else reads the
environment. Each provider SDK's own variables (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
``AZURE_OPENAI_API_KEY``, ``AZURE_OPENAI_ENDPOINT``, ``OPENAI_API_VERSION``,
``OPENAI_WEBHOOK_SECRET``) are read under
their own names, exactly as the SDK reads them. ``load_settings()`` turns a validation error
into a ``SettingsError`` whose message names the environment variable at fault.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "BATCHPIPE_"

# The largest batch any provider takes (each provider's own limits cap its windows further:
# shared/providers/).
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1000 * 1000
# Azure OpenAI's allowed file and output expiry, in seconds (14 to 30 days); OpenAI's.
AZURE_EXPIRY_RANGE = (1_209_600, 2_592_000)
OPENAI_EXPIRY_RANGE = (3_600, 2_592_000)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
LogFormat = Literal["json", "console"]


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


class Settings(BaseSettings):
    """All of batchpipe's configuration. Field ``x`` is read from ``BATCHPIPE_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # --- Kafka connection -------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "localhost:9092", description="Comma-separated host:port list of Kafka brokers."
    )
    kafka_security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol)."
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates."
    )

    # --- Topics -------------------------------------------------------------------------
    requests_topic: str = Field("requests", min_length=1, description="Incoming request lines.")
    batches_topic: str = Field("batches", min_length=1, description="One record per batch.")
    results_topic: str = Field("results", min_length=1, description="One result per request.")
    dead_letters_topic: str = Field(
        "dead-letters", min_length=1, description="Everything that could not be processed."
    )
    topic_partitions: int = Field(
        6,
        ge=1,
        le=10_000,
        description="Partitions of the new requests, batches, poller-state, results and "
        "dead-letters topics (the dispatch ledger always has one).",
    )
    topic_replication_factor: int = Field(
        1, ge=1, le=32, description="Replication factor of new topics (3 in production)."
    )

    # --- Windows (dispatcher) -----------------------------------------------------------
    batch_max_requests: int | None = Field(
        None,
        ge=1,
        le=MAX_BATCH_REQUESTS,
        description="Cut a batch at this many lines; unset: at its provider's limit (OpenAI "
        "50,000, Azure OpenAI 100,000). Never above the provider's limit.",
    )
    batch_max_bytes: int | None = Field(
        None,
        ge=1024,
        le=MAX_BATCH_BYTES,
        description="Cut a batch before its JSONL input exceeds this size; unset: at 95% of "
        "its provider's limit (OpenAI and Azure OpenAI 200 MB, so 190 MB; Anthropic 256 MB, "
        "so 243.2 MB). Never above the provider's limit.",
    )
    batch_max_wait_seconds: float = Field(
        3600.0, gt=0, description="Cut a batch this long after its first request arrived."
    )

    # --- Polling (poller) ---------------------------------------------------------------
    poll_interval_seconds: float = Field(
        60.0, gt=0, description="How often each in-flight batch is retrieved (jittered)."
    )
    poll_max_rps: float = Field(
        20.0, gt=0, description="Global cap on batches.retrieve calls per second."
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="Submissions of one request before a terminal failure."
    )

    # --- Request defaults (ingest) ------------------------------------------------------
    default_model: str = Field(
        "gpt-4o-mini", min_length=1, description="Model of requests that name none."
    )
    default_request_kwargs: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=lambda: {"max_tokens": 1000, "temperature": 0.2},
        description="JSON object merged into the body of requests given as bare messages.",
    )
    ingest_max_items: int = Field(
        10_000, ge=1, le=1_000_000, description="Most items accepted in one POST /requests."
    )
    ingest_max_body_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest POST /requests body, in bytes."
    )
    ingest_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated API keys, each `name=key` or bare (named `key-` + 8 hex "
        "digits of its SHA-256); when set, ingest requires a Bearer token and stamps the key's "
        "name on each request for cost attribution (`batchpipe costs`).",
    )

    ingest_publish_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Longest wait for Kafka's acks before ingest answers 503."
    )
    ingest_header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="A client that has not sent a request's headers this long after it "
        "connected (or began the request) gets 408 and is disconnected.",
    )
    ingest_body_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="A POST /requests body not received whole within this time is refused "
        "(408) and its connection closed.",
    )
    ingest_keep_alive_seconds: float = Field(
        5.0, gt=0, le=600, description="Idle time after which a keep-alive connection is closed."
    )
    ingest_max_connections: int | None = Field(
        4096,
        ge=1,
        description="Connections and requests served at once per process; beyond it new "
        "requests get 503 at once (unset: no limit).",
    )

    # --- Service ports (health, readiness, metrics, status) -----------------------------
    http_host: str = Field(
        "127.0.0.1", description="Interface the services' HTTP ports bind (0.0.0.0 in Docker)."
    )
    dispatcher_web_port: int = Field(
        6066, ge=1, le=65535, description="Dispatcher's HTTP port (/healthz, /readyz, /metrics)."
    )
    poller_http_port: int = Field(
        8001, ge=1, le=65535, description="Poller's HTTP port (/status, /healthz, /metrics)."
    )

    # --- Dispatcher ----------------------------------------------------------------------
    dispatcher_group_id: str = Field(
        "batchpipe-dispatcher",
        min_length=1,
        description="Faust app id of the dispatcher = its Kafka consumer group.",
    )
    dispatcher_ledger_topic: str | None = Field(
        None,
        description="Compacted dispatch ledger topic (default: <requests topic>.dispatch-ledger).",
    )
    dispatcher_data_dir: Path | None = Field(
        None, description="Faust data dir and temporary JSONL files (default: a temp dir)."
    )
    dispatcher_engine: Literal["faust", "aiokafka"] = Field(
        "faust",
        description="faust (the Faust worker, the default) or aiokafka (the same dispatcher on a "
        "plain aiokafka consumer group; bench/dispatcher.py measures both within a few percent).",
    )
    dispatcher_crash_at: (
        Literal["after_ledger", "after_upload", "after_create", "after_publish", "before_commit"]
        | None
    ) = Field(
        None,
        description="Test only: the dispatcher exits (os._exit(137)) at this step of a dispatch, "
        "to prove no loss and no duplicate batch on replay.",
    )
    dispatcher_session_timeout_seconds: float = Field(
        30.0,
        ge=6.0,
        le=300.0,
        description="Kafka session timeout of a dispatcher worker: how soon a dead worker's "
        "partitions move to the others.",
    )
    dispatcher_max_in_flight: int = Field(
        2,
        ge=1,
        le=16,
        description="Windows a dispatcher worker submits at once (upload + create each). Raise "
        "it when single uploads are slow (large files, far from OpenAI); each holds a temp file.",
    )
    dispatcher_max_enqueued_tokens: int | None = Field(
        None,
        ge=1,
        description="Per-model cap on the tokens (estimated: JSONL bytes / 4) in batchpipe's "
        "batches that have not ended: a window waits for room instead of failing with "
        "token_limit_exceeded, and windows are cut at this size. Unset: no cap. Set it to your "
        "organization's batch queue limit for the model.",
    )
    dispatcher_token_check_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How often a window waiting for the token budget checks OpenAI again.",
    )

    # --- Providers: which one serves a model ------------------------------------------
    provider_routes: Annotated[tuple[tuple[str, str], ...], NoDecode] = Field(
        default=(),
        description="Comma-separated pattern=provider rules, first match wins, e.g. "
        "'my-deployment-*=azure,gpt-4o-batch=azure' (shell-style patterns on the model name; "
        "providers: openai, azure). Models matching none go to BATCHPIPE_DEFAULT_PROVIDER.",
    )
    default_provider: str = Field(
        "openai", min_length=1, description="Provider of models that match no route."
    )

    # --- OpenAI (the SDK's own variables) -----------------------------------------------
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY"),
        description="OPENAI_API_KEY, as the openai SDK reads it.",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_BASE_URL"),
        description="OPENAI_BASE_URL, e.g. http://127.0.0.1:8100/v1 for the local emulator.",
    )
    openai_max_retries: int = Field(
        5, ge=0, le=50, description="Retries of one OpenAI call by the SDK (429/5xx)."
    )
    openai_timeout_seconds: float = Field(
        600.0, gt=0, description="Timeout of one OpenAI HTTP call (uploads can be large)."
    )
    openai_file_expires_after_seconds: int | None = Field(
        None,
        ge=OPENAI_EXPIRY_RANGE[0],
        le=OPENAI_EXPIRY_RANGE[1],
        description="Input files expire this long after upload (3,600-2,592,000 s); unset: "
        "OpenAI's default.",
    )
    openai_output_expires_after_seconds: int | None = Field(
        None,
        ge=OPENAI_EXPIRY_RANGE[0],
        le=OPENAI_EXPIRY_RANGE[1],
        description="Output and error files expire this long after the batch is created "
        "(3,600-2,592,000 s); unset: OpenAI's default.",
    )

    # --- Azure OpenAI (the SDK's own variables) -----------------------------------------
    azure_openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("AZURE_OPENAI_API_KEY"),
        description="AZURE_OPENAI_API_KEY, as the openai SDK's AzureOpenAI reads it.",
    )
    azure_openai_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("AZURE_OPENAI_ENDPOINT"),
        description="AZURE_OPENAI_ENDPOINT, e.g. https://my-resource.openai.azure.com (or the "
        "local emulator's root URL).",
    )
    openai_api_version: str | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_VERSION"),
        description="OPENAI_API_VERSION: the Azure OpenAI api-version, e.g. 2024-10-21.",
    )
    azure_file_expires_after_seconds: int | None = Field(
        None,
        ge=AZURE_EXPIRY_RANGE[0],
        le=AZURE_EXPIRY_RANGE[1],
        description="Azure input files expire this long after upload (1,209,600-2,592,000 s); "
        "unset: Azure's default.",
    )
    azure_output_expires_after_seconds: int | None = Field(
        None,
        ge=AZURE_EXPIRY_RANGE[0],
        le=AZURE_EXPIRY_RANGE[1],
        description="Azure output files expire this long after the batch is created "
        "(1,209,600-2,592,000 s); unset: Azure's default.",
    )

    # --- Anthropic (the SDK's own variables) --------------------------------------------
    anthropic_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY"),
        description="ANTHROPIC_API_KEY, as the anthropic SDK reads it.",
    )
    anthropic_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL"),
        description="ANTHROPIC_BASE_URL, e.g. the local emulator's root URL (unset: "
        "api.anthropic.com).",
    )
    anthropic_default_max_tokens: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="max_tokens of requests translated for Anthropic that set none (Anthropic "
        "requires it).",
    )

    # --- Costs ---------------------------------------------------------------------------
    prices_file: Path | None = Field(
        None,
        description="JSON price table (the shipped one's format, see docs/costs.md) whose "
        "models replace or add to the shipped prices.",
    )

    # --- Operations -----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR."
    )
    log_format: LogFormat = Field("json", description="json (one object per line) or console.")

    # --- Poller: state topic and result transactions -----------------------------------
    poller_state_topic: str = Field(
        "poller-state",
        min_length=1,
        description="Compacted topic of the poller's per-batch progress (exactly-once state).",
    )
    poller_txn_max_messages: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="Results per Kafka transaction; each commits its progress with it.",
    )
    poller_transaction_timeout_ms: int = Field(
        120_000,
        ge=1000,
        le=900_000,
        description="Kafka transaction timeout of the poller's producers (broker max 15 min).",
    )
    results_max_message_bytes: int = Field(
        1024 * 1024,
        ge=16 * 1024,
        le=64 * 1024 * 1024,
        description="Largest message on the results topic (its max.message.bytes, as "
        "`batchpipe topics` creates it; an existing topic must accept as much). A result "
        "whose message would be larger is published without its response body, as error "
        "result_too_large with a reference to fetch it (`batchpipe results fetch`).",
    )
    poller_retrieve_concurrency: int = Field(
        16, ge=1, le=1000, description="Most batches.retrieve calls in flight at once."
    )
    poller_crash_after_results: int | None = Field(
        None,
        ge=0,
        description="Test only: the poller exits (os._exit(137)) after sending this many "
        "results, mid-transaction, to prove exactly-once on replay.",
    )

    # --- Replicated cluster ---------------------------------------------------------------
    topic_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        le=32,
        description="min.insync.replicas of new topics (2 with a replication factor of 3: an "
        "acks=all write survives one broker down and is refused rather than kept on one copy). "
        "Unset: the broker's default.",
    )

    # --- Failover (static group membership) ---------------------------------------------
    dispatcher_group_instance_id: str | None = Field(
        None,
        min_length=1,
        description="Static group membership id of this dispatcher worker: unique per worker "
        "and the same across its restarts (e.g. the pod name; {hostname} is replaced by the "
        "host's name). A worker restarted within the session timeout gets its partitions back "
        "at once, without a rebalance; a stopped one keeps them until the session times out.",
    )
    poller_group_instance_id: str | None = Field(
        None,
        min_length=1,
        description="Static group membership id of this poller (as "
        "BATCHPIPE_DISPATCHER_GROUP_INSTANCE_ID, for the poller's group).",
    )

    # --- Webhooks (poller) ----------------------------------------------------------------
    openai_webhook_secret: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_WEBHOOK_SECRET"),
        description="OPENAI_WEBHOOK_SECRET (whsec_...), as the openai SDK reads it: the signing "
        "secret of the project's webhook endpoint. When set, the poller serves POST "
        "/webhooks/openai and retrieves a batch as soon as its batch.* event arrives; polling "
        "(BATCHPIPE_POLL_INTERVAL_SECONDS, e.g. 300) stays as the safety net.",
    )

    @field_validator("default_request_kwargs", mode="before")
    @classmethod
    def _parse_kwargs(cls, value: object) -> object:
        if isinstance(value, str | bytes):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object, e.g. {"max_tokens": 1000}')
        if "messages" in value or "stream" in value:
            raise ValueError("must not set 'messages' or 'stream'")
        return value

    @field_validator("provider_routes", mode="before")
    @classmethod
    def _parse_routes(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        routes = []
        for rule in value.split(","):
            if not rule.strip():
                continue
            pattern, sep, provider = rule.partition("=")
            if not sep or not pattern.strip() or not provider.strip():
                raise ValueError(f"{rule.strip()!r} is not pattern=provider")
            routes.append((pattern.strip(), provider.strip()))
        return tuple(routes)

    @field_validator("ingest_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("openai_webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.startswith("whsec_"):
            try:
                decoded = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
            except ValueError:
                raise ValueError("a whsec_ secret must be base64 after the prefix") from None
            if not decoded:
                raise ValueError("a whsec_ secret must not be empty after the prefix")
        elif not raw:
            raise ValueError("must not be empty")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts or any(":" not in h or not h.rsplit(":", 1)[1].isdigit() for h in hosts):
            raise ValueError("must be a comma-separated list of host:port")
        return ",".join(hosts)


def env_var_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        return str(first)
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment; raise ``SettingsError`` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"][0] if err["loc"] else ""
            name = env_var_name(str(loc)) if str(loc) in Settings.model_fields else str(loc)
            given = err.get("input")
            shown = (
                ""
                if any(word in name.lower() for word in ("password", "key", "secret"))
                else f" (got {given!r})"
            )
            problems.append(f"{name}: {err['msg']}{shown}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce ``settings`` in a child process.

    Used to launch the services as processes (``batchpipe dev``, end-to-end tests): every field
    is rendered, secrets included, so the result must only ever be passed to ``subprocess``,
    never logged.
    """
    env: dict[str, str] = {}
    for field in Settings.model_fields:
        value = getattr(settings, field)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            rendered = value.get_secret_value()
        elif field == "provider_routes":
            rendered = ",".join(f"{pattern}={provider}" for pattern, provider in value)
        elif isinstance(value, tuple):
            rendered = ",".join(
                v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value
            )
        elif isinstance(value, dict):
            rendered = orjson.dumps(value).decode()
        else:
            rendered = str(value)
        env[env_var_name(field)] = rendered
    return env

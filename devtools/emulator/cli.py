"""``batchpipe emulator`` (alias ``openai-emulator``): serve the local emulator of every
provider's batch API: OpenAI's Files + Batches under ``/v1``, Azure OpenAI's under ``/openai``
and Anthropic's Message Batches under ``/v1/messages/batches``.

Every option can also be set with ``BATCHPIPE_EMULATOR_<NAME>`` (e.g.
``BATCHPIPE_EMULATOR_PORT=8200``). Prints the SDKs' settings (``OPENAI_BASE_URL``,
``AZURE_OPENAI_ENDPOINT``, ``OPENAI_API_VERSION``, ``ANTHROPIC_BASE_URL``) once listening;
SIGINT/SIGTERM stop it cleanly (in-flight batches resume on the next start with the same
``--data-dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ENV = "BATCHPIPE_EMULATOR_"


def _opt(help_text: str, name: str) -> typer.models.OptionInfo:
    return typer.Option(help=help_text, envvar=f"{ENV}{name}")  # type: ignore[no-any-return]


def emulator(
    host: Annotated[str, _opt("Interface to listen on.", "HOST")] = "127.0.0.1",
    port: Annotated[int, _opt("Port to listen on.", "PORT")] = 8100,
    data_dir: Annotated[
        Path | None, _opt("Directory for SQLite state and files (default: a temp dir).", "DATA_DIR")
    ] = None,
    api_key: Annotated[
        str | None,
        _opt(
            "Require this key: OpenAI's bearer token, Azure's api-key header or bearer token, "
            "Anthropic's x-api-key header (default: accept any).",
            "API_KEY",
        ),
    ] = None,
    processing_seconds: Annotated[
        float, _opt("How long a batch stays in_progress.", "PROCESSING_SECONDS")
    ] = 3.0,
    completion_window_seconds: Annotated[
        float, _opt('What "24h" means, in seconds.', "COMPLETION_WINDOW_SECONDS")
    ] = 86_400.0,
    seed: Annotated[int | None, _opt("Seed for every random choice.", "SEED")] = None,
    line_failure_rate: Annotated[
        float, _opt("Share of request lines that fail.", "LINE_FAILURE_RATE")
    ] = 0.0,
    line_failure_status: Annotated[
        str, _opt("Status(es) of failed lines: 429, 500, 400 (comma list).", "LINE_FAILURE_STATUS")
    ] = "500",
    validation_failure_rate: Annotated[
        float, _opt("Share of batches that fail validation.", "VALIDATION_FAILURE_RATE")
    ] = 0.0,
    token_limit_failure_rate: Annotated[
        float,
        _opt("Share of batches failing with token_limit_exceeded.", "TOKEN_LIMIT_FAILURE_RATE"),
    ] = 0.0,
    enqueued_token_limit: Annotated[
        int | None,
        _opt(
            "Per-model cap on enqueued tokens (input bytes / 4); over it a batch fails with "
            "token_limit_exceeded (default: none).",
            "ENQUEUED_TOKEN_LIMIT",
        ),
    ] = None,
    force_expire: Annotated[
        float, _opt("Share of batches that expire half done (1 = all).", "FORCE_EXPIRE")
    ] = 0.0,
    create_429_rate: Annotated[
        float, _opt("Share of batch creations answered 429.", "CREATE_429_RATE")
    ] = 0.0,
    create_529_rate: Annotated[
        float, _opt("Share of Anthropic batch creations answered 529.", "CREATE_529_RATE")
    ] = 0.0,
    upload_429_rate: Annotated[
        float, _opt("Share of file uploads answered 429.", "UPLOAD_429_RATE")
    ] = 0.0,
    retry_after_seconds: Annotated[
        float, _opt("Retry-After of injected 429s.", "RETRY_AFTER_SECONDS")
    ] = 1.0,
    retrieve_5xx_rate: Annotated[
        float, _opt("Share of batch retrievals answered 500.", "RETRIEVE_5XX_RATE")
    ] = 0.0,
    slow_seconds: Annotated[
        float, _opt("Extra latency on every API request.", "SLOW_SECONDS")
    ] = 0.0,
    step_processes: Annotated[
        int,
        _opt(
            "Worker processes validating batches and writing their output, so that never "
            "stalls the API (0: threads in the API process).",
            "STEP_PROCESSES",
        ),
    ] = 1,
    anthropic_error_rate: Annotated[
        float, _opt("Share of Anthropic result lines errored.", "ANTHROPIC_ERROR_RATE")
    ] = 0.0,
    anthropic_error_types: Annotated[
        str,
        _opt(
            "Error type(s) of those lines, e.g. overloaded_error,api_error (comma list).",
            "ANTHROPIC_ERROR_TYPES",
        ),
    ] = "api_error",
    webhook_url: Annotated[
        str | None,
        _opt(
            "Send OpenAI's signed batch.* events here when an OpenAI batch ends, e.g. "
            "http://127.0.0.1:8001/webhooks/openai (default: none).",
            "WEBHOOK_URL",
        ),
    ] = None,
    webhook_secret: Annotated[
        str | None,
        _opt(
            "The whsec_ secret the events are signed with (the receiver's "
            "OPENAI_WEBHOOK_SECRET); default with --webhook-url: a new one, printed.",
            "WEBHOOK_SECRET",
        ),
    ] = None,
    webhook_retry_delays: Annotated[
        str,
        _opt(
            "Seconds before each delivery attempt (comma list; default: Standard Webhooks' "
            "0,5,300,1800,7200,18000,36000,36000).",
            "WEBHOOK_RETRY_DELAYS",
        ),
    ] = "0,5,300,1800,7200,18000,36000,36000",
    webhook_drop_rate: Annotated[
        float, _opt("Share of webhook events never sent.", "WEBHOOK_DROP_RATE")
    ] = 0.0,
    azure_deployments: Annotated[
        str | None,
        _opt(
            "The Azure deployments that exist (comma list); a batch naming another fails with "
            "model_not_found (default: any name).",
            "AZURE_DEPLOYMENTS",
        ),
    ] = None,
) -> None:
    """Serve a local, durable emulator of the OpenAI, Azure OpenAI and Anthropic batch APIs."""
    from batchpipe.devtools.emulator.config import EmulatorConfig
    from batchpipe.devtools.emulator.flavours import AZURE_API_VERSION
    from batchpipe.devtools.emulator.runner import bind_socket, make_server
    from batchpipe.devtools.emulator.webhooks import new_secret
    from batchpipe.shared.logs import configure_logging

    generated = webhook_url is not None and webhook_secret is None
    if generated:
        webhook_secret = new_secret()
    try:
        config = EmulatorConfig(
            host=host,
            port=port,
            data_dir=data_dir,
            api_key=api_key,
            processing_seconds=processing_seconds,
            completion_window_seconds=completion_window_seconds,
            seed=seed,
            line_failure_rate=line_failure_rate,
            line_failure_status=line_failure_status,
            validation_failure_rate=validation_failure_rate,
            token_limit_failure_rate=token_limit_failure_rate,
            enqueued_token_limit=enqueued_token_limit,
            force_expire=force_expire,
            create_429_rate=create_429_rate,
            create_529_rate=create_529_rate,
            upload_429_rate=upload_429_rate,
            retry_after_seconds=retry_after_seconds,
            retrieve_5xx_rate=retrieve_5xx_rate,
            slow_seconds=slow_seconds,
            step_processes=step_processes,
            anthropic_error_rate=anthropic_error_rate,
            anthropic_error_types=anthropic_error_types,  # (a comma list, split likewise)
            azure_deployments=azure_deployments,  # (a comma list: the validator splits it)
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            webhook_retry_delays=webhook_retry_delays,  # (a comma list, split likewise)
            webhook_drop_rate=webhook_drop_rate,
        )
    except ValueError as exc:
        typer.secho(f"batchpipe emulator: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    configure_logging("INFO", "console", service="emulator")
    sock = bind_socket(config.host, config.port)
    bound_port = sock.getsockname()[1]
    shown = f"[{config.host}]" if ":" in config.host else config.host
    root = f"http://{shown}:{bound_port}"
    typer.echo(
        f"Emulator listening: OPENAI_BASE_URL={root}/v1 AZURE_OPENAI_ENDPOINT={root} "
        f"OPENAI_API_VERSION={AZURE_API_VERSION} ANTHROPIC_BASE_URL={root}",
        err=False,
    )
    if config.webhook_url is not None:
        shown_secret = f" OPENAI_WEBHOOK_SECRET={config.webhook_secret}" if generated else ""
        typer.echo(f"Webhooks: batch events to {config.webhook_url}{shown_secret}")
    server = make_server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


openai_emulator = emulator  # the command's older name, registered as ``openai-emulator``

"""Helpers every ``batchpipe`` subcommand uses: settings with a clear error, and logging;
the services also check their Kafka access (credentials, rights) before they start."""

from __future__ import annotations

import typer

from batchpipe.shared.logs import configure_logging
from batchpipe.shared.settings import Settings, SettingsError, load_settings


def settings_or_exit(service: str = "") -> Settings:
    """Load the settings and configure logging; a bad value exits 2 naming the variable."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.secho(f"batchpipe: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format, service=service)
    return settings


def kafka_access_or_exit(settings: Settings, service: str) -> None:
    """Check ``service``'s Kafka credentials and rights (``shared.kafka_access``); a refusal
    exits 2 with one line naming the setting at fault (never a password, no stack dump)."""
    import asyncio

    from batchpipe.shared.kafka_access import KafkaAccessError, check_access

    try:
        asyncio.run(check_access(settings, service))
    except KafkaAccessError as exc:
        typer.secho(f"batchpipe {service}: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None

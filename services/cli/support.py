"""Helpers every ``batchpipe`` subcommand uses: settings with a clear error, and logging."""

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

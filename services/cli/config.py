"""``batchpipe config``: show the effective settings (secrets masked) or the README's table."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import SecretStr

from batchpipe.shared.settings import Settings, env_var_name


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, tuple) and value and isinstance(value[0], SecretStr):
        return f"({len(value)} keys)"
    if isinstance(value, dict):
        import orjson

        return orjson.dumps(value).decode()
    return "" if value is None else str(value)


def markdown_table() -> str:
    """The configuration table of the README, generated from the settings model."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        shown = _shown(default) or "—"
        rows.append(f"| `{env_var_name(name)}` | `{shown}` | {info.description or ''} |")
    return "\n".join(rows) + "\n"


def config(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the documentation table instead.")
    ] = False,
) -> None:
    """Print every setting with its environment variable and current value (secrets masked)."""
    if markdown:
        typer.echo(markdown_table(), nl=False)
        return
    from batchpipe.services.cli.support import settings_or_exit

    settings = settings_or_exit()
    for name in Settings.model_fields:
        typer.echo(f"{env_var_name(name)}={_shown(getattr(settings, name))}")

"""The ``batchpipe`` command: ``main`` (the console script) and ``app`` (its Typer app).

Both are resolved on first use, not at import: the per-service commands
(``services/<name>/cli.py``) import ``batchpipe.services.cli.support``, which imports this
package first, and an eager ``app`` would import those same modules back while they are still
half-initialised. ``batchpipe.services.cli.commands`` builds the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["app", "main"]


def main() -> None:
    """Run ``batchpipe`` with the process's arguments (the ``[project.scripts]`` entry point)."""
    from batchpipe.services.cli.commands import app

    app()


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        from batchpipe.services.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

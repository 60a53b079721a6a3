"""``batchpipe ingest``: serve ``POST /requests`` with uvicorn (SIGTERM/SIGINT stop it cleanly:
in-flight requests finish, then the producer flushes)."""

from __future__ import annotations

from typing import Annotated

import typer


def ingest(
    host: Annotated[
        str | None,
        typer.Option(help="Interface to bind (default: BATCHPIPE_HTTP_HOST)."),
    ] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (each has its own producer).")
    ] = 1,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every HTTP request.")
    ] = False,
) -> None:
    """Run the ingest service: POST /requests → the requests topic (see README, "Ingest API")."""
    import uvicorn

    from batchpipe.services.cli.support import settings_or_exit
    from batchpipe.services.ingest.app import create_app

    settings = settings_or_exit("ingest")
    bind = host or settings.http_host
    if workers > 1:
        # Workers are separate processes: each builds its app (and producer) from the env.
        uvicorn.run(
            "batchpipe.services.ingest.app:app_from_env",
            factory=True,
            host=bind,
            port=port,
            workers=workers,
            log_config=None,
            access_log=access_log,
        )
        return
    app = create_app(settings, tune_gc=True)
    uvicorn.run(app, host=bind, port=port, log_config=None, access_log=access_log)

"""``batchpipe ingest``: serve ``POST /requests`` with uvicorn (SIGTERM/SIGINT stop it cleanly:
in-flight requests finish, then the producer flushes).

With ``--workers N`` (N > 1) the run's metric files live in a fresh private directory that
exists while the workers do, so that each worker's ``/metrics`` reports the whole service
(``services.ingest.worker_metrics``).
"""

from __future__ import annotations

from contextlib import ExitStack
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
    from prometheus_client import CollectorRegistry

    from batchpipe.services.cli.support import kafka_access_or_exit, settings_or_exit
    from batchpipe.services.ingest.app import create_app
    from batchpipe.services.ingest.server import GuardedHttpToolsProtocol, server_options
    from batchpipe.services.ingest.worker_metrics import (
        DeadWorkerSweeper,
        metrics_directory,
    )

    settings = settings_or_exit("ingest")
    kafka_access_or_exit(settings, "ingest")
    bind = host or settings.http_host
    options = server_options(settings)
    if workers > 1:
        # Workers are separate processes: each builds its app (and producer) from the env,
        # including the metrics directory, which must be set before uvicorn spawns them.
        with ExitStack() as stack:
            try:
                path = stack.enter_context(metrics_directory())
            except OSError as exc:
                typer.secho(
                    f"batchpipe: cannot create the metrics directory: {exc}",
                    err=True,
                    fg=typer.colors.RED,
                )
                raise typer.Exit(2) from None
            stack.enter_context(DeadWorkerSweeper(path))
            uvicorn.run(
                "batchpipe.services.ingest.app:app_from_env",
                factory=True,
                host=bind,
                port=port,
                workers=workers,
                log_config=None,
                access_log=access_log,
                **options,
            )
        return
    # One process serves its own registry (even if PROMETHEUS_MULTIPROC_DIR is set).
    app = create_app(settings, registry=CollectorRegistry(), tune_gc=True)
    GuardedHttpToolsProtocol.configure(settings.ingest_header_timeout_seconds)
    uvicorn.run(app, host=bind, port=port, log_config=None, access_log=access_log, **options)

"""``batchpipe dispatcher``: run one dispatcher worker (the entry point of its process).

By default a Faust worker, equivalent to ``faust -A batchpipe.services.dispatcher.app worker``
with the settings from ``BATCHPIPE_*``; batchpipe's structured logging is kept (Faust does not
replace it). ``BATCHPIPE_DISPATCHER_ENGINE=aiokafka`` runs the same dispatcher on a plain
aiokafka consumer group (``kafka_runner.py``). Start several to share the requests topic's
partitions. SIGTERM/SIGINT stop it cleanly.

The process tuning (``process_tuning.py``) is applied here, once everything is imported and
before the worker starts, because it is process-wide.
"""

from __future__ import annotations

import typer

from batchpipe.services.cli.support import kafka_access_or_exit, settings_or_exit
from batchpipe.services.dispatcher.process_tuning import tune_process


def dispatcher() -> None:
    """Window the requests topic into provider batches (Faust worker; web port for health)."""
    from batchpipe.shared.providers.registry import check_providers
    from batchpipe.shared.settings import SettingsError

    settings = settings_or_exit("dispatcher")

    def providers_or_exit() -> None:
        try:
            check_providers(settings)
        except SettingsError as exc:
            typer.secho(f"batchpipe dispatcher: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None

    kafka_access_or_exit(settings, "dispatcher")
    if settings.dispatcher_engine == "aiokafka":
        import asyncio

        from batchpipe.services.dispatcher.kafka_runner import run

        providers_or_exit()
        tune_process()
        asyncio.run(run(settings))
        return
    import faust

    from batchpipe.services.dispatcher.app import UnsupportedFaustVersion, create_app

    try:
        app = create_app(settings)
    except UnsupportedFaustVersion as exc:
        typer.secho(f"batchpipe: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    providers_or_exit()
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        override_logging=False,
        quiet=True,
    )
    tune_process()
    worker.execute_from_commandline()

"""``batchpipe dispatcher``: run one dispatcher worker.

By default a Faust worker, equivalent to ``faust -A services.dispatcher.app worker -l info``
with the settings from ``BATCHPIPE_*``; batchpipe's structured logging is kept (Faust does not
replace it). ``BATCHPIPE_DISPATCHER_ENGINE=aiokafka`` runs the same dispatcher on a plain
aiokafka consumer group (``kafka_runner.py``). Start several to share the requests topic's
partitions. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

from batchpipe.services.cli_support import settings_or_exit


def dispatcher() -> None:
    """Window the requests topic into OpenAI batches (Faust worker; web port for health)."""
    settings = settings_or_exit("dispatcher")
    if settings.dispatcher_engine == "aiokafka":
        import asyncio

        from batchpipe.services.dispatcher.kafka_runner import run

        asyncio.run(run(settings))
        return
    import faust

    from batchpipe.services.dispatcher.app import create_app

    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        override_logging=False,
        quiet=True,
    )
    worker.execute_from_commandline()

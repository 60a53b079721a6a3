"""``batchpipe dispatcher``: run one dispatcher worker (a Faust worker).

Equivalent to ``faust -A services.dispatcher.app worker -l info`` with the settings from
``BATCHPIPE_*``; batchpipe's structured logging is kept (Faust does not replace it). Start
several to share the requests topic's partitions. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

from services.cli_support import settings_or_exit


def dispatcher() -> None:
    """Window the requests topic into OpenAI batches (Faust worker; web port for health)."""
    settings = settings_or_exit("dispatcher")
    import faust

    from services.dispatcher.app import create_app

    app = create_app(settings)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        override_logging=False,
        quiet=True,
    )
    worker.execute_from_commandline()

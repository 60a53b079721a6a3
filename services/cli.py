"""The ``batchpipe`` command: one subcommand per process and a few operator tools.

Each subcommand lives beside the process it runs (``services/<name>/cli.py``) and is only
registered here, so this module stays a table of contents. Heavy imports happen inside the
commands, keeping ``batchpipe --help`` fast.
"""

from __future__ import annotations

import typer

from batchpipe.services.config_cli import config
from batchpipe.services.dev.cli import dev
from batchpipe.services.dispatcher.cli import dispatcher
from batchpipe.services.ingest.cli import ingest
from batchpipe.services.kafka_cli import kafka, topics
from batchpipe.services.openai_emulator.cli import openai_emulator
from batchpipe.services.poller.cli import poller, status
from batchpipe.services.results_cli import results
from batchpipe.services.schema_cli import schema
from batchpipe.services.submit_cli import submit

app = typer.Typer(
    name="batchpipe",
    help=(
        "Turn a Kafka stream of LLM requests into OpenAI Batch API jobs and stream every "
        "result back. Settings come from BATCHPIPE_* environment variables (see README)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)

app.command("kafka")(kafka)
app.command("topics")(topics)
app.command("schema")(schema)
app.command("config")(config)
app.command("dispatcher")(dispatcher)
app.command("emulator")(openai_emulator)
app.command("openai-emulator")(openai_emulator)  # the older name, kept for scripts
app.command("dev")(dev)
app.command("submit")(submit)
app.command("results")(results)
app.command("ingest")(ingest)
app.command("poller")(poller)
app.command("status")(status)


def main() -> None:
    app()


if __name__ == "__main__":  # ``python -m services.cli``: how child processes are started
    main()
